"""The variable-rate hyperprior model (mean-scale, no autoregressive context).

    x ─g_a─▶ y ─×gain(q)─▶ y_s ─h_a─▶ z ─[FactorizedPrior]─▶ ẑ
                            │                                │ h_s (integer at coding time)
                            │                                ▼
                            └──────[GaussianConditional(μ, σ)]──▶ ŷ_s ─×inv_gain(q)─▶ g_s ─▶ x̂

One model covers the whole rate range: the quality ``q`` in [0, 1] selects a
per-channel gain vector (log-linear interpolation between learned anchors, as
in Cui et al. 2021, "Asymmetric gained deep image compression") and the
training λ. Only the gains depend on ``q``; all other weights are shared.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from pydantic import BaseModel, ConfigDict

from .entropy import FactorizedPrior, GaussianConditional, LatentResult, scale_thresholds
from .intnet import IntegerHyperSynthesis
from .layers import SimplifiedGDN, conv, deconv

DOWNSAMPLING = 64  # total stride down to the hyper-latent: tiles are padded to a multiple


class ModelConfig(BaseModel):
    """Architecture and rate range of a model; stored in its weights file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    channels: int = 64  # N: transform width
    latent_channels: int = 192  # M: channels of y
    hyper_channels: int = 64  # channels of z
    gain_anchors: int = 6
    lambda_min: float = 0.0016  # λ at q=0 (distortion: MSE on [0,255] scale / 255²)
    lambda_max: float = 0.16  # λ at q=1


@dataclass
class ForwardResult:
    x_hat: torch.Tensor
    y: LatentResult
    z: LatentResult

    def bpp(self) -> torch.Tensor:
        """Estimated bits per pixel of each image in the batch (from likelihoods)."""
        n, _, h, w = self.x_hat.shape
        bits = sum(-torch.log2(r.likelihoods).flatten(1).sum(1) for r in (self.y, self.z))
        return bits / (h * w)


