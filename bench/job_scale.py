"""The archival job at scale (issue 28 item 7): N tiny distinct images through jobs/compress_bucket.py in one run.

    python bench/job_scale.py [--n 100000 | --quick] [--batch-size 128] [--out bench/results/job_scale.json]

Where bench/archive_scale.py drives the Archive API alone, this runs the real job (its own
process, Ray started in-process by it, one codec replica) on a local disk: N distinct 16×16 PNGs
in folders of 1,000 as input, a local folder as output, ``--quality 0.5 --no-verify`` (the codec's
own speed is not what is measured). It samples the driver's peak RSS (VmHWM) and the RSS of the
Ray processes under it twice a second, times the input listing (pipeline.storage.iter_objects,
what the job lists with), then reruns the job with nothing new, and checks that every key is
committed exactly once. Prints a table, writes the JSON and a .log next to it.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

SIDE = 16


def tiny_png(i: int) -> bytes:
    """A distinct SIDE×SIDE RGB PNG: a smooth gradient shifted by ``i``, with ``i``'s bytes in the first pixels."""
    from PIL import Image

    y, x = np.mgrid[0:SIDE, 0:SIDE]
    img = np.stack([(x * 13 + i) % 256, (y * 11 + i // 7) % 256, ((x + y) * 5 + i // 61) % 256], axis=-1).astype(np.uint8)
    img[0, :4, 0] = list(i.to_bytes(4, "big"))
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def make_inputs(folder: Path, n: int) -> int:
    """N PNGs under folder/dNNNN/ (1,000 a folder); returns their total size in bytes."""
    total = 0
    for i in range(n):
        sub = folder / f"d{i // 1000:04d}"
        if i % 1000 == 0:
            sub.mkdir(parents=True, exist_ok=True)
        data = tiny_png(i)
        (sub / f"img{i:07d}.png").write_bytes(data)
        total += len(data)
    return total


def _status_kb(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _descendants(pid: int) -> list[int]:
    """Every process under ``pid`` (read from /proc: no psutil or procps needed)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


class RssSampler(threading.Thread):
    """Peak RSS of one process (its kernel high-water mark, VmHWM) and of the processes under it (Ray's)."""

    def __init__(self, pid: int, every_s: float = 0.5):
        super().__init__(daemon=True)
        self.pid, self.every_s, self.stop = pid, every_s, threading.Event()
        self.driver_kb = self.workers_sum_kb = self.worker_max_kb = 0

    def run(self) -> None:
        while not self.stop.is_set():
            self.driver_kb = max(self.driver_kb, _status_kb(self.pid, "VmHWM"))
            rss = [_status_kb(p, "VmRSS") for p in _descendants(self.pid)]
            if rss:
                self.workers_sum_kb = max(self.workers_sum_kb, sum(rss))
                self.worker_max_kb = max(self.worker_max_kb, max(rss))
            self.stop.wait(self.every_s)


@dataclass
class JobRun:
    exit_code: int
    wall_s: float
    driver_peak_rss_mb: float
    ray_processes_peak_rss_mb_sum: float
    ray_process_peak_rss_mb_max: float
    summary: dict  # the run's _runs/RUN/summary.json
    stdout_tail: str
    stderr_tail: str


def run_job(args: list[str], output: Path, run_id: str) -> JobRun:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env.update(RAY_USAGE_STATS_ENABLED="0", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(ROOT / "jobs/compress_bucket.py"), *args, "--run-id", run_id],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    sampler = RssSampler(proc.pid)
    sampler.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - t
    sampler.stop.set()
    sampler.join()
    summary_path = output / "_runs" / run_id / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    return JobRun(proc.returncode, round(wall, 1), round(sampler.driver_kb / 1024), round(sampler.workers_sum_kb / 1024),
                  round(sampler.worker_max_kb / 1024), summary, out[-1500:], err[-1500:])


def listing_rate(folder: Path) -> float:
    from pipeline.storage import iter_objects

    t = time.perf_counter()
    n = sum(1 for _ in iter_objects(str(folder), extensions=[".png"]))
    return n / (time.perf_counter() - t)


def exactly_once(output: Path, n: int) -> dict:
    """Every input has one committed stats row and one record, and each is ok."""
    from pipeline.archive import Archive

    archive = Archive(str(output))
    stats = archive.committed_table("stats", ["key", "status"])
    keys = stats["key"].to_pylist()
    records = archive.committed_table("records", ["key"])["key"].to_pylist()
    return {"stats_rows": len(keys), "distinct_keys": len(set(keys)), "records": len(records),
            "ok": sum(s == "ok" for s in stats["status"].to_pylist()), "expected": n,
            "exactly_once": len(keys) == len(set(keys)) == len(records) == len(set(records)) == n}


def report(r: dict) -> str:
    first, rerun = r["first_run"], r["rerun"]
    s = first["summary"]
    rows = [
        ("objects", f"{r['n_objects']:,} PNGs of {SIDE}×{SIDE} ({r['input_mb']:.1f} MB), local disk"),
        ("job options", " ".join(r["job_args"])),
        ("listing (iter_objects)", f"{r['listing_objects_per_s']:,.0f} objects/s"),
        ("first run", f"exit {first['exit_code']}, {first['wall_s']:,.1f} s wall, {s.get('processed', 0):,} processed, "
                      f"{s.get('errors', 0)} errors"),
        ("commits", f"{s.get('segments', 0):,} ({r['commits_per_s']:.2f}/s)"),
        ("keys/s", f"{r['keys_per_s']:.1f} (over the job's wall time)"),
        ("driver peak RSS", f"{first['driver_peak_rss_mb']:,.0f} MB"),
        ("Ray processes peak RSS", f"{first['ray_processes_peak_rss_mb_sum']:,.0f} MB in all, "
                                    f"largest {first['ray_process_peak_rss_mb_max']:,.0f} MB"),
        ("rerun, nothing new", f"exit {rerun['exit_code']}, {rerun['wall_s']:.1f} s wall "
                               f"({r['rerun_s_per_1e5_keys']:.1f} s per 10^5 keys), "
                               f"{rerun['summary'].get('skipped_committed', 0):,} already archived, "
                               f"driver peak RSS {rerun['driver_peak_rss_mb']:,.0f} MB"),
        ("exactly once", f"{r['check']['exactly_once']} ({r['check']['distinct_keys']:,} keys, "
                         f"{r['check']['records']:,} records, {r['check']['ok']:,} ok)"),
    ]
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{w}}  {v}" for k, v in rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--quick", action="store_true", help="2,000 objects (a few minutes)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    n = 2000 if a.quick else a.n
    out_json = a.out or ROOT / "bench/results" / ("job_scale_quick.json" if a.quick else "job_scale.json")
    tmp = Path(tempfile.mkdtemp(prefix="job_scale_"))
    try:
        folder, output = tmp / "in", tmp / "out"
        t = time.perf_counter()
        input_bytes = make_inputs(folder, n)
        print(f"{n} inputs written in {time.perf_counter() - t:.0f} s", flush=True)
        rate = listing_rate(folder)
        job_args = ["--input", f"{folder}/", "--output", f"{output}/", "--quality", "0.5", "--no-verify",
                    "--batch-size", str(a.batch_size)]
        load0 = os.getloadavg()
        first = run_job(job_args, output, "scale-1")
        print(f"first run: exit {first.exit_code} in {first.wall_s} s", flush=True)
        rerun = run_job(job_args, output, "scale-2")
        check = exactly_once(output, n)
        segments = first.summary.get("segments", 0)
        result = {
            "n_objects": n, "input_mb": input_bytes / 1e6, "storage": "local disk (input and output)",
            "job_args": [x for x in job_args if not x.startswith(str(tmp))], "cpu_count": os.cpu_count(),
            "load_avg_start": load0, "load_avg_end": os.getloadavg(),
            "listing_objects_per_s": round(rate), "commits_per_s": round(segments / first.wall_s, 3),
            "keys_per_s": round(first.summary.get("processed", 0) / first.wall_s, 1),
            "rerun_s_per_1e5_keys": round(rerun.wall_s * 1e5 / n, 1),
            "first_run": asdict(first), "rerun": asdict(rerun), "check": check,
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    table = report(result)
    print(table)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(result, indent=1) + "\n")
    out_json.with_suffix(".log").write_text(" ".join(sys.argv) + "\n" + table + "\n")
    if first.exit_code or rerun.exit_code or not check["exactly_once"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
