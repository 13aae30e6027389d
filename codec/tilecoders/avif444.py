"""Lossy tiles: AVIF 4:4:4 (libavif/AV1 via imagecodecs) at a searched quality level, for 8-bit tiles.

Why: on PSNR targets AV1's intra tools beat JPEG XL's (which tunes for Butteraugli, not MSE) on most photo and
aerial tiles the learned model misses: at 38 dB, 256² train-natural tiles need 1.1–2.7× fewer bytes in AVIF
4:4:4 than in JPEG XL lossy (``bench/tile_tools.py --per-tile``). codec.toolchoice tries it where it can win.

Bands go as JPEG XL lossy's parts (codec.tilecoders.parts.parts_of): triplets as one 4:4:4 colour image,
the rest one by one as monochrome images. 8-bit tiles only (:func:`accepts`). Nodata pixels are filled with
their band's valid mean before coding and put back from the tile's valid mask, so they stay exact.

Tile payload: ``kind u8 (3) | parts u16 | per part: bands u8 | length u32 | AVIF file`` then, when the tile has
nodata, its packed valid mask (codec.format.raster.pack_mask). A part whose AVIF header is a known template
leaves it out (codec.tilecoders.avif_headers, ~270 bytes a part): its bands byte is then ``0x80 | template id``
and its bytes the file's mdat data.
"""

from __future__ import annotations

import struct
from typing import Callable

import numpy as np

from codec.errors import CorruptStreamError
from codec.tilecoders.avif_headers import TEMPLATES, rebuild, strip
from codec.tilecoders.jxl_lossy import Trial
from codec.tilecoders.parts import encode_parts, parts_of, restore_mask

KIND = 3
SPEED = 6  # libavif speed: on 97 training tiles, searched to 34 / 38 / 42 dB, 6.6% / 11.6% / 5.3% fewer bytes
#            than speed 8 at 2.1–2.5× its CPU time (~180–320 ms a 256² RGB tile); speed 4 saves 5.2% / 3.2% /
#            0.4% more at 5–8× again (bench/tile_tools.py --avif-speed). codec.toolchoice.avif_speed picks
#            the speed per search (8 on dense tiles from 37 dB, 4 at a thorough effort)
MIN_LEVEL, MAX_LEVEL = 20, 99  # 100 is lossless (JPEG XL exact does that better)
MAX_TRIES = 5  # encodes per tile of the level search
DB_PER_LEVEL = 0.3  # PSNR gained per quality level around 34–42 dB, the search's first slope
HEADER_LEFT_OUT = 0x80  # a part's bands byte with this bit: ``0x80 | template id`` (codec.tilecoders.avif_headers)
_HEAD = struct.Struct("<BH")
_PART = struct.Struct("<BI")


def accepts(ctx) -> bool:
    """Whether this coder can code a tile of ``ctx``: 8-bit samples."""
    return ctx.dtype == "uint8"


def start_level(target_db: float) -> int:
    """The level the search starts at: a typical 256² tile's for ``target_db`` (34 dB ~74, 42 dB ~93)."""
    return int(np.clip(round(2.4 * target_db - 8), 40, MAX_LEVEL))


def _encode_part(part: np.ndarray, level: int, speed: int = SPEED) -> bytes:
    import imagecodecs

    img = np.ascontiguousarray(part[..., 0] if part.shape[2] == 1 else part)
    kw = {"pixelformat": "yuv444"} if part.shape[2] == 3 else {}
    data = imagecodecs.avif_encode(img, level=int(level), speed=int(speed), numthreads=1, **kw)
    stripped = strip(data, part.shape[2], part.shape[0], part.shape[1])
    if stripped is not None:
        tid, data = stripped
        return _PART.pack(HEADER_LEFT_OUT | tid, len(data)) + data
    return _PART.pack(part.shape[2], len(data)) + data


def encode_at(block: np.ndarray, ctx, level: int, speed: int = SPEED) -> bytes:
    """The payload of an 8-bit (h, w, B) tile at AVIF quality ``level`` (0–99) and libavif ``speed`` (0–10)."""
    if not accepts(ctx):
        raise ValueError(f"avif444 codes 8-bit tiles, not {ctx.dtype}")
    return encode_parts(block, ctx, KIND, lambda part: _encode_part(part, level, speed))


