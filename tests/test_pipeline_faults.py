"""Exactly-once under failure: a replica dies mid-run; the driver dies mid-run and the job is rerun.

The job runs as a subprocess (`python jobs/compress_bucket.py`), as a user would run it.
"""

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from pipeline.archive import Archive
from pipeline.stages.encode import FAULT_ENV, FAULT_KEY_ENV
from pipeline_fixtures import good_objects, upload

ROOT = Path(__file__).resolve().parents[1]


def many_objects(n_sets: int) -> dict[str, bytes]:
    out = {}
    for s in range(n_sets):
        out.update({f"set{s}/{k}": v for k, v in good_objects(s).items()})
    return out


def job_args(bucket: str, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "jobs" / "compress_bucket.py"), "--input", f"s3://{bucket}/raw/",
            "--output", f"s3://{bucket}/archive/", "--quality", "0.4", "--batch-size", "1", *extra]


def assert_exactly_once(s3_server, bucket: str, expected: set[str]) -> None:
    archive = Archive(f"s3://{bucket}/archive/", None)
    stats = archive.committed_table("stats", ["key", "status"]).to_pylist()
    records = archive.committed_table("records", ["key"]).to_pylist()
    counts = Counter(r["key"] for r in stats)
    assert set(counts) == expected, "every input has a stats row"
    assert max(counts.values()) == 1, "no duplicates in stats"
    errors = [r for r in archive.committed_table("stats", ["key", "status", "error"]).to_pylist() if r["status"] != "ok"]
    assert not errors, errors[:3]
    rec_counts = Counter(r["key"] for r in records)
    assert set(rec_counts) == expected and max(rec_counts.values()) == 1, "one record per input"
    # nothing outside the manifests
    fs = s3_server.filesystem()
    committed = {archive.path(f) for m in archive.manifests() for f in m.files.values()}
    on_disk = {p for p in fs.find(f"{bucket}/archive") if p.endswith(".parquet") and "/_runs/" not in p
               and "/_quarantine/" not in p}
    assert on_disk == committed


def test_killed_replica_is_restarted_and_nothing_is_lost_or_doubled(s3_server, bucket, tmp_path, monkeypatch):
    objects = many_objects(2)
    upload(s3_server.filesystem(), bucket, "raw", objects)
    marker = tmp_path / "replica-died"
    env = {**os.environ, **s3_server.env, FAULT_ENV: f"3:{marker}"}
    r = subprocess.run(job_args(bucket), env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert marker.exists(), "the replica was killed mid-run"
    for k, v in s3_server.env.items():
        monkeypatch.setenv(k, v)
    assert_exactly_once(s3_server, bucket, {f"s3://{bucket}/raw/{k}" for k in objects})


LEASE_TTL_S = 30


def test_driver_killed_mid_run_then_rerun_completes_exactly_once(s3_server, bucket, monkeypatch, tmp_path):
    objects = many_objects(3)
    fs = s3_server.filesystem()
    upload(fs, bucket, "raw", objects)
    env = {**os.environ, **s3_server.env}
    log = open(tmp_path / "job.log", "w")
    # a TTL long enough that the early run below gets past its imports before the lease runs out on a busy machine
    args = job_args(bucket, "--segment-rows", "1", "--lease-ttl-s", str(LEASE_TTL_S))
    args[args.index("--quality") : args.index("--quality") + 2] = ["--target-psnr", "33"]  # slower: rows trickle in
    proc = subprocess.Popen(args, env=env, stdout=log, stderr=log,
                            start_new_session=True)
    deadline = time.time() + 600
    manifests = []
    while time.time() < deadline and proc.poll() is None:
        fs.invalidate_cache()
        manifests = fs.glob(f"{bucket}/archive/_manifests/*.json")
        if len(manifests) >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, (tmp_path / "job.log").read_text()[-3000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 2 <= len(manifests) < len(objects), "killed after some but not all segments committed"

    # the killed driver ran on this host and its PID is gone: its lease is dead now, not at its expiry
    # (pipeline.lease_holder), so the immediate rerun takes over at once and completes (no TTL wait)
    r = subprocess.run(job_args(bucket), env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "already archived" in r.stdout
    for k, v in s3_server.env.items():
        monkeypatch.setenv(k, v)
    assert_exactly_once(s3_server, bucket, {f"s3://{bucket}/raw/{k}" for k in objects})


def test_a_second_run_on_a_held_output_exits_5_and_the_first_completes_exactly_once(s3_server, bucket, monkeypatch,
                                                                                     tmp_path):
    objects = many_objects(2)
    fs = s3_server.filesystem()
    upload(fs, bucket, "raw", objects)
    env = {**os.environ, **s3_server.env}
    log = open(tmp_path / "first.log", "w")
    first = subprocess.Popen(job_args(bucket, "--run-id", "nightly-1"), env=env, stdout=log, stderr=log)
    deadline = time.time() + 300
    while time.time() < deadline and first.poll() is None:
        fs.invalidate_cache()
        if fs.glob(f"{bucket}/archive/_lease/*.json"):
            break
        time.sleep(0.2)
    second = subprocess.run(job_args(bucket, "--run-id", "backfill-1"), env=env, capture_output=True, text=True,
                            timeout=300)
    assert second.returncode == 5, second.stderr[-2000:]
    assert "nightly-1" in second.stderr and "Traceback" not in second.stderr
    assert first.wait(timeout=900) == 0, (tmp_path / "first.log").read_text()[-3000:]
    for k, v in s3_server.env.items():
        monkeypatch.setenv(k, v)
    assert_exactly_once(s3_server, bucket, {f"s3://{bucket}/raw/{k}" for k in objects})
    # a copy of the archive is an archive of its own: a rerun on it finds everything committed
    fs.copy(f"{bucket}/archive", f"{bucket}/copy", recursive=True)
    args = job_args(bucket)
    args[args.index("--output") + 1] = f"s3://{bucket}/copy/"
    rerun = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"{len(objects)} already archived" in rerun.stdout
    assert len(fs.find(f"{bucket}/copy/records")) == len(fs.find(f"{bucket}/archive/records"))


def test_an_image_that_kills_its_replica_becomes_a_crashed_row(s3_server, bucket, monkeypatch):
    objects = good_objects(0)
    upload(s3_server.filesystem(), bucket, "raw", objects)
    env = {**os.environ, **s3_server.env, FAULT_KEY_ENV: "c.webp"}
    r = subprocess.run(job_args(bucket, "--batch-size", "2"), env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    for k, v in s3_server.env.items():
        monkeypatch.setenv(k, v)
    rows = {row["key"].rsplit("/", 1)[-1]: row for row in
            Archive(f"s3://{bucket}/archive/").committed_table("stats", ["key", "status", "error_kind"]).to_pylist()}
    assert set(rows) == {k.rsplit("/", 1)[-1] for k in objects}
    assert rows["c.webp"]["error_kind"] == "crashed"
    assert all(r["status"] == "ok" for name, r in rows.items() if name != "c.webp")
    # the next run does not try it again (it would kill a replica twice more)
    r = subprocess.run(job_args(bucket), env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and f"{len(objects)} already archived" in r.stdout, r.stderr[-2000:]
