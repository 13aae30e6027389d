"""The archive's guarantees, checked on its API (local disk and a real S3 server).

Each test is one way the archive used to lose or misreport data: a relocated copy whose
recovery deleted every file, two runs on one output, a reused run id, a run whose name
sorted after newer runs, a torn manifest, a manifest whose files went missing.
"""

import json
import os
import shutil
import time
from datetime import datetime, timezone

import pyarrow as pa
import pytest

from pipeline.archive import (MANIFESTS, QUARANTINE, RECORDS, STATS, Archive, ArchiveError, LeaseHeldError,
                              LeaseLostError)
from pipeline.schema import RECORD_SCHEMA, STATS_SCHEMA


def segment(keys, version="v1", status="ok", run_id="r", kind=None):
    now = datetime.now(timezone.utc)
    stats = [{"key": k, "version": version, "status": status, "error_kind": kind, "run_id": run_id, "timestamp": now}
             for k in keys]
    records = [{"key": k, "version": version, "bitstream": f"{k}@{run_id}".encode(), "run_id": run_id}
               for k in keys] if status == "ok" else []
    return pa.Table.from_pylist(records, schema=RECORD_SCHEMA), pa.Table.from_pylist(stats, schema=STATS_SCHEMA)


def commit_run(archive: Archive, run_id: str, *segments, ttl=60.0):
    with archive.acquire_lease(run_id, ttl) as lease:
        archive.check_new_run(run_id)
        archive.recover(lease)
        for i, keys in enumerate(segments):
            archive.commit_segment(lease, i, *segment(keys, run_id=run_id))


def committed_keys(archive: Archive) -> list[str]:
    return sorted(archive.committed_table(STATS, ["key"])["key"].to_pylist())


def test_a_copied_archive_is_complete_and_independent(tmp_path):
    src = tmp_path / "bucket-a" / "archive"
    commit_run(Archive(str(src)), "night1", ["s3://raw/a.png", "s3://raw/b.png"], ["s3://raw/c.png"])
    dst = tmp_path / "bucket-b" / "copy"
    shutil.copytree(src, dst)
    shutil.rmtree(src)  # the copy must not read (or need) the original's files

    copy = Archive(str(dst))
    assert committed_keys(copy) == ["s3://raw/a.png", "s3://raw/b.png", "s3://raw/c.png"]
    with copy.acquire_lease("night2") as lease:
        assert copy.recover(lease) == []  # nothing of the copy looks orphaned
    assert len(list(dst.rglob("*.parquet"))) == 4
    assert copy.find_record("s3://raw/c.png")["bitstream"] == b"s3://raw/c.png@night1"


def test_an_archive_opened_through_a_symlink_loses_nothing(tmp_path):
    real = tmp_path / "real"
    commit_run(Archive(str(real)), "night1", ["k1", "k2"])
    link = tmp_path / "link"
    os.symlink(real, link)
    via_link = Archive(str(link))
    with via_link.acquire_lease("night2") as lease:
        assert via_link.recover(lease) == []
    assert committed_keys(Archive(str(real))) == ["k1", "k2"]


def test_manifests_with_absolute_paths_of_another_place_read_relative(tmp_path):
    """Archives written before relative paths: their manifests name the old absolute place."""
    a = Archive(str(tmp_path / "new-home"))
    rec, st = segment(["k1"], run_id="old")
    for kind, t in ((RECORDS, rec), (STATS, st)):
        a._write_parquet(a.path(kind, "run=old", "part-000000.parquet"), t)
    legacy = {"run_id": "old", "segment": 0, "committed_at": "2026-11-01T00:00:00+00:00", "rows": 1, "records": 1,
              "files": {RECORDS: "/mnt/old-home/records/run=old/part-000000.parquet",
                        STATS: "/mnt/old-home/stats/run=old/part-000000.parquet"}, "record_keys": ["k1", "k1"]}
    a.put(a.path(MANIFESTS, "old-000000.json"), json.dumps(legacy).encode())
    assert committed_keys(a) == ["k1"]
    with a.acquire_lease("next") as lease:
        assert a.recover(lease) == []


def test_a_second_run_on_a_held_output_is_refused_and_takes_over_only_after_expiry(tmp_path):
    archive = Archive(str(tmp_path / "out"))
    first = archive.acquire_lease("run-a", ttl_s=60)
    with pytest.raises(LeaseHeldError, match="run-a"):
        Archive(str(tmp_path / "out")).acquire_lease("run-b")
    # run-a dies without releasing: its lease stops being renewed and runs out
    first._stop.set()
    first.expires_at = time.time() - 1
    first.archive.put(first.path, first.body())
    second = Archive(str(tmp_path / "out")).acquire_lease("run-b", ttl_s=60)
    assert second.generation == first.generation + 1
    with pytest.raises(LeaseLostError):  # the old holder, should it wake up, may not commit
        archive.commit_segment(first, 0, *segment(["k"], run_id="run-a"))
    second.release()