class TwoPath(nn.Module):
    """A linear block transform plus a convolutional refinement: ``linear(x) + nonlinear(x)``.

    The linear path (16×16 blocks) starts as a PCA of training patches and the
    nonlinear path's last layer starts at zero, so the model begins as a good
    block transform and learns its non-linear, overlapping refinement from there:
    this makes short (CPU) training runs converge far faster than from scratch.
    """

    def __init__(self, linear: nn.Module, nonlinear: nn.Sequential):
        super().__init__()
        self.linear = linear
        self.nonlinear = nonlinear
        nn.init.zeros_(nonlinear[-1].weight)
        nn.init.zeros_(nonlinear[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) + self.nonlinear(x)


class HyperpriorCodec(nn.Module):
    def __init__(self, config: ModelConfig = ModelConfig()):
        super().__init__()
        self.config = config
        N, M, Nh = config.channels, config.latent_channels, config.hyper_channels
        self.g_a = TwoPath(
            nn.Conv2d(3, M, 16, stride=16),
            nn.Sequential(conv(3, N), SimplifiedGDN(N), conv(N, N), SimplifiedGDN(N), conv(N, N), SimplifiedGDN(N),
                          conv(N, M)),
        )
        self.g_s = TwoPath(
            nn.ConvTranspose2d(M, 3, 16, stride=16),
            nn.Sequential(deconv(M, N), SimplifiedGDN(N, inverse=True), deconv(N, N), SimplifiedGDN(N, inverse=True),
                          deconv(N, N), SimplifiedGDN(N, inverse=True), deconv(N, 3)),
        )
        self.h_a = nn.Sequential(conv(M, Nh, 3, 1), nn.ReLU(), conv(Nh, Nh), nn.ReLU(), conv(Nh, Nh))
        self.h_s = nn.Sequential(deconv(Nh, M), nn.ReLU(), deconv(M, M), nn.ReLU(), conv(M, 2 * M, 1, 1))
        self.hyper = FactorizedPrior(Nh)
        self.gaussian = GaussianConditional()
        # gain ∝ sqrt(λ) is the high-rate optimum for MSE: a good start for the anchors
        lambdas = torch.tensor([self.lmbda_of(k / (config.gain_anchors - 1)) for k in range(config.gain_anchors)])
        log_gain = 0.5 * torch.log(lambdas / lambdas.log().mean().exp())
        self.log_gain = nn.Parameter(log_gain.view(-1, 1).repeat(1, M))
        self.log_inv_gain = nn.Parameter(-log_gain.view(-1, 1).repeat(1, M))
        self.int_hs: IntegerHyperSynthesis | None = None  # set by finalize(); used for coding

    @torch.no_grad()
    def init_block_transform(self, patches: torch.Tensor, scale: float = 8.0) -> None:
        """Start the linear paths as the top-M principal components of 16×16 patches (N, 3, 16, 16)."""
        flat = patches.reshape(len(patches), -1).double()
        second_moment = flat.T @ flat / len(flat)  # uncentred: the first component carries the mean
        _, vecs = torch.linalg.eigh(second_moment)
        basis = vecs[:, -self.config.latent_channels :].flip(1).T  # (M, 768), strongest first
        self.g_a.linear.weight.copy_((basis * scale).reshape(-1, 3, 16, 16).float())
        self.g_a.linear.bias.zero_()
        self.g_s.linear.weight.copy_((basis / scale).reshape(-1, 3, 16, 16).float())
        self.g_s.linear.bias.zero_()

    # --- rate control -------------------------------------------------------------------
    def lmbda_of(self, q: float) -> float:
        c = self.config
        return math.exp(math.log(c.lambda_min) + q * (math.log(c.lambda_max) - math.log(c.lambda_min)))

    def lmbda(self, q: torch.Tensor) -> torch.Tensor:
        c = self.config
        return torch.exp(math.log(c.lambda_min) + q * (math.log(c.lambda_max) - math.log(c.lambda_min)))

    def gains(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-tile ``(gain, inverse gain)`` of shape (B, M, 1, 1) for qualities ``q`` (B,)."""
        pos = q.clamp(0, 1).to(self.log_gain.dtype) * (self.config.gain_anchors - 1)
        k = pos.floor().clamp_max(self.config.gain_anchors - 2).long()
        t = (pos - k).unsqueeze(1)
        g = (1 - t) * self.log_gain[k] + t * self.log_gain[k + 1]
        gi = (1 - t) * self.log_inv_gain[k] + t * self.log_inv_gain[k + 1]
        return g.exp()[..., None, None], gi.exp()[..., None, None]

    # --- training ----------------------------------------------------------------------
    def forward(self, x: torch.Tensor, q: torch.Tensor) -> ForwardResult:
        gain, inv_gain = self.gains(q)
        y = self.g_a(x) * gain
        z = self.hyper(self.h_a(y))
        scale, mean = self.h_s(z.hat).chunk(2, dim=1)
        y_res = self.gaussian(y, mean, scale)
        x_hat = self.g_s(y_res.hat * inv_gain)
        return ForwardResult(x_hat=x_hat, y=y_res, z=z)

    # --- coding support ----------------------------------------------------------------
    @torch.no_grad()
    def finalize(self, calibration_images: torch.Tensor) -> None:
        """Freeze everything the bits depend on: coding tables and the integer h_s."""
        self.hyper.tables = self.hyper.build_tables()
        self.gaussian.tables = GaussianConditional.build_tables()
        zs = []
        for q in (0.0, 0.5, 1.0):
            gain, _ = self.gains(torch.full((len(calibration_images),), q))
            zs.append(torch.round(self.h_a(self.g_a(calibration_images) * gain)))
        self.int_hs = IntegerHyperSynthesis.from_float(self.h_s, torch.cat(zs), scale_thresholds())

    def coding_state(self) -> dict:
        return {
            "hyper_tables": self.hyper.tables.to_dict(),
            "gaussian_tables": self.gaussian.tables.to_dict(),
            "int_hs": self.int_hs.to_dict(),
        }

    def load_coding_state(self, state: dict) -> None:
        from .rangecoder import TableSet

        self.hyper.tables = TableSet.from_dict(state["hyper_tables"])
        self.gaussian.tables = TableSet.from_dict(state["gaussian_tables"])
        self.int_hs = IntegerHyperSynthesis.from_dict(state["int_hs"])