def decode(payload: bytes, ctx) -> np.ndarray:
    """The tile of a payload; CorruptStreamError when it is not an AVIF tile of ctx's shape."""
    import imagecodecs

    if len(payload) < _HEAD.size or payload[0] != KIND:
        raise CorruptStreamError("not an AVIF 4:4:4 tile")
    (_, n_parts), pos = _HEAD.unpack_from(payload, 0), _HEAD.size
    groups = parts_of(ctx.bands)
    if n_parts != len(groups) or ctx.dtype != "uint8":
        raise CorruptStreamError(f"AVIF tile of {n_parts} parts is not a {ctx.bands}-band {ctx.dtype} tile")
    out = np.empty(ctx.shape, dtype=np.uint8)
    for k, g in enumerate(groups):
        if pos + _PART.size > len(payload):
            raise CorruptStreamError(f"AVIF tile truncated before part {k}")
        nb, n = _PART.unpack_from(payload, pos)
        pos += _PART.size
        tid = nb & ~HEADER_LEFT_OUT if nb & HEADER_LEFT_OUT else None
        if tid is not None and tid < len(TEMPLATES):
            nb = TEMPLATES[tid][0]
        if nb != len(g) or pos + n > len(payload):
            raise CorruptStreamError(f"AVIF part {k}: {nb} bands, {n} bytes is not this tile's")
        data = payload[pos : pos + n]
        if tid is not None:
            data = rebuild(tid, data, ctx.height, ctx.width)
        try:
            img = np.asarray(imagecodecs.avif_decode(data, numthreads=1))
        except Exception as exc:
            raise CorruptStreamError(f"AVIF part {k} does not decode ({exc})") from exc
        img = img[..., None] if img.ndim == 2 else img
        if img.shape != (ctx.height, ctx.width, nb) or img.dtype != np.uint8:
            raise CorruptStreamError(f"AVIF part {k} decodes to {img.dtype} {img.shape}")
        out[..., g] = img
        pos += n
    return restore_mask(payload, pos, ctx, out, "AVIF")


def encode_to_psnr(block: np.ndarray, ctx, target_db: float, psnr_of: Callable[[np.ndarray], float],
                   max_bytes: int | None = None, start: int | None = None, speed: int = SPEED) -> Trial | None:
    """The fewest-bytes payload found whose decoded tile reaches ``target_db``: a bracketed secant search of the
    integer level, at most :data:`MAX_TRIES` encodes at libavif ``speed``. None when even :data:`MAX_LEVEL`
    misses, or every passing payload is over ``max_bytes``."""
    failing, passing = MIN_LEVEL - 1, MAX_LEVEL + 1  # bracket: largest level known to fail, smallest to pass
    best, level, last = None, start_level(target_db) if start is None else start, None
    for _ in range(MAX_TRIES):
        payload = encode_at(block, ctx, level, speed)
        psnr = psnr_of(decode(payload, ctx))
        if psnr >= target_db:
            passing = level
            if best is None or len(payload) < len(best.payload):
                best = Trial(payload, psnr)
            if psnr - target_db < 0.25:
                break
        else:
            failing = level
            if max_bytes is not None and len(payload) > max_bytes:
                break  # what passes would be bigger still
        psnr = min(psnr, target_db + 20.0)  # an exact tile (inf) steps down as a very good one would
        slope = DB_PER_LEVEL if last is None or last[0] == level else max((psnr - last[1]) / (level - last[0]), 0.05)
        last = (level, psnr)
        excess = psnr - target_db - 0.1
        guess = level - int(np.floor(excess / slope)) if excess >= 0 else level + int(np.ceil(-excess / slope))
        level = int(np.clip(guess, failing + 1, passing - 1))
        if failing + 1 > passing - 1 or level > MAX_LEVEL or (best is not None and level == passing):
            break
    if best is None or (max_bytes is not None and len(best.payload) > max_bytes):
        return None
    return best


def encode(block: np.ndarray, ctx) -> bytes:
    """The tile coder interface without a target: level 90 (about 40 dB on a typical photo tile)."""
    return encode_at(block, ctx, 90)