def test_recovery_quarantines_uncommitted_files_and_keeps_committed_ones(tmp_path):
    root = tmp_path / "out"
    commit_run(Archive(str(root)), "run-a", ["k1"])
    # run-b wrote a segment's data files and died before its manifest
    dead = Archive(str(root))
    rec, st = segment(["k2"], run_id="run-b")
    dead._write_parquet(dead.path(RECORDS, "run=run-b", "part-000000.parquet"), rec)
    dead._write_parquet(dead.path(STATS, "run=run-b", "part-000000.parquet"), st)
    archive = Archive(str(root))
    with archive.acquire_lease("run-c") as lease:
        moved = archive.recover(lease)
    assert len(moved) == 2 and all(f"/{QUARANTINE}/run-c/" in m for m in moved)
    assert all(os.path.exists(m) for m in moved), "quarantined, not deleted"
    assert committed_keys(archive) == ["k1"]


def test_run_ids_are_checked_and_never_reused(tmp_path):
    archive = Archive(str(tmp_path / "out"))
    commit_run(archive, "night-1", ["k1"])
    with pytest.raises(ArchiveError, match="night-1"):
        commit_run(Archive(str(tmp_path / "out")), "night-1", ["k2"])
    assert committed_keys(Archive(str(tmp_path / "out"))) == ["k1"]
    with pytest.raises(ValueError, match="run id"):
        archive.acquire_lease("../escape")


def test_config_rejects_bad_run_ids():
    from pydantic import ValidationError

    from pipeline.config import CompressJobConfig

    for bad in ("a/b", "x y", "", "../up", "a'; drop table stats; --"):
        with pytest.raises(ValidationError):
            CompressJobConfig(input="s3://in/", output="s3://out/", run_id=bad)


def test_manifests_are_create_only(tmp_path):
    archive = Archive(str(tmp_path / "out"))
    with archive.acquire_lease("run-a") as lease:
        archive.commit_segment(lease, 0, *segment(["k1"], run_id="run-a"))
        archive._manifests = []  # a writer that believes the sequence is free
        with pytest.raises(LeaseLostError, match="another writer"):
            archive.commit_segment(lease, 1, *segment(["k2"], run_id="run-a"))
    assert committed_keys(Archive(str(tmp_path / "out"))) == ["k1"]


def test_latest_follows_commit_order_not_run_names(tmp_path):
    root = str(tmp_path / "out")
    commit_run(Archive(root), "20261122T020000Z-nightly", ["k"])
    with Archive(root).acquire_lease("backfill-old") as lease:  # sorts after every timestamped run
        Archive(root).commit_segment(lease, 0, *segment(["k"], version="v0", run_id="backfill-old"))
    commit_run(Archive(root), "20261123T020000Z-nightly", ["k"])
    archive = Archive(root)
    assert archive.find_record("k")["run_id"] == "20261123T020000Z-nightly"
    assert archive.latest_state(["k"]).to_pylist()[0]["version"] == "v1"
    assert archive.record_index()["run_id"].to_pylist() == ["20261123T020000Z-nightly"]


def test_torn_and_dangling_manifests_are_skipped_and_reported(tmp_path):
    root = str(tmp_path / "out")
    commit_run(Archive(root), "run-a", ["k1"], ["k2"])
    archive = Archive(root)
    names = sorted(os.listdir(tmp_path / "out" / MANIFESTS))
    (tmp_path / "out" / MANIFESTS / "999999999999.json").write_text('{"run_id": "x", "segm')  # a torn write
    second = json.loads((tmp_path / "out" / MANIFESTS / names[1]).read_text())
    os.remove(archive.path(second["files"][STATS]))  # someone deleted a committed file
    assert committed_keys(archive) == ["k1"]
    assert any("unreadable manifest" in p for p in archive.problems)
    assert any("missing" in p for p in archive.problems)
    commit_run(Archive(root), "run-b", ["k3"])  # and the next run still works
    assert committed_keys(Archive(root)) == ["k1", "k3"]


def test_two_writers_on_s3_cannot_both_hold_the_lease(s3_server, bucket, s3_env):
    url = f"s3://{bucket}/archive/"
    holder = Archive(url).acquire_lease("run-a", ttl_s=60)
    with pytest.raises(LeaseHeldError):
        Archive(url).acquire_lease("run-b")
    holder.archive.commit_segment(holder, 0, *segment(["k1"], run_id="run-a"))
    holder.release()
    commit_run(Archive(url), "run-b", ["k2"])
    copy_url = f"s3://{bucket}/copy/"
    fs = Archive(url).fs
    fs.copy(f"{bucket}/archive", f"{bucket}/copy", recursive=True)
    fs.rm(f"{bucket}/archive", recursive=True)
    assert committed_keys(Archive(copy_url)) == ["k1", "k2"]
