"""infra/local: the scripts start SeaweedFS and a Ray head, `ray job submit` runs the real job on them, and
they stop again, leaving no process behind."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def env_from(path: Path, base: dict) -> dict:
    """env.sh's exports as a shell would see them: ``$NAME`` expanded against what came before (PATH=…:$PATH)."""
    out = {}
    for line in path.read_text().splitlines():
        k, v = line.removeprefix("export ").split("=", 1)
        out[k] = re.sub(r"\$(\w+)", lambda m: {**base, **out}.get(m.group(1), ""), shlex.split(v)[0])
    return out


@pytest.fixture()
def stack(tmp_path):
    state = tmp_path / "stack"
    env = {**os.environ, "PYTHON": sys.executable}
    for k in [k for k in env if k.startswith(("AWS_", "RAY_"))]:
        env.pop(k)
    up = subprocess.run([str(ROOT / "infra/local/up.sh"), str(state)], env=env, capture_output=True, text=True, timeout=300)
    try:
        assert up.returncode == 0, up.stderr + up.stdout
        yield state, {**env, **env_from(state / "env.sh", env)}
    finally:
        subprocess.run([str(ROOT / "infra/local/down.sh"), str(state)], env=env, capture_output=True, timeout=120)


def pids_of(state: Path) -> list[int]:
    return [int((state / f).read_text()) for f in ("ray.pid", "s3.pid") if (state / f).exists()]


def assert_loopback_only(state: Path) -> None:
    """Every socket the stack listens on (SeaweedFS; Ray's GCS, raylet, agents, dashboard, workers) is on loopback."""
    from proc_net import listeners, service_processes

    found = listeners([p for pgid in pids_of(state) for p in service_processes(pgid)])
    names = {x.process for x in found}
    assert {"gcs_server", "raylet", "weed"} <= names, f"the stack's servers were not found listening: {sorted(names)}"
    exposed = [f"{x.process} (pid {x.pid}) on {x.shown}:{x.port}" for x in found if not x.loopback]
    assert not exposed, "listening beyond loopback: " + "; ".join(exposed)


def test_up_submit_down(stack, tmp_path):
    state, env = stack
    assert (state / "env.sh").stat().st_mode & 0o077 == 0  # keys readable by the owner only
    assert env["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
    import s3fs

    fs = s3fs.S3FileSystem(key=env["AWS_ACCESS_KEY_ID"], secret=env["AWS_SECRET_ACCESS_KEY"],
                           endpoint_url=env["AWS_ENDPOINT_URL"], config_kwargs={"s3": {"addressing_style": "path"}})
    from conftest import natural_image
    from pipeline_fixtures import png

    fs.pipe("raw/t/a.png", png(natural_image(64, 96, 1)))
    fs.pipe("raw/t/b.png", png(natural_image(80, 64, 2)))
    submit = subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--working-dir", str(ROOT), "--",
         "python", "jobs/compress_bucket.py", "--input", "s3://raw/t/", "--output", "s3://archive/t/", "--quality", "0.5"],
        env=env, capture_output=True, text=True, timeout=400, cwd=ROOT)
    assert submit.returncode == 0, submit.stdout[-3000:] + submit.stderr[-3000:]
    assert "2 processed (2 ok, 0 errors)" in submit.stdout
    assert len(fs.glob("archive/t/_manifests/*.json")) == 1
    assert_loopback_only(state)

    pids = pids_of(state)
    down = subprocess.run([str(ROOT / "infra/local/down.sh"), str(state)], env=env, capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stderr
    for pid in pids:  # the whole process groups are gone: weed, raylet, GCS, workers
        alive = subprocess.run(["pgrep", "-g", str(pid)], capture_output=True).stdout.strip()
        assert not alive, f"process group {pid} still has {alive!r}"
