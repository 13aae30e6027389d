"""Error-bounded tiles: every sample within ±E of the source (``max_error``), nodata pixels exact.

Three methods, the smallest per tile kept (:func:`encode_within`, among :func:`methods_for`); each bounds the
error by construction and the encoder checks it on the decoded tile:

* ``GRID`` — each sample quantised on the fixed grid of step 2E+1 (index ``(x + E) // (2E+1)``, decoded as
  ``index·(2E+1)`` clipped to the dtype: clipping only moves a value towards the source, so the bound holds at
  0 and at the top), the index image coded losslessly by JPEG XL per band (codec.tilecoders.jxl_exact: its
  context model does the entropy coding).
* ``GRID_JOINT`` — the same indices, each band triplet coded as one JPEG XL lossless colour image (its colour
  transforms decorrelate the bands), leftover bands one by one.
* ``GRID_WEBP`` — the same indices of an 8-bit RGB tile as one WebP lossless image (libwebp's colour cache and
  palette modes suit the few distinct values of a coarse grid).
* ``JPEGLS`` — JPEG-LS near-lossless (CharLS via imagecodecs, ``level=E``), band triplets interleaved, the rest
  one by one.

GRID_JOINT is the pick on nearly every tile measured (bench/nearlossless_prediction.py on 8 even CIL train
tiles: GRID 1.2-1.6x and JPEG-LS 1.2-1.6x its bytes at E 1-8). The learned reconstruction is not used as a
prediction: against GRID_JOINT, the best learned level plus its quantised residual (indices through the same
JPEG XL) costs 1.11/1.45/1.07/0.86x at E = 1/2/4/8 (an order-0 coder of the indices: 1.38/1.32/0.94/0.78x), so it
would pay only from E ≈ 8, and there the bound would rest on the float synthesis being bit-identical on every
decoder (the codec guarantees identical symbols, tests/test_device_exact.py, not identical pixels).

Tile payload: ``method u8 | E u16 | body length u32 | body`` then, when the tile has nodata, its packed valid
mask (codec.format.raster.pack_mask). GRID_JOINT and JPEG-LS bodies: per part ``length u32 | codestream``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from codec.errors import CorruptStreamError
from codec.format import raster
from codec.tilecoders.jxl_exact import decode_tile as exact_decode, encode_tile as exact_encode
from codec.tilecoders.parts import fill_nodata, parts_of

GRID, JPEGLS, GRID_JOINT, GRID_WEBP = 1, 2, 3, 4
METHODS = (GRID, JPEGLS, GRID_JOINT, GRID_WEBP)
WEBP_FROM_E = 3  # 8-bit RGB tiles: WebP lossless of the grid indices is tried from this bound (see methods_for)
WEBP_LEVEL = 50  # its libwebp effort (90: 0.2% smaller, 1.3x the time)
JOINT_EFFORT = 4  # libjxl effort of the joint grid parts (effort 7: ~4% smaller at 2.6x the time)
JPEGLS_MAX_E = 255  # CharLS refuses NEAR above min(255, MAXVAL/2)
_HEAD = struct.Struct("<BHI")
_LEN = struct.Struct("<I")


def check_bound(max_error, dtype: str = "uint16") -> int:
    """``max_error`` as an int in [1, the dtype's top]; ValueError naming it and the cause otherwise."""
    if isinstance(max_error, bool) or not isinstance(max_error, (int, np.integer)):
        raise ValueError(f"max_error must be an integer number of sample units, got {max_error!r}")
    top = np.iinfo(dtype).max
    if not 1 <= int(max_error) <= top:
        raise ValueError(f"max_error must be in [1, {top}] for {dtype} samples here, got {max_error}")
    return int(max_error)


def quantise(block: np.ndarray, e: int) -> np.ndarray:
    """Grid indices of a tile (same dtype: an index never exceeds the sample)."""
    return ((block.astype(np.int64) + e) // (2 * e + 1)).astype(block.dtype)


def dequantise(index: np.ndarray, e: int, dtype: str) -> np.ndarray:
    """Samples of grid indices, clipped to the dtype (which keeps |error| ≤ e)."""
    top = np.iinfo(dtype).max
    return np.clip(index.astype(np.int64) * (2 * e + 1), 0, top).astype(dtype)


def _jxl_joint(part: np.ndarray) -> bytes:
    """JPEG XL lossless of a (h, w) band or (h, w, 3) triplet of grid indices, coded as one colour image (its
    colour transforms find what per-band coding misses: 0.64-0.90x GRID's bytes on 256² train RGB tiles)."""
    import imagecodecs

    bits = max(int(part.max()).bit_length(), 1)
    if bits <= 8 and part.dtype != np.uint8:  # libjxl takes 16-bit buffers only for 9-16 bits
        part = part.astype(np.uint8)
    return imagecodecs.jpegxl_encode(part, lossless=True, effort=JOINT_EFFORT, bitspersample=bits)


def _parts_body(block: np.ndarray, code) -> bytes:
    """Per band triplet (then per leftover band): ``length u32 | code(part)``."""
    out = []
    for g in parts_of(block.shape[2]):
        data = code(np.ascontiguousarray(block[..., g] if len(g) == 3 else block[..., g[0]]))
        out += [_LEN.pack(len(data)), data]
    return b"".join(out)


def _webp(part: np.ndarray) -> bytes:
    import imagecodecs

    return imagecodecs.webp_encode(part, lossless=True, level=WEBP_LEVEL)


def _jpegls(part: np.ndarray, e: int) -> bytes:
    import imagecodecs

    return imagecodecs.jpegls_encode(part, level=e)


def _parts_decode(body: bytes, ctx, what: str, decode) -> np.ndarray:
    """The (h, w, bands) array of a :func:`_parts_body`; CorruptStreamError naming ``what`` when it is not one."""
    out, pos = np.empty(ctx.shape, dtype=ctx.dtype), 0
    for k, g in enumerate(parts_of(ctx.bands)):
        if pos + _LEN.size > len(body):
            raise CorruptStreamError(f"{what} tile truncated before part {k}")
        (n,) = _LEN.unpack_from(body, pos)
        pos += _LEN.size
        if pos + n > len(body):
            raise CorruptStreamError(f"{what} part {k} truncated")
        try:
            img = decode(body[pos : pos + n])
        except Exception as exc:
            raise CorruptStreamError(f"{what} part {k} does not decode ({exc})") from exc
        img = img[..., None] if img.ndim == 2 else img
        if img.shape != (ctx.height, ctx.width, len(g)) or img.dtype.itemsize > out.dtype.itemsize:
            raise CorruptStreamError(f"{what} part {k} decodes to {img.dtype} {img.shape}")
        out[..., g] = img
        pos += n
    if pos != len(body):
        raise CorruptStreamError(f"{len(body) - pos} unexpected bytes after the {what} parts")
    return out


def encode_method(block: np.ndarray, ctx, e: int, method: int) -> bytes:
    """The payload of a (h, w, B) tile by ``method`` at bound ``e`` (nodata filled, its mask appended)."""
    valid = raster.valid_mask(block, ctx.nodata)
    filled = fill_nodata(block, valid)
    if method == GRID:
        body = exact_encode(quantise(filled, e))
    elif method == GRID_JOINT:
        body = _parts_body(quantise(filled, e), _jxl_joint)
    elif method == GRID_WEBP:
        if block.dtype != np.uint8 or block.shape[2] != 3:
            raise ValueError(f"near-lossless GRID_WEBP codes 8-bit RGB tiles, not {block.shape[2]} {block.dtype} bands")
        body = _parts_body(quantise(filled, e), _webp)
    elif method == JPEGLS:
        body = _parts_body(filled, lambda part: _jpegls(part, e))
    else:
        raise ValueError(f"near-lossless method {method!r} is not one of {METHODS}")
    mask = raster.pack_mask(valid, ctx.mask_bands) if valid is not None else b""
    return _HEAD.pack(method, e, len(body)) + body + mask


def decode(payload: bytes, ctx) -> np.ndarray:
    """The tile of a payload; CorruptStreamError when it is not a near-lossless tile of ctx's shape."""
    if len(payload) < _HEAD.size:
        raise CorruptStreamError("near-lossless tile shorter than its header")
    method, e, n = _HEAD.unpack_from(payload, 0)
    if method not in METHODS or e < 1 or _HEAD.size + n > len(payload):
        raise CorruptStreamError(f"not a near-lossless tile (method {method}, bound {e}, body {n} bytes)")
    body, rest = payload[_HEAD.size : _HEAD.size + n], payload[_HEAD.size + n :]
    import imagecodecs

    if method == GRID:
        out = dequantise(exact_decode(body, ctx.height, ctx.width, ctx.bands, ctx.dtype), e, ctx.dtype)
    elif method == GRID_JOINT:
        out = dequantise(_parts_decode(body, ctx, "joint grid", imagecodecs.jpegxl_decode), e, ctx.dtype)
    elif method == GRID_WEBP:
        if ctx.dtype != "uint8" or ctx.bands != 3:
            raise CorruptStreamError(f"a WebP grid tile must be 8-bit RGB, this one is {ctx.bands} {ctx.dtype} bands")
        out = dequantise(_parts_decode(body, ctx, "WebP grid", imagecodecs.webp_decode), e, ctx.dtype)
    else:
        out = _parts_decode(body, ctx, "JPEG-LS near-lossless", imagecodecs.jpegls_decode)
    valid = None
    if rest:
        if ctx.nodata is None:
            raise CorruptStreamError(f"{len(rest)} unexpected bytes after the near-lossless body")
        valid = raster.unpack_mask(rest, ctx.height, ctx.width, ctx.mask_bands)
    return raster.restore_nodata(out, valid, ctx.nodata)


def methods_for(e: int, dtype: str, bands: int = 3) -> tuple[int, ...]:
    """The methods worth trying for bound ``e`` on ``bands`` of ``dtype`` samples: GRID_JOINT where a band
    triplet exists (GRID costs 1.2-1.6x its bytes on aerial train tiles at E 1-8, bench/results/
    nearlossless_prediction.log, and ~1.1x on satellite rasters, so GRID is not tried there; on one band
    GRID_JOINT is GRID at one effort), JPEG-LS where CharLS takes the NEAR
    (≤ min(255, top/2)): it is fast, and wins some smooth tiles. GRID_WEBP on 8-bit RGB tiles from
    :data:`WEBP_FROM_E`: against GRID_JOINT 1.06x at E=1, 0.94x at E=4, 0.90x at E=8 (7 train tiles, CIL even +
    CBSD68)."""
    jpegls = (JPEGLS,) if e <= min(JPEGLS_MAX_E, np.iinfo(dtype).max // 2) else ()
    webp = (GRID_WEBP,) if dtype == "uint8" and bands == 3 and e >= WEBP_FROM_E else ()
    return ((GRID_JOINT,) if bands >= 3 else (GRID,)) + webp + jpegls


def within(block: np.ndarray, decoded: np.ndarray, e: int, nodata: raster.Nodata = None) -> bool:
    """Whether ``decoded`` keeps every sample within ±e of ``block`` and every nodata pixel (or, under the band
    rule, sample) exact."""
    err = np.abs(decoded.astype(np.int64) - block.astype(np.int64))
    valid = raster.valid_mask(block, nodata)
    if valid is not None and (err[~valid] != 0).any():
        return False
    return bool(err.max(initial=0) <= e)


@dataclass(frozen=True)
class Bounded:
    """A tile coded within its bound: the payload and what it decodes to (checked)."""

    payload: bytes
    decoded: np.ndarray


def encode_within(block: np.ndarray, ctx, e: int) -> Bounded | None:
    """The smallest payload of :data:`METHODS` whose decoded tile keeps the bound (checked by decoding);
    None when none does (a valid pixel decoded onto nodata and moved off it: codec.format.raster.restore_nodata)."""
    best = None
    for method in methods_for(e, ctx.dtype, ctx.bands):
        payload = encode_method(block, ctx, e, method)
        if best is not None and len(payload) >= len(best.payload):
            continue
        try:
            decoded = decode(payload, ctx)
        except CorruptStreamError:  # CharLS refuses a NEAR its data's MAXVAL cannot hold
            continue
        if within(block, decoded, e, ctx.nodata):
            best = Bounded(payload, decoded)
    return best


def encode(block: np.ndarray, ctx) -> bytes:
    """The tile coder interface: :func:`encode_within` at the context's ``max_error``."""
    if ctx.max_error is None:
        raise ValueError("tile coder 'nearlossless' needs the bound in its context (TileContext.max_error)")
    best = encode_within(block, ctx, check_bound(ctx.max_error, ctx.dtype))
    if best is None:
        raise ValueError(f"near-lossless: no method keeps ±{ctx.max_error} on this tile (nodata clash)")
    return best.payload
