"""Entropy-coded stages, each one module with the same trio.

    forward(v)            training: straight-through values for the decoder, noisy-value likelihoods for the rate
    quantize(v, ...)      coding: the integers that are coded (the one place each stage rounds)
    compress / decompress coding: one byte string per tile of a batch, and back

Both coding paths use fixed tables built once by ``build_tables`` and shipped with the
weights, so the bits never depend on float arithmetic at decode time. ``compress`` and
``decompress`` take a *coder*: the :mod:`codec.rangecoder` module (in process) or a
:class:`codec.parallel.EntropyPool` (the same functions mapped over CPU processes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from codec import rangecoder
from codec.rangecoder import TableSet
from codec.families.hyperprior.model.layers import lower_bound

LIKELIHOOD_BOUND = 1e-9
SCALE_MIN = 0.11
SCALE_MAX = 256.0
SCALE_LEVELS = 64
TAIL_STDS = 6.0  # table support half-width, in standard deviations


@dataclass
class LatentResult:
    """What a stage's ``forward`` returns: values for the decoder, likelihoods for the rate."""

    hat: torch.Tensor
    likelihoods: torch.Tensor


def ste_round(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.round(x) - x).detach()


def add_noise(x: torch.Tensor) -> torch.Tensor:
    return x + torch.empty_like(x).uniform_(-0.5, 0.5)


