"""The driver's memory when it commits one large record (a whole scene coded losslessly), local-disk archive.

    python bench/commit_memory.py [--mb 512 1024]

Builds the segment's tables from one row of MB random bytes, as the segment writer does, commits it, and
samples the process's RSS every 10 ms: peak over the row's own bytes (each size in a fresh process, since
Arrow's memory pool keeps what it allocated). Writes bench/results/commit_memory.{json,log}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pyarrow as pa  # noqa: E402

from pipeline.archive import Archive  # noqa: E402
from pipeline.schema import RECORD_SCHEMA, STATS_SCHEMA  # noqa: E402


def rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Peak(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.value = 0.0

    def run(self):
        while True:
            self.value = max(self.value, rss_mb())
            time.sleep(0.01)


def commit_one(mb: int) -> dict:
    blob = os.urandom(mb << 20)
    peak = Peak()
    peak.start()
    time.sleep(0.2)
    base = peak.value = rss_mb()
    archive = Archive(tempfile.mkdtemp(prefix="commit_memory_"))
    t = time.perf_counter()
    with archive.acquire_lease("bench", 120) as lease:
        archive.check_new_run("bench")
        records = pa.Table.from_pylist([{"key": "scene", "version": "v1", "bitstream": blob, "run_id": "bench"}],
                                       schema=RECORD_SCHEMA)
        stats = pa.Table.from_pylist([{"key": "scene", "version": "v1", "status": "ok", "run_id": "bench",
                                       "timestamp": datetime.now(timezone.utc)}], schema=STATS_SCHEMA)
        archive.commit_segment(lease, 0, records, stats)
    seconds = time.perf_counter() - t
    time.sleep(0.1)
    return {"record_mb": mb, "rss_before_mb": base, "peak_mb": peak.value, "over_record": (peak.value - base) / mb,
            "seconds": seconds}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, nargs="+", default=[512, 1024])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "commit_memory.json")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child measuring one size in a fresh process
    a = ap.parse_args()
    if a.one:
        print(json.dumps(commit_one(a.one)))
        return
    import subprocess

    rows = [json.loads(subprocess.run([sys.executable, __file__, "--one", str(mb)], check=True, capture_output=True,
                                      text=True).stdout.splitlines()[-1]) for mb in a.mb]
    lines = ["committing one large record (local disk): the driver's peak RSS over its bytes"]
    lines += [f"  {r['record_mb']:>5} MB record: RSS {r['rss_before_mb']:.0f} → peak {r['peak_mb']:.0f} MB "
              f"(+{r['peak_mb'] - r['rss_before_mb']:.0f} MB = {r['over_record']:.1f}× the record), {r['seconds']:.1f} s"
              for r in rows]
    text = "\n".join(lines) + "\n"
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(rows, indent=1))
    a.out.with_suffix(".log").write_text(text)
    print(text + f"wrote {a.out}")


if __name__ == "__main__":
    main()
