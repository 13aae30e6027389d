"""Encode effort (issue 24): which refinement settings lower the real rate-distortion objective most.

    python bench/effort_method.py [--iterations 1000] [--crops 4] [--qualities 0.3 0.8]
                                  [--settings 0.02:constant 0.02:cosine:0.05] [--out bench/results]

Training photos only (``train-natural``; never Kodak, which is for evaluation): the central 128² of a few
images, at each quality, refined as one batch by ``codec.families.hyperprior.refine.refine`` with each
setting (learning rate : schedule [: final SGA temperature]). Per setting: the change of the real objective
(estimated code length per pixel + λ·MSE, the quantity ``refine_batch`` compares), of the estimated bits
and of PSNR against the unrefined latents, and the seconds, printed as they come. Results:
``effort_method.json`` under ``--out``, merged per (iterations, quality, setting); the printed lines are
kept by redirecting them (bench/results/effort_method_*.log).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "train-natural"
CROP = 128


def crops(n: int) -> tuple[list[str], np.ndarray]:
    """The central 128² of ``n`` training photos spread over the set's folders, (n, 3, 128, 128) uint8."""
    from PIL import Image

    paths = sorted(DATA.rglob("*.png"))
    picked = paths[:: max(1, len(paths) // n)][:n]
    out = []
    for p in picked:
        img = np.asarray(Image.open(p).convert("RGB"))
        h, w = img.shape[:2]
        out.append(img[h // 2 - CROP // 2 : h // 2 + CROP // 2, w // 2 - CROP // 2 : w // 2 + CROP // 2])
    return [str(p.relative_to(DATA)) for p in picked], np.stack(out).transpose(0, 3, 1, 2).copy()


def run(iterations: int, n_crops: int, qualities: list[float], settings: list[tuple[float, str, float]]) -> list[dict]:
    import torch

    import codec
    from codec.families.hyperprior import refine
    from codec.families.hyperprior.engine import Batch, get_coder
    from codec.quality import code_of, q_tensor

    torch.manual_seed(0)
    _, engine = get_coder(codec.load_model("default"))
    names, tiles = crops(n_crops)
    print(f"# {len(names)} crops: {', '.join(names)}", flush=True)
    originals = torch.from_numpy(tiles)
    masks = torch.ones(len(tiles), CROP, CROP)
    npix = np.full(len(tiles), CROP * CROP, dtype=np.float64)
    y = engine.analyse(engine.as_float(originals))
    batch = Batch(list(range(len(tiles))), y, originals, masks, npix)
    x, weight = refine.targets(engine, batch)
    rows = []
    for quality in qualities:
        codes = np.full(len(tiles), code_of(quality))
        q = q_tensor(codes)
        lam = engine.model.lmbda(q)
        lam_np = lam.double().numpy()
        plain = engine.measure(batch.y, codes, batch.originals, batch.masks)
        obj0 = refine.objective(engine, plain, batch, lam_np)
        bits0 = engine.estimate_bits(plain.latents) / npix
        print(f"q={quality} plain obj={obj0.mean():.4f} bpp={bits0.mean():.4f} psnr={plain.psnr.mean():.2f}", flush=True)
        for lr, schedule, tau_end in settings:
            t0 = time.perf_counter()
            r = refine.refine(engine.model, batch.y, x, weight, q, lam, iterations, lr=lr, lr_schedule=schedule,
                              tau_end=tau_end)
            seconds = time.perf_counter() - t0
            m = engine.measure(r.y, codes, batch.originals, batch.masks, z_hat=r.z_hat)
            obj = refine.objective(engine, m, batch, lam_np)
            bits = engine.estimate_bits(m.latents) / npix
            row = {"iterations": iterations, "quality": quality, "lr": lr, "schedule": schedule, "tau_end": tau_end,
                   "objective_change": float(obj.mean() / obj0.mean() - 1),
                   "objective_change_per_crop": [float(v) for v in obj / obj0 - 1],
                   "bits_change": float(bits.mean() / bits0.mean() - 1),
                   "psnr_change_db": float(m.psnr.mean() - plain.psnr.mean()), "seconds": seconds}
            rows.append(row)
            print(f"  lr={lr} {schedule:8s} tau_end={tau_end:g} its={iterations}: obj {100 * row['objective_change']:+.2f}%  "
                  f"bpp {100 * row['bits_change']:+.2f}%  dpsnr {row['psnr_change_db']:+.2f}  {seconds:.1f}s", flush=True)
    return rows


def store(out: Path, rows: list[dict]) -> None:
    """Merge ``rows`` into ``effort_method.json`` (one row per iterations, quality, lr, schedule, tau_end)."""
    from codec.families.hyperprior.refine import TAU_END

    path = out / "effort_method.json"
    key = lambda r: (r["iterations"], r["quality"], r["lr"], r["schedule"], r.get("tau_end", TAU_END))  # noqa: E731
    old = {key(r): r for r in (json.loads(path.read_text()) if path.exists() else [])}
    old.update({key(r): r for r in rows})
    path.write_text(json.dumps(sorted(old.values(), key=key), indent=1))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=1000)
    ap.add_argument("--crops", type=int, default=4)
    ap.add_argument("--qualities", type=float, nargs="+", default=[0.3, 0.8])
    ap.add_argument("--settings", nargs="+", default=["0.02:constant", "0.02:cosine", "0.05:cosine"],
                    help="learning rate:schedule (constant or cosine)[:final SGA temperature]")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = ap.parse_args(argv)
    if not DATA.is_dir():
        print(f"skipped: {DATA} is missing")
        return 0
    from codec.families.hyperprior.refine import TAU_END

    parts = [s.split(":") for s in args.settings]
    settings = [(float(p[0]), p[1], float(p[2]) if len(p) > 2 else TAU_END) for p in parts]
    print(f"# bench/effort_method.py: {args.iterations} SGA steps, qualities {args.qualities}, settings "
          f"{args.settings}, CPU {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}", flush=True)
    rows = run(args.iterations, args.crops, args.qualities, settings)
    args.out.mkdir(parents=True, exist_ok=True)
    store(args.out, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
