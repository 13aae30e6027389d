"""Image quality metrics over uint8 arrays: PSNR and MS-SSIM (Wang et al. 2003)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
MS_SSIM_MAX_PIXELS = 16_000_000  # above this, MS-SSIM is measured on the central 4096² crop


def psnr_from_mse(mse: np.ndarray) -> np.ndarray:
    """PSNR of 8-bit data; inf for a perfect match, NaN where the MSE is unknown."""
    mse = np.asarray(mse, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(mse > 0, 10 * np.log10(255.0**2 / np.maximum(mse, 1e-12)), np.where(np.isnan(mse), np.nan, np.inf))


def psnr(a: np.ndarray, b: np.ndarray, rows_per_chunk: int = 1024) -> float:
    """PSNR in dB of two 8-bit images, in row chunks so large rasters need little memory."""
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    se = 0.0
    for r in range(0, a.shape[0], rows_per_chunk):
        d = a[r : r + rows_per_chunk].astype(np.float64) - b[r : r + rows_per_chunk]
        se += float(np.vdot(d.ravel(), d.ravel()))
    mse = se / a.size
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def _gaussian(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - size // 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    return (g / g.sum()).astype(np.float32)


def ms_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """MS-SSIM of two 8-bit images (grayscale or colour, channels averaged).

    Uses as many of the five scales as the image size allows (each needs ≥ 11 px),
    with the weights renormalised; NaN for images under 11 px. Computed in float32 on
    values centred at 128 (so second moments keep their precision), with separable
    'valid' Gaussian windows: within 1e-6 of a float64 reference, several times faster.
    """
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    if a.shape[0] * a.shape[1] > MS_SSIM_MAX_PIXELS:
        h, w = a.shape[:2]
        y0, x0 = max(0, h // 2 - 2048), max(0, w // 2 - 2048)
        a, b = a[y0 : y0 + 4096, x0 : x0 + 4096], b[y0 : y0 + 4096, x0 : x0 + 4096]
    x, y = _centred_planes(a), _centred_planes(b)
    scales = 0
    size = min(x.shape[-2:])
    while scales < len(MS_SSIM_WEIGHTS) and size >= 11:
        scales += 1
        size //= 2
    if scales == 0:
        return float("nan")
    weights = np.asarray(MS_SSIM_WEIGHTS[:scales]) / sum(MS_SSIM_WEIGHTS[:scales])
    g = _gaussian()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    values = []
    for s in range(scales):
        ssim, cs = _ssim_cs(x, y, g, c1, c2)
        values.append(ssim if s == scales - 1 else cs)
        if s < scales - 1:
            x, y = _halve(x), _halve(y)
    return float(np.prod(np.maximum(values, 0.0) ** weights))


def _centred_planes(a: np.ndarray) -> np.ndarray:
    """(C, H, W) float32 planes minus 128."""
    t = a.astype(np.float32) - 128.0
    return t[None] if t.ndim == 2 else np.ascontiguousarray(np.moveaxis(t, -1, 0))


def _halve(x: np.ndarray) -> np.ndarray:
    """2×2 average pooling (odd trailing row/column dropped)."""
    h, w = x.shape[1] // 2 * 2, x.shape[2] // 2 * 2
    x = x[:, :h, :w]
    return 0.25 * (x[:, 0::2, 0::2] + x[:, 1::2, 0::2] + x[:, 0::2, 1::2] + x[:, 1::2, 1::2])


def _blur(t: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable Gaussian window, 'valid' region only (as a convolution without padding)."""
    r = len(g) // 2
    t = ndimage.correlate1d(t, g, axis=-1, mode="constant")[..., r:-r]
    return ndimage.correlate1d(t, g, axis=-2, mode="constant")[..., r:-r, :]


def _ssim_cs(x, y, g, c1, c2):
    """Mean SSIM and contrast-structure term at one scale; x, y are centred at 128."""
    mx, my = _blur(x, g), _blur(y, g)
    sxx = _blur(x * x, g) - mx * mx
    syy = _blur(y * y, g) - my * my
    sxy = _blur(x * y, g) - mx * my
    mx += 128.0
    my += 128.0
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    ssim = ((2 * mx * my + c1) / (mx * mx + my * my + c1)) * cs
    return float(ssim.mean(dtype=np.float64)), float(cs.mean(dtype=np.float64))


