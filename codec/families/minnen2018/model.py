"""The minnen2018 networks: a spatial context predictor and a recurrent residual coder.

Minnen et al., "Spatially adaptive image compression using a tiled deep network" (ICIP 2018):
each 32×32 tile is predicted from its decoded left / above / above-left neighbours
(:class:`ContextPredictor`), and the residual is coded by Toderici et al.'s (CVPR 2017)
"LSTM, additive reconstruction" auto-encoder (:class:`ResidualEncoder`, :class:`Binarizer`,
:class:`ResidualDecoder`) in iterations of ``bits_per_iteration`` (128) bits each.

Widths are reduced from the papers' (encoder LSTMs 256/512/512, decoder 512/512/256/128) to
what trains in tens of CPU-minutes; see :class:`Minnen2018Config`. Pixels are in [0, 1];
residuals in [-1, 1].
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
import torch.nn.functional as F

TILE = 32  # the paper's tile side; the context patch is 2·TILE
BORDER_FILL = 0.5  # mid-grey stands in for neighbours outside the image (and for the unknown target quadrant)


@dataclass(frozen=True)
class Minnen2018Config:
    """Sizes of the networks. 32 bits × (TILE/16)² positions = 128 bits per iteration, as in the paper."""

    ctx_channels: int = 32  # context predictor: channels at the 8×8 bottleneck
    enc_channels: tuple[int, int, int, int] = (16, 32, 64, 64)  # conv, then the three encoder conv-LSTMs
    dec_channels: tuple[int, int, int, int] = (64, 64, 32, 16)  # the four decoder conv-LSTMs
    code_channels: int = 32  # binary code channels per 2×2 position
    residual_gain: bool = False  # @2: each iteration codes its head (gain, mean colour) first; see head_bits

    def __post_init__(self):
        object.__setattr__(self, "enc_channels", tuple(self.enc_channels))
        object.__setattr__(self, "dec_channels", tuple(self.dec_channels))

    @property
    def bits_per_iteration(self) -> int:
        return self.code_channels * (TILE // 16) ** 2

    @property
    def symbols_per_iteration(self) -> int:
        """Binary symbols coded per iteration: the head's bits (@2), then the code bits."""
        return self.head_bits + self.bits_per_iteration

    @property
    def head_bits(self) -> int:
        return HEAD_BITS if self.residual_gain else 0

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


# --- the iteration head (@2): a signalled gain and mean colour for each iteration --------------------
#
# minnen2018@1 fed every iteration the raw residual, so its decoder learned one fixed schedule of ever
# smaller increments (bench/results/minnen2018_diagnosis.md): sub-tiles whose residual stays large stall,
# and a fresh iteration on a small residual makes it worse. @2 codes ahead of each iteration's 128 bits
# a head of HEAD_BITS bits: the gain g (3 dB steps) that brings the residual to RMS GAIN_RMS, and the
# scaled residual's mean colour on a uniform grid. The network codes g·r − mean; the decoder adds
# (mean + output) / g. Every iteration then sees a unit-scale problem, and the mean colour (what the
# worst sub-tiles of @1 never corrected) falls below DC_STEP / 2g whatever the network has learned.

GAIN_BITS = 4  # gain index k: g = 2^((k-2)/2), 0.5 … 128
DC_BITS = 4  # per channel: the scaled residual's mean in steps of DC_STEP, -8 … 7
HEAD_BITS = GAIN_BITS + 3 * DC_BITS
GAIN_RMS = 0.2  # the RMS (pixels in [0, 1]) the gain brings each iteration's residual to
DC_STEP = GAIN_RMS / 2


def gain_index(rms: torch.Tensor) -> torch.Tensor:
    """The index k in [0, 16) of the gain 2^((k-2)/2) that brings a residual of RMS ``rms`` nearest to
    :data:`GAIN_RMS`: a unit-scale residual whether it is the prediction's (RMS ~0.2) or a near-lossless
    one (RMS ~0.002)."""
    k = torch.round(2 * torch.log2(GAIN_RMS / rms.clamp_min(1e-6))) + 2
    return k.clamp(0, 2**GAIN_BITS - 1).long()


