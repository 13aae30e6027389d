"""What overlapping entropy coding with the transforms buys, measured A/B on one mosaic.

    python bench/overlap_ab.py [--image kodak|aerial] [--rounds 3] [--threads 2] [--entropy-workers 0]

Alternates ``overlap_coding=False`` and ``True`` (ABBA order, so a drifting machine load hits
both alike) for a quality-0.5 encode, a target-38 encode and a decode of the
``bench/speed.py`` mosaic, and prints the median wall and CPU seconds of each, their ratio,
and the load average. Checks the streams and pixels are identical both ways.
Writes ``overlap_ab.json`` / ``.log`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import codec  # noqa: E402
from speed import commit, cpu_seconds, mosaics  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image", default="kodak")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--entropy-workers", type=int, default=0)
    ap.add_argument("--crop", type=int, help="use only the top-left crop×crop of the mosaic (a quicker check)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    img = mosaics()[a.image]
    if a.crop:
        img = np.ascontiguousarray(img[: a.crop, : a.crop])
    model = codec.load_model("default")
    mp = img.shape[0] * img.shape[1] / 1e6
    data = codec.encode(img, model, target_psnr=38.0).data
    jobs = {"encode quality 0.5": lambda o: codec.encode(img, model, quality=0.5, **o).data,
            "encode target 38": lambda o: codec.encode(img, model, target_psnr=38.0, **o).data,
            "decode": lambda o: codec.decode(data, model, **o).tobytes()}
    times = {(j, ov): [] for j in jobs for ov in (False, True)}
    outputs: dict = {}
    load = [os.getloadavg()[0]]
    for r in range(a.rounds):
        for ov in ((False, True) if r % 2 == 0 else (True, False)):
            opts = {"overlap_coding": ov, "entropy_workers": a.entropy_workers}
            for name, fn in jobs.items():
                c, t = cpu_seconds(), time.perf_counter()
                out = fn(opts)
                times[name, ov].append((time.perf_counter() - t, cpu_seconds() - c))
                if outputs.setdefault(name, out) != out:
                    raise AssertionError(f"{name}: overlap_coding={ov} gave other bytes")
        load.append(os.getloadavg()[0])
        print(f"round {r + 1}/{a.rounds} done (load average {load[-1]:.2f})", flush=True)
    res = {"commit": commit(), "image": a.image, "crop": a.crop, "megapixels": mp, "threads": a.threads,
           "entropy_workers": a.entropy_workers, "rounds": a.rounds, "load_avg": load, "jobs": {}}
    lines = [f"commit {res['commit']}, {a.image} mosaic{f' (top-left {a.crop}²)' if a.crop else ''} ({mp:.1f} MP), {a.threads} torch threads, "
             f"entropy_workers {a.entropy_workers}, {a.rounds} ABBA rounds, load average "
             + " → ".join(f"{v:.2f}" for v in load)]
    for name in jobs:
        off = np.median([w for w, _ in times[name, False]]), np.median([c for _, c in times[name, False]])
        on = np.median([w for w, _ in times[name, True]]), np.median([c for _, c in times[name, True]])
        res["jobs"][name] = {"off_wall_s": off[0], "on_wall_s": on[0], "off_cpu_s": off[1], "on_cpu_s": on[1],
                             "off_mp_s": mp / off[0], "on_mp_s": mp / on[0], "speedup": off[0] / on[0]}
        lines.append(f"  {name:20s} no overlap {mp / off[0]:6.3f} MP/s ({off[0]:.2f} s wall, {off[1]:.2f} s CPU)   "
                     f"overlap {mp / on[0]:6.3f} MP/s ({on[0]:.2f} s wall, {on[1]:.2f} s CPU)   ×{off[0] / on[0]:.3f}")
    text = "\n".join(lines) + "\n"
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "overlap_ab.json").write_text(json.dumps(res, indent=1))
    (a.out / "overlap_ab.log").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
