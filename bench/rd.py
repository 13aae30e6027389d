"""Rate–distortion helpers shared by the benchmarks: metrics, BD-rate, classical codecs, anchors."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

SHARED = Path(__file__).resolve().parents[2] / "shared"
KODAK = SHARED / "data" / "kodak"
ANCHORS = SHARED / "anchors" / "compressai-kodak"


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def load_folder(folder: Path) -> list[tuple[str, np.ndarray]]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".tif", ".tiff"})
    return [(p.name, np.asarray(Image.open(p).convert("RGB"))) for p in files]


def classical(fmt: str, img: np.ndarray, quality: int) -> tuple[int, np.ndarray, float, float]:
    """(bytes, reconstruction, encode s, decode s) for JPEG/WebP/AVIF through Pillow."""
    kwargs = {"JPEG": {"quality": quality, "subsampling": "4:2:0"}, "WEBP": {"quality": quality, "method": 4},
              "AVIF": {"quality": quality, "speed": 6}}[fmt]
    buf = io.BytesIO()
    t = time.perf_counter()
    Image.fromarray(img).save(buf, format=fmt, **kwargs)
    te = time.perf_counter() - t
    data = buf.getvalue()
    t = time.perf_counter()
    rec = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    td = time.perf_counter() - t
    return len(data), rec, te, td


def load_anchor(name: str) -> dict | None:
    p = ANCHORS / f"{name}.json"
    if not p.exists():
        return None
    d = json.loads(p.read_text())
    return {"name": d.get("name", name), "bpp": d["results"]["bpp"], "psnr": d["results"]["psnr-rgb"]}


def bd_rate(ref_bpp, ref_psnr, test_bpp, test_psnr, bpp_range=(0.1, 1.5)) -> float | None:
    """Bjøntegaard delta rate (%) of test vs ref; negative = fewer bits at equal PSNR.

    Both curves are restricted to ``bpp_range``, interpolated as log-rate over PSNR
    with monotone cubic (PCHIP) pieces and integrated over their common PSNR span.
    """
    from scipy.interpolate import PchipInterpolator

    def prep(bpp, p):
        bpp, p = np.asarray(bpp, float), np.asarray(p, float)
        keep = (bpp >= bpp_range[0]) & (bpp <= bpp_range[1])
        bpp, p = bpp[keep], p[keep]
        order = np.argsort(p)
        p, lr = p[order], np.log(bpp[order])
        _, unique = np.unique(p, return_index=True)
        return p[unique], lr[unique]

    p1, r1 = prep(ref_bpp, ref_psnr)
    p2, r2 = prep(test_bpp, test_psnr)
    if len(p1) < 2 or len(p2) < 2:
        return None
    lo, hi = max(p1.min(), p2.min()), min(p1.max(), p2.max())
    if hi <= lo:
        return None
    grid = np.linspace(lo, hi, 200)
    d = PchipInterpolator(p2, r2)(grid) - PchipInterpolator(p1, r1)(grid)
    return float((np.exp(np.trapezoid(d, grid) / (hi - lo)) - 1) * 100)
