"""Rate control: the one home of how many bits each tile gets.

    RateTarget.from_options(target_psnr=, quality=, target_bpp=)    one validation, one default (38 dB)
        │ plan(target, engine, …)
        ▼
    FixedQuality   every tile at one quality
    TargetPsnr     per batch: the lowest grid level whose 8-bit reconstruction reaches the target
                   (predicted from the latents, verified by synthesis, corrected where it missed)
    TargetBpp      once: each tile's squared error and bits on a ladder of levels, then a Lagrangian
                   choice under the byte budget; a smaller budget again if the real stream overshot
        │ choose(engine, batch) -> Choice: latents at the chosen quality per tile (+ measured error, missed flags)
        ▼ retry(stream bytes) -> the strategy for one more pass, or None
    codec.api codes and packs what was chosen.

Qualities are u16 codes (:mod:`codec.quality`) throughout: a strategy quantises and measures a
tile at exactly the q the decoder reconstructs it with.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Protocol

import numpy as np
import torch

from codec.families.hyperprior.model import Latents
from codec.options import DEFAULT_TARGET_PSNR, MODES, RateTarget  # noqa: F401 (re-exported for callers of rate control)
from codec.families.hyperprior import refine
from codec.metrics import psnr_from_mse
from codec.quality import LEVELS, QUALITY_STEPS, code_of, code_of_level, q_tensor

if TYPE_CHECKING:
    from codec.families.hyperprior.engine import Batch, Engine

# float convolutions differ by ~1e-4 dB between batch shapes and devices: the search asks for this
# much more than the target so that the decoded tile reaches the target wherever it is decoded
TARGET_MARGIN_DB = 0.01
TOP_LEVEL = LEVELS - 1
LADDER = np.unique(np.round(np.linspace(0, TOP_LEVEL, 12)).astype(int))  # target_bpp: levels measured per tile
MAX_BPP_PASSES = 8


@dataclass
class Choice:
    """What a strategy chose for a batch of tiles."""

    latents: Latents  # quantised at the chosen quality per tile
    codes: np.ndarray  # that quality per tile (u16 codes, as stored)
    sse: np.ndarray | None = None  # squared error per tile (over its valid pixels, 3 channels); None: not measured
    missed: np.ndarray | None = None  # per tile: the target could not be met
    band_sse: np.ndarray | None = None  # rasters: (n, 3) squared error per group position; None: not measured


class Strategy(Protocol):
    def choose(self, engine: "Engine", batch: "Batch") -> Choice:
        """The quantisation of each tile of ``batch``."""

    def retry(self, stream_bytes: int) -> "Strategy | None":
        """After a pass produced ``stream_bytes``: the strategy for another pass, or None when done."""


def plan(target: RateTarget, engine: "Engine", batches, *, width: int, height: int, n_tiles: int,
         overhead_bytes: int, effort: int = 0) -> Strategy:
    """The strategy for ``target``. ``batches()`` iterates the image's analysed tile batches (target_bpp
    measures them all up front); ``overhead_bytes``: what the stream spends besides the latents; ``effort``:
    how long each tile's latents are refined after its level is chosen (codec.families.hyperprior.refine)."""
    steps = refine.iterations_of(effort)
    if target.mode == "quality":
        return FixedQuality(target.value, steps)
    if target.mode == "target_psnr":
        return TargetPsnr(target.value, steps)
    return TargetBpp(target.value, width, height, overhead_bytes, steps).measure(engine, batches(), n_tiles)


# --- fixed quality ----------------------------------------------------------------------------


@dataclass
class FixedQuality:
    quality: float
    steps: int = 0  # latent refinement steps per tile (0: none)

    def choose(self, engine: "Engine", batch: "Batch") -> Choice:
        codes = np.full(len(batch.ids), code_of(self.quality))
        if not self.steps:
            return Choice(engine.quantize(batch.y, codes), codes)
        m = refine.refine_batch(engine, batch, codes, self.steps)
        return Choice(m.latents, codes, m.mse * 3 * batch.npix, None, m.band_sse)

    def retry(self, stream_bytes: int) -> None:
        return None


