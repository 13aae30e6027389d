#!/usr/bin/env python3
"""Choose between trained candidates on held-out *training-set* images, never on Kodak.

    python bench/compare_models.py --data ../shared/data/train-natural \
        --candidate A=runs/A.pt --candidate B=runs/B.pt --baseline default@1 [--export-to DIR]

Each candidate (a training checkpoint or weights-only snapshot) is finalised with
training crops for calibration, then every image of the validation split that
``codec.train`` held out (by file-name hash) is coded with real streams over a
quality sweep. Prints each candidate's curve and BD-rate against the baseline, and
writes ``model_selection.json``. Kodak stays the evaluation set: picking a model on
it would be tuning to it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import codec  # noqa: E402
from codec.registry import Registry  # noqa: E402
from codec.training.data import list_images, load_rgb, split_validation  # noqa: E402
from codec.training.evaluate import compare  # noqa: E402
from codec.training.export import calibration_batch, model_from_checkpoint  # noqa: E402

QUALITIES = (0.0, 0.15, 0.3, 0.45, 0.6, 0.75, 0.9, 1.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", nargs="+", type=Path, required=True, help="training folders (their held-out split is used)")
    ap.add_argument("--candidate", action="append", default=[], help="NAME=CHECKPOINT")
    ap.add_argument("--baseline", default="default")
    ap.add_argument("--validation-fraction", type=float, default=0.05)
    ap.add_argument("--max-side", type=int, default=768, help="centre-crop validation images to this size (speed)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "model_selection.json")
    ap.add_argument("--export-to", type=Path, help="keep the finalised candidates in this registry folder")
    a = ap.parse_args()

    _, val_files = split_validation(list_images(a.data), a.validation_fraction)
    images = []
    for p in val_files:
        im = load_rgb(p)
        h, w = (min(s, a.max_side) for s in im.shape[:2])
        y, x = (im.shape[0] - h) // 2, (im.shape[1] - w) // 2
        images.append(np.ascontiguousarray(im[y : y + h, x : x + w]))
    print(f"{len(images)} held-out training images ({', '.join(p.name for p in val_files)})")

    registry = Registry(a.export_to or tempfile.mkdtemp(prefix="tlic-candidates-"))
    calib = calibration_batch(a.data)
    models = {a.baseline: codec.load_model(a.baseline)}
    for spec in a.candidate:
        name, _, path = spec.partition("=")
        net = model_from_checkpoint(Path(path))
        net.finalize(calib)
        models[name] = registry.load(registry.register(name, net, source=path))

    names = [f"{p.parent.name}/{p.name}" for p in val_files]
    cmp = compare(models, dict(zip(names, images)), reference=a.baseline,
                  qualities=QUALITIES, bpp_range=(0.1, 1.5))
    curves = {name: [{"quality": q, "bpp": b, "psnr": d} for q, b, d in zip(QUALITIES, c.bpp, c.psnr)]
              for name, c in cmp["mean"].items()}
    for name, c in curves.items():
        print(f"{name} ({models[name].model_id}): " + "  ".join(f"{p['bpp']:.3f}/{p['psnr']:.2f}" for p in c))
    result = {"images": names, "curves": curves, "bd_rate_vs_baseline_pct": cmp["bd_rate"]}
    for name, bd in cmp["bd_rate"].items():
        print(f"BD-rate {name} vs {a.baseline}: {'n/a' if bd is None else f'{bd:+.1f}%'}")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
