"""Per-tile tool choice under a PSNR target or an error bound: the one home of which tile coder codes each tile.

    learned pass ─▶ per tile LearnedTile(bytes, psnr, missed, samples)
        ─tools_to_try (pure)─▶ the other tools that can win this tile (never all of them on every tile)
                                 JPEG 2000, [AVIF 4:4:4, JPEG XL lossy], near-lossless at a searched E
        ─choose_tile─▶ the fewest bytes that meet the target; JPEG XL exact as the last resort

The learned family codes every tile first (batched, on its device). The lossy tools — JPEG 2000 aimed at
the target; AVIF 4:4:4 (8-bit tiles) at low targets, on dense tiles up to 42 dB, or up to 44 dB at a
thorough effort, which adds JPEG XL lossy, runs AVIF at a slower speed and stops JPEG 2000's search
closer to the target; each searched to the target under the bytes of the best so far
(:func:`tools_to_try` says which, and why) — are tried only where they can win: where the learned tile
missed the target, or met it at more than :data:`LOSSY_TRY_BPS` bits per sample (``bench/tile_tools.py
--calibrate`` measures, on training data, what share of the possible savings a threshold keeps). Exact
JPEG XL codes the tiles nothing else brings to the target, so under ``target_psnr`` no tile misses it
unless the caller excluded it. The searches of an image's tiles run on
:func:`tool_workers` threads (:func:`map_tiles`); the bytes do not depend on how many.

Under ``max_error`` (:func:`choose_bounded`) the candidates are the coders that bound every sample by E: the
near-lossless coder (its smallest method, codec.tilecoders.nearlossless.methods_for: grid indices through
JPEG XL lossless jointly per band triplet or per band, or WebP lossless, or JPEG-LS near-lossless, each checked
by decoding) and
exact JPEG XL, tried only where no near-lossless payload keeps the bound (a valid pixel decoded onto nodata).
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, TypeVar

import numpy as np

from codec import tilecoders
from codec.metrics import band_sse, psnr_from_mse, worst_band_psnr
from codec.tilecoders import TileContext, avif444, j2k, jxl_lossy, nearlossless

TOOLS = ("j2k", "avif444", "jxl_lossy", "nearlossless", "jxl_exact")  # per-tile tools besides the learned family
THOROUGH_EFFORT = 1  # the encode effort (EncodeOptions.effort) from which every lossy tool is tried
AVIF_MAX_DB = 44.0  # AVIF 4:4:4 is tried below this target only (at 46 dB it lost every comparison measured)
AVIF_FAST_MAX_DB = 37.0  # ... and at effort 0 below this one (36 dB included), where it saves 15–20% of JPEG 2000's bytes
AVIF_DENSE_MAX_DB = 42.0  # ... and from there to below this one on dense tiles only (:func:`avif_worth_trying`)
AVIF_DENSE_BPS = 1.5  # a dense tile: its best payload so far (JPEG 2000's, usually) is over this many bits/sample
LOSSY_TRY_BPS = 0.25  # bits per sample of a passing learned tile above which the lossy tools are tried (from
#                      AVIF_FAST_MAX_DB, and on tiles AVIF cannot code; below it 8-bit tiles always try them:
#                      with AVIF at speed 6 it won 31 / 28 / 8 of the 45 / 28 / 11 passing natural / CIL / USC 2.2
#                      training tiles at 30 dB, and 0.25 kept 89 / 97 / 0% of its saving: bench/tile_tools.py --calibrate)
NEAR_MIN_DB = 42.0  # from this target the near-lossless coder is tried at effort 0 too (below, only when thorough)
# JPEG 2000's search at a thorough effort: stopped within this much above the target (effort 0: j2k.TOLERANCE_DB,
# 0.3), with up to THOROUGH_J2K_TRIES encodes; on 97 training tiles 1.5% / 0.6% / 0.4% fewer bytes at 38 / 42 / 46 dB
# for 3.7× / 2.6× / 2× its CPU time (bench/tile_tools.py --j2k-tolerance)
THOROUGH_J2K_TOLERANCE_DB = 0.05
THOROUGH_J2K_TRIES = 10
AVIF_DENSE_SPEED = 8  # libavif speed on dense tiles from AVIF_FAST_MAX_DB (effort 0): speed 6 there cost the USC
#                       aerial mosaic at 38 dB 25% of its encode speed for 1.4% of its bytes (bench/speed.py)
THOROUGH_AVIF_SPEED = 4  # libavif speed at a thorough effort (effort 0: avif444.SPEED, 6): 5.2% / 3.2% / 0.4%
#                          fewer AVIF bytes at 34 / 38 / 42 dB for 5–8× its CPU time (bench/tile_tools.py --avif-speed)


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


def tools_to_try(learned: LearnedTile, allowed: tuple[str, ...], ctx: TileContext | None = None,
                 target_db: float = 38.0, thorough: bool = False) -> list[str]:
    """The tools worth trying on a tile, in the order tried: pure, from what the learned pass measured, the
    tile's samples and the target. Each lossy tool alone on 257 whole 256² training tiles (``bench/tile_tools.py
    --per-tile``, its log): AVIF 4:4:4's total bytes are 19% / 1.8% under JPEG 2000's at 34 / 38 dB, even at
    40 dB and 8% over at 42 dB, in 3–4× its CPU time; it reaches 46 dB on a third of the tiles only; JPEG XL
    lossy is 27–37% larger at 34–42 dB and wins a few tiles from 40 dB. On tiles the model passes
    (``bench/tile_tools.py --calibrate``, training photos and aerial scenes) the two save 8–20% of the
    learned bytes at 30–34 dB, AVIF most of it, and tiles under :data:`LOSSY_TRY_BPS` hold under 5% of that
    saving. So JPEG 2000 always; AVIF 4:4:4 for 8-bit tiles below :data:`AVIF_FAST_MAX_DB`, below
    :data:`AVIF_DENSE_MAX_DB` on dense tiles (:func:`avif_worth_trying`, after JPEG 2000), or below
    :data:`AVIF_MAX_DB` when ``thorough`` (the encode effort's call), which also adds JPEG XL lossy. The
    near-lossless coder, its bound E searched to the target
    (:func:`near_to_psnr`), from :data:`NEAR_MIN_DB` at any effort: on whole satellite scenes
    (``bench/satellite_rd.py``) its ±4 file of a 4-band WorldView scene held 56.6 dB in 0.59× the bytes our
    50 dB file took without it."""
    avif_codes = ctx is None or avif444.accepts(ctx)
    if not (learned.missed or (avif_codes and target_db < AVIF_FAST_MAX_DB) or learned.bits_per_sample > LOSSY_TRY_BPS):
        return []
    wanted = ["j2k"]
    if target_db < (AVIF_MAX_DB if thorough else AVIF_DENSE_MAX_DB) and avif_codes:
        wanted.append("avif444")  # between AVIF_FAST_MAX_DB and AVIF_DENSE_MAX_DB only if avif_worth_trying
    if thorough:
        wanted.append("jxl_lossy")
    if thorough or target_db >= NEAR_MIN_DB:
        wanted.append("nearlossless")
    if learned.missed:
        wanted.append("jxl_exact")  # tried only if nothing before it met the target
    return [t for t in wanted if t in allowed]


def avif_speed(target_db: float, thorough: bool) -> int:
    """libavif's speed for a tile's AVIF search: slowest at a thorough effort; at effort 0 avif444.SPEED below
    :data:`AVIF_FAST_MAX_DB`, where AVIF wins most tiles, and the faster :data:`AVIF_DENSE_SPEED` above it."""
    if thorough:
        return THOROUGH_AVIF_SPEED
    return avif444.SPEED if target_db < AVIF_FAST_MAX_DB else AVIF_DENSE_SPEED


def avif_worth_trying(target_db: float, thorough: bool, best_bytes: int | None, samples: int) -> bool:
    """Whether AVIF 4:4:4 is searched on a tile once the tools before it have run: always below
    :data:`AVIF_FAST_MAX_DB` or when ``thorough``; else only on a dense tile, whose best payload so far is over
    :data:`AVIF_DENSE_BPS` bits per sample (or none reached the target). On 257 whole 256² training tiles
    (train-natural, even CIL tiles, USC-SIPI 2.2; ``bench/tile_tools.py --per-tile``) AVIF saves 14.8% / 8.2%
    / 4.3% / 1.0% of JPEG 2000's bytes at 36 / 38 / 40 / 42 dB for 3–4× its CPU time; at 38 / 40 dB the 23% /
    45% of tiles over 1.5 bits per sample hold 6.0% / 3.3% of it (smooth photo tiles gain little). So at the
    default 38 dB it runs on detailed aerial tiles, where it pays, and not on the rest."""
    if thorough or target_db < AVIF_FAST_MAX_DB:
        return True
    return best_bytes is None or is_dense(best_bytes, samples)


def is_dense(payload_bytes: int, samples: int) -> bool:
    """Whether a tile coded in ``payload_bytes`` over ``samples`` (pixels × bands) is dense: over
    :data:`AVIF_DENSE_BPS` bits per sample."""
    return 8.0 * payload_bytes / max(samples, 1) > AVIF_DENSE_BPS


@dataclass(frozen=True)
class NearTrial:
    """A near-lossless payload aimed at a PSNR (the shape of the other tools' searched trials)."""

    payload: bytes
    psnr: float
    max_error: int


def near_to_psnr(block: np.ndarray, ctx: TileContext, target_db: float, psnr_of, max_bytes: int | None = None,
                 retries: int = 2) -> NearTrial | None:
    """The near-lossless coder at the largest bound E whose tile still meets ``target_db``: E is found on the
    grid alone (``nearlossless.quantise``/``dequantise``, no coding: the coder's error is the grid's), then
    the tile is coded and its PSNR checked, E lowered up to ``retries`` times if it falls short. None when
    no E ≥ 1 meets the target or the payload is not under ``max_bytes``."""

    def simulated(e: int) -> float:
        return psnr_of(nearlossless.dequantise(nearlossless.quantise(block, e), e, ctx.dtype))

    lo, hi = 0, int(np.iinfo(ctx.dtype).max) // 2  # simulated(lo) passes (lossless); find the largest passing E
    if simulated(1) < target_db:
        return None
    lo = 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if simulated(mid) >= target_db else (lo, mid)
    for e in range(lo, max(lo - retries - 1, 0), -1):
        near = nearlossless.encode_within(block, ctx, e)
        if near is None:
            return None
        got = psnr_of(near.decoded)
        if got >= target_db:
            if max_bytes is not None and len(near.payload) >= max_bytes:
                return None
            return NearTrial(near.payload, got, e)
    return None


def _search(name: str, block: np.ndarray, ctx: TileContext, target_db: float, psnr_of, max_bytes: int | None,
            thorough: bool = False):
    if name == "nearlossless":
        return near_to_psnr(block, ctx, target_db, psnr_of, max_bytes)
    if name == "avif444":
        return avif444.encode_to_psnr(block, ctx, target_db, psnr_of, max_bytes,
                                      speed=avif_speed(target_db, thorough))
    if name == "j2k":
        if thorough:
            return j2k.encode_to_psnr(block, ctx, target_db, psnr_of, max_bytes, THOROUGH_J2K_TOLERANCE_DB,
                                      THOROUGH_J2K_TRIES)
        return j2k.encode_to_psnr(block, ctx, target_db, psnr_of, max_bytes)
    start = 10 ** ((36.0 - target_db) / 10)  # JPEG XL's distance for the target on a typical tile (~36 dB at 1)
    return jxl_lossy.encode_to_psnr(block, ctx, target_db, psnr_of, max_bytes, start)


def choose_tile(block: np.ndarray, ctx: TileContext, learned: LearnedTile, target_db: float,
                psnr_of: Callable[[np.ndarray], float], allowed: tuple[str, ...], thorough: bool = False) -> TileChoice:
    """The fewest-bytes tool that meets ``target_db`` on this tile (the learned one unless another wins)."""
    best = TileChoice("learned", None, learned.psnr, learned.missed)
    best_bytes = None if learned.missed else learned.bytes
    for name in tools_to_try(learned, allowed, ctx, target_db, thorough):
        if name == "jxl_exact":
            if best.missed:
                best = TileChoice(name, tilecoders.by_name(name).encode_tile(block, ctx), float("inf"))
            continue
        if name == "avif444" and not avif_worth_trying(target_db, thorough, best_bytes, block.size):
            continue
        trial = _search(name, block, ctx, target_db, psnr_of, best_bytes, thorough)
        if trial is not None and (best_bytes is None or len(trial.payload) < best_bytes):
            best, best_bytes = TileChoice(name, trial.payload, trial.psnr), len(trial.payload)
    return best


T = TypeVar("T")
R = TypeVar("R")


def tool_workers() -> int:
    """Threads for the per-tile searches: ``OMP_NUM_THREADS`` where set (Ray sets it to a replica's CPUs, and
    torch's transforms use as many), else the CPUs this process may run on; at most 8."""
    try:
        n = int(os.environ.get("OMP_NUM_THREADS", "0"))
    except ValueError:
        n = 0
    return max(1, min(n if n > 0 else len(os.sched_getaffinity(0)), 8))


def map_tiles(search: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    """``search(item)`` for each item, in order, on ``workers`` threads. The tile coders (OpenJPEG, libavif,
    libjxl, CharLS) release the GIL, so an image's per-tile searches run side by side: on 256² tiles two
    threads code 2.0–2.6× as many as one. ``items`` is drawn in the calling thread (a lazy source's reads
    stay there), at most 2·workers ahead; the results do not depend on ``workers``."""
    if workers <= 1:
        yield from map(search, items)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="tlic-tools") as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(search, item))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


@dataclass(frozen=True)
class BoundedChoice:
    """The coder of a tile under ``max_error``: its name, payload and the tile's largest absolute error."""

    coder: str
    payload: bytes
    max_abs_error: int
    decoded: np.ndarray


def choose_bounded(block: np.ndarray, ctx: TileContext, max_error: int) -> BoundedChoice:
    """The fewest-bytes coder that keeps every sample of ``block`` within ±``max_error`` (nodata exact)."""
    near = nearlossless.encode_within(block, ctx, max_error)
    if near is not None:
        err = int(np.abs(near.decoded.astype(np.int64) - block.astype(np.int64)).max(initial=0))
        return BoundedChoice("nearlossless", near.payload, err, near.decoded)
    return BoundedChoice("jxl_exact", tilecoders.by_name("jxl_exact").encode_tile(block, ctx), 0, block)


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
