"""Checkpoints (issue 28 item 7): a start reads the newest checkpoint and the manifests after it.

Same committed view as reading every manifest, with a bounded number of object reads.
"""

import os

from pipeline import checkpoint
from pipeline.archive import CHECKPOINTS, MANIFESTS, Archive
from tests.test_archive_safety import committed_keys, segment


def _commit(root: str, run_id: str, n: int, first: int = 0) -> None:
    archive = Archive(root)
    with archive.acquire_lease(run_id, 60) as lease:
        archive.check_new_run(run_id)
        for i in range(n):
            archive.commit_segment(lease, i, *segment([f"k{first + i:04d}"], run_id=run_id))


def _reads(archive: Archive, monkeypatch) -> list[str]:
    real, calls = archive.fs.cat_file, []

    def counted(path, *a, **k):
        calls.append(path)
        return real(path, *a, **k)

    monkeypatch.setattr(archive.fs, "cat_file", counted)
    return calls


def test_a_start_reads_the_newest_checkpoint_and_the_manifests_after_it(tmp_path, monkeypatch):
    root, n = str(tmp_path / "out"), checkpoint.EVERY * 2 + 5
    _commit(root, "run-a", n)
    assert sorted(os.listdir(os.path.join(root, CHECKPOINTS))) == ["000000000063.parquet", "000000000127.parquet"]
    archive = Archive(root)
    reads = _reads(archive, monkeypatch)
    view = committed_keys(archive)
    assert view == [f"k{i:04d}" for i in range(n)]
    manifest_reads = [p for p in reads if f"/{MANIFESTS}/" in p]
    assert len(manifest_reads) == 5 and len(reads) <= 5 + 1 + 1 + 2  # + checkpoint + lease + the parquet files' footers
    monkeypatch.undo()

    for name in os.listdir(os.path.join(root, CHECKPOINTS)):
        os.remove(os.path.join(root, CHECKPOINTS, name))
    full = Archive(root)
    assert committed_keys(full) == view and full.manifests() == archive.manifests()
    assert Archive(root).next_commit_seq() == n


def test_a_torn_checkpoint_falls_back_to_the_manifests(tmp_path):
    root = str(tmp_path / "out")
    _commit(root, "run-a", checkpoint.EVERY + 1)
    with open(os.path.join(root, CHECKPOINTS, "000000000063.parquet"), "wb") as f:
        f.write(b"not parquet")
    archive = Archive(root)
    assert committed_keys(archive) == [f"k{i:04d}" for i in range(checkpoint.EVERY + 1)]
    assert any("checkpoint" in p for p in archive.problems)
