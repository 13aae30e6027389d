"""The variable-rate mean-scale hyperprior model (no autoregressive context).

Training (``forward``) and coding (``compress`` … ``decompress``) run the same stages; coding
swaps the float h_s for its exact integer twin and noise for rounding:

    x ─g_a─▶ y ─×gain(q)─▶ y_s ─h_a─▶ z ─hyper.quantize─▶ ẑ ──────────────────────▶ [FactorizedPrior] ─▶ z bytes
                            │                             │ h_s (float: training; IntegerHyperSynthesis: coding)
                            │                             ▼
                            └──gaussian.quantize(· − μ)──▶ symbols ──(scale index)──▶ [GaussianConditional] ─▶ y bytes
    y bytes ─▶ symbols + μ = ŷ_s ─×inv_gain(q)─▶ g_s ─▶ x̂

Coding API (batches of same-shaped tiles, per-tile q):

    compress(y, q) -> Latents                       y (from g_a) → ẑ, μ, scale index, symbols   [exact]
    to_bytes(latents, coder) -> (z streams, y streams)
    from_bytes(z streams, y streams, spatial, device, coder) -> ŷ_s                           [exact]
    decompress(ŷ_s, q) -> x̂ (float)                ŷ_s → g_s

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

from codec import rangecoder
from codec.families.hyperprior.model.config import ModelConfig
from codec.families.hyperprior.model.entropy import FactorizedPrior, GaussianConditional, LatentResult, scale_thresholds
from codec.families.hyperprior.model.intnet import IntegerHyperSynthesis
from codec.families.hyperprior.model.layers import SimplifiedGDN, TwoPath, conv, deconv, param_dtype


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


@dataclass
class Latents:
    """Everything the bits of a batch of tiles depend on, at one q per tile (``compress``'s output)."""

    z_hat: torch.Tensor  # int64 (B, Nh, h/4, w/4)
    symbols: torch.Tensor  # int64 (B, M, h, w)
    mean_q: torch.Tensor  # float32, multiples of 1/256
    index: torch.Tensor  # int64 scale index
    q: torch.Tensor  # (B,) float32

    FIELDS = ("z_hat", "symbols", "mean_q", "index", "q")

    @property
    def y_hat(self) -> torch.Tensor:
        """ŷ_s: what the decoder reconstructs from the bytes."""
        return self.symbols.to(self.mean_q.dtype) + self.mean_q

    @classmethod
    def gather(cls, picks: list[tuple["Latents", int]]) -> "Latents":
        """One tile from each ``(latents, row)``, stacked into a batch."""
        return cls(**{f: torch.stack([getattr(lat, f)[row] for lat, row in picks]) for f in cls.FIELDS})


class HyperpriorCodec(nn.Module):
    family = "hyperprior"  # codec.families: the table row that codes with this model

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

    # --- rate: q → λ and gains ------------------------------------------------------------
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

    # --- coding ------------------------------------------------------------------------
    @torch.no_grad()
    def compress(self, y: torch.Tensor, q: torch.Tensor, z_hat: torch.Tensor | None = None) -> Latents:
        """Quantise analysed tiles ``y`` (B, M, h, w) at qualities ``q`` (B,): every integer the bits hold.
        ``z_hat``: the hyper-latent to code instead of round(h_a(y_s)) (encode effort refines it)."""
        q = q.to(y.device, torch.float32)
        gain, _ = self.gains(q)
        y_s = y * gain
        if z_hat is None:
            z_hat = self.hyper.quantize(self.h_a(y_s.to(param_dtype(self.h_a))).float())
        mean_q, index = self.int_hs(z_hat)
        return Latents(z_hat.to(torch.int64), self.gaussian.quantize(y_s, mean_q), mean_q, index, q)

    def to_bytes(self, latents: Latents, coder=rangecoder) -> tuple[list[bytes], list[bytes]]:
        """(z streams, y streams), one of each per tile."""
        return self.hyper.compress(latents.z_hat, coder), self.gaussian.compress(latents.symbols, latents.index, coder)

    @torch.no_grad()
    def from_bytes(self, z_streams: list[bytes], y_streams: list[bytes], spatial: tuple[int, int],
                   device: torch.device | str = "cpu", coder=rangecoder) -> torch.Tensor:
        """ŷ_s (CPU) of a batch of tiles: ẑ → integer h_s (on ``device``) → symbols + μ."""
        z_hat = self.hyper.decompress(z_streams, spatial, coder)
        mean_q, index = self.int_hs(z_hat.to(device))
        return self.gaussian.decompress(y_streams, mean_q, index, coder)

    @torch.no_grad()
    def decompress(self, y_hat: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """x̂ (float, unclamped) from ŷ_s at qualities ``q``, in the synthesis transform's dtype."""
        _, inv_gain = self.gains(q.to(y_hat.device, torch.float32))
        return self.g_s((y_hat * inv_gain).to(param_dtype(self.g_s)).contiguous(memory_format=torch.channels_last))

    def estimate_bits(self, latents: Latents):
        """Ideal code length of each tile (numpy), for rate control."""
        return self.hyper.estimate_bits(latents.z_hat) + self.gaussian.estimate_bits(latents.symbols, latents.index)

    # --- coding support ----------------------------------------------------------------
    @torch.no_grad()
    def finalize(self, calibration_images: torch.Tensor) -> None:
        """Freeze everything the bits depend on: coding tables and the integer h_s."""
        self.hyper.tables = self.hyper.build_tables()
        self.gaussian.tables = GaussianConditional.build_tables()
        zs = []
        for q in (0.0, 0.5, 1.0):
            gain, _ = self.gains(torch.full((len(calibration_images),), q))
            zs.append(self.hyper.quantize(self.h_a(self.g_a(calibration_images) * gain)))
        self.int_hs = IntegerHyperSynthesis.from_float(self.h_s, torch.cat(zs), scale_thresholds())

    def tables(self) -> list[rangecoder.TableSet]:
        """Every table the range coder uses (what an entropy pool's workers hold)."""
        return [self.hyper.tables, self.gaussian.tables]

    def coding_state(self) -> dict:
        return {
            "hyper_tables": self.hyper.tables.to_dict(),
            "gaussian_tables": self.gaussian.tables.to_dict(),
            "int_hs": self.int_hs.to_dict(),
        }

    def load_coding_state(self, state: dict) -> None:
        self.hyper.tables = rangecoder.TableSet.from_dict(state["hyper_tables"])
        self.gaussian.tables = rangecoder.TableSet.from_dict(state["gaussian_tables"])
        self.int_hs = IntegerHyperSynthesis.from_dict(state["int_hs"])
