"""Image quality metrics over uint8 arrays: PSNR and MS-SSIM (Wang et al. 2003)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
MS_SSIM_MAX_PIXELS = 16_000_000  # above this, MS-SSIM is measured on the central 4096² crop


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


def _gaussian(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ms_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """MS-SSIM of two 8-bit images (grayscale or colour, channels averaged).

    Uses as many of the five scales as the image size allows (each needs ≥ 11 px),
    with the weights renormalised; NaN for images under 11 px.
    """
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    if a.shape[0] * a.shape[1] > MS_SSIM_MAX_PIXELS:
        h, w = a.shape[:2]
        y0, x0 = max(0, h // 2 - 2048), max(0, w // 2 - 2048)
        a, b = a[y0 : y0 + 4096, x0 : x0 + 4096], b[y0 : y0 + 4096, x0 : x0 + 4096]
    x = _to_tensor(a)
    y = _to_tensor(b)
    scales = 0
    size = min(x.shape[-2:])
    while scales < len(MS_SSIM_WEIGHTS) and size >= 11:
        scales += 1
        size //= 2
    if scales == 0:
        return float("nan")
    weights = torch.tensor(MS_SSIM_WEIGHTS[:scales], dtype=torch.float64)
    weights = weights / weights.sum()
    g = _gaussian()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    values = []
    for s in range(scales):
        ssim, cs = _ssim_cs(x, y, g, c1, c2)
        values.append(ssim if s == scales - 1 else cs)
        if s < scales - 1:
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    vals = torch.stack(values).clamp_min(0)
    return float(torch.prod(vals ** weights))


def _to_tensor(a: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(a)).to(torch.float64)
    t = t[..., None] if t.dim() == 2 else t
    return t.permute(2, 0, 1)[:, None]  # (C, 1, H, W): channels as a batch


def _ssim_cs(x, y, g, c1, c2):
    def blur(t):
        t = F.conv2d(t, g.view(1, 1, 1, -1))
        return F.conv2d(t, g.view(1, 1, -1, 1))

    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    ssim = ((2 * mx * my + c1) / (mx * mx + my * my + c1)) * cs
    return ssim.mean(), cs.mean()
