"""Lossy tiles: JPEG XL (libjxl via imagecodecs) at a searched distance, for tiles the learned model codes
in more bytes or cannot bring to the target (codec.toolchoice decides which).

Bands are coded in triplets of consecutive bands as one RGB image (a photo's colour), the rest one by one
as gray images. Each part is shifted to start at its tile minimum and coded at the bits its range needs
(libjxl's ``bitspersample``), so a 16-bit band valued 0–97 is not judged against 65535. Nodata pixels are
filled with their band's valid mean before coding and put back from the tile's valid mask
(codec.format.raster.pack_mask), so they stay exact.

Tile payload: codec.tilecoders.parts' shifted layout with kind 2 (the parts, their shifts and the mask are
coded there, shared with JPEG 2000).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from codec.tilecoders.parts import decode_shifted, encode_shifted

KIND = 2
EFFORT = 3  # libjxl effort: 10 ms a 256² RGB tile here, within 3% of effort 7's bytes (bench/tile_tools.log)
MIN_DISTANCE, MAX_DISTANCE = 0.05, 15.0
MAX_TRIES = 5  # encodes per tile of the distance search


def encode_at(block: np.ndarray, ctx, distance: float) -> bytes:
    """The payload of a (h, w, B) tile at JPEG XL ``distance``."""
    import imagecodecs

    return encode_shifted(block, ctx, KIND, lambda img, bits: imagecodecs.jpegxl_encode(
        img, distance=distance, effort=EFFORT, bitspersample=bits))


def decode(payload: bytes, ctx) -> np.ndarray:
    """The tile of a payload; CorruptStreamError when it is not a JPEG XL lossy tile of ctx's shape."""
    import imagecodecs

    return decode_shifted(payload, ctx, KIND, "JPEG XL lossy", imagecodecs.jpegxl_decode)


@dataclass(frozen=True)
class Trial:
    """One tile coded by a tool: its payload and the PSNR its decoded tile measured."""

    payload: bytes
    psnr: float


def encode_to_psnr(block: np.ndarray, ctx, target_db: float, psnr_of: Callable[[np.ndarray], float],
                   max_bytes: int | None = None, start: float = 1.0) -> Trial | None:
    """The fewest-bytes payload found whose decoded tile reaches ``target_db`` (``psnr_of(decoded)``): a secant
    search of the distance on log scale (PSNR falls ~10 dB a decade), bracketed, at most :data:`MAX_TRIES`
    encodes. None when even :data:`MIN_DISTANCE` misses, or every passing payload is over ``max_bytes``."""
    floor, ceil = math.log(MIN_DISTANCE), math.log(MAX_DISTANCE)
    passing, failing = None, None  # largest log-distance known to pass, smallest known to fail
    best, d = None, min(max(math.log(start), floor), ceil)
    for _ in range(MAX_TRIES):
        payload = encode_at(block, ctx, math.exp(d))
        psnr = psnr_of(decode(payload, ctx))
        if psnr >= target_db:
            passing = d
            if best is None or len(payload) < len(best.payload):
                best = Trial(payload, psnr)
            if psnr - target_db < 0.25 or d >= ceil:
                break
        else:
            failing = d
            if d <= floor or (max_bytes is not None and len(payload) > max_bytes):
                break  # nothing passes, or what passes is bigger than a failing payload already over budget
        d = _next_distance(d, psnr - target_db - 0.1, passing, failing, floor, ceil)
        if d is None:
            break
    if best is None or (max_bytes is not None and len(best.payload) > max_bytes):
        return None
    return best


def _next_distance(d: float, excess_db: float, passing, failing, floor: float, ceil: float) -> float | None:
    """The next log-distance: a secant step (slope -10 dB per decade) kept inside the bracket, else its middle;
    None when the bracket is closed."""
    lo = passing if passing is not None else floor
    hi = failing if failing is not None else ceil
    if hi - lo < 0.05:
        return None
    guess = d + excess_db * math.log(10) / 10
    if passing is None and failing is not None:
        return max(min(guess, hi - 0.05), floor)
    return guess if lo < guess < hi else (lo + hi) / 2


def encode(block: np.ndarray, ctx) -> bytes:
    """The tile coder interface without a target: distance 1 (visually lossless)."""
    return encode_at(block, ctx, 1.0)
