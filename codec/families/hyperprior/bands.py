"""How the hyperprior codes a raster's bands: normalised per band to the model's [0, 255] input, nodata
filled smoothly before analysis, and mapped back to raw samples after synthesis (the raster description,
band groups and nodata masks are the format's: :mod:`codec.format.raster`)."""

from __future__ import annotations

import numpy as np

from codec.format.raster import GROUP, RasterInfo, as_bands, real_bands


def fill_nodata(x: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """``x`` (h, w, C) float with the invalid samples replaced by a smooth push-pull interpolation of the valid
    ones (averages over a pyramid of 2× poolings, pulled back up and lightly blurred): flat where far from
    data, continuing the data at its borders, so the model spends almost nothing on it. ``valid``: (h, w)
    pixels, or (h, w, C) samples (the band nodata rule: each channel filled from its own valid samples)."""
    if valid is None or valid.all():
        return x
    if valid.ndim == 3:
        out = x.copy()
        for c in range(x.shape[2]):
            out[..., c : c + 1] = fill_nodata(x[..., c : c + 1], valid[..., c])
        return out
    if not valid.any():
        x[...] = 0.5
        return x
    from scipy import ndimage

    w = valid.astype(np.float32)
    levels = [(x * w[..., None], w)]
    while min(levels[-1][1].shape) > 1:
        v, wt = levels[-1]
        hh, ww = -(-wt.shape[0] // 2) * 2, -(-wt.shape[1] // 2) * 2
        v = np.pad(v, ((0, hh - v.shape[0]), (0, ww - v.shape[1]), (0, 0)))
        wt = np.pad(wt, ((0, hh - wt.shape[0]), (0, ww - wt.shape[1])))
        levels.append((v.reshape(hh // 2, 2, ww // 2, 2, -1).sum((1, 3)), wt.reshape(hh // 2, 2, ww // 2, 2).sum((1, 3))))
    v, wt = levels[-1]
    filled = v / np.maximum(wt, 1e-6)[..., None]
    for v, wt in reversed(levels[:-1]):
        up = np.repeat(np.repeat(filled, 2, 0), 2, 1)[: wt.shape[0], : wt.shape[1]]
        up = ndimage.uniform_filter(up, size=(3, 3, 1), mode="nearest")
        have = wt > 0
        filled = np.where(have[..., None], v / np.maximum(wt, 1e-6)[..., None], up)
    out = x.copy()
    out[~valid] = filled[~valid]
    return out


def normalised(block: np.ndarray, info: RasterInfo, group: list[int], valid: np.ndarray | None) -> np.ndarray:
    """float32 (h, w, 3) of one group's bands mapped to [0, 1], nodata filled (:func:`fill_nodata`)."""
    block = as_bands(block)
    lo = np.array([info.lo[b] for b in group], dtype=np.float32)
    scale = np.array([info.scale(b) for b in group], dtype=np.float32)
    x = (block[..., group].astype(np.float32) - lo) / scale
    return fill_nodata(x, valid if valid is None or valid.ndim == 2 else valid[..., group])


def group_constants(info: RasterInfo, group: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lo, scale, weight) per group position, float32: weight 1 for a band of its own, 0 for a repeat."""
    lo = np.array([info.lo[b] for b in group], dtype=np.float32)
    scale = np.array([info.scale(b) for b in group], dtype=np.float32)
    weight = np.zeros(GROUP, dtype=np.float32)
    weight[real_bands(group)] = 1.0
    return lo, scale, weight


def to_raw(x: np.ndarray, info: RasterInfo, group: list[int]) -> np.ndarray:
    """Decoded float (n, 3, h, w) in [0, 1] → (n, h, w, real bands) integers of the raster's dtype in [lo, hi]."""
    keep = real_bands(group)
    lo, scale, _ = group_constants(info, group)
    hi = np.array([info.hi[b] for b in group], dtype=np.float32)
    v = np.moveaxis(x[:, keep], 1, -1)
    v = np.clip(np.rint(lo[keep] + v * scale[keep]), lo[keep], hi[keep])
    return v.astype(info.dtype)
