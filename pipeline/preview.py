"""What a person can look at of any decoded raster: 8-bit RGB (or gray) from its bands, for reports.

    raster (h, w, B) uint8/uint16 + header ─pick_bands─▶ which bands show as R, G, B (from band names where
        they say red/green/blue, Sentinel-2's B04/B03/B02, Landsat 8's B4/B3/B2; else the first three; one band: gray)
    ─stretch─▶ each shown band mapped by its 2nd–98th percentile over valid pixels to 0–255
    ─nodata─▶ NODATA_RGB, so empty corners read as "no data", not as dark ground

8-bit photos (gray/RGB/RGBA, no nodata) are shown as they are. Pure functions over arrays.
"""

from __future__ import annotations

import re

import numpy as np

NODATA_RGB = (255, 0, 255)  # magenta: nothing in imagery looks like it
PERCENTILES = (2.0, 98.0)
_COLOUR_NAMES = {  # a band name matching one of these shows as that channel
    0: re.compile(r"\b(red|b0?4)\b", re.I), 1: re.compile(r"\b(green|b0?3)\b", re.I),
    2: re.compile(r"\b(blue|b0?2)\b", re.I)}


def pick_bands(bands: int, band_names=None) -> list[int]:
    """Band indices shown as R, G, B (or one index for gray)."""
    if bands < 3:
        return [0]
    if band_names:
        found = [next((b for b, n in enumerate(band_names) if pat.search(str(n) or "")), None)
                 for pat in _COLOUR_NAMES.values()]
        if None not in found and len(set(found)) == 3:
            return found
    return [0, 1, 2]


def stretch(band: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """One band as uint8, its 2nd–98th percentile over the valid pixels mapped to 0–255."""
    vals = band[valid] if valid is not None else band.ravel()
    if not vals.size:
        return np.zeros(band.shape, np.uint8)
    lo, hi = np.percentile(vals, PERCENTILES)
    scale = 255.0 / max(float(hi - lo), 1e-9)
    return np.clip((band.astype(np.float64) - lo) * scale, 0, 255).astype(np.uint8)


def display_rgb(pixels: np.ndarray, nodata=None, band_names=None) -> np.ndarray:
    """(h, w, 3) or (h, w) uint8 for a person: photos as they are, rasters picked, stretched, nodata marked."""
    from codec.format.raster import valid_mask

    px = pixels if pixels.ndim == 3 else pixels[..., None]
    if px.dtype == np.uint8 and nodata is None and px.shape[2] in (1, 3, 4):
        return px[..., :3] if px.shape[2] >= 3 else px[..., 0]
    valid = valid_mask(px, nodata)  # nodata: one value (pixel rule) or one per band (GDAL's band rule)
    shown = pick_bands(px.shape[2], band_names)
    masks = [None if valid is None else valid if valid.ndim == 2 else valid[..., b] for b in shown]
    out = np.stack([stretch(px[..., b], m) for b, m in zip(shown, masks)], -1)
    if len(shown) == 1:
        out = np.repeat(out, 3, axis=2)
    if valid is not None:
        out[~np.logical_and.reduce(masks)] = NODATA_RGB  # a shown band without data: marked
    return out
