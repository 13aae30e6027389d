"""Per-tile tool choice under a PSNR target: the one home of which tile coder codes each tile.

    learned pass ─▶ per tile LearnedTile(bytes, psnr, missed, samples)
        ─tools_to_try (pure)─▶ the other tools that can win this tile (never all of them on every tile)
        ─choose_tile─▶ the fewest bytes that meet the target; JPEG XL exact as the last resort

The learned family codes every tile first (batched, on its device). Another tool is tried only where it can
win: JPEG XL lossy where the learned tile missed the target, or where it met it at more than
:data:`JXL_TRY_BPS` bits per sample (below that the learned tile is smaller on nearly every tile; measured on
train-natural and aerial train, bench/results/tile_tools.log, ``--calibrate``). Exact JPEG XL codes the tiles
nothing else brings to the target, so under ``target_psnr`` no tile misses it unless the caller excluded it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from codec import tilecoders
from codec.metrics import band_sse, psnr_from_mse, worst_band_psnr
from codec.tilecoders import TileContext, jxl_lossy

TOOLS = ("jxl_lossy", "jxl_exact")  # per-tile tools besides the learned family, in the order they are tried
JXL_TRY_BPS = 1.0  # bits per sample of a passing learned tile above which JPEG XL lossy is tried (see above)


@dataclass(frozen=True)
class LearnedTile:
    """What the learned pass measured of one tile."""

    bytes: int
    psnr: float
    missed: bool
    samples: int  # pixels × bands coded

    @property
    def bits_per_sample(self) -> float:
        return 8.0 * self.bytes / max(self.samples, 1)


@dataclass(frozen=True)
class TileChoice:
    """The tool that codes a tile: its coder name, payload (None: keep the learned tile) and measured PSNR."""

    coder: str
    payload: bytes | None
    psnr: float
    missed: bool = False


def allowed_tools(tools: tuple[str, ...] | None, lossless_fallback: bool = True) -> tuple[str, ...]:
    """The per-tile tools an encode may use: ``tools`` (None: all of :data:`TOOLS`); ``lossless_fallback=False``
    (the older switch) keeps the learned tiles only, flagged where they miss."""
    if not lossless_fallback:
        return ()
    if tools is None:
        return TOOLS
    unknown = set(tools) - set(TOOLS) - {"learned"}
    if unknown:
        raise ValueError(f"tools: unknown per-tile tool(s) {', '.join(sorted(unknown))} (known: learned, "
                         f"{', '.join(TOOLS)})")
    return tuple(t for t in TOOLS if t in tools)


def tools_to_try(learned: LearnedTile, allowed: tuple[str, ...]) -> list[str]:
    """The tools worth trying on a tile, cheapest first: pure, from what the learned pass measured."""
    out = []
    if "jxl_lossy" in allowed and (learned.missed or learned.bits_per_sample > JXL_TRY_BPS):
        out.append("jxl_lossy")
    if "jxl_exact" in allowed and learned.missed:
        out.append("jxl_exact")  # tried only if nothing before it met the target
    return out


def choose_tile(block: np.ndarray, ctx: TileContext, learned: LearnedTile, target_db: float,
                psnr_of: Callable[[np.ndarray], float], allowed: tuple[str, ...]) -> TileChoice:
    """The fewest-bytes tool that meets ``target_db`` on this tile (the learned one unless another wins)."""
    start = 10 ** ((36.0 - target_db) / 10)  # JPEG XL's distance for the target on a typical tile (~36 dB at 1)
    best = TileChoice("learned", None, learned.psnr, learned.missed)
    budget = None if learned.missed else learned.bytes
    for name in tools_to_try(learned, allowed):
        if name == "jxl_exact":
            if best.missed:
                best = TileChoice(name, tilecoders.by_name(name).encode_tile(block, ctx), float("inf"))
            continue
        trial = jxl_lossy.encode_to_psnr(block, ctx, target_db, psnr_of, budget, start)
        if trial is not None and (best.missed or len(trial.payload) < learned.bytes):
            best, budget = TileChoice(name, trial.payload, trial.psnr), len(trial.payload)
    return best


def photo_psnr(reference: np.ndarray) -> Callable[[np.ndarray], float]:
    """8-bit PSNR over every colour sample (what a photo's tile PSNR is)."""
    ref = reference.astype(np.int64)

    def psnr_of(decoded: np.ndarray) -> float:
        mse = float(np.mean((decoded.astype(np.int64) - ref) ** 2))
        return float(psnr_from_mse(np.array([mse]))[0])

    return psnr_of


def raster_psnr(reference: np.ndarray, valid: np.ndarray | None, peaks: np.ndarray) -> Callable[[np.ndarray], float]:
    """A raster tile's PSNR as a target sees it: its worst band's (codec.metrics.worst_band_psnr: valid
    pixels, each band against the image's peak for that band)."""

    def psnr_of(decoded: np.ndarray) -> float:
        sse, count = band_sse(reference, decoded, valid)
        return worst_band_psnr(sse, count, peaks)

    return psnr_of


def counts(coders: list[str]) -> dict[str, int]:
    """Tiles per tool, in table order (what stats and reports show)."""
    names = ["learned", *TOOLS]
    return {n: coders.count(n) for n in names if n in coders}
