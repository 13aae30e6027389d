"""Rate–distortion of models on a set of images, with real streams (not the training estimate).

    images × qualities ─▶ codec.encode (quality mode) ─▶ stream bytes, decoded PSNR
                       ─▶ per-image and mean curves ─▶ BD-rate of a model against a reference
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from codec import decode, encode
from codec.metrics import bd_rate, psnr
from codec.registry import LoadedModel

QUALITIES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


@dataclass
class Curve:
    bpp: list[float]
    psnr: list[float]


def rd_curve(model: LoadedModel, image: np.ndarray, qualities=QUALITIES) -> Curve:
    """One image's (bpp, PSNR) at each quality, from actual encoded streams."""
    rgb = image[..., :3] if image.ndim == 3 else image
    bpps, psnrs = [], []
    for q in qualities:
        res = encode(rgb, model, quality=q)
        bpps.append(res.bpp)
        psnrs.append(psnr(rgb, decode(res.data, model)))
    return Curve(bpps, psnrs)


def mean_curve(curves: list[Curve]) -> Curve:
    """The set's curve: bpp and PSNR averaged over images at each quality (how Kodak results are quoted)."""
    return Curve(list(np.mean([c.bpp for c in curves], axis=0)), list(np.mean([c.psnr for c in curves], axis=0)))


def compare(models: dict[str, LoadedModel], images: dict[str, np.ndarray], reference: str,
            qualities=QUALITIES, bpp_range=(0.02, 4.0)) -> dict:
    """Per-image and mean curves of every model, and each model's BD-rate (%) against ``reference``.

    Returns ``{"mean": {model: Curve}, "per_image": {name: {model: Curve}}, "bd_rate": {model: %},
    "bd_rate_per_image": {name: {model: %}}}``; negative BD-rate = fewer bits at equal PSNR.
    """
    per_image = {n: {m: rd_curve(lm, img, qualities) for m, lm in models.items()} for n, img in images.items()}
    mean = {m: mean_curve([per_image[n][m] for n in images]) for m in models}
    ref = mean[reference]
    out = {"mean": mean, "per_image": per_image, "bd_rate": {}, "bd_rate_per_image": {}}
    for m in models:
        if m != reference:
            out["bd_rate"][m] = bd_rate(ref.bpp, ref.psnr, mean[m].bpp, mean[m].psnr, bpp_range)
    for n in images:
        r = per_image[n][reference]
        out["bd_rate_per_image"][n] = {m: bd_rate(r.bpp, r.psnr, c.bpp, c.psnr, bpp_range)
                                       for m, c in per_image[n].items() if m != reference}
    return out