def bd_rate(ref_bpp, ref_psnr, test_bpp, test_psnr, bpp_range=(0.1, 1.5), psnr_range=None) -> float | None:
    """Bjøntegaard delta rate (%) of test vs ref; negative = fewer bits at equal PSNR.

    Both curves are restricted to ``bpp_range``, interpolated as log-rate over PSNR
    with monotone cubic (PCHIP) pieces and integrated over their common PSNR span, or over
    ``psnr_range`` (lo, hi) when given: then several tests compare over one span, and a curve that
    does not cover it gives None (it never reaches that PSNR: no equal-PSNR comparison exists).
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
    if psnr_range is not None:
        if lo > psnr_range[0] or hi < psnr_range[1]:
            return None
        lo, hi = psnr_range
    if hi <= lo:
        return None
    grid = np.linspace(lo, hi, 200)
    d = PchipInterpolator(p2, r2)(grid) - PchipInterpolator(p1, r1)(grid)
    return float((np.exp(np.trapezoid(d, grid) / (hi - lo)) - 1) * 100)


# --- rasters (any band count, up to 16 bits): the ONE definition of their metrics -------------------
# An exactly reconstructed band (MSE 0) counts as this many dB when averaged with bands that are not
# exact (an infinite PSNR would swamp every other band); a raster that is exact in every band is inf.
EXACT_BAND_PSNR_DB = 100.0


def bits_per_sample(n_bytes: int, height: int, width: int, bands: int) -> float:
    """Bits of a stream per coded sample: ``8·n_bytes / (height·width·bands)`` (for 8-bit RGB, bpp / 3)."""
    samples = int(height) * int(width) * int(bands)
    if samples <= 0:
        raise ValueError(f"bits_per_sample of an empty raster ({height}×{width}×{bands})")
    return 8.0 * n_bytes / samples


def peak_of(lo: int, hi: int) -> int:
    """THE rule for one band's PSNR peak from its valid minimum and maximum (real sample values): the span of
    its valid values and zero, ``max(hi, 0) − min(lo, 0)`` (for unsigned bands: the valid maximum), at least 1.

    Anchored at zero (issue 26), as a photo's 255 is, so declaring a fill value nodata does not move the peak: a
    scene's 0 border taken out of the valid samples raised the minimum of a range rule by up to 5.8 dB (the same
    dB target then asked for half the error, and the stream grew 2×: bench/results/nodata_growth.log); a -9999
    DEM fill never enters. A band still has its own peak (issue 23: a cirrus band valued 0–97 gets 97)."""
    return max(max(int(hi), 0) - min(int(lo), 0), 1)


def band_peaks(reference: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """THE rule for a raster band's PSNR peak (:func:`peak_of`) over the valid samples: the span of the band's own
    valid values and 0 (≥ 1), for uint8, uint16 and int16 alike. A band is judged against its own, never the
    image's: a
    Sentinel-2 cirrus band valued 0–97 next to bands up to 4,566 gets peak 97, so a target holds for it
    too (issue 23). codec.format.raster.RasterInfo.band_peaks is the same rule from the header's lo/hi.
    ``valid``: (H, W) pixels or, under the band nodata rule, (H, W, B) samples."""
    ref = reference if reference.ndim == 3 else reference[..., None]
    out = np.ones(ref.shape[2])
    for b in range(ref.shape[2]):
        band = ref[..., b]
        if valid is not None:
            band = band[valid if valid.ndim == 2 else valid[..., b]]
        if band.size:
            out[b] = peak_of(band.min(), band.max())
    return out


def band_sse(reference: np.ndarray, decoded: np.ndarray, valid: np.ndarray | None = None,
             rows_per_chunk: int = 512) -> tuple[np.ndarray, int | np.ndarray]:
    """(squared error per band over the valid samples, number of valid pixels), exact, in row chunks. ``valid``:
    (H, W) pixels, or (H, W, B) samples under the band nodata rule: then the count is per band, an array."""
    if reference.shape != decoded.shape:
        raise ValueError(f"shapes differ: {reference.shape} vs {decoded.shape}")
    ref = reference if reference.ndim == 3 else reference[..., None]
    dec = decoded if decoded.ndim == 3 else decoded[..., None]
    if valid is not None and valid.shape not in (ref.shape[:2], ref.shape):
        raise ValueError(f"valid mask {valid.shape} does not match the raster's {ref.shape[:2]}")
    if valid is not None and valid.ndim == 3:
        d = ref.astype(np.int64) - dec
        d[~valid] = 0
        return (d.reshape(-1, ref.shape[2]).astype(np.float64) ** 2).sum(0), valid.reshape(-1, ref.shape[2]).sum(0)
    sse = np.zeros(ref.shape[2], dtype=np.float64)
    count = 0
    for r in range(0, ref.shape[0], rows_per_chunk):
        d = ref[r : r + rows_per_chunk].astype(np.int64) - dec[r : r + rows_per_chunk]
        if valid is not None:
            v = valid[r : r + rows_per_chunk]
            d = d[v]
            count += int(v.sum())
        else:
            count += d.shape[0] * d.shape[1]
        sse += (d.reshape(-1, ref.shape[2]).astype(np.float64) ** 2).sum(0)
    return sse, count


def _none_valid(count) -> bool:
    return not (np.asarray(count) > 0).any()


def band_psnr(sse: np.ndarray, count, peaks) -> np.ndarray:
    """Per band 10·log10(peak_b² / MSE_b) over ``count`` valid pixels (one count, or one per band); an exact band
    (or one without a valid sample) counts as :data:`EXACT_BAND_PSNR_DB`; every band inf when there is no valid
    sample at all. ``peaks``: per band or one."""
    sse = np.asarray(sse, dtype=np.float64)
    peaks = np.broadcast_to(np.asarray(peaks, dtype=np.float64), sse.shape)
    if _none_valid(count):
        return np.full(sse.shape, np.inf)
    count = np.maximum(np.broadcast_to(np.asarray(count), sse.shape), 1)
    db = 10 * (np.log10(peaks**2 * count) - np.log10(np.where(sse > 0, sse, 1.0)))
    return np.minimum(np.where(sse > 0, db, EXACT_BAND_PSNR_DB), EXACT_BAND_PSNR_DB)


def psnr_from_band_sse(sse: np.ndarray, count, peaks) -> float:
    """The raster PSNR: mean over bands of :func:`band_psnr`; inf when every band is exact or there is no
    valid sample."""
    sse = np.asarray(sse, dtype=np.float64)
    if _none_valid(count) or not (sse > 0).any():
        return float("inf")
    return float(band_psnr(sse, count, peaks).mean())


def worst_band_psnr(sse: np.ndarray, count, peaks) -> float:
    """What a raster tile's PSNR target is checked against: its worst band's :func:`band_psnr`; inf when
    every band is exact or there is no valid sample."""
    sse = np.asarray(sse, dtype=np.float64)
    if _none_valid(count) or not (sse > 0).any():
        return float("inf")
    return float(band_psnr(sse, count, peaks).min())


def raster_psnr(reference: np.ndarray, decoded: np.ndarray, valid: np.ndarray | None = None,
                peaks=None) -> float:
    """PSNR of a raster (H, W) or (H, W, B): the mean over bands of 10·log10(peak_b² / MSE_b), each MSE over
    the ``valid`` pixels only (nodata never counts), each band against its own peak (:func:`band_peaks`:
    its valid range) unless ``peaks`` are given. Per-tile targeting uses the IMAGE's band peaks for every
    tile and checks the worst band (:func:`worst_band_psnr`)."""
    if peaks is None:
        peaks = band_peaks(reference, valid)
    sse, count = band_sse(reference, decoded, valid)
    return psnr_from_band_sse(sse, count, peaks)


def raster_band_psnr(reference: np.ndarray, decoded: np.ndarray, valid: np.ndarray | None = None,
                     peaks=None) -> np.ndarray:
    """Per band PSNR of a raster against each band's own peak (see :func:`raster_psnr`)."""
    if peaks is None:
        peaks = band_peaks(reference, valid)
    sse, count = band_sse(reference, decoded, valid)
    return band_psnr(sse, count, peaks)


def band_max_error(reference: np.ndarray, decoded: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Per band the largest |decoded − reference| over the valid pixels (int64; 0 with no valid pixel)."""
    ref = reference if reference.ndim == 3 else reference[..., None]
    dec = decoded if decoded.ndim == 3 else decoded[..., None]
    out = np.zeros(ref.shape[2], dtype=np.int64)
    for r in range(0, ref.shape[0], 512):
        d = np.abs(ref[r : r + 512].astype(np.int64) - dec[r : r + 512])
        if valid is not None and valid.ndim == 3:
            d = np.where(valid[r : r + 512], d, 0).reshape(-1, ref.shape[2])
        elif valid is not None:
            d = d[valid[r : r + 512]]
        if d.size:
            out = np.maximum(out, d.reshape(-1, ref.shape[2]).max(0))
    return out
