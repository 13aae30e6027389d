"""Rate–distortion helpers shared by the benchmarks: metrics, BD-rate, classical codecs, anchors."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from codec.metrics import bd_rate  # noqa: F401  (re-exported for the benchmarks)

SHARED = Path(__file__).resolve().parents[2] / "shared"
KODAK = SHARED / "data" / "kodak"
AERIAL = SHARED / "data" / "aerial" / "train"
ANCHORS = SHARED / "anchors" / "compressai-kodak"

# Classical codecs and the parameter each one is swept over (higher index = higher quality is not
# assumed here; see ``classical``): Pillow for JPEG/WebP/AVIF, imagecodecs (libjxl, OpenJPEG) for
# JPEG XL and JPEG 2000.
#   JPEG, WEBP, AVIF: quality 0–100
#   JXL:  Butteraugli distance (0.04–12, smaller = better), effort 7
#   J2K:  OpenJPEG's target PSNR in dB (``level``), irreversible 9/7 wavelet
CLASSICAL_LIBS = {"JPEG": "Pillow 4:2:0", "WEBP": "Pillow, method 4", "AVIF": "Pillow/libavif 4:2:0, speed 6",
                  "JXL": "imagecodecs/libjxl, effort 7", "J2K": "imagecodecs/OpenJPEG, 9/7"}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def tile_psnrs(ref: np.ndarray, rec: np.ndarray, tile: int = 256) -> np.ndarray:
    """PSNR of every ``tile``² tile (row-major, edge tiles partial): the codec's tile grid."""
    h, w = ref.shape[:2]
    return np.array([psnr(ref[y : y + tile, x : x + tile], rec[y : y + tile, x : x + tile])
                     for y in range(0, h, tile) for x in range(0, w, tile)])


def lowest_passing(passes: Callable[[int], bool], lo: int, hi: int) -> int | None:
    """Smallest ``k`` in ``[lo, hi]`` with ``passes(k)``, assuming ``passes`` is monotone in ``k``.

    Bisection: about log2(hi - lo) calls, none at ``lo`` (assumed to fail unless nothing
    above it passes and it does) and one at ``hi`` only when nothing below it passed.
    None when not even ``hi`` passes.
    """
    bad, good = lo - 1, None
    top = hi
    while top - bad > 1:
        mid = (bad + top) // 2
        if passes(mid):
            good = top = mid
        else:
            bad = mid
    if good is None:
        return hi if passes(hi) else None
    return good


def load_folder(folder: Path) -> list[tuple[str, np.ndarray]]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".tif", ".tiff"})
    return [(p.name, np.asarray(Image.open(p).convert("RGB"))) for p in files]


def classical(fmt: str, img: np.ndarray, param: float, **opts) -> tuple[int, np.ndarray, float, float]:
    """(bytes, reconstruction, encode s, decode s) for JPEG/WEBP/AVIF (Pillow) or JXL/J2K (imagecodecs).

    ``param`` is the format's sweep parameter (see CLASSICAL_LIBS); ``opts`` override the
    defaults (e.g. ``subsampling="4:4:4"`` for AVIF).
    """
    if fmt in ("JXL", "J2K"):
        import imagecodecs

        enc, dec = {"JXL": (lambda x: imagecodecs.jpegxl_encode(x, distance=float(param), **{"effort": 7, **opts}),
                            imagecodecs.jpegxl_decode),
                    "J2K": (lambda x: imagecodecs.jpeg2k_encode(x, level=float(param), **{"reversible": False, **opts}),
                            imagecodecs.jpeg2k_decode)}[fmt]
        t = time.perf_counter()
        data = bytes(enc(np.ascontiguousarray(img)))
        te = time.perf_counter() - t
        t = time.perf_counter()
        rec = np.asarray(dec(data))
        td = time.perf_counter() - t
        return len(data), rec, te, td
    kwargs = {"JPEG": {"quality": int(param), "subsampling": "4:2:0"}, "WEBP": {"quality": int(param), "method": 4},
              "AVIF": {"quality": int(param), "speed": 6}}[fmt]
    buf = io.BytesIO()
    t = time.perf_counter()
    Image.fromarray(img).save(buf, format=fmt, **{**kwargs, **opts})
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
