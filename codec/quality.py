"""Quality: ONE representation end to end, the u16 code a tile's index entry stores.

    user quality ∈ [0, 1] ──code_of──▶ ┌──────────────┐
    search level ∈ 0..63 ──code_of_level──▶ │ code 0..65535 │ ── stored in the tile index (u16)
                                        └──────┬───────┘
                                               └─q_tensor─▶ model q = code / 65535 (float32)

Both sides of the codec hand the model ``q_tensor(codes)``: the encoder quantises and
measures a tile at exactly the q the decoder reconstructs it with. Nothing else turns a
quality into a model input.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

QUALITY_STEPS = 65535  # the stored u16: q = code / QUALITY_STEPS
LEVELS = 64  # the rate-control grid (target-PSNR search, target-bpp ladder): level i ↔ q ≈ i / 63


def code_of(quality: float) -> int:
    """The code of a user's quality in [0, 1] (clamped), taken as the float32 the model computes with."""
    return int(round(min(max(float(np.float32(quality)), 0.0), 1.0) * QUALITY_STEPS))


def code_of_fraction(fraction: float) -> int:
    """The nearest code to a fraction in [0, 1] computed in float64: the quality of a family whose quality is a
    count (minnen2018: a tile's mean iterations over the most it may run), not a model input."""
    return int(round(min(max(float(fraction), 0.0), 1.0) * QUALITY_STEPS))


def code_of_level(level) -> np.ndarray:
    """Codes of grid levels 0..LEVELS-1 (int64, same shape): the nearest code to ``level / (LEVELS - 1)``."""
    return np.rint(np.asarray(level, dtype=np.float64) * QUALITY_STEPS / (LEVELS - 1)).astype(np.int64)


def quality_of(code) -> float | np.ndarray:
    """The quality in [0, 1] that a code stands for (float64; what headers and reports show)."""
    return np.asarray(code, dtype=np.float64) / QUALITY_STEPS if np.ndim(code) else int(code) / QUALITY_STEPS


def q_tensor(codes) -> "torch.Tensor":
    """The model's q (float32, shape (B,)) for per-tile codes: the one input encoder and decoder share.
    (torch is imported here, not above: headers and reports read codes without it.)"""
    import torch

    return torch.from_numpy(np.asarray(codes, dtype=np.float64).reshape(-1) / QUALITY_STEPS).float()
