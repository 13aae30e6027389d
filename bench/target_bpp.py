"""How close ``target_bpp`` lands to its budget, and its PSNR against JPEG 2000's own rate control (issue 23, item 5).

    python bench/target_bpp.py [--quick] [--budgets 0.25 0.5 1.0 1.5] [--out bench/results]

Per image and budget: our file's bits per pixel over the budget (the rate-control error; the encoder must not
overshoot), its PSNR, and JPEG 2000 (OpenJPEG through Pillow, 9/7, one quality layer, ``quality_mode="rates"``:
its own rate control) told to make a file of OUR file's size, so the two PSNRs compare at equal size. Images:
Kodak (24, evaluation only) and the aerial evaluation tiles bench/tile_tools.py uses (not calibrated on).
Results: ``target_bpp.json`` / ``target_bpp.log`` under ``--out``; sets that are missing are skipped.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import codec  # noqa: E402
from codec.metrics import psnr  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
BUDGETS = (0.25, 0.5, 1.0, 1.5)


def image_sets(quick: bool) -> dict[str, list[Path]]:
    kodak = sorted((DATA / "kodak").glob("kodim*.png"))
    aerial = sorted((DATA / "aerial" / "train" / "cil_roads").glob("*.png"))[1::2][::5] + sorted(
        (DATA / "aerial" / "train" / "usc_sipi").glob("2.1.*.png"))
    sets = {"kodak": kodak, "aerial": aerial}
    return {k: (v[:4] if quick else v) for k, v in sets.items() if v}


def load(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


def jpeg2000_at(img: np.ndarray, n_bytes: int) -> tuple[int, float]:
    """(bytes, PSNR) of JPEG 2000 asked by its own rate control for a file of ``n_bytes``."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG2000", quality_mode="rates", quality_layers=[img.nbytes / n_bytes],
                              irreversible=True, mct=1)  # mct: the colour transform (Pillow defaults to none)
    dec = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    return buf.tell(), psnr(img, dec)


def measure(img: np.ndarray, budget: float) -> dict:
    h, w = img.shape[:2]
    t0 = time.perf_counter()
    r = codec.encode(img, None, target_bpp=budget)
    seconds = time.perf_counter() - t0
    ours = psnr(img, codec.decode(r.data))
    j2k_bytes, j2k_psnr = jpeg2000_at(img, len(r.data))
    return {"bpp": r.bpp, "size_vs_budget": r.bpp / budget, "psnr": ours, "encode_s": seconds,
            "j2k_bpp": 8 * j2k_bytes / (w * h), "j2k_psnr": j2k_psnr, "delta_psnr_vs_j2k": ours - j2k_psnr}


def summarise(rows: list[dict]) -> dict:
    ratio = np.array([r["size_vs_budget"] for r in rows])
    delta = np.array([r["delta_psnr_vs_j2k"] for r in rows])
    return {"images": len(rows), "size_vs_budget_mean": float(ratio.mean()), "size_vs_budget_min": float(ratio.min()),
            "size_vs_budget_max": float(ratio.max()), "within_3pct": float((np.abs(ratio - 1) <= 0.03).mean()),
            "over_budget": int((ratio > 1 + 1e-9).sum()), "psnr_mean": float(np.mean([r["psnr"] for r in rows])),
            "j2k_psnr_mean": float(np.mean([r["j2k_psnr"] for r in rows])), "delta_psnr_mean": float(delta.mean()),
            "delta_psnr_min": float(delta.min())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="4 images per set")
    ap.add_argument("--budgets", type=float, nargs="+", default=list(BUDGETS))
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    a = ap.parse_args()
    sets = image_sets(a.quick)
    if not sets:
        print(f"skipping: no image sets under {DATA}")
        return
    a.out.mkdir(parents=True, exist_ok=True)
    lines, result = [], {"budgets": a.budgets, "quick": a.quick, "sets": {}}
    head = f"{'set':8} {'bpp':>5} {'n':>3} {'size/budget mean [min, max]':>28} {'±3%':>5} {'PSNR':>6} {'J2K':>6} {'Δ mean [min]':>14}"
    print(head)
    lines.append(head)
    for name, files in sets.items():
        images = {p.name: load(p) for p in files}
        for budget in a.budgets:
            rows = []
            for fname, img in images.items():
                rows.append({"image": fname, **measure(img, budget)})
            s = summarise(rows)
            result["sets"][f"{name}@{budget:g}"] = {"summary": s, "images": rows}
            line = (f"{name:8} {budget:5.2f} {s['images']:3d} {s['size_vs_budget_mean']:10.4f} "
                    f"[{s['size_vs_budget_min']:.4f}, {s['size_vs_budget_max']:.4f}] {s['within_3pct']:5.0%} "
                    f"{s['psnr_mean']:6.2f} {s['j2k_psnr_mean']:6.2f} {s['delta_psnr_mean']:+6.2f} [{s['delta_psnr_min']:+.2f}]")
            print(line, flush=True)
            lines.append(line)
    (a.out / "target_bpp.json").write_text(json.dumps(result, indent=1) + "\n")
    (a.out / "target_bpp.log").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
