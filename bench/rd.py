"""Rate–distortion helpers shared by the benchmarks: metrics, BD-rate, classical codecs, anchors."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

from codec.metrics import bd_rate  # noqa: F401  (re-exported for the benchmarks)

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

