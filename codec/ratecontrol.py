"""Rate control: the one home of how many bits each tile gets.

    RateTarget.from_options(target_psnr=, quality=, target_bpp=)    one validation, one default (38 dB)
        │ plan(target, engine, …)
        ▼
    FixedQuality   every tile at one quality
    TargetPsnr     per batch: the lowest grid level whose 8-bit reconstruction reaches the target
                   (a batched, guarded secant search)
    TargetBpp      once: each tile's squared error and bits on a ladder of levels, then a Lagrangian
                   choice under the byte budget; a smaller budget again if the real stream overshot
        │ choose(engine, batch) -> Choice: latents at the chosen quality per tile (+ measured error, missed flags)
        ▼ retry(stream bytes) -> the strategy for one more pass, or None
    codec.api codes and packs what was chosen.

Qualities are u16 codes (:mod:`codec.quality`) throughout: a strategy quantises and measures a
tile at exactly the q the decoder reconstructs it with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Protocol

import numpy as np
import torch

from .model import Latents
from .quality import LEVELS, code_of, code_of_level

if TYPE_CHECKING:
    from .engine import Batch, Engine

MODES = ("quality", "target_psnr", "target_bpp")  # the order is the stream's mode byte
DEFAULT_TARGET_PSNR = 38.0
# float convolutions differ by ~1e-4 dB between batch shapes and devices: the search asks for this
# much more than the target so that the decoded tile reaches the target wherever it is decoded
TARGET_MARGIN_DB = 0.01
TOP_LEVEL = LEVELS - 1
LADDER = np.unique(np.round(np.linspace(0, TOP_LEVEL, 12)).astype(int))  # target_bpp: levels measured per tile
MAX_BPP_PASSES = 8


@dataclass(frozen=True)
class RateTarget:
    """What the caller asked for: ``mode`` (one of :data:`MODES`) and its ``value``; valid by construction."""

    mode: str
    value: float

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown rate-control mode {self.mode!r} (one of {', '.join(MODES)})")
        try:
            value = float(self.value)
        except (TypeError, ValueError):
            raise ValueError(f"{self.mode} must be a number, got {self.value!r}") from None
        if not math.isfinite(value):
            raise ValueError(f"{self.mode} must be a finite number, got {value}")
        if self.mode == "quality" and not 0.0 <= value <= 1.0:
            raise ValueError(f"quality must be in [0, 1], got {value}")
        if self.mode == "target_bpp" and not value > 0:
            raise ValueError(f"target_bpp must be positive, got {value}")
        object.__setattr__(self, "value", value)

    @classmethod
    def from_options(cls, target_psnr: float | None = None, quality: float | None = None,
                     target_bpp: float | None = None) -> "RateTarget":
        """At most one of the three (None: not given); none means ``target_psnr`` = :data:`DEFAULT_TARGET_PSNR`."""
        given = [(m, v) for m, v in (("target_psnr", target_psnr), ("quality", quality), ("target_bpp", target_bpp))
                 if v is not None]
        if len(given) > 1:
            raise ValueError(f"give only one of target_psnr, quality, target_bpp (got {', '.join(m for m, _ in given)})")
        return cls(*given[0]) if given else cls("target_psnr", DEFAULT_TARGET_PSNR)


@dataclass
class Choice:
    """What a strategy chose for a batch of tiles."""

    latents: Latents  # quantised at the chosen quality per tile
    codes: np.ndarray  # that quality per tile (u16 codes, as stored)
    sse: np.ndarray | None = None  # squared error per tile (over its valid pixels, 3 channels); None: not measured
    missed: np.ndarray | None = None  # per tile: the target could not be met


class Strategy(Protocol):
    def choose(self, engine: "Engine", batch: "Batch") -> Choice:
        """The quantisation of each tile of ``batch``."""

    def retry(self, stream_bytes: int) -> "Strategy | None":
        """After a pass produced ``stream_bytes``: the strategy for another pass, or None when done."""


def plan(target: RateTarget, engine: "Engine", batches, *, width: int, height: int, n_tiles: int,
         overhead_bytes: int) -> Strategy:
    """The strategy for ``target``. ``batches()`` iterates the image's analysed tile batches (target_bpp
    measures them all up front); ``overhead_bytes``: what the stream spends besides the latents."""
    if target.mode == "quality":
        return FixedQuality(target.value)
    if target.mode == "target_psnr":
        return TargetPsnr(target.value)
    return TargetBpp(target.value, width, height, overhead_bytes).measure(engine, batches(), n_tiles)


# --- fixed quality ----------------------------------------------------------------------------


@dataclass
class FixedQuality:
    quality: float

    def choose(self, engine: "Engine", batch: "Batch") -> Choice:
        codes = np.full(len(batch.ids), code_of(self.quality))
        return Choice(engine.quantize(batch.y, codes), codes)

    def retry(self, stream_bytes: int) -> None:
        return None


# --- target PSNR ------------------------------------------------------------------------------


@dataclass
class TargetPsnr:
    """Lowest grid level per tile whose reconstruction reaches ``psnr`` dB; tiles that miss it even at
    the top level get the top level and are flagged."""

    psnr: float

    def choose(self, engine: "Engine", batch: "Batch") -> Choice:
        return _PsnrSearch(engine, batch, self.psnr + TARGET_MARGIN_DB).run()

    def retry(self, stream_bytes: int) -> None:
        return None


class _PsnrSearch:
    """Guarded secant search on the level grid: every round measures up to two candidate levels for
    each unresolved tile, all tiles of the batch in one forward pass."""

    FIRST_LEVELS = (round(TOP_LEVEL * 0.35), round(TOP_LEVEL * 0.7))
    MAX_ROUNDS = 4 * LEVELS.bit_length()

    def __init__(self, engine: "Engine", batch: "Batch", target: float):
        n = len(batch.ids)
        self.engine, self.batch, self.target, self.n = engine, batch, target, n
        self.lo = np.zeros(n, dtype=int)  # every level below lo fails
        self.hi = np.full(n, TOP_LEVEL)  # hi passes, or hi == top
        self.known: list[dict[int, float]] = [{} for _ in range(n)]  # level → PSNR
        self.best: dict = {}  # tile → (measurement, row) at level hi (or top)

    def run(self) -> Choice:
        pending = {t: list(self.FIRST_LEVELS) for t in range(self.n)}
        rounds = 0
        for _ in range(self.MAX_ROUNDS):
            pairs = [(t, lvl) for t, lvls in pending.items() for lvl in lvls]
            if not pairs:
                break
            self._measure(pairs)
            rounds += 1
            pending = {t: _next_levels(self.known[t], self.lo[t], self.hi[t], self.target, t in self.best, rounds)
                       for t in range(self.n)}
            pending = {t: v for t, v in pending.items() if v}
        assert not pending and len(self.best) == self.n, "quality search did not converge"
        missed = np.array([self.known[t].get(TOP_LEVEL, np.inf) < self.target and self.hi[t] == TOP_LEVEL
                           for t in range(self.n)])
        picks = [self.best[t] for t in range(self.n)]
        sse = np.array([m.mse[row] for m, row in picks]) * 3 * self.batch.npix
        codes = np.array([m.codes[row] for m, row in picks])
        return Choice(Latents.gather([(m.latents, row) for m, row in picks]), codes, sse, missed)

    def _measure(self, pairs: list[tuple[int, int]]) -> None:
        b = self.batch
        tiles = torch.tensor([t for t, _ in pairs], device=b.y.device)
        m = self.engine.measure(b.y[tiles], code_of_level([lvl for _, lvl in pairs]), b.originals[tiles], b.masks[tiles])
        for row, (t, lvl) in enumerate(pairs):
            self.known[t][lvl] = m.psnr[row]
            if m.psnr[row] >= self.target:
                if lvl <= self.hi[t]:
                    self.hi[t] = lvl
                    self.best[t] = (m, row)
            else:
                self.lo[t] = max(self.lo[t], lvl + 1)
                if lvl == TOP_LEVEL:
                    self.best[t] = (m, row)


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


# --- target bpp -------------------------------------------------------------------------------


class TargetBpp:
    """A byte budget for the whole stream: measure a ladder of levels once, then pick a level per tile
    that minimises the total squared error within the budget; if the real stream overshoots the
    estimate, shrink the budget and pick again (at most :data:`MAX_BPP_PASSES` passes)."""

    def __init__(self, bpp: float, width: int, height: int, overhead_bytes: int):
        self.budget_bytes = bpp * width * height / 8
        self.budget_bits = (self.budget_bytes - overhead_bytes) * 8
        self.codes = code_of_level(LADDER)
        self.passes = 0

    def measure(self, engine: "Engine", batches: Iterable["Batch"], n_tiles: int) -> "TargetBpp":
        """Squared error and estimated bits of every tile at every ladder level; then the first choice."""
        self.dist = np.zeros((n_tiles, len(self.codes)))
        self.bits = np.zeros((n_tiles, len(self.codes)))
        for batch in batches:
            for j, code in enumerate(self.codes):
                m = engine.measure(batch.y, np.full(len(batch.ids), code), batch.originals, batch.masks)
                self.dist[batch.ids, j] = m.mse * 3 * batch.npix
                self.bits[batch.ids, j] = engine.estimate_bits(m.latents)
        self.choice, self.feasible = _choose_levels(self.dist, self.bits, self.budget_bits)
        return self

    def choose(self, engine: "Engine", batch: "Batch") -> Choice:
        j = self.choice[batch.ids]
        return Choice(engine.quantize(batch.y, self.codes[j]), self.codes[j], self.dist[batch.ids, j],
                      np.full(len(batch.ids), not self.feasible))

    def retry(self, stream_bytes: int) -> "TargetBpp | None":
        self.passes += 1
        if stream_bytes <= self.budget_bytes or not self.feasible or self.passes >= MAX_BPP_PASSES:
            return None
        self.budget_bits *= self.budget_bytes / stream_bytes * 0.98
        self.choice, self.feasible = _choose_levels(self.dist, self.bits, self.budget_bits)
        return self


def _choose_levels(dist: np.ndarray, bits: np.ndarray, budget_bits: float) -> tuple[np.ndarray, bool]:
    """Per-tile ladder index minimising total squared error with total bits ≤ budget (Lagrangian)."""
    rows = np.arange(len(dist))

    def choose(log_lambda: float) -> np.ndarray:
        return np.argmin(dist + 10.0**log_lambda * bits, axis=1)

    lo, hi = -12.0, 12.0  # small λ favours quality
    if bits[rows, choose(hi)].sum() > budget_bits:
        return np.zeros(len(dist), dtype=int), False  # even the lowest quality is over budget
    for _ in range(60):
        mid = (lo + hi) / 2
        if bits[rows, choose(mid)].sum() > budget_bits:
            lo = mid
        else:
            hi = mid
    return choose(hi), True
