"""Encode (and region-decode) a 100-megapixel raster tile-batch by tile-batch; report peak RSS.

The raster is a memory-mapped file on disk, as a large GeoTIFF read lazily would be,
so resident memory shows what the codec itself holds.

    python bench/large_image.py --megapixels 100 --json out.json
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import codec  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_raster(path: Path, side: int) -> np.memmap:
    """A textured raster: a natural image tiled with per-block brightness changes."""
    from skimage import data

    base = data.astronaut()
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(side, side, 3))
    bh, bw = base.shape[:2]
    for y in range(0, side, bh):
        for x in range(0, side, bw):
            h, w = min(bh, side - y), min(bw, side - x)
            arr[y : y + h, x : x + w] = (base[:h, :w].astype(np.int16) + ((x + y) // bw) % 40 - 20).clip(0, 255)
    arr.flush()
    del arr
    return np.load(path, mmap_mode="r")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--megapixels", type=float, default=100)
    ap.add_argument("--quality", type=float, default=0.5)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    side = int(round((a.megapixels * 1e6) ** 0.5))
    with tempfile.TemporaryDirectory() as tmp:
        raster = make_raster(Path(tmp) / "raster.npy", side)
        model = codec.load_model("default")
        rss_before = peak_rss_mb()
        t = time.perf_counter()
        result = codec.encode(raster, model, quality=a.quality, batch_size=8)
        enc_s = time.perf_counter() - t
        rss_encode = peak_rss_mb()
        t = time.perf_counter()
        region = codec.decode_region(result.data, (side // 2, side // 2, 1000, 1000), model)
        region_s = time.perf_counter() - t
        ok = region.shape == (1000, 1000, 3)
    out = {
        "megapixels": side * side / 1e6, "width": side, "height": side, "quality": a.quality,
        "bytes": len(result.data), "bpp": result.bpp, "encode_s": enc_s, "encode_mp_s": side * side / 1e6 / enc_s,
        "peak_rss_mb_before_encode": rss_before, "peak_rss_mb_after_encode": rss_encode,
        "region_1mp_decode_s": region_s, "region_ok": ok,
    }
    print(json.dumps(out, indent=1))
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
