"""A job run without a cluster starts its own Ray: every socket it listens on is on loopback (issue 28 item 9;
pipeline.driver.local_ray_on_loopback). Read from /proc while the job runs."""

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from proc_net import listeners, service_processes

ROOT = Path(__file__).resolve().parents[1]


def test_a_local_job_run_listens_on_loopback_only(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(4):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(src / f"{i}.png")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"))}
    job = subprocess.Popen([sys.executable, str(ROOT / "jobs" / "compress_bucket.py"), "--input", str(src),
                            "--output", str(tmp_path / "out"), "--quality", "0.5", "--tile-size", "64"],
                           env=env, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen = set()
    deadline = time.monotonic() + 240
    while job.poll() is None and time.monotonic() < deadline:
        seen |= {(s.process, str(s.shown), s.port, s.loopback) for s in listeners(service_processes(job.pid))}
        time.sleep(0.5)
    assert job.wait(timeout=60) == 0, job.stderr.read().decode()[-2000:]
    assert {"gcs_server", "raylet"} <= {s[0] for s in seen}, f"Ray's own servers were not seen listening: {sorted(seen)}"
    exposed = sorted(s[:3] for s in seen if not s[3])
    assert not exposed, f"listening beyond loopback: {exposed}"
