"""Recovery never quarantines what a manifest may name (issue 28 item 1), and check/repair.

A manifest that cannot be read (a storage error) stops recovery before any file moves; a torn
one keeps every unnamed file; repair moves quarantined files a manifest names back.
"""

import errno
import os
import shutil

import pytest

from pipeline import retry
from pipeline.archive import MANIFESTS, QUARANTINE, RECORDS, STATS, Archive, ArchiveUnreadableError
from pipeline.archive_check import check, main
from tests.test_archive_safety import commit_run, committed_keys, segment


def _orphans(root: str) -> list[str]:
    """A dead run-b's data files, written without a manifest."""
    dead = Archive(root)
    rec, st = segment(["k9"], run_id="run-b")
    paths = [dead.path(RECORDS, "run=run-b", "part-000000.parquet"), dead.path(STATS, "run=run-b", "part-000000.parquet")]
    dead._write_parquet(paths[0], rec)
    dead._write_parquet(paths[1], st)
    return paths


@pytest.fixture
def short_budget():
    before = retry.WRITE_RETRY
    retry.set_write_budget(3.0)  # room for two retries (backoff 0.25–0.5 s, 0.5–1 s)
    yield
    retry.WRITE_RETRY = before


def test_a_manifest_that_stays_unreadable_stops_recovery_before_anything_moves(tmp_path, monkeypatch, short_budget):
    root = str(tmp_path / "out")
    commit_run(Archive(root), "run-a", ["k1"], ["k2"])
    orphans = _orphans(root)
    archive = Archive(root)
    real_cat, calls = archive.fs.cat_file, []

    def flaky(path, *a, **k):
        if path.endswith(f"{MANIFESTS}/000000000001.json"):
            calls.append(path)
            raise OSError(errno.ECONNRESET, "connection reset by peer")
        return real_cat(path, *a, **k)

    monkeypatch.setattr(archive.fs, "cat_file", flaky)
    with pytest.raises(ArchiveUnreadableError, match="000000000001"):  # at the takeover: its fence needs it
        with archive.acquire_lease("run-c") as lease:
            archive.recover(lease)
    assert len(calls) > 1, "retried before giving up"
    assert all(os.path.exists(p) for p in orphans) and not os.path.exists(os.path.join(root, QUARANTINE))

    monkeypatch.undo()
    assert committed_keys(Archive(root)) == ["k1", "k2"]


def test_a_transient_read_failure_is_retried_and_nothing_committed_moves(tmp_path, monkeypatch, short_budget):
    root = str(tmp_path / "out")
    commit_run(Archive(root), "run-a", ["k1"], ["k2"])
    archive = Archive(root)
    real_cat, fails = archive.fs.cat_file, [2]

    def brief_hiccup(path, *a, **k):
        if path.endswith(f"{MANIFESTS}/000000000001.json") and fails[0]:
            fails[0] -= 1
            raise TimeoutError("read timed out")
        return real_cat(path, *a, **k)

    monkeypatch.setattr(archive.fs, "cat_file", brief_hiccup)
    with archive.acquire_lease("run-c") as lease:
        assert archive.recover(lease) == []
    assert committed_keys(Archive(root)) == ["k1", "k2"]


def test_a_torn_manifest_keeps_every_unnamed_file(tmp_path):
    root = str(tmp_path / "out")
    commit_run(Archive(root), "run-a", ["k1"])
    orphans = _orphans(root)
    (tmp_path / "out" / MANIFESTS / "000000000005.json").write_text('{"run_id": "run-b", "segm')
    archive = Archive(root)
    with archive.acquire_lease("run-c") as lease:
        assert archive.recover(lease) == []
    assert all(os.path.exists(p) for p in orphans)
    assert any("torn manifest" in p for p in archive.problems)
    assert check(Archive(root)).torn == ["000000000005.json"]
    assert main(["check", root]) == 3


def test_repair_moves_quarantined_files_a_manifest_names_back(tmp_path, capsys):
    root = str(tmp_path / "out")
    commit_run(Archive(root), "run-a", ["k1"], ["k2"])
    archive = Archive(root)
    lost = archive.committed()[1].files  # as the recovery did: a committed segment quarantined
    for rel in lost.values():
        dest = archive.quarantine_path("run-x", rel)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.move(archive.path(rel), dest)
    assert committed_keys(Archive(root)) == ["k1"]
    assert main(["check", root]) == 3
    assert "in quarantine" in capsys.readouterr().out
    assert main(["repair", root]) == 0
    assert committed_keys(Archive(root)) == ["k1", "k2"]
    assert check(Archive(root)).clean


def _taken_over(root: str):
    """run-a's lease (its renewals stopped, believing itself valid) and run-b's, which took over after expiry."""
    import time

    a = Archive(root).acquire_lease("run-a", ttl_s=0.3)
    a._stop.set()
    time.sleep(0.4)
    b = Archive(root).acquire_lease("run-b", ttl_s=60)
    a.expires_at = time.time() + 60  # a paused writer's stale belief: no renewal due
    return a, b


def _newest_lease_unreadable(monkeypatch, archive: Archive, failures: int | None = None):
    real_cat, left = archive.fs.cat_file, [failures]

    def flaky(path, *a, **k):
        if path.endswith("_lease/000000000002.json") and (left[0] is None or left[0] > 0):
            if left[0] is not None:
                left[0] -= 1
            raise OSError(errno.ECONNRESET, "connection reset by peer")
        return real_cat(path, *a, **k)

    monkeypatch.setattr(archive.fs, "cat_file", flaky)


def test_a_writer_that_cannot_read_the_newest_lease_has_lost_it(tmp_path, monkeypatch, short_budget):
    from pipeline.archive import LeaseLostError

    a, b = _taken_over(str(tmp_path / "out"))
    _newest_lease_unreadable(monkeypatch, a.archive)  # no falling back to run-a's older generation
    with pytest.raises(LeaseLostError, match="cannot read the current lease"):
        a.check()
    b.release()


def test_a_lease_read_hiccup_within_the_budget_is_not_a_lost_lease(tmp_path, monkeypatch, short_budget):
    a, b = _taken_over(str(tmp_path / "out"))
    a.release()
    _newest_lease_unreadable(monkeypatch, b.archive, failures=2)
    b.check()  # retried, still the holder
    assert b.lost is None
    b.release()
