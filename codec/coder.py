"""Batched tile engine: runs the model on many same-sized tiles at once.

Encoding a batch:

    tiles ─g_a─▶ y ─┬─ quality search: (tiles × candidate q) per forward pass,
                    │   PSNR of the real 8-bit reconstruction per tile
                    └─ chosen q per tile ─▶ z, y symbols ─▶ range coder (CPU) ─▶ blobs

The float transforms run on any device and dtype; everything that decides the
bits (ẑ, the integer hyper-synthesis, symbols) is exact, so a CPU decodes what
a GPU encoded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .model import HyperpriorCodec

QUALITY_LEVELS = 64  # search grid: q = i / (QUALITY_LEVELS - 1)
# float convolutions differ by ~1e-4 dB between batch shapes and devices: the search asks for this
# much more than the target so that the decoded tile reaches the target wherever it is decoded
TARGET_MARGIN_DB = 0.01


def level_to_q(level) -> np.ndarray:
    return np.asarray(level, dtype=np.float64) / (QUALITY_LEVELS - 1)


@dataclass
class Quantized:
    """Everything the bits of a batch of tiles depend on, at one quality per tile."""

    z_hat: torch.Tensor  # int64 (B, Nh, h/4, w/4)
    symbols: torch.Tensor  # int64 (B, M, h, w)
    mean_q: torch.Tensor
    index: torch.Tensor
    q: torch.Tensor  # (B,) float32

    @property
    def y_hat(self) -> torch.Tensor:
        return self.symbols.to(self.mean_q.dtype) + self.mean_q


@dataclass
class Candidate:
    """A quantised tile and the PSNR of its reconstruction."""

    quantized: Quantized
    psnr: np.ndarray
    mse: np.ndarray


def psnr_from_mse(mse: np.ndarray) -> np.ndarray:
    """PSNR of 8-bit data; inf for a perfect match, NaN where the MSE is unknown."""
    mse = np.asarray(mse, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(mse > 0, 10 * np.log10(255.0**2 / np.maximum(mse, 1e-12)), np.where(np.isnan(mse), np.nan, np.inf))


class TileCoder:
    """One model on one device; tiles in, quantised latents and reconstructions out."""

    def __init__(self, model: HyperpriorCodec, device: str | torch.device = "cpu", half: bool = False,
                 entropy_workers: int = 0):
        self.device = torch.device(device)
        self.entropy_workers = entropy_workers
        self._pool = None
        self.dtype = torch.float16 if half and self.device.type == "cuda" else torch.float32
        self.model = model.to(self.device).eval()
        self._transforms = [model.g_a, model.g_s, model.h_a]
        for m in self._transforms:
            m.to(dtype=self.dtype, memory_format=torch.channels_last)

    # --- tensors ---------------------------------------------------------------------
    def to_tensor(self, tiles: np.ndarray) -> torch.Tensor:
        """uint8 (B, H, W, 3) → float (B, 3, H, W) in [0, 1] on the device."""
        x = torch.from_numpy(np.ascontiguousarray(tiles)).to(self.device)
        x = x.permute(0, 3, 1, 2).to(self.dtype).div_(255.0)
        return x.contiguous(memory_format=torch.channels_last)

    # --- model stages ------------------------------------------------------------------
    @torch.no_grad()
    def analyse(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.g_a(x).float()

    @torch.no_grad()
    def quantize(self, y: torch.Tensor, q: torch.Tensor) -> Quantized:
        q = q.to(self.device, torch.float32)
        gain, _ = self.model.gains(q)
        y_s = y * gain
        z_hat = torch.round(self.model.h_a(y_s.to(self.dtype)).float())
        mean_q, index = self.model.int_hs(z_hat)
        symbols = torch.round(y_s - mean_q).to(torch.int64)
        return Quantized(z_hat.to(torch.int64), symbols, mean_q, index, q)

    @torch.no_grad()
    def synthesize(self, y_hat: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """Reconstruction as uint8 (B, 3, H, W): exactly what a decoder outputs."""
        _, inv_gain = self.model.gains(q.to(self.device, torch.float32))
        x = self.model.g_s((y_hat.to(self.device) * inv_gain).to(self.dtype).contiguous(memory_format=torch.channels_last))
        return x.float().clamp_(0, 1).mul_(255).round_().to(torch.uint8)

    @torch.no_grad()
    def evaluate(self, y: torch.Tensor, q: torch.Tensor, originals: torch.Tensor, masks: torch.Tensor) -> Candidate:
        """Quantise at ``q`` and measure the PSNR of the 8-bit reconstruction over ``masks``."""
        quant = self.quantize(y, q)
        recon = self.synthesize(quant.y_hat, q)
        err = (recon.double() - originals.double()).pow_(2).sum(1) * masks  # float64: exact enough to compare with T
        mse = (err.flatten(1).sum(1) / (3 * masks.flatten(1).sum(1))).cpu().numpy()
        return Candidate(quant, psnr_from_mse(mse), mse)

    # --- entropy coding (in process, or over a pool of CPU processes) ---------------------
    @property
    def pool(self):
        if self.entropy_workers and self._pool is None:
            from .parallel import EntropyPool

            self._pool = EntropyPool(self.model.hyper.tables, self.model.gaussian.tables, self.entropy_workers)
        return self._pool

    def entropy_encode(self, quant: Quantized) -> tuple[list[bytes], list[bytes]]:
        """(z streams, y streams), one of each per tile."""
        if self.pool:
            return self.pool.encode(*(t.cpu().numpy() for t in (quant.z_hat, quant.symbols, quant.index)))
        return self.model.hyper.compress(quant.z_hat), self.model.gaussian.compress(quant.symbols, quant.index)

    def entropy_decode(self, z_streams: list[bytes], y_streams: list[bytes], spatial: tuple[int, int]) -> torch.Tensor:
        """ŷ_s of a batch of tiles: ẑ → integer h_s (on the device) → main-latent symbols + μ."""
        m = self.model
        if self.pool:
            z_hat = torch.from_numpy(self.pool.decode_z(z_streams, (m.config.hyper_channels, *spatial)))
        else:
            z_hat = m.hyper.decompress(z_streams, spatial)
        mean_q, index = m.int_hs(z_hat.to(self.device))
        if self.pool:
            symbols = torch.from_numpy(self.pool.decode_y(y_streams, index.cpu().numpy()))
            return symbols.to(mean_q.dtype) + mean_q.cpu()
        return m.gaussian.decompress(y_streams, mean_q, index)

    # --- quality choice ----------------------------------------------------------------
    def search_target_psnr(self, y, originals, masks, target: float) -> tuple[Quantized, np.ndarray, np.ndarray]:
        """Lowest quality level per tile whose reconstruction reaches ``target`` dB.

        Guarded secant search on the level grid: every round evaluates up to two
        candidate levels for each unresolved tile, all tiles in one batch. Tiles
        that miss the target even at the top level get the top level.
        Returns (quantized, psnr, missed).
        """
        n = y.shape[0]
        top = QUALITY_LEVELS - 1
        target = target + TARGET_MARGIN_DB
        lo = np.zeros(n, dtype=int)  # every level below lo fails
        hi = np.full(n, top)  # hi passes, or hi == top
        known: list[dict[int, float]] = [{} for _ in range(n)]
        best: dict[int, tuple[Candidate, int]] = {}  # tile → (candidate batch, row) at level hi
        first = [round(top * 0.35), round(top * 0.7)]
        pending = {t: list(first) for t in range(n)}
        rounds = 0
        for _ in range(4 * QUALITY_LEVELS.bit_length()):
            pairs = [(t, lvl) for t, lvls in pending.items() for lvl in lvls]
            if not pairs:
                break
            tiles = torch.tensor([p[0] for p in pairs], device=y.device)
            levels = np.array([p[1] for p in pairs])
            cand = self.evaluate(y[tiles], torch.from_numpy(level_to_q(levels)).float(), originals[tiles], masks[tiles])
            for row, (t, lvl) in enumerate(pairs):
                known[t][lvl] = cand.psnr[row]
                if cand.psnr[row] >= target:
                    if lvl <= hi[t]:
                        hi[t] = lvl
                        best[t] = (cand, row)
                else:
                    lo[t] = max(lo[t], lvl + 1)
                    if lvl == top:
                        best[t] = (cand, row)
            rounds += 1
            pending = {t: self._next_levels(known[t], lo[t], hi[t], target, t in best, rounds) for t in range(n)}
            pending = {t: v for t, v in pending.items() if v}
        assert not pending and len(best) == n, "quality search did not converge"
        missed = np.array([known[t].get(top, np.inf) < target and hi[t] == top for t in range(n)])
        return self._gather(best, n), np.array([known[t][hi[t]] for t in range(n)]), missed

    @staticmethod
    def _next_levels(known: dict[int, float], lo: int, hi: int, target: float, have_hi: bool, rounds: int) -> list[int]:
        """Levels to try next for one tile: secant guesses first, bisection once they stall."""
        if lo >= hi:
            return [] if have_hi else [hi]
        if rounds >= 3:
            return [(lo + hi) // 2]
        fails = [(l, p) for l, p in known.items() if p < target]
        passes = [(l, p) for l, p in known.items() if p >= target]
        pts = sorted(known.items())
        if fails and passes:
            (l0, p0), (l1, p1) = max(fails), min(passes)
        else:  # target outside what we have seen: extrapolate from the nearest two points
            (l0, p0), (l1, p1) = (pts[0], pts[1]) if not fails else (pts[-2], pts[-1])
        if l1 == l0 or p1 <= p0:
            guess = (lo + hi) // 2
        else:
            guess = int(np.ceil(l0 + (target - p0) * (l1 - l0) / (p1 - p0)))
        guess = int(np.clip(guess, lo, hi))
        return sorted({max(lo, guess - 1), guess} - ({hi} if have_hi else set()))

    @staticmethod
    def _gather(best: dict[int, tuple[Candidate, int]], n: int) -> Quantized:
        fields = {}
        for name in ("z_hat", "symbols", "mean_q", "index", "q"):
            fields[name] = torch.stack([getattr(best[t][0].quantized, name)[best[t][1]] for t in range(n)])
        return Quantized(**fields)
