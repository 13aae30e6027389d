import sys
from pathlib import Path

import numpy as np
import pytest

import codec

ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:  # devtools/ (the local S3 server) and jobs/ are not installed packages
    sys.path.append(ROOT)


@pytest.fixture(scope="session")
def model():
    return codec.load_model("default")


def natural_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth, textured test image of any size (no external files needed)."""
    from skimage import data
    from skimage.transform import resize

    base = data.astronaut() if seed % 2 == 0 else data.chelsea()
    img = resize(base, (h, w), anti_aliasing=True, preserve_range=True)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def image():
    return natural_image(200, 330)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real SeaweedFS S3 server on free loopback ports, for the whole session."""
    from devtools.localstack import LocalS3

    with LocalS3(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture()
def bucket(s3_server, request):
    """A fresh bucket per test (named after the test)."""
    import re
    import uuid

    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-") + "-" + uuid.uuid4().hex[:6]
    s3_server.make_bucket(name)
    return name


@pytest.fixture()
def s3_env(s3_server, monkeypatch):
    """Point the standard AWS variables at the test server (as a user's environment would)."""
    for k, v in s3_server.env.items():
        monkeypatch.setenv(k, v)
    return s3_server.env


@pytest.fixture(scope="module")
def ray_local():
    """Local Ray (CPU only) for one test module."""
    import ray

    ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture()
def fault_proxy(s3_server):
    """A fault-injecting proxy in front of the session's SeaweedFS (devtools/faultproxy.py), rules cleared after."""
    from devtools.faultproxy import FaultProxy

    with FaultProxy(s3_server.endpoint_url) as proxy:
        yield proxy


@pytest.fixture()
def proxy_env(s3_server, fault_proxy, monkeypatch):
    """The AWS variables of the session's server, with the endpoint through ``fault_proxy`` (for the job)."""
    env = {**s3_server.env, "AWS_ENDPOINT_URL": fault_proxy.url}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


@pytest.fixture()
def paused_writer(tmp_path):
    """Start devtools/archive_writer.py and freeze it (SIGSTOP) once its manifest PUT for ``segment`` is in flight.

    Yields ``start(output, run_id, ttl_s, n_keys, rows, segment) -> Popen``; the caller thaws it
    (SIGCONT). Every writer started is killed at teardown.
    """
    import os
    import signal
    import subprocess
    import sys

    procs = []

    def start(output, run_id, ttl_s, n_keys, rows, segment, timeout_s=20.0):
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = {**os.environ, "PYTHONPATH": root}
        p = subprocess.Popen([sys.executable, "-m", "devtools.archive_writer", str(output), run_id, str(ttl_s),
                              str(n_keys), str(rows)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env)
        procs.append(p)
        for line in p.stdout:  # blocks until the writer announces the PUT (or exits)
            if line.strip() == f"PUT {segment}":
                p.send_signal(signal.SIGSTOP)
                return p
        raise RuntimeError(f"archive_writer exited {p.wait(timeout_s)} before segment {segment}: {p.stderr.read()}")

    yield start
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGCONT)
            p.kill()
            p.wait(5)
