"""The band parts a tile is coded in by the classical lossy coders, and the payload layout JPEG XL lossy and
JPEG 2000 share: one home, so both read and write the same bytes the same way.

    tile (h, w, B) ─parts_of─▶ band triplets (one colour image each), then single bands
                   ─fill_nodata─▶ nodata pixels set to their band's valid mean (the mask restores them)
    encode_shifted: per part, shift to the tile minimum and code at the bits its range needs, so a 16-bit band
                    valued 0–97 is coded as the 7-bit band it is

Shifted payload: ``kind u8 | parts u16 | per part: bands u8 | bits u8 | per band offset u16 | length u32 |
codestream`` then, when the tile has nodata, its packed valid mask (codec.format.raster.pack_mask).
"""

from __future__ import annotations

import struct
from typing import Callable

import numpy as np

from codec.errors import CorruptStreamError
from codec.format import raster

_HEAD = struct.Struct("<BH")
_PART = struct.Struct("<BB")
_LEN = struct.Struct("<I")


def parts_of(bands: int) -> list[list[int]]:
    """Band indices per coded image: triplets, then single bands."""
    full = bands - bands % 3
    return [list(range(s, s + 3)) for s in range(0, full, 3)] + [[b] for b in range(full, bands)]


def fill_nodata(block: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """``block`` with its nodata samples set to each band's valid mean (cheap to code; the mask restores them);
    ``valid`` (h, w) pixels or (h, w, B) samples (the band rule)."""
    if valid is None:
        return block
    out = block.copy()
    for b in range(block.shape[2]):
        v = valid if valid.ndim == 2 else valid[..., b]
        vals = block[..., b][v]
        out[..., b][~v] = int(round(float(vals.mean()))) if vals.size else 0
    return out


def _encode_part(part: np.ndarray, code: Callable[[np.ndarray, int], bytes]) -> bytes:
    offsets = part.reshape(-1, part.shape[2]).min(0).astype(np.int64)
    shifted = part.astype(np.int64) - offsets
    bits = max(int(shifted.max()).bit_length(), 1)
    arr = shifted.astype(np.uint8 if bits <= 8 else np.uint16)
    data = code(np.ascontiguousarray(arr[..., 0] if part.shape[2] == 1 else arr), bits)
    head = _PART.pack(part.shape[2], bits) + b"".join(struct.pack("<H", int(o)) for o in offsets)
    return head + _LEN.pack(len(data)) + data


def encode_parts(block: np.ndarray, ctx, kind: int, encode_part: Callable[[np.ndarray], bytes]) -> bytes:
    """A (h, w, B) tile as its coder's payload: the (kind, parts) head, each part of the nodata-filled tile as
    ``encode_part`` writes it, then the nodata mask (when there is nodata): the layout every part coder shares."""
    valid = raster.valid_mask(block, ctx.nodata)
    filled = fill_nodata(block, valid)
    groups = parts_of(block.shape[2])
    out = [_HEAD.pack(kind, len(groups))] + [encode_part(filled[..., g]) for g in groups]
    if valid is not None:
        out.append(raster.pack_mask(valid, ctx.mask_bands))
    return b"".join(out)


def encode_shifted(block: np.ndarray, ctx, kind: int, code: Callable[[np.ndarray, int], bytes]) -> bytes:
    """The shifted payload of a (h, w, B) tile; ``code(image, bits)`` codes one part ((h, w) or (h, w, 3))."""
    return encode_parts(block, ctx, kind, lambda part: _encode_part(part, code))


def decode_shifted(payload: bytes, ctx, kind: int, label: str, decode: Callable[[bytes], np.ndarray]) -> np.ndarray:
    """The tile of a shifted payload (``decode`` turns one part's codestream into its image); CorruptStreamError,
    naming ``label``, when it is not a ``kind`` tile of ctx's shape."""
    if len(payload) < _HEAD.size or payload[0] != kind:
        raise CorruptStreamError(f"not a {label} tile")
    (_, n_parts), pos = _HEAD.unpack_from(payload, 0), _HEAD.size
    groups = parts_of(ctx.bands)
    if n_parts != len(groups):
        raise CorruptStreamError(f"{label} tile of {n_parts} parts, a {ctx.bands}-band tile has {len(groups)}")
    top = np.iinfo(ctx.dtype).max
    out = np.empty(ctx.shape, dtype=ctx.dtype)
    for k, g in enumerate(groups):
        if pos + _PART.size > len(payload):
            raise CorruptStreamError(f"{label} tile truncated before part {k}")
        nb, bits = _PART.unpack_from(payload, pos)
        pos += _PART.size
        if nb != len(g) or not 1 <= bits <= 16 or pos + 2 * nb + _LEN.size > len(payload):
            raise CorruptStreamError(f"{label} part {k}: {nb} bands at {bits} bits is not this tile's")
        offsets = np.array(struct.unpack_from(f"<{nb}H", payload, pos), dtype=np.int64)
        (n,) = _LEN.unpack_from(payload, pos + 2 * nb)
        pos += 2 * nb + _LEN.size
        if pos + n > len(payload):
            raise CorruptStreamError(f"{label} part {k} truncated")
        try:
            img = np.asarray(decode(payload[pos : pos + n]))
        except Exception as exc:
            raise CorruptStreamError(f"{label} part {k} does not decode ({exc})") from exc
        img = img[..., None] if img.ndim == 2 else img
        if img.shape != (ctx.height, ctx.width, nb):
            raise CorruptStreamError(f"{label} part {k} decodes to {img.shape}")
        out[..., g] = np.clip(img.astype(np.int64) + offsets, 0, top)
        pos += n
    return restore_mask(payload, pos, ctx, out, label)


def restore_mask(payload: bytes, pos: int, ctx, out: np.ndarray, label: str) -> np.ndarray:
    """``out`` with nodata put back from the valid mask that follows the parts at ``pos`` (if the tile has one)."""
    valid = None
    if ctx.nodata is not None and pos < len(payload):
        valid = raster.unpack_mask(payload[pos:], ctx.height, ctx.width, ctx.mask_bands)
    elif pos != len(payload):
        raise CorruptStreamError(f"{len(payload) - pos} unexpected bytes after the {label} parts")
    return raster.restore_nodata(out, valid, ctx.nodata)