# --- target PSNR ------------------------------------------------------------------------------


@dataclass
class TargetPsnr:
    """Lowest grid level per tile whose reconstruction reaches ``psnr`` dB (:class:`_PsnrSearch`);
    tiles that miss it even at the top level get the top level and are flagged."""

    psnr: float
    steps: int = 0  # latent refinement steps per tile and candidate level (0: none)
    floor_ratios: list = field(default_factory=list, repr=False, compare=False)  # of this image's tiles so far

    def choose(self, engine: "Engine", batch: "Batch") -> Choice:
        search = _PsnrSearch(engine, batch, self.psnr + TARGET_MARGIN_DB, self.floor_ratios)
        choice = search.run()
        if not self.steps:
            return choice
        return _refined_to_target(engine, batch, search, choice, self.psnr + TARGET_MARGIN_DB, self.steps)

    def retry(self, stream_bytes: int) -> None:
        return None


PREDICT_LEVELS = np.arange(0, LEVELS, 9)  # where the latent error D is computed (0, 9, …, 63); interpolated between
CALIBRATION_LEVELS = np.array([0, 21, 42, 63])  # where κ is measured, once per engine
CHECK_DB = 0.1  # the level below a passing one is measured unless predicted this far below the target
MODEL_ROUNDS = 4  # rounds guided by the model; then bisection
PRIOR_FLOOR_RATIO = 0.6  # F_t / mean_l κ·D_t before any tile of the image is measured


