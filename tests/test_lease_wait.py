"""A crashed run must not cost the night (issue 28 item 5): wait for its lease, or take over a dead local holder."""

import json
import socket
import subprocess
import sys
import time

import pytest

from pipeline.archive import LEASES, Archive, LeaseHeldError
from pipeline.lease_holder import holder_is_dead, pid_alive


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _plant_lease(root, owner: str, ttl_s: float) -> None:
    """A lease generation 1 as a run that then crashed would have left it."""
    folder = root / LEASES
    folder.mkdir(parents=True)
    body = {"run_id": "crashed", "owner": owner, "generation": 1, "expires_at": time.time() + ttl_s, "released": False}
    (folder / "000000000001.json").write_text(json.dumps(body))


def test_a_dead_holder_on_this_host_is_taken_over_at_once(tmp_path):
    _plant_lease(tmp_path, f"{socket.gethostname()}:{_dead_pid()}:abcd", ttl_s=600)
    t0 = time.monotonic()
    with Archive(str(tmp_path)).acquire_lease("next") as lease:
        assert lease.generation == 2
    assert time.monotonic() - t0 < 5


def test_a_live_or_remote_holder_is_waited_for_then_refused(tmp_path):
    _plant_lease(tmp_path, f"other-host:{_dead_pid()}:abcd", ttl_s=600)  # another host: judged by expiry only
    t0 = time.monotonic()
    with pytest.raises(LeaseHeldError, match="wait-for-lease"):
        Archive(str(tmp_path)).acquire_lease("next", wait_s=1.0)
    assert 0.9 < time.monotonic() - t0 < 5


def test_the_wait_ends_when_the_crashed_runs_lease_expires_with_progress(tmp_path, monkeypatch):
    _plant_lease(tmp_path, "other-host:1:abcd", ttl_s=1.5)
    messages = []
    monkeypatch.setattr("pipeline.archive.time.monotonic", _fast_clock())  # 10 s of progress in a real second
    with Archive(str(tmp_path)).acquire_lease("next", wait_s=600, progress=messages.append) as lease:
        assert lease.generation == 2
    assert messages and "waiting for the lease" in messages[0]


def _fast_clock():
    real, start = time.monotonic, time.monotonic()
    return lambda: start + (real() - start) * 20


def test_holder_liveness():
    me = f"{socket.gethostname()}:{__import__('os').getpid()}:x"
    assert pid_alive(__import__("os").getpid()) and not holder_is_dead(me)
    assert holder_is_dead(f"{socket.gethostname()}:{_dead_pid()}:x")
    assert not holder_is_dead("elsewhere:1:x") and not holder_is_dead("junk") and not holder_is_dead(None)
