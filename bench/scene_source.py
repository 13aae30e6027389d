"""A large synthetic multi-band scene, written strip by strip (memory: one strip), for the whole-scene benchmarks.

Ten 12-bit bands of one procedural landscape (fields, a river, texture, sensor noise) at different gains,
with zero (nodata) corners like an orbit-clipped product; a tiled, DEFLATE-compressed GeoTIFF as GDAL writes it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

STRIP = 512


def landscape(y0: int, rows: int, width: int, seed: int = 0) -> np.ndarray:
    """(rows, width) float in [0, 1]: rows y0.. of the same landscape for any strip size."""
    rng = np.random.default_rng(seed + y0)
    yy, xx = np.mgrid[y0 : y0 + rows, 0:width].astype(np.float32)
    fields = (np.floor(xx / 397) * 7 + np.floor(yy / 283) * 13) % 11 / 11
    relief = 0.5 + 0.25 * np.sin(xx / 211 + np.sin(yy / 530)) * np.cos(yy / 173)
    river = np.exp(-(((xx - width / 2 - 300 * np.sin(yy / 900)) / 40) ** 2))
    texture = 0.08 * np.sin(xx / 3.1 + yy / 5.3) * np.sin(yy / 2.7)
    base = 0.45 * fields + 0.45 * relief - 0.4 * river + texture + 0.02 * rng.standard_normal((rows, width), np.float32)
    return np.clip(base, 0, 1)


def write_scene(path: Path, height: int, width: int, bands: int, seed: int = 0) -> None:
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    gains = np.linspace(0.55, 1.0, bands, dtype=np.float32)
    profile = dict(driver="GTiff", width=width, height=height, count=bands, dtype="uint16", tiled=True,
                   blockxsize=512, blockysize=512, compress="deflate", predictor=2, nodata=0,
                   crs="EPSG:32633", transform=from_origin(300000, 5000000, 10, 10), BIGTIFF="IF_SAFER")
    with rasterio.Env(GDAL_CACHEMAX=128 * 2**20), rasterio.open(path, "w", **profile) as ds:
        ds.descriptions = tuple(f"B{b + 1:02d}" for b in range(bands))
        for y0 in range(0, height, STRIP):
            rows = min(STRIP, height - y0)
            base = landscape(y0, rows, width, seed)
            block = (200 + 3800 * base[None] * gains[:, None, None]).astype(np.uint16)
            yy, xx = np.mgrid[y0 : y0 + rows, 0:width]
            clipped = (xx + yy < width // 8) | (xx - yy > width - width // 8)  # orbit-clipped corners
            block[:, clipped] = 0
            ds.write(block, window=Window(0, y0, width, rows))