def gain_of(k: torch.Tensor) -> torch.Tensor:
    return torch.pow(2.0, (k.double() - 2) / 2).float()


def _to_bits(v: torch.Tensor, n: int) -> torch.Tensor:
    """(B, m) non-negative ints → (B, m·n) {0, 1}, most significant first."""
    return ((v[..., None] >> torch.arange(n - 1, -1, -1, device=v.device)) & 1).flatten(1)


def _from_bits(b: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of :func:`_to_bits`."""
    w = 2 ** torch.arange(n - 1, -1, -1, device=b.device)
    return (b.long().reshape(b.shape[0], -1, n) * w).sum(-1)


def head_bits(r: torch.Tensor) -> torch.Tensor:
    """(B, 3, 32, 32) residuals → (B, HEAD_BITS) {0, 1} long: the gain index, then the mean colour's indices."""
    k = gain_index(r.pow(2).mean(dim=(1, 2, 3)).sqrt())
    m = (r * gain_of(k)[:, None, None, None]).mean(dim=(2, 3))
    j = torch.round(m / DC_STEP).clamp(-(2 ** (DC_BITS - 1)), 2 ** (DC_BITS - 1) - 1).long() + 2 ** (DC_BITS - 1)
    return torch.cat([_to_bits(k[:, None], GAIN_BITS), _to_bits(j, DC_BITS)], 1)


def head_values(bits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, HEAD_BITS) → (gain (B, 1, 1, 1), scaled mean colour (B, 3, 1, 1)): what encoder and decoder both use."""
    g = gain_of(_from_bits(bits[:, :GAIN_BITS], GAIN_BITS)[:, 0])[:, None, None, None]
    j = _from_bits(bits[:, GAIN_BITS:], DC_BITS) - 2 ** (DC_BITS - 1)
    return g, (j.float() * DC_STEP)[:, :, None, None]


# --- context prediction -----------------------------------------------------------------


class ChannelwiseFC(nn.Module):
    """A fully-connected layer within each channel (spatial → spatial), no mixing across channels:
    C·(HW)² weights instead of (C·HW)² for a full FC layer (the paper's 384 K vs 64 M)."""

    def __init__(self, channels: int, side: int):
        super().__init__()
        n = side * side
        self.weight = nn.Parameter(torch.randn(channels, n, n) / n**0.5)
        self.bias = nn.Parameter(torch.zeros(channels, n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = torch.einsum("bcn,cmn->bcm", x.reshape(b, c, h * w), self.weight) + self.bias
        return y.reshape(b, c, h, w)

    @staticmethod
    def full_fc_parameters(channels: int, side: int) -> int:
        """Weights a full FC layer over the same (C, side, side) tensor would need."""
        n = channels * side * side
        return n * n + n


class ContextPredictor(nn.Module):
    """64×64 context patch (left/above/above-left tiles, target quadrant mid-grey) → the 32×32 lower-right
    quadrant: strided convolutions down to 8×8, a channel-wise FC layer, up-convolutions."""

    def __init__(self, channels: int = 32):
        super().__init__()
        c = channels
        self.down = nn.Sequential(
            nn.Conv2d(3, c // 2, 5, 2, 2), nn.ELU(),  # 32
            nn.Conv2d(c // 2, c, 5, 2, 2), nn.ELU(),  # 16
            nn.Conv2d(c, c, 5, 2, 2), nn.ELU(),  # 8
        )
        self.fc = ChannelwiseFC(c, 8)
        self.up = nn.Sequential(
            nn.ELU(), nn.Conv2d(c, c, 1), nn.ELU(),  # mixes channels after the per-channel FC
            nn.ConvTranspose2d(c, c, 4, 2, 1), nn.ELU(),  # 16
            nn.ConvTranspose2d(c, c // 2, 4, 2, 1), nn.ELU(),  # 32
            nn.Conv2d(c // 2, 3, 3, 1, 1),
        )

    def forward(self, patch: torch.Tensor) -> torch.Tensor:
        """(B, 3, 64, 64) in [0, 1] → (B, 3, 32, 32) prediction of the lower-right quadrant."""
        return self.up(self.fc(self.down(patch - 0.5))) + 0.5


def context_patch(left: torch.Tensor | None, above: torch.Tensor | None, above_left: torch.Tensor | None,
                  like: torch.Tensor) -> torch.Tensor:
    """The 64×64 patch the predictor sees; absent neighbours (image border) and the target are mid-grey."""
    patch = torch.full((like.shape[0], 3, 2 * TILE, 2 * TILE), BORDER_FILL, dtype=like.dtype, device=like.device)
    if above_left is not None:
        patch[:, :, :TILE, :TILE] = above_left
    if above is not None:
        patch[:, :, :TILE, TILE:] = above
    if left is not None:
        patch[:, :, TILE:, :TILE] = left
    return patch


# --- the recurrent residual coder (Toderici et al. 2017) -----------------------------------


class ConvLSTM(nn.Module):
    """A convolutional LSTM cell; ``stride`` applies to the input convolution."""

    def __init__(self, cin: int, hidden: int, stride: int = 1, kernel: int = 3, hidden_kernel: int = 1):
        super().__init__()
        self.hidden = hidden
        self.conv_x = nn.Conv2d(cin, 4 * hidden, kernel, stride, kernel // 2)
        self.conv_h = nn.Conv2d(hidden, 4 * hidden, hidden_kernel, 1, hidden_kernel // 2, bias=False)

    def forward(self, x: torch.Tensor, state):
        gx = self.conv_x(x)
        if state is None:
            h = c = torch.zeros(gx.shape[0], self.hidden, *gx.shape[2:], dtype=x.dtype, device=x.device)
        else:
            h, c = state
        i, f, g, o = (gx + self.conv_h(h)).chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, (h, c)


class ResidualEncoder(nn.Module):
    """32×32 residual → (B, C, 2, 2) features: a strided conv, then three strided conv-LSTMs."""

    def __init__(self, channels=(16, 32, 64, 64)):
        super().__init__()
        c0, c1, c2, c3 = channels
        self.conv = nn.Conv2d(3, c0, 3, 2, 1)
        self.rnn = nn.ModuleList([ConvLSTM(c0, c1, 2), ConvLSTM(c1, c2, 2), ConvLSTM(c2, c3, 2)])
        self.out_channels = c3

    def forward(self, r: torch.Tensor, states):
        x = self.conv(r)
        states = list(states) if states is not None else [None] * 3
        for k, cell in enumerate(self.rnn):
            x, states[k] = cell(x, states[k])
        return x, states


class Binarizer(nn.Module):
    """1×1 conv + tanh, then ±1: stochastically while training (unbiased, so gradients pass straight
    through), by sign when coding."""

    def __init__(self, cin: int, bits: int = 32):
        super().__init__()
        self.conv = nn.Conv2d(cin, bits, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = torch.tanh(self.conv(x))
        if self.training:
            b = torch.where(torch.rand_like(t) < (1 + t) / 2, 1.0, -1.0)
        else:
            b = torch.where(t >= 0, 1.0, -1.0)
        return t + (b - t).detach()


class ResidualDecoder(nn.Module):
    """(B, bits, 2, 2) ±1 codes → 32×32 residual increment: four conv-LSTMs with depth-to-space."""

    def __init__(self, bits: int = 32, channels=(64, 64, 32, 16)):
        super().__init__()
        d0, d1, d2, d3 = channels
        self.conv = nn.Conv2d(bits, d0, 1)
        self.rnn = nn.ModuleList([
            ConvLSTM(d0, d0, 1, 3, 3),
            ConvLSTM(d0 // 4, d1, 1, 3, 3),
            ConvLSTM(d1 // 4, d2, 1, 3, 3),
            ConvLSTM(d2 // 4, d3, 1, 3, 3),
        ])
        self.out = nn.Conv2d(d3 // 4, 3, 3, 1, 1)

    def forward(self, b: torch.Tensor, states):
        x = self.conv(b)
        states = list(states) if states is not None else [None] * 4
        for k, cell in enumerate(self.rnn):
            x, states[k] = cell(x, states[k])
            x = F.pixel_shuffle(x, 2)
        return torch.tanh(self.out(x)), states


class Minnen2018Codec(nn.Module):
    """The whole family's networks. ``forward`` trains (context loss + per-iteration residual losses);
    per-tile coding with stopping and entropy coding lives in :mod:`codec.families.minnen2018.coding`."""

    family = "minnen2018"

    def __init__(self, config: Minnen2018Config | None = None):
        super().__init__()
        self.config = config = config or Minnen2018Config()
        self.predictor = ContextPredictor(config.ctx_channels)
        self.encoder = ResidualEncoder(config.enc_channels)
        self.binarizer = Binarizer(config.enc_channels[-1], config.code_channels)
        self.decoder = ResidualDecoder(config.code_channels, config.dec_channels)
        # P(bit = +1) per (iteration, bit position), counted over training codes; the entropy model
        self.register_buffer("bit_ones", torch.ones(1, config.symbols_per_iteration))
        self.register_buffer("bit_total", torch.full((1, 1), 2.0))

    @property
    def bits_per_iteration(self) -> int:
        return self.config.bits_per_iteration

    @property
    def symbols_per_iteration(self) -> int:
        return self.config.symbols_per_iteration

    def head_of(self, r: torch.Tensor) -> torch.Tensor:
        """An iteration's head bits (B, 0) when the config has none (@1)."""
        if not self.config.residual_gain:
            return torch.zeros(r.shape[0], 0, dtype=torch.long, device=r.device)
        return head_bits(r)

    def step_input(self, r: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
        """What the encoder codes this iteration: g·r − mean colour (@2), r itself (@1)."""
        if not self.config.residual_gain:
            return r
        g, dc = head_values(head)
        return r * g - dc

    def step_output(self, d: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
        """What this iteration adds to the reconstruction: (mean colour + d) / g (@2), d (@1)."""
        if not self.config.residual_gain:
            return d
        g, dc = head_values(head)
        return (d + dc) / g

    def bit_probabilities(self, iterations: int):
        """(iterations, bits) float64 P(bit = 1); iterations past those counted reuse the last row."""
        import numpy as np

        p = (self.bit_ones / self.bit_total).double().cpu().numpy()
        rows = np.minimum(np.arange(iterations), p.shape[0] - 1)
        return np.clip(p[rows], 1 / 512, 1 - 1 / 512)

    def forward(self, patch: torch.Tensor, target: torch.Tensor, iterations: int, use_context: torch.Tensor):
        """Training pass. ``patch``: (B, 3, 64, 64) context; ``target``: (B, 3, 32, 32); ``use_context``: (B,)
        bool, False rows are coded against a flat mid-grey prediction (independent tiles).
        Returns (L1 of the prediction, per-iteration losses (T,), the symbols (T, B, symbols_per_iteration)).
        With ``residual_gain`` an iteration's loss is the L1 of the residual it leaves *at its gain*, so every
        iteration weighs alike however small its residual (without it, the plain L1, which the first few dominate)."""
        pred = self.predictor(patch)
        ctx_loss = (pred - target).abs().mean()
        base = torch.where(use_context[:, None, None, None], pred.detach(), torch.full_like(pred, BORDER_FILL))
        r = target - base
        enc_s = dec_s = None
        losses, codes = [], []
        for _ in range(iterations):
            head = self.head_of(r.detach())
            feat, enc_s = self.encoder(self.step_input(r, head), enc_s)
            b = self.binarizer(feat)
            d, dec_s = self.decoder(b, dec_s)
            r = r - self.step_output(d, head)
            g = head_values(head)[0] if self.config.residual_gain else 1.0
            losses.append((r * g).abs().mean())
            codes.append(torch.cat([head.float(), (b.detach().flatten(1) > 0).float()], 1))
        return ctx_loss, torch.stack(losses), torch.stack(codes)