class FactorizedPrior(nn.Module):
    """Hyper-latent stage: a learned per-channel density (Ballé et al. 2018).

        z ──quantize (round)──▶ ẑ (ints) ──table[channel]──▶ range coder ──▶ bytes
    """

    def __init__(self, channels: int, filters: tuple[int, ...] = (3, 3, 3), init_scale: float = 10.0):
        super().__init__()
        self.channels = channels
        dims = (1, *filters, 1)
        scale = init_scale ** (1 / (len(dims) - 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for i in range(len(dims) - 1):
            init = math.log(math.expm1(1 / scale / dims[i + 1]))
            self.matrices.append(nn.Parameter(torch.full((channels, dims[i + 1], dims[i]), init)))
            self.biases.append(nn.Parameter(torch.rand(channels, dims[i + 1], 1) - 0.5))
            if i < len(dims) - 2:
                self.factors.append(nn.Parameter(torch.zeros(channels, dims[i + 1], 1)))
        self.tables: TableSet | None = None

    def _logits_cdf(self, v: torch.Tensor) -> torch.Tensor:
        # v: (C, 1, N)
        for i, (m, b) in enumerate(zip(self.matrices, self.biases)):
            v = torch.matmul(F.softplus(m), v) + b
            if i < len(self.factors):
                v = v + torch.tanh(self.factors[i]) * torch.tanh(v)
        return v

    def likelihood(self, z: torch.Tensor) -> torch.Tensor:
        b, c, h, w = z.shape
        v = z.transpose(0, 1).reshape(c, 1, -1)
        lower = self._logits_cdf(v - 0.5)
        upper = self._logits_cdf(v + 0.5)
        sign = -torch.sign(lower + upper).detach()
        lik = (torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower)).abs()
        lik = lik.reshape(c, b, h, w).transpose(0, 1)
        return lower_bound(lik, LIKELIHOOD_BOUND)

    def forward(self, z: torch.Tensor) -> LatentResult:
        noisy = add_noise(z) if self.training else self.quantize(z)
        return LatentResult(hat=ste_round(z), likelihoods=self.likelihood(noisy))

    @staticmethod
    def quantize(z: torch.Tensor) -> torch.Tensor:
        """ẑ: the hyper-latent as coded (integer-valued, same dtype)."""
        return torch.round(z)

    @torch.no_grad()
    def build_tables(self, max_half_width: int = 128) -> TableSet:
        """Per-channel pmfs over the integers that carry all but ~1e-9 of the mass."""
        grid = torch.arange(-max_half_width, max_half_width + 1, dtype=torch.float32)
        v = grid.view(1, 1, -1).expand(self.channels, 1, -1)
        pmf = self.likelihood(v.reshape(self.channels, 1, -1, 1).transpose(0, 1)).transpose(0, 1)
        pmf = pmf.reshape(self.channels, -1).double().numpy()
        rows, lengths, offsets = [], [], []
        for c in range(self.channels):
            keep = np.flatnonzero(pmf[c] > 1e-9)
            lo, hi = (keep[0], keep[-1]) if keep.size else (max_half_width, max_half_width)
            p = pmf[c, lo : hi + 1]
            escape = max(1.0 - p.sum(), 1e-9)
            rows.append(np.append(p, escape))
            lengths.append(len(rows[-1]))
            offsets.append(lo - max_half_width)
        return _pack_tables(rows, lengths, offsets)

    def _index(self, spatial) -> np.ndarray:
        """The table of every hyper-latent element: its channel."""
        return np.broadcast_to(np.arange(self.channels).reshape(-1, 1, 1), (self.channels, *spatial))

    def compress(self, z_hat: torch.Tensor, coder=rangecoder) -> list[bytes]:
        """One stream per tile of quantised hyper-latents (B, C, h, w)."""
        z = z_hat.to(torch.int64).cpu().numpy()
        return coder.encode_each(z, [self._index(z.shape[2:])] * len(z), self.tables)

    def decompress(self, streams: list[bytes], spatial: tuple[int, int], coder=rangecoder) -> torch.Tensor:
        """ẑ (int64, (B, C, h, w), CPU) of a batch of tiles."""
        index = self._index(spatial)
        return torch.from_numpy(np.stack(coder.decode_each(streams, [index] * len(streams), self.tables)))

    def estimate_bits(self, z_hat: torch.Tensor) -> np.ndarray:
        z = z_hat.to(torch.int64).cpu().numpy()
        index = self._index(z.shape[2:])
        return np.array([self.tables.estimate_bits(t, index) for t in z])


def scale_table() -> np.ndarray:
    return np.exp(np.linspace(math.log(SCALE_MIN), math.log(SCALE_MAX), SCALE_LEVELS))


def scale_thresholds() -> np.ndarray:
    """Boundaries between scale levels (geometric midpoints); index = #thresholds <= scale."""
    s = scale_table()
    return np.sqrt(s[:-1] * s[1:])


def _std_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * torch.erfc(-x / math.sqrt(2.0))


class GaussianConditional(nn.Module):
    """Main-latent stage: a Gaussian per element with mean and scale from the hyperprior.

        y ──quantize (− μ, round)──▶ s ──table[scale index]──▶ range coder ──▶ bytes
        bytes ──▶ s ──(+ μ)──▶ ŷ

    μ is a multiple of 1/256 and the scale index an integer, both computed by the
    integer hyper-synthesis, so encoder and decoder agree bit for bit.
    """

    def __init__(self):
        super().__init__()
        self.tables: TableSet | None = None

    @staticmethod
    def likelihood(y: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        scale = lower_bound(scale, SCALE_MIN)
        v = (y - mean).abs()
        lik = _std_normal_cdf((0.5 - v) / scale) - _std_normal_cdf((-0.5 - v) / scale)
        return lower_bound(lik, LIKELIHOOD_BOUND)

    def forward(self, y: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor) -> LatentResult:
        hat = ste_round(y - mean) + mean
        noisy = add_noise(y) if self.training else hat
        return LatentResult(hat=hat, likelihoods=self.likelihood(noisy, mean, scale))

    @staticmethod
    def quantize(y: torch.Tensor, mean_q: torch.Tensor) -> torch.Tensor:
        """The symbols coded for ``y`` around the integer hyper-synthesis' means (int64)."""
        return torch.round(y - mean_q).to(torch.int64)

    @staticmethod
    def build_tables() -> TableSet:
        rows, lengths, offsets = [], [], []
        for s in scale_table():
            half = int(math.ceil(s * TAIL_STDS))
            k = torch.arange(-half, half + 1, dtype=torch.float64)
            p = (_std_normal_cdf((k + 0.5) / s) - _std_normal_cdf((k - 0.5) / s)).numpy()
            escape = max(2.0 * float(_std_normal_cdf(torch.tensor(-(half + 0.5) / s, dtype=torch.float64))), 1e-9)
            rows.append(np.append(p, escape))
            lengths.append(len(rows[-1]))
            offsets.append(-half)
        return _pack_tables(rows, lengths, offsets)

    def compress(self, symbols: torch.Tensor, index: torch.Tensor, coder=rangecoder) -> list[bytes]:
        """One stream per tile of symbols (B, M, h, w), each coded with its scale index."""
        return coder.encode_each(symbols.cpu().numpy(), index.cpu().numpy(), self.tables)

    def decompress(self, streams: list[bytes], mean_q: torch.Tensor, index: torch.Tensor, coder=rangecoder) -> torch.Tensor:
        """ŷ = symbols + μ (CPU) of a batch of tiles."""
        sym = np.stack(coder.decode_each(streams, index.cpu().numpy(), self.tables))
        return torch.from_numpy(sym).to(mean_q.dtype) + mean_q.cpu()

    def estimate_bits(self, symbols: torch.Tensor, index: torch.Tensor) -> np.ndarray:
        sym, idx = symbols.cpu().numpy(), index.cpu().numpy()
        return np.array([self.tables.estimate_bits(s, i) for s, i in zip(sym, idx)])


def _pack_tables(rows, lengths, offsets) -> TableSet:
    pmfs = np.zeros((len(rows), max(lengths)), dtype=np.float64)
    for i, r in enumerate(rows):
        pmfs[i, : len(r)] = r
    return TableSet(pmfs, np.array(lengths), np.array(offsets))
