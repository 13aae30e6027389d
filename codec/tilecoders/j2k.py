"""Lossy tiles: JPEG 2000 (OpenJPEG via imagecodecs, irreversible 9/7) told the PSNR to reach.

Why: on PSNR targets JPEG 2000 is never far from the best tool on a tile and cheap: alone on 256² training
tiles its total bytes were within 1.5% of the best of AVIF 4:4:4 / JPEG XL lossy / itself at 34–46 dB, at ~40 ms a
tile (``bench/tile_tools.py --per-tile``); per image at 46 dB it needs 0.45–0.88× JPEG XL's bytes on Kodak,
aerial and the satellite crops (the guaranteed-file comparison, bench/results/tile_tools.log). OpenJPEG's
fixed-quality mode (``level`` = a PSNR in dB per component) lands within a few tenths of a dB, so a tile
costs one or two encodes.

Bands go in JPEG XL lossy's parts (codec.tilecoders.jxl_lossy.parts_of: triplets with the colour transform,
the rest one by one), each shifted to its tile minimum and told the bits its range needs, so a 16-bit band
valued 0–97 is coded as the 7-bit band it is. Nodata pixels are filled with their band's valid mean and put back
from the tile's valid mask.

Tile payload: ``kind u8 (5) | parts u16 | per part: bands u8 | bits u8 | per band offset u16 | length u32 |
codestream`` then, when the tile has nodata, its packed valid mask (codec.format.raster.pack_mask).
"""

from __future__ import annotations

import struct
from typing import Callable

import numpy as np

from codec.errors import CorruptStreamError
from codec.format import raster
from codec.tilecoders.jxl_lossy import Trial, fill_nodata, parts_of

KIND = 5
MAX_TRIES = 4  # encodes per tile: the first at the target, then corrected by the measured shortfall
MAX_LEVEL_DB = 90.0  # above this OpenJPEG's fixed quality is as good as lossless; exact JPEG XL does that
_HEAD = struct.Struct("<BH")
_PART = struct.Struct("<BB")
_LEN = struct.Struct("<I")


def _encode_part(part: np.ndarray, level_db: float) -> bytes:
    import imagecodecs

    offsets = part.reshape(-1, part.shape[2]).min(0).astype(np.int64)
    shifted = part.astype(np.int64) - offsets
    bits = max(int(shifted.max()).bit_length(), 1)
    arr = shifted.astype(np.uint8 if bits <= 8 else np.uint16)
    img = np.ascontiguousarray(arr[..., 0] if part.shape[2] == 1 else arr)
    data = imagecodecs.jpeg2k_encode(img, level=float(level_db), reversible=False, bitspersample=bits, numthreads=1)
    head = _PART.pack(part.shape[2], bits) + b"".join(struct.pack("<H", int(o)) for o in offsets)
    return head + _LEN.pack(len(data)) + data


def encode_at(block: np.ndarray, ctx, level_db: float) -> bytes:
    """The payload of a (h, w, B) tile with OpenJPEG aiming each part at ``level_db`` dB."""
    valid = raster.valid_mask(block, ctx.nodata)
    filled = fill_nodata(block, valid)
    groups = parts_of(block.shape[2])
    out = [_HEAD.pack(KIND, len(groups))] + [_encode_part(filled[..., g], level_db) for g in groups]
    if valid is not None:
        out.append(raster.pack_mask(valid))
    return b"".join(out)


def decode(payload: bytes, ctx) -> np.ndarray:
    """The tile of a payload; CorruptStreamError when it is not a JPEG 2000 tile of ctx's shape."""
    import imagecodecs

    if len(payload) < _HEAD.size or payload[0] != KIND:
        raise CorruptStreamError("not a JPEG 2000 tile")
    (_, n_parts), pos = _HEAD.unpack_from(payload, 0), _HEAD.size
    groups = parts_of(ctx.bands)
    if n_parts != len(groups):
        raise CorruptStreamError(f"JPEG 2000 tile of {n_parts} parts, a {ctx.bands}-band tile has {len(groups)}")
    top = np.iinfo(ctx.dtype).max
    out = np.empty(ctx.shape, dtype=ctx.dtype)
    for k, g in enumerate(groups):
        if pos + _PART.size > len(payload):
            raise CorruptStreamError(f"JPEG 2000 tile truncated before part {k}")
        nb, bits = _PART.unpack_from(payload, pos)
        pos += _PART.size
        if nb != len(g) or not 1 <= bits <= 16 or pos + 2 * nb + _LEN.size > len(payload):
            raise CorruptStreamError(f"JPEG 2000 part {k}: {nb} bands at {bits} bits is not this tile's")
        offsets = np.array(struct.unpack_from(f"<{nb}H", payload, pos), dtype=np.int64)
        (n,) = _LEN.unpack_from(payload, pos + 2 * nb)
        pos += 2 * nb + _LEN.size
        if pos + n > len(payload):
            raise CorruptStreamError(f"JPEG 2000 part {k} truncated")
        try:
            img = np.asarray(imagecodecs.jpeg2k_decode(payload[pos : pos + n], numthreads=1))
        except Exception as exc:
            raise CorruptStreamError(f"JPEG 2000 part {k} does not decode ({exc})") from exc
        img = img[..., None] if img.ndim == 2 else img
        if img.shape != (ctx.height, ctx.width, nb):
            raise CorruptStreamError(f"JPEG 2000 part {k} decodes to {img.shape}")
        out[..., g] = np.clip(img.astype(np.int64) + offsets, 0, top)
        pos += n
    valid = None
    if ctx.nodata is not None and pos < len(payload):
        valid = raster.unpack_mask(payload[pos:], ctx.height, ctx.width)
    elif pos != len(payload):
        raise CorruptStreamError(f"{len(payload) - pos} unexpected bytes after the JPEG 2000 parts")
    return raster.restore_nodata(out, valid, ctx.nodata)


def encode_to_psnr(block: np.ndarray, ctx, target_db: float, psnr_of: Callable[[np.ndarray], float],
                   max_bytes: int | None = None) -> Trial | None:
    """The fewest-bytes payload found whose decoded tile reaches ``target_db`` (``psnr_of(decoded)``): OpenJPEG
    aimed at the target, then re-aimed by the measured miss either way (its PSNR is per part against the part's
    own bit depth, which need not be the caller's peak), at most :data:`MAX_TRIES` encodes. None when nothing
    found reaches the target below :data:`MAX_LEVEL_DB`, or only in more than ``max_bytes``."""
    level, best = target_db + 0.2, None
    for _ in range(MAX_TRIES):
        payload = encode_at(block, ctx, level)
        psnr = psnr_of(decode(payload, ctx))
        if psnr >= target_db:
            if best is None or len(payload) < len(best.payload):
                best = Trial(payload, psnr)
            if psnr - target_db < 0.3:
                break
        elif max_bytes is not None and len(payload) > max_bytes:
            break  # aiming higher only costs more
        level += min(target_db - psnr, 20.0) + 0.15
        if level > MAX_LEVEL_DB:
            break
    if best is None or (max_bytes is not None and len(best.payload) > max_bytes):
        return None
    return best


def encode(block: np.ndarray, ctx) -> bytes:
    """The tile coder interface without a target: aimed at 45 dB."""
    return encode_at(block, ctx, 45.0)
