"""Lossy tiles: JPEG XL (libjxl via imagecodecs) at a searched distance, for tiles the learned model codes
in more bytes or cannot bring to the target (codec.toolchoice decides which).

Bands are coded in triplets of consecutive bands as one RGB image (a photo's colour), the rest one by one
as gray images. Each part is shifted to start at its tile minimum and coded at the bits its range needs
(libjxl's ``bitspersample``), so a 16-bit band valued 0–97 is not judged against 65535. Nodata pixels are
filled with their band's valid mean before coding and put back from the tile's valid mask
(codec.format.raster.pack_mask), so they stay exact.

Tile payload: ``kind u8 (2) | parts u16 | per part: bands u8 | bits u8 | per band offset u16 |
length u32 | codestream`` then, when the tile has nodata, its packed valid mask.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Callable

import numpy as np

from codec.errors import CorruptStreamError
from codec.format import raster

KIND = 2
EFFORT = 3  # libjxl effort: 10 ms a 256² RGB tile here, within 3% of effort 7's bytes (bench/tile_tools.log)
MIN_DISTANCE, MAX_DISTANCE = 0.05, 15.0
MAX_TRIES = 5  # encodes per tile of the distance search
_HEAD = struct.Struct("<BH")
_PART = struct.Struct("<BB")
_LEN = struct.Struct("<I")


def parts_of(bands: int) -> list[list[int]]:
    """Band indices per JPEG XL image: triplets, then single bands."""
    full = bands - bands % 3
    return [list(range(s, s + 3)) for s in range(0, full, 3)] + [[b] for b in range(full, bands)]


def fill_nodata(block: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    if valid is None:
        return block
    out = block.copy()
    for b in range(block.shape[2]):
        vals = block[..., b][valid]
        out[..., b][~valid] = int(round(float(vals.mean()))) if vals.size else 0
    return out


def _encode_part(part: np.ndarray, distance: float) -> bytes:
    import imagecodecs

    offsets = part.reshape(-1, part.shape[2]).min(0).astype(np.int64)
    shifted = part.astype(np.int64) - offsets
    bits = max(int(shifted.max()).bit_length(), 1)
    arr = shifted.astype(np.uint8 if bits <= 8 else np.uint16)
    img = np.ascontiguousarray(arr[..., 0] if part.shape[2] == 1 else arr)
    data = imagecodecs.jpegxl_encode(img, distance=distance, effort=EFFORT, bitspersample=bits)
    head = _PART.pack(part.shape[2], bits) + b"".join(struct.pack("<H", int(o)) for o in offsets)
    return head + _LEN.pack(len(data)) + data


def encode_at(block: np.ndarray, ctx, distance: float) -> bytes:
    """The payload of a (h, w, B) tile at JPEG XL ``distance``."""
    valid = raster.valid_mask(block, ctx.nodata)
    filled = fill_nodata(block, valid)
    groups = parts_of(block.shape[2])
    out = [_HEAD.pack(KIND, len(groups))] + [_encode_part(filled[..., g], distance) for g in groups]
    if valid is not None:
        out.append(raster.pack_mask(valid))
    return b"".join(out)


def decode(payload: bytes, ctx) -> np.ndarray:
    """The tile of a payload; CorruptStreamError when it is not a JPEG XL lossy tile of ctx's shape."""
    import imagecodecs

    if len(payload) < _HEAD.size or payload[0] != KIND:
        raise CorruptStreamError("not a JPEG XL lossy tile")
    (_, n_parts), pos = _HEAD.unpack_from(payload, 0), _HEAD.size
    groups = parts_of(ctx.bands)
    if n_parts != len(groups):
        raise CorruptStreamError(f"JPEG XL lossy tile of {n_parts} parts, a {ctx.bands}-band tile has {len(groups)}")
    top = np.iinfo(ctx.dtype).max
    out = np.empty(ctx.shape, dtype=ctx.dtype)
    for k, g in enumerate(groups):
        if pos + _PART.size > len(payload):
            raise CorruptStreamError(f"JPEG XL lossy tile truncated before part {k}")
        nb, bits = _PART.unpack_from(payload, pos)
        pos += _PART.size
        if nb != len(g) or not 1 <= bits <= 16 or pos + 2 * nb + _LEN.size > len(payload):
            raise CorruptStreamError(f"JPEG XL lossy part {k}: {nb} bands at {bits} bits is not this tile's")
        offsets = np.array(struct.unpack_from(f"<{nb}H", payload, pos), dtype=np.int64)
        (n,) = _LEN.unpack_from(payload, pos + 2 * nb)
        pos += 2 * nb + _LEN.size
        if pos + n > len(payload):
            raise CorruptStreamError(f"JPEG XL lossy part {k} truncated")
        try:
            img = imagecodecs.jpegxl_decode(payload[pos : pos + n])
        except Exception as exc:
            raise CorruptStreamError(f"JPEG XL lossy part {k} does not decode ({exc})") from exc
        img = img[..., None] if img.ndim == 2 else img
        if img.shape != (ctx.height, ctx.width, nb):
            raise CorruptStreamError(f"JPEG XL lossy part {k} decodes to {img.shape}")
        out[..., g] = np.clip(img.astype(np.int64) + offsets, 0, top)
        pos += n
    valid = None
    if ctx.nodata is not None and pos < len(payload):
        valid = raster.unpack_mask(payload[pos:], ctx.height, ctx.width)
    elif pos != len(payload):
        raise CorruptStreamError(f"{len(payload) - pos} unexpected bytes after the JPEG XL lossy parts")
    return raster.restore_nodata(out, valid, ctx.nodata)


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
