"""Fencing (issue 28 item 2): a writer that lost its lease while paused never makes the archive worse.

A takeover records a fence (the highest committed sequence) in its lease; a manifest of an older
generation above it is never committed, its files count as unnamed, and a create-only conflict
with it makes the new holder take the next sequence.
"""

import json
import os
import signal
import time

import pytest

from devtools.archive_writer import keys, write
from pipeline import archive as archive_mod
from pipeline.archive import MANIFESTS, QUARANTINE, STATS, Archive
from pipeline.storage import put_if_absent
from tests.test_archive_safety import commit_run, committed_keys, segment


def _stale_manifest(archive: Archive, generation: int, seq: int, run_id: str, segment_no: int) -> None:
    """What a paused writer's in-flight manifest PUT leaves once it lands."""
    body = {"run_id": run_id, "segment": segment_no, "generation": generation, "commit_seq": seq,
            "committed_at": "2026-12-07T00:00:00+00:00", "rows": 1, "records": 1,
            "files": archive.segment_files(run_id, segment_no), "record_keys": ["x", "x"], "stats_keys": ["x", "x"]}
    assert put_if_absent(archive.fs, archive.manifest_path(seq), json.dumps(body).encode())


def test_a_stale_generations_manifest_is_fenced_and_its_sequence_skipped(tmp_path):
    root = str(tmp_path / "out")
    a = Archive(root).acquire_lease("run-a", ttl_s=0.3)
    a.archive.commit_segment(a, 0, *segment(["k1"], run_id="run-a"))  # commit 0, generation 1
    a.archive._write_parquet(a.archive.path(a.archive.segment_files("run-a", 1)[STATS]), segment(["x"])[1])
    a._stop.set()
    time.sleep(0.4)
    b_archive = Archive(root)
    b = b_archive.acquire_lease("run-b", ttl_s=60)
    assert b.fences == {1: -1, 2: 0}  # each generation: the highest commit it took over at
    _stale_manifest(b_archive, 1, 1, "run-a", 1)  # run-a wakes up: its manifest for commit 1 lands
    b_archive._manifests = None
    assert [m.commit_seq for m in b_archive.fenced] == [] and [m.commit_seq for m in b_archive.manifests()] == [0]
    assert [m.commit_seq for m in b_archive.fenced] == [1]
    assert b_archive.unnamed_files() == [b_archive.path(b_archive.segment_files("run-a", 1)[STATS])]
    m = b_archive.commit_segment(b, 0, *segment(["k2"], run_id="run-b"))  # seq 1 is taken: the next one
    assert m.commit_seq == 2 and m.generation == 2
    b.release()
    reader = Archive(root)
    assert committed_keys(reader) == ["k1", "k2"] and [m.commit_seq for m in reader.fenced] == [1]
    assert [m.commit_seq for m in reader.committed()] == [0, 2]


def test_manifests_without_a_generation_stay_committed(tmp_path):
    root = str(tmp_path / "out")
    commit_run(Archive(root), "run-a", ["k1"])
    path = os.path.join(root, MANIFESTS, "000000000000.json")
    body = json.load(open(path))
    del body["generation"]  # as written before fencing existed
    json.dump(body, open(path, "w"))
    commit_run(Archive(root), "run-b", ["k2"])
    assert committed_keys(Archive(root)) == ["k1", "k2"]


def test_a_paused_writer_woken_after_a_takeover_is_fenced(tmp_path, paused_writer, monkeypatch):
    """The issue's scenario: A frozen with commit 1's manifest PUT in flight, B takes over and
    quarantines A's uncommitted files, A lands its manifest and must exit 5; B commits after it."""
    root, n, rows = str(tmp_path / "out"), 15, 5
    a = paused_writer(root, "run-a", 2.0, n, rows, segment=1)  # commit 0 done, commit 1's files written
    time.sleep(2.3)  # A's lease (TTL 2 s) runs out while it is frozen
    monkeypatch.setattr(archive_mod, "MAX_INFLIGHT_PUT_S", 1.0)  # A's files are older than that
    b = Archive(root)
    lease = b.acquire_lease("run-b", ttl_s=30)
    moved = b.recover(lease)
    assert len(moved) == 2, "A's commit-1 files were quarantined"
    a.send_signal(signal.SIGCONT)
    assert a.wait(15) == 5, "the stale writer exits with the lease-lost code"
    assert "taken over" in a.stderr.read()
    after = Archive(root)
    after.manifests()
    assert [(m.run_id, m.commit_seq) for m in after.fenced] == [("run-a", 1)], "A's manifest landed, fenced"
    done = set(b.committed_table(STATS, ["key"])["key"].to_pylist())
    todo = [k for k in keys(n) if k not in done]
    for i in range(0, len(todo), rows):
        b.commit_segment(lease, i // rows, *segment(todo[i : i + rows], run_id="run-b"))
    lease.release()

    reader = Archive(root)
    assert committed_keys(reader) == keys(n), "every key exactly once"
    quarantined = {p.split(f"/{QUARANTINE}/run-b/", 1)[1] for p in moved}
    assert not any(set(m.files.values()) & quarantined for m in reader.committed())
    assert reader.problems == []
    write(Archive(root), "run-c", 30, n, rows)  # a rerun: nothing to do, and it moves A's fenced leftovers
    assert committed_keys(Archive(root)) == keys(n)


@pytest.mark.parametrize("kind", ["released", "dead"])
def test_recovery_moves_every_unnamed_file_when_no_older_holder_can_be_writing(tmp_path, kind):
    root = str(tmp_path / "out")
    commit_run(Archive(root), "run-a", ["k1"])
    leftover = Archive(root)
    leftover._write_parquet(leftover.path(leftover.segment_files("run-x", 0)[STATS]), segment(["x"])[1])
    if kind == "dead":  # a holder whose process is gone, on this host: no PUT of it can be in flight
        held = Archive(root).acquire_lease("run-d", ttl_s=60)
        held._stop.set()
        held.owner = held.owner.split(":")[0] + ":999999999:dead"
        from pipeline.storage import put_atomic

        put_atomic(held.archive.fs, held.path, held.body())
    archive = Archive(root)
    with archive.acquire_lease("run-c") as lease:
        assert len(archive.recover(lease)) == 1
