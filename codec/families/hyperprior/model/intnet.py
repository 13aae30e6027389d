"""Integer hyper-synthesis: the part of the decoder that picks probability tables.

A float network gives slightly different numbers on another device, thread
count or BLAS, and a single flipped scale index desynchronises the range
decoder. Following Ballé et al. 2019 ("Integer networks for data compression")
this replica of the hyper-synthesis uses integer weights and integer
activations with power-of-two rescaling. Every intermediate value is an integer
below 2**53, so float64 convolutions compute it exactly in any summation order
(and each layer rounds once more in case a backend uses an inexact algorithm).

    ẑ (ints) ─▶ [int conv ─▶ ReLU ─▶ >>shift]×L ─▶ (scale index, μ in 1/256 steps)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

WEIGHT_BITS = 12
ACT_BITS = 16
MEAN_FRACTION = 256.0


@dataclass
class IntLayer:
    transposed: bool
    weight: torch.Tensor  # integer-valued float64 (out, in, k, k) or (in, out, k, k)
    bias: torch.Tensor  # integer-valued float64, per output channel
    out_shift: torch.Tensor  # per output channel: multiply accumulator by this power of two
    stride: int
    padding: int
    output_padding: int
    relu: bool


def _pow2_floor(x: float) -> float:
    return 2.0 ** math.floor(math.log2(x))


class IntegerHyperSynthesis:
    """Exact fixed-point twin of a float ``h_s`` (Sequential of convs/deconvs and ReLUs)."""

    def __init__(self, layers: list[IntLayer], thresholds: torch.Tensor):
        self.layers = layers
        self.thresholds = thresholds.to(torch.float64)

    @classmethod
    @torch.no_grad()
    def from_float(cls, h_s: nn.Sequential, calibration_z: torch.Tensor, thresholds) -> "IntegerHyperSynthesis":
        """Quantise ``h_s``; ``calibration_z`` (rounded hyper-latents) sets activation ranges."""
        convs = [m for m in h_s if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
        # activation maxima of the float network on calibration data
        maxima, x = [], calibration_z.double()
        for m in h_s:
            x = m.double()(x) if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) else F.relu(x)
            if isinstance(m, nn.ReLU):
                maxima.append(float(x.max()))
        h_s.float()
        in_scale = torch.ones(1, dtype=torch.float64)  # ẑ is already integer
        layers = []
        for i, m in enumerate(convs):
            transposed = isinstance(m, nn.ConvTranspose2d)
            w = m.weight.detach().double()
            out_dim = 1 if transposed else 0
            w_out = w.transpose(0, 1) if transposed else w
            wmax = w_out.abs().flatten(1).amax(1).clamp_min(1e-12)
            w_scale = torch.tensor([_pow2_floor((2 ** (WEIGHT_BITS - 1) - 1) / float(v)) for v in wmax], dtype=torch.float64)
            shape = [1] * w.dim()
            shape[out_dim] = -1
            w_int = torch.round(w * w_scale.view(shape))
            acc_scale = w_scale * in_scale  # accumulator = real value * acc_scale (per out channel)
            b_int = torch.round(m.bias.detach().double() * acc_scale)
            last = i == len(convs) - 1
            if last:
                out_scale = torch.ones_like(acc_scale)  # final layer: keep the exact rational value
                shift = 1.0 / acc_scale
            else:
                out_scale = torch.full_like(acc_scale, _pow2_floor((2**ACT_BITS - 1) / max(2 * maxima[i], 1e-6)))
                shift = out_scale / acc_scale
            layers.append(
                IntLayer(
                    transposed=transposed,
                    weight=w_int,
                    bias=b_int,
                    out_shift=shift,
                    stride=m.stride[0],
                    padding=m.padding[0],
                    output_padding=m.output_padding[0] if transposed else 0,
                    relu=not last,
                )
            )
            in_scale = out_scale[0:1] if not last else in_scale
        return cls(layers, torch.as_tensor(thresholds))

    @torch.no_grad()
    def __call__(self, z_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(mean_q, scale_index)`` for the main latent: exact on every device."""
        device = z_hat.device
        x = z_hat.to(torch.float64).clamp(-(2**15), 2**15)
        for layer in self.layers:
            w = layer.weight.to(device)
            b = layer.bias.to(device)
            if layer.transposed:
                acc = F.conv_transpose2d(x, w, b, layer.stride, layer.padding, layer.output_padding)
            else:
                acc = F.conv2d(x, w, b, layer.stride, layer.padding)
            acc = torch.round(acc)  # exact already; guards against inexact conv algorithms
            x = acc * layer.out_shift.to(device).view(1, -1, 1, 1)  # power-of-two: exact
            if layer.relu:
                x = torch.floor(x.clamp_min(0) + 0.5).clamp_max(2**ACT_BITS - 1)
        scale, mean = x.chunk(2, dim=1)
        index = torch.bucketize(scale.contiguous(), self.thresholds.to(device), right=True)
        mean_q = torch.floor(mean * MEAN_FRACTION + 0.5) / MEAN_FRACTION
        return mean_q.to(torch.float32), index

    def to_dict(self) -> dict:
        return {
            "thresholds": self.thresholds,
            "layers": [{**vars(layer), "weight": layer.weight.to(torch.int16)} for layer in self.layers],
        }

    @classmethod
    def from_dict(cls, d: dict) -> "IntegerHyperSynthesis":
        layers = [IntLayer(**{**layer, "weight": layer["weight"].to(torch.float64)}) for layer in d["layers"]]
        return cls(layers, d["thresholds"])