class _PsnrSearch:
    """Predict each tile's PSNR at every level, verify by synthesis, correct the tiles that missed.

    A tile's 8-bit MSE at level l is modelled as ``mse_t(l) = F_t + κ(l)·D_t(l)``:

    - ``D_t(l)`` (:func:`latent_error`): the mean squared quantisation error of the tile's latents at
      level l, in the synthesis' input units; no synthesis needed;
    - ``κ(l)`` (:func:`_kappa`): the model's pixel MSE per unit of it, measured once per engine;
    - ``F_t``: what the tile loses even unquantised (the transforms' floor). One measured synthesis
      gives it (``F_t = mse − κ·D`` at that level; interpolated between measured levels); before the
      first, it is guessed from the tiles this image already coded (``floor_ratios``).

    Every round measures, for each unresolved tile and all tiles in one batched pass, the predicted
    lowest passing level ``g`` in ``[lo, hi]`` and, once the tile has a measurement, ``g − 1`` too unless
    the model puts it more than :data:`CHECK_DB` below the target. A tile is resolved when the level
    below its lowest measured passing level failed, or is predicted to fail by more than CHECK_DB
    (then a level above the exhaustive search's choice is possible, rarely: it passes all the same);
    after :data:`MODEL_ROUNDS` rounds the rest are bisected. 1.3–2.5 syntheses per tile on the Kodak
    and aerial mosaics of ``bench/speed.py``, where a secant search from fixed levels took 4.0–4.8,
    with the same levels as measuring every level.

    The model only steers: a tile gets a level whose measured reconstruction (at the stored code's
    q) reached the target, or the top level, flagged when even that missed.
    """

    MAX_ROUNDS = MODEL_ROUNDS + 2 * LEVELS.bit_length()

    def __init__(self, engine: "Engine", batch: "Batch", target: float, floor_ratios: list[float]):
        n = len(batch.ids)
        self.engine, self.batch, self.target, self.n = engine, batch, target, n
        self.floor_ratios = floor_ratios
        self.lo = np.zeros(n, dtype=int)  # every level below lo fails
        self.hi = np.full(n, TOP_LEVEL)  # hi passes, or hi == top
        self.known: list[dict[int, float]] = [{} for _ in range(n)]  # level → measured PSNR
        self.best: dict = {}  # tile → (measurement, row) at level hi (or top)
        self.quant_mse = _kappa(engine) * latent_error(engine.model, batch.y)  # κ·D: (n, LEVELS)

    def run(self) -> Choice:
        pending = {t: self._next(t, 0) for t in range(self.n)}
        for rounds in range(1, self.MAX_ROUNDS + 1):
            pairs = [(t, lvl) for t, lvls in pending.items() for lvl in lvls]
            if not pairs:
                break
            self._measure(pairs)
            pending = {t: lvls for t in pending if (lvls := self._next(t, rounds))}
        assert not pending and len(self.best) == self.n, "quality search did not converge"
        missed = np.array([self.known[t].get(TOP_LEVEL, np.inf) < self.target and self.hi[t] == TOP_LEVEL
                           for t in range(self.n)])
        self.floor_ratios.extend(self._floor(t, self.hi[t]) / max(self.quant_mse[t].mean(), 1e-12)
                                 for t in range(self.n) if not missed[t])
        picks = [self.best[t] for t in range(self.n)]
        sse = np.array([m.mse[row] for m, row in picks]) * 3 * self.batch.npix
        codes = np.array([m.codes[row] for m, row in picks])
        band_sse = None if self.batch.raster is None else np.array([m.band_sse[row] for m, row in picks])
        return Choice(Latents.gather([(m.latents, row) for m, row in picks]), codes, sse, missed, band_sse)

    def _floor(self, t: int, level: int) -> float:
        """F_t from the measurement at ``level``."""
        return 255.0**2 / 10 ** (self.known[t][level] / 10) - self.quant_mse[t, level]

    def predicted_psnr(self, t: int) -> np.ndarray:
        """Tile ``t``'s PSNR at every level, as the model of the measurements so far predicts it."""
        if self.known[t]:
            levels = sorted(self.known[t])
            floor = np.interp(np.arange(LEVELS), levels, [self._floor(t, lvl) for lvl in levels])
        else:
            ratio = float(np.median(self.floor_ratios)) if self.floor_ratios else PRIOR_FLOOR_RATIO
            floor = max(ratio, 0.0) * self.quant_mse[t].mean()
        return 10 * np.log10(255.0**2 / np.maximum(floor + self.quant_mse[t], 1e-6))

    def _next(self, t: int, rounds: int) -> list[int]:
        """Levels to measure next for tile ``t``; [] once it is resolved."""
        lo, hi, have_hi = self.lo[t], self.hi[t], t in self.best
        if lo >= hi:
            return [] if have_hi else [hi]
        if rounds >= MODEL_ROUNDS:
            return [(lo + hi) // 2]
        psnr = self.predicted_psnr(t)
        passing = np.flatnonzero(psnr[lo:hi] >= self.target)
        g = lo + int(passing[0]) if passing.size else hi  # predicted lowest passing level in [lo, hi]
        levels = [] if g == hi and have_hi else [g]
        if rounds and g > lo and psnr[g - 1] >= self.target - CHECK_DB:
            levels.insert(0, g - 1)
        return levels

    def _measure(self, pairs: list[tuple[int, int]]) -> None:
        b = self.batch
        tiles = torch.tensor([t for t, _ in pairs], device=b.y.device)
        m = self.engine.measure(b.y[tiles], code_of_level([lvl for _, lvl in pairs]), b.originals[tiles], b.masks[tiles],
                                b.raster)
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


MISSED_LAMBDA = 4.0  # a tile that misses even at the top level refines there at this many times λ(top)
PSNR_LAMBDA = 3.0  # target_psnr refines at this many times λ(level): at λ(level) itself mid levels trade PSNR for bits
AIM_MARGIN_DB = 0.05  # round 2 aims this far above the target (the refinement gain shrinks a little lower down)


def _refined_to_target(engine: "Engine", batch: "Batch", search: "_PsnrSearch", choice: Choice, target: float,
                       steps: int) -> Choice:
    """Per tile the fewest estimated bits among the searched choice and refined latents that reach ``target``
    when measured. Round 1 refines each tile at its searched level l (a tile that missed even at the top: the
    top level at :data:`MISSED_LAMBDA`·λ) and measures the gain Δ over the unrefined PSNR; round 2 refines at
    the lowest level whose predicted unrefined PSNR + Δ reaches the target (and the one above). Refinement
    adds ~0.1–0.9 dB at equal bits (bench/results/effort_psnr.log), a few levels. The searched choice stays
    where no refined candidate passes, so the guarantee is the search's."""
    n = len(batch.ids)
    bits = engine.estimate_bits(choice.latents)
    missed = choice.missed.copy() if choice.missed is not None else np.zeros(n, dtype=bool)
    bits[missed] = np.inf  # any passing candidate beats a miss
    picks: list = [None] * n  # tile → (Quantised, row) of the refined candidate taken
    levels = np.rint(np.asarray(choice.codes) * TOP_LEVEL / QUALITY_STEPS).astype(int)
    plain_psnr = psnr_from_mse(choice.sse / (3 * np.maximum(batch.npix, 1)))
    rows = [(t, levels[t]) for t in range(n)]
    m = _refine_rows(engine, batch, rows, steps, missed)
    _take_passing(engine, m, rows, target, bits, picks)
    gain = m.psnr - plain_psnr
    rows = [(t, lvl) for t in range(n) if not missed[t] and gain[t] > 0
            for lvl in _aimed_levels(search.predicted_psnr(t), gain[t], target, levels[t])]
    if rows:
        _take_passing(engine, _refine_rows(engine, batch, rows, steps, missed), rows, target, bits, picks)
    if all(p is None for p in picks):
        return choice
    return _with_picks(choice, picks, batch.npix, missed & np.array([p is None for p in picks]))


def _aimed_levels(predicted: np.ndarray, gain: float, target: float, level: int) -> list[int]:
    """Below ``level``: the lowest level whose ``predicted`` PSNR + ``gain`` reaches the target, and the next."""
    ok = np.flatnonzero(predicted[:level] + gain >= target + AIM_MARGIN_DB)
    if not ok.size:
        return []
    return sorted({int(ok[0]), min(int(ok[0]) + 1, level - 1)})


def _refine_rows(engine: "Engine", batch: "Batch", rows: list, steps: int, missed: np.ndarray):
    """Refined latents of the (tile, level) ``rows``, measured: at :data:`PSNR_LAMBDA`·λ(level),
    :data:`MISSED_LAMBDA`·λ for missed tiles."""
    tiles, codes = [t for t, _ in rows], code_of_level([lvl for _, lvl in rows])
    lam = engine.model.lmbda(q_tensor(codes)).double().numpy() * np.where(missed[tiles], MISSED_LAMBDA, PSNR_LAMBDA)
    return refine.refine_batch(engine, refine.subset(batch, tiles), codes, steps, lam, keep_plain=False)


def _take_passing(engine: "Engine", m, rows: list, target: float, bits: np.ndarray, picks: list) -> None:
    """Where row r of ``m`` reaches ``target`` in fewer estimated bits than tile t's best so far, take it."""
    cand_bits = engine.estimate_bits(m.latents)
    for r, (t, _) in enumerate(rows):
        if m.psnr[r] >= target and cand_bits[r] < bits[t]:
            bits[t], picks[t] = cand_bits[r], (m, r)


def _with_picks(choice: Choice, picks: list, npix: np.ndarray, missed: np.ndarray) -> Choice:
    """``choice`` with tile t replaced by the measured ``picks[t] = (Quantised, row)`` where not None; ``missed``
    the tiles that still miss the target."""
    taken = [(p[0].latents, p[1]) if p else (choice.latents, t) for t, p in enumerate(picks)]
    codes = np.array([p[0].codes[p[1]] if p else choice.codes[t] for t, p in enumerate(picks)])
    sse = np.array([p[0].mse[p[1]] * 3 * npix[t] if p else choice.sse[t] for t, p in enumerate(picks)])
    band = None if choice.band_sse is None else np.array([p[0].band_sse[p[1]] if p else choice.band_sse[t]
                                                          for t, p in enumerate(picks)])
    return Choice(Latents.gather(taken), codes, sse, missed, band)


@torch.no_grad()
def latent_error(model, y: torch.Tensor) -> np.ndarray:
    """``D_t(l)`` (n, LEVELS): mean squared quantisation error of each tile's latents ``y`` at every level,
    in the synthesis' input units (``(round(y·g) − y·g)·g⁻¹``, hyperprior means taken as 0); computed
    at :data:`PREDICT_LEVELS` and interpolated log-linearly in between."""
    gain, inv_gain = model.gains(q_tensor(code_of_level(PREDICT_LEVELS)).to(y.device))
    err = np.empty((len(y), len(PREDICT_LEVELS)))
    for k in range(len(PREDICT_LEVELS)):
        y_s = y.float() * gain[k]
        err[:, k] = ((torch.round(y_s) - y_s) * inv_gain[k]).pow_(2).flatten(1).mean(1).double().cpu().numpy()
    log_err = np.log(np.maximum(err, 1e-12))
    return np.exp(np.stack([np.interp(np.arange(LEVELS), PREDICT_LEVELS, row) for row in log_err]))


_KAPPA: "weakref.WeakKeyDictionary[Engine, np.ndarray]" = weakref.WeakKeyDictionary()


def _kappa(engine: "Engine") -> np.ndarray:
    """``κ(l)`` for every level: the 8-bit MSE per unit of :func:`latent_error`, beyond the unquantised
    floor, median over a few tiles of synthetic 1/f texture at :data:`CALIBRATION_LEVELS`
    (interpolated between). Measured once per engine (a few small syntheses)."""
    if engine not in _KAPPA:
        tiles = _texture(2, 128)
        originals = torch.from_numpy(tiles).to(engine.device).permute(0, 3, 1, 2)
        masks = torch.ones(originals[:, 0].shape, device=engine.device)
        y = engine.analyse(engine.to_tensor(tiles))
        quant = latent_error(engine.model, y)
        kappa = []
        for level in CALIBRATION_LEVELS:
            codes = code_of_level(np.full(len(tiles), level))
            with torch.no_grad():
                gain, _ = engine.model.gains(q_tensor(codes).to(y.device))
            floor = engine.synthesize(y * gain, codes)  # unquantised: only the transforms' loss
            floor_mse = (floor.double() - originals.double()).pow(2).flatten(1).mean(1).cpu().numpy()
            mse = engine.measure(y, codes, originals, masks).mse
            kappa.append(float(np.median((mse - floor_mse) / quant[:, level])))
        _KAPPA[engine] = np.interp(np.arange(LEVELS), CALIBRATION_LEVELS, kappa)
    return _KAPPA[engine]


def _texture(n: int, size: int, seed: int = 0) -> np.ndarray:
    """``n`` deterministic RGB tiles (uint8, (n, size, size, 3)) of 1/f^1.5 noise with correlated channels:
    a stand-in for natural image content."""
    rng = np.random.default_rng(seed)
    f = np.hypot(np.fft.fftfreq(size)[:, None], np.fft.rfftfreq(size)[None])
    spectrum = (rng.standard_normal((n, 3, size, size // 2 + 1)) + 1j * rng.standard_normal((n, 3, size, size // 2 + 1)))
    x = np.fft.irfft2(spectrum / np.maximum(f, 1 / size) ** 1.5, s=(size, size))
    x = np.einsum("ij,njhw->nihw", np.array([[1, 0.8, 0.6], [0.8, 1, 0.8], [0.6, 0.8, 1]]), x)
    x = (x - x.mean((1, 2, 3), keepdims=True)) / x.std((1, 2, 3), keepdims=True)
    return np.clip(128 + 40 * x, 0, 255).round().astype(np.uint8).transpose(0, 2, 3, 1).copy()


# --- target bpp -------------------------------------------------------------------------------


class TargetBpp:
    """A byte budget for the whole stream: measure a ladder of levels once, then pick a level per tile
    that minimises the total squared error within the budget; if the real stream overshoots the
    estimate, shrink the budget and pick again (at most :data:`MAX_BPP_PASSES` passes)."""

    def __init__(self, bpp: float, width: int, height: int, overhead_bytes: int, steps: int = 0):
        self.steps = steps  # latent refinement steps per tile at its chosen level, at the Lagrangian's λ
        self.budget_bytes = bpp * width * height / 8
        self.budget_bits = (self.budget_bytes - overhead_bytes) * 8
        self.codes = code_of_level(LADDER)
        self.passes = 0

    def measure(self, engine: "Engine", batches: Iterable["Batch"], n_tiles: int) -> "TargetBpp":
        """Squared error and estimated bits of every tile at every ladder level; then the first choice."""
        self.dist = np.zeros((n_tiles, len(self.codes)))
        self.bits = np.zeros((n_tiles, len(self.codes)))
        self.band_sse = None
        for batch in batches:
            for j, code in enumerate(self.codes):
                m = engine.measure(batch.y, np.full(len(batch.ids), code), batch.originals, batch.masks, batch.raster)
                self.dist[batch.ids, j] = m.mse * 3 * batch.npix
                if m.band_sse is not None:
                    if self.band_sse is None:
                        self.band_sse = np.zeros((n_tiles, len(self.codes), 3))
                    self.band_sse[batch.ids, j] = m.band_sse
                self.bits[batch.ids, j] = engine.estimate_bits(m.latents)
        self.choice, self.feasible, self.slope = _choose_levels(self.dist, self.bits, self.budget_bits)
        return self

    def choose(self, engine: "Engine", batch: "Batch") -> Choice:
        j = self.choice[batch.ids]
        if self.steps:
            # min SSE + slope·bits ⟺ min bits/px + (3/slope)·8-bit MSE: rd_loss at λ = 3/slope
            lam = None if self.slope is None else np.full(len(batch.ids), 3.0 / self.slope)
            m = refine.refine_batch(engine, batch, self.codes[j], self.steps, lam)
            return Choice(m.latents, self.codes[j], m.mse * 3 * batch.npix, np.full(len(batch.ids), not self.feasible),
                          m.band_sse)
        return Choice(engine.quantize(batch.y, self.codes[j]), self.codes[j], self.dist[batch.ids, j],
                      np.full(len(batch.ids), not self.feasible),
                      None if self.band_sse is None else self.band_sse[batch.ids, j])

    def retry(self, stream_bytes: int) -> "TargetBpp | None":
        self.passes += 1
        if stream_bytes <= self.budget_bytes or not self.feasible or self.passes >= MAX_BPP_PASSES:
            return None
        self.budget_bits *= self.budget_bytes / stream_bytes * 0.98
        self.choice, self.feasible, self.slope = _choose_levels(self.dist, self.bits, self.budget_bits)
        return self


def _choose_levels(dist: np.ndarray, bits: np.ndarray, budget_bits: float) -> tuple[np.ndarray, bool, float | None]:
    """Per-tile ladder index minimising total squared error with total bits ≤ budget (Lagrangian), whether
    the budget is feasible, and the Lagrangian's slope (squared error per bit; None when infeasible)."""
    rows = np.arange(len(dist))

    def choose(log_lambda: float) -> np.ndarray:
        return np.argmin(dist + 10.0**log_lambda * bits, axis=1)

    lo, hi = -12.0, 12.0  # small λ favours quality
    if bits[rows, choose(hi)].sum() > budget_bits:
        return np.zeros(len(dist), dtype=int), False, None  # even the lowest quality is over budget
    for _ in range(60):
        mid = (lo + hi) / 2
        if bits[rows, choose(mid)].sum() > budget_bits:
            lo = mid
        else:
            hi = mid
    return choose(hi), True, 10.0**hi
