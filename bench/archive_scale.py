"""Archive scale: listing rate, commits/s, driver peak RSS and the no-op rerun, at N small objects.

    python bench/archive_scale.py [--n 20000] [--rows 8] [--out bench/results/archive_scale.json]

Through the Archive API on a local disk (no Ray, no codec: what the driver itself does per
object). Lists N tiny input files with pipeline.storage.iter_objects, commits their keys in
segments of --rows under one lease (so N/rows manifests, a checkpoint every 64), then times a
rerun with nothing new (lease, recovery, committed view, listing, diff) twice: with the
checkpoints, and with them removed (every manifest read, as before issue 28 item 7).
Writes the JSON and a .log next to it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devtools.archive_writer import segment  # noqa: E402
from pipeline.archive import CHECKPOINTS, STATS, Archive  # noqa: E402
from pipeline.storage import iter_objects  # noqa: E402


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_inputs(folder: Path, n: int) -> None:
    for i in range(n):
        sub = folder / f"d{i // 1000:04d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"img{i:07d}.png").write_bytes(b"x")


def list_inputs(folder: Path) -> tuple[list[str], float]:
    t = time.perf_counter()
    keys = sorted(o.key for o in iter_objects(str(folder), extensions=[".png"]))
    return keys, time.perf_counter() - t


def commit_all(out: str, keys: list[str], rows: int) -> float:
    archive = Archive(out)
    t = time.perf_counter()
    with archive.acquire_lease("bulk", 120) as lease:
        archive.check_new_run("bulk")
        for s, i in enumerate(range(0, len(keys), rows)):
            archive.commit_segment(lease, s, *segment(keys[i : i + rows], run_id="bulk"))
    return time.perf_counter() - t


def noop_rerun(out: str, folder: Path, run_id: str) -> dict:
    """A rerun with nothing new: everything listed is committed, so it commits nothing."""
    t = time.perf_counter()
    archive = Archive(out)
    reads = []
    real = archive.fs.cat_file
    archive.fs.cat_file = lambda p, *a, **k: reads.append(p) or real(p, *a, **k)
    with archive.acquire_lease(run_id, 120) as lease:
        archive.check_new_run(run_id)
        archive.recover(lease)
        done = set(archive.committed_table(STATS, ["key"])["key"].to_pylist())
        keys, _ = list_inputs(folder)
        todo = [k for k in keys if k not in done]
    return {"seconds": round(time.perf_counter() - t, 2), "todo": len(todo),
            "manifest_reads": sum("/_manifests/" in p for p in reads), "object_reads": len(reads)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--out", default=str(ROOT / "bench/results/archive_scale.json"))
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="archive_scale_"))
    try:
        folder, out = tmp / "in", str(tmp / "out")
        make_inputs(folder, args.n)
        rss0 = rss_mb()
        keys, list_s = list_inputs(folder)
        commit_s = commit_all(out, keys, args.rows)
        commits = -(-args.n // args.rows)
        rss_commit = rss_mb()
        with_ckpt = noop_rerun(out, folder, "rerun-1")
        shutil.rmtree(os.path.join(out, CHECKPOINTS))
        without = noop_rerun(out, folder, "rerun-2")
        result = {
            "n_objects": args.n, "segment_rows": args.rows, "commits": commits, "storage": "local disk",
            "listing_objects_per_s": round(args.n / list_s), "commits_per_s": round(commits / commit_s, 1),
            "keys_per_s": round(args.n / commit_s), "commit_seconds": round(commit_s, 1),
            "rss_mb_before": round(rss0), "rss_mb_after_commits": round(rss_commit), "rss_mb_peak": round(rss_mb()),
            "noop_rerun_with_checkpoints": with_ckpt, "noop_rerun_without_checkpoints": without,
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    text = json.dumps(result, indent=1)
    print(text)
    Path(args.out).write_text(text + "\n")
    Path(args.out).with_suffix(".log").write_text(" ".join(sys.argv) + "\n" + text + "\n")


if __name__ == "__main__":
    main()
