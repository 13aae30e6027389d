"""Lossy tiles: JPEG 2000 (OpenJPEG via imagecodecs, irreversible 9/7) told the PSNR to reach.

Why: on PSNR targets JPEG 2000 is never far from the best tool on a tile and cheap: alone on 256² training
tiles its total bytes were within 1.5% of the best of AVIF 4:4:4 / JPEG XL lossy / itself at 34–46 dB, at ~40 ms a
tile (``bench/tile_tools.py --per-tile``); per image at 46 dB it needs 0.45–0.88× JPEG XL's bytes on Kodak,
aerial and the satellite crops (the guaranteed-file comparison, bench/results/tile_tools.log). OpenJPEG's
fixed-quality mode (``level`` = a PSNR in dB per component) lands within a few tenths of a dB, so a tile
costs one or two encodes.

Bands go in the parts JPEG XL lossy uses (codec.tilecoders.parts: triplets with the colour transform, the
rest one by one), each shifted to its tile minimum and told the bits its range needs, so a 16-bit band valued
0–97 is coded as the 7-bit band it is. Nodata pixels are filled with their band's valid mean and put back
from the tile's valid mask. Tile payload: codec.tilecoders.parts' shifted layout with kind 5, each part a bare
J2K codestream (streams written before that hold JP2 files, which decode the same way).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from codec.tilecoders.parts import decode_shifted, encode_shifted
from codec.tilecoders.jxl_lossy import Trial

KIND = 5
MAX_TRIES = 6  # encodes per tile and wavelet: the first at the target, then corrected by the measured shortfall
TOLERANCE_DB = 0.3  # a payload this close above the target ends the search
CODESTREAM = "J2K"  # the bare codestream: the JP2 boxes add 85 bytes a part and nothing the tile needs
REVERSIBLE_FROM_DB = 46.0  # from this target a tile the 9/7 cannot bring to it is tried with the 5/3
MAX_LEVEL_DB = 90.0  # above this OpenJPEG's fixed quality is as good as lossless; exact JPEG XL does that


def encode_at(block: np.ndarray, ctx, level_db: float, reversible: bool = False) -> bytes:
    """The payload of a (h, w, B) tile with OpenJPEG aiming each part at ``level_db`` dB (9/7, or with
    ``reversible`` the 5/3 wavelet, whose layers reach up to lossless)."""
    import imagecodecs

    return encode_shifted(block, ctx, KIND, lambda img, bits: imagecodecs.jpeg2k_encode(
        img, level=float(level_db), reversible=reversible, bitspersample=bits, numthreads=1, codecformat=CODESTREAM))


def decode(payload: bytes, ctx) -> np.ndarray:
    """The tile of a payload; CorruptStreamError when it is not a JPEG 2000 tile of ctx's shape."""
    import imagecodecs

    return decode_shifted(payload, ctx, KIND, "JPEG 2000", lambda data: imagecodecs.jpeg2k_decode(data, numthreads=1))


def encode_to_psnr(block: np.ndarray, ctx, target_db: float, psnr_of: Callable[[np.ndarray], float],
                   max_bytes: int | None = None, tolerance_db: float = TOLERANCE_DB,
                   max_tries: int = MAX_TRIES) -> Trial | None:
    """The fewest-bytes payload found whose decoded tile reaches ``target_db`` (``psnr_of(decoded)``): OpenJPEG
    aimed at the target, then re-aimed by the measured miss either way (its PSNR is per part against the part's
    own bit depth, which need not be the caller's peak), until one lands within ``tolerance_db`` above it or
    after ``max_tries`` encodes with the 9/7 and, from :data:`REVERSIBLE_FROM_DB` where those found nothing,
    as many with the 5/3. None when nothing found reaches the target below :data:`MAX_LEVEL_DB`, or only in
    more than ``max_bytes``."""
    best = None
    for reversible in (False, True):  # the 9/7 levels off near 50 dB on 8-bit tiles; the 5/3 goes on to lossless
        if reversible and (best is not None or target_db < REVERSIBLE_FROM_DB):
            break
        level, last = target_db + 0.2, None
        for _ in range(max_tries):
            payload = encode_at(block, ctx, level, reversible)
            psnr = psnr_of(decode(payload, ctx))
            if psnr >= target_db:
                if best is None or len(payload) < len(best.payload):
                    best = Trial(payload, psnr)
                if psnr - target_db < tolerance_db:
                    break
            elif max_bytes is not None and len(payload) > max_bytes:
                break  # aiming higher only costs more
            # re-aim by the miss over the measured dB per level (OpenJPEG's PSNR gains less than asked at the top)
            slope = 1.0 if last is None or level == last[0] else float(
                np.clip((psnr - last[1]) / (level - last[0]), 0.2, 1.0))
            last = (level, psnr)
            level += min((target_db - psnr) / slope, 20.0) + tolerance_db / 2  # aim inside the tolerance
            if level > MAX_LEVEL_DB:
                break
    if best is None or (max_bytes is not None and len(best.payload) > max_bytes):
        return None
    return best


def encode(block: np.ndarray, ctx) -> bytes:
    """The tile coder interface without a target: aimed at 45 dB."""
    return encode_at(block, ctx, 45.0)
