"""Node loss (issue 28 item 6): a worker node that dies mid-run costs at most a retry.

A two-node Ray cluster on this machine: a head with no CPUs (it hosts the driver only) and node 2 with
CPUs and a raylet on a known port, so that the codec replica and the fetch tasks run there. Mid-run,
once segments are committed, node 2's raylet is SIGKILLed, then node 3 joins (as KubeRay replaces a
lost worker pod). The job must finish with exit 0 and every input archived exactly once.
"""

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from pipeline.archive import Archive
from pipeline_fixtures import upload
from test_pipeline_faults import assert_exactly_once, job_args, many_objects

RAY = Path(sys.executable).with_name("ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pids_with(*parts: str) -> list[int]:
    """PIDs whose command line holds every one of ``parts`` (read from /proc: no procps needed)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if all(p in cmd for p in parts) and int(d.name) != os.getpid():
                out.append(int(d.name))
    return out


def private_ray_env(base: dict) -> dict:
    """``base`` with Ray settings of this cluster's own: its own auth token (token mode), no inherited address.

    With RAY_AUTH_MODE unset, Ray turns token auth on whenever it finds a token (``~/.ray/auth_token``, left
    by any local ``ray.init()``, or RAY_AUTH_TOKEN[_PATH] exported by another stack), so what another stack
    left decided whether our nodes could join their head (InvalidAuthToken). RAY_AUTH_TOKEN comes first in
    Ray's token lookup, so a fresh one here wins over every file; the driver gets the same environment.
    """
    # and a two-node cluster needs Ray's cluster mode, whatever a local job run set (driver.local_ray_on_loopback)
    env = {k: v for k, v in base.items()
           if not k.startswith(("RAY_AUTH", "RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"))}
    return {**env, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}


class LocalCluster:
    """``ray start`` head + workers on loopback, with their own temp dir and auth token; stopped (and only ours) at exit."""

    def __init__(self, tmp: Path):
        self.temp = Path("/tmp") / f"rnl-{uuid.uuid4().hex[:6]}"  # short: Ray's socket paths have a length limit
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = private_ray_env(os.environ)

    def _start(self, *args: str) -> None:
        r = subprocess.run([str(RAY), "start", "--node-ip-address=127.0.0.1", *args], env=self.env,
                           capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]

    def head(self) -> None:
        self._start("--head", f"--port={self.port}", "--num-cpus=0", "--include-dashboard=false",
                    f"--temp-dir={self.temp}", "--disable-usage-stats")

    def worker(self, cpus: int) -> int:
        """A worker node; returns its raylet's node-manager port (how it is told apart from the others)."""
        nm_port = free_port()
        self._start(f"--address={self.address}", f"--num-cpus={cpus}", f"--node-manager-port={nm_port}",
                    f"--object-manager-port={free_port()}", "--min-worker-port=0", "--max-worker-port=0")
        return nm_port

    def kill_raylet(self, nm_port: int) -> int:
        """SIGKILL the raylet listening on ``nm_port`` (its workers lose their node with it)."""
        pids = pids_with("raylet", f"--node_manager_port={nm_port}")
        assert pids, f"no raylet with node_manager_port {nm_port}"
        for p in pids:
            os.kill(p, signal.SIGKILL)
        return len(pids)

    def stop(self) -> None:
        # `ray stop` would also stop any other Ray on this machine: kill only the processes under our temp dir
        for p in pids_with(str(self.temp)):
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.temp, ignore_errors=True)


@pytest.fixture()
def cluster(tmp_path, monkeypatch):
    # what another stack may leave in the environment: token mode with a token of its own
    (tmp_path / "foreign_token").write_text(secrets.token_hex(32))
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "foreign_token"))
    monkeypatch.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))
    c = LocalCluster(tmp_path)
    try:
        c.head()
        yield c
    finally:
        c.stop()


def test_losing_the_node_of_the_codec_replica_costs_a_retry_not_the_run(s3_server, bucket, cluster, monkeypatch):
    objects = many_objects(3)
    upload(s3_server.filesystem(), bucket, "raw", objects)
    node2 = cluster.worker(cpus=2)
    env = {**cluster.env, **s3_server.env, "RAY_ADDRESS": cluster.address}  # the cluster's token too
    proc = subprocess.Popen(job_args(bucket, "--segment-rows", "2"), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        for k, v in s3_server.env.items():
            monkeypatch.setenv(k, v)
        archive = Archive(f"s3://{bucket}/archive/", None)
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None and len(archive.manifests(refresh=True)) < 2:
            time.sleep(0.5)
        assert proc.poll() is None, "the job ended before node 2 could be lost: " + proc.stderr.read()[-2000:]
        assert cluster.kill_raylet(node2) >= 1
        time.sleep(2)
        cluster.worker(cpus=2)  # the replacement node
        out, err = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err[-4000:]
    import json

    fs = s3_server.filesystem()
    (summary_path,) = fs.glob(f"{bucket}/archive/_runs/*/summary.json")
    summary = json.loads(fs.cat(summary_path))
    assert summary["cluster_retries"] <= 1, "a lost node costs at most one retry"
    if summary["cluster_retries"]:
        assert "running the rest again (retry 1 of 2)" in err
    print(f"cluster retries: {summary['cluster_retries']}")
    assert_exactly_once(s3_server, bucket, {f"s3://{bucket}/raw/{k}" for k in objects})


def test_only_failures_of_the_cluster_are_retried():
    import ray.exceptions

    from pipeline.driver import lost_to_the_cluster

    try:
        try:
            raise ray.exceptions.ObjectLostError("00" * 28, "owner", "call site")
        except Exception as lost:
            raise RuntimeError("a Ray Data operator failed") from lost
    except RuntimeError as wrapped:
        assert lost_to_the_cluster(wrapped)
    assert not lost_to_the_cluster(ValueError("a bug in our code"))
    assert not lost_to_the_cluster(ray.exceptions.RayTaskError("fn", "traceback", ValueError("user error")))
