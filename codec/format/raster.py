"""Band coding of rasters (any band count, uint8/uint16, optional nodata): the one home of how bands
become the 3-channel images the model codes, and back. Pure functions over arrays, no model.

    raster (H, W, B) ─describe─▶ RasterInfo (dtype, bit depth, per-band lo/hi over VALID pixels, nodata, names)
    tile block (h, w, B) ─valid_mask─▶ bool (h, w)    a pixel is nodata when EVERY band equals the nodata value
                         ─normalised(group)─▶ float32 (h, w, 3) in [0, 1], nodata filled smoothly (push-pull)
    float (n, 3, h, w) ─to_raw(group)─▶ the group's bands as integers in [lo, hi]

The decision (fixed for issue 17, measured in bench/band_coding.py): band b is mapped linearly to
[0, 1] with lo_b/hi_b = the min/max of its valid pixels (hi = lo → scale 1), and the bands are coded in
groups of 3 consecutive bands in band order, each group as one RGB-like image through the model; a
last group of 1 or 2 bands repeats its last band (the repeat is not decoded). Nodata pixels are
filled before coding with a smooth push-pull fill, so they cost almost nothing, and put back exactly
from the losslessly coded mask on decode (:func:`pack_mask`).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from codec.errors import UnsupportedImageError
from codec.format.inflate import inflate_exact

DTYPES = ("uint8", "uint16")  # what rasters may hold; the stream's dtype byte is the index
GROUP = 3  # bands per model pass (the model's channels)


@dataclass(frozen=True)
class RasterInfo:
    """What a decoder needs to turn coded groups back into the raster (all of it travels in the header)."""

    dtype: str  # "uint8" or "uint16"
    bit_depth: int  # significant bits per sample (1..16); informational (written back to GeoTIFFs)
    bands: int
    lo: tuple[int, ...]  # per band: smallest valid value
    hi: tuple[int, ...]  # per band: largest valid value (== lo for a constant band)
    nodata: int | None = None
    band_names: tuple[str, ...] | None = None

    @property
    def band_peaks(self) -> np.ndarray:
        """Each band's PSNR peak, codec.metrics.band_peaks's rule from the header: its valid range (≥ 1)."""
        return np.array([max(h - lo, 1) for lo, h in zip(self.lo, self.hi)], dtype=np.float64)

    @property
    def groups(self) -> list[list[int]]:
        return band_groups(self.bands)

    def scale(self, b: int) -> int:
        return max(self.hi[b] - self.lo[b], 1)


def is_raster(dtype, bands: int, *, nodata: int | None = None, bit_depth: int | None = None,
              band_names=None, lossless: bool = False) -> bool:
    """THE raster rule: whether an image is coded as a raster (stream v2) rather than an 8-bit photo (v1).

    A photo is uint8 with 1, 3 or 4 samples per pixel (gray, RGB, RGBA) and none of: a nodata value, a
    bit depth other than 8, band names, lossless coding. The encoder (``codec.api``), the loader
    (``LoadedImage.is_raster``), the pipeline's model choice (``CodecReplica.model_for``), ``--nodata``
    (``stages.encode.with_nodata``) and restore's file format (``stages.restore.image_format``, which
    knows dtype and bands only) all ask this function.
    """
    photo_shape = str(dtype) == "uint8" and bands in (1, 3, 4)
    return (not photo_shape or nodata is not None or bit_depth not in (None, 8) or band_names is not None
            or bool(lossless))


def image_bands(image) -> int:
    """Samples per pixel of an (H, W) or (H, W, B) array (0 for anything else, which no rule accepts)."""
    ndim = getattr(image, "ndim", 0)
    return 1 if ndim == 2 else image.shape[2] if ndim == 3 else 0


def band_groups(bands: int) -> list[list[int]]:
    """Band indices per model pass: [0,1,2], [3,4,5], …; a short last group repeats its last band."""
    out = []
    for s in range(0, bands, GROUP):
        g = list(range(s, min(s + GROUP, bands)))
        out.append(g + [g[-1]] * (GROUP - len(g)))
    return out


def real_bands(group: list[int]) -> list[int]:
    """The group's positions that carry a band of their own (not a repeat of the last one)."""
    return [k for k, b in enumerate(group) if b not in group[:k]]


def as_bands(image: np.ndarray) -> np.ndarray:
    """(H, W) → (H, W, 1) view; (H, W, B) unchanged."""
    return image[..., None] if image.ndim == 2 else image


def check_raster(image, name: str = "image") -> np.ndarray:
    """The (H, W, B) view of a raster the codec takes, or UnsupportedImageError saying why not."""
    if not hasattr(image, "dtype") or not hasattr(image, "shape"):
        raise UnsupportedImageError(f"{name}: expected a numpy array, got {type(image).__name__}")
    if image.dtype.name not in DTYPES:
        raise UnsupportedImageError(f"{name}: {image.dtype} samples are not supported; rasters are uint8 or uint16 "
                                    "(float and signed data would need a lossy conversion the caller must choose)")
    if image.ndim not in (2, 3):
        raise UnsupportedImageError(f"{name}: shape {image.shape} is not (H, W) or (H, W, bands)")
    image = as_bands(image)
    h, w, b = image.shape
    if h == 0 or w == 0 or b == 0:
        raise UnsupportedImageError(f"{name}: empty raster {image.shape}")
    if h >= 2**32 or w >= 2**32 or b > 65535:
        raise UnsupportedImageError(f"{name}: {image.shape} exceeds the format's limits (32-bit sides, 65535 bands)")
    return image


def valid_mask(block: np.ndarray, nodata: int | None) -> np.ndarray | None:
    """bool (h, w): True where the pixel holds data; None when every pixel does (or there is no nodata value)."""
    if nodata is None:
        return None
    nod = np.all(as_bands(block) == nodata, axis=2)
    return None if not nod.any() else ~nod


def describe(image: np.ndarray, tile_boxes, nodata: int | None = None, bit_depth: int | None = None,
             band_names=None, name: str = "image") -> tuple[RasterInfo, list[np.ndarray | None]]:
    """(RasterInfo, per-tile valid mask or None) of a checked raster, in one pass over its tiles.

    ``nodata`` outside the dtype's range is refused; ``bit_depth`` defaults to the bits of the largest
    value (at least 1, at most the dtype's); ``band_names`` must be one string per band.
    """
    h, w, b = image.shape
    top = 255 if image.dtype == np.uint8 else 65535
    if nodata is not None:
        if isinstance(nodata, float) and not float(nodata).is_integer() or not 0 <= nodata <= top:
            raise UnsupportedImageError(f"{name}: nodata value {nodata!r} cannot occur in {image.dtype} samples")
        nodata = int(nodata)
    lo = np.full(b, top, dtype=np.int64)
    hi = np.zeros(b, dtype=np.int64)
    masks: list[np.ndarray | None] = []
    for x, y, tw, th in tile_boxes:
        block = np.asarray(image[y : y + th, x : x + tw])
        valid = valid_mask(block, nodata)
        masks.append(valid)
        vals = block.reshape(-1, b) if valid is None else block[valid]
        if len(vals):
            lo = np.minimum(lo, vals.min(0))
            hi = np.maximum(hi, vals.max(0))
    empty = lo > hi  # no valid pixel at all
    lo[empty], hi[empty] = 0, 0
    depth = max(int(hi.max()).bit_length(), 1)
    if bit_depth is not None:
        if not 1 <= int(bit_depth) <= (8 if top == 255 else 16):
            raise UnsupportedImageError(f"{name}: bit depth {bit_depth} is not possible in {image.dtype} samples")
        if depth > int(bit_depth):
            raise UnsupportedImageError(f"{name}: values up to {int(hi.max())} do not fit the stated {bit_depth}-bit depth")
        depth = int(bit_depth)
    names = None
    if band_names is not None:
        names = tuple(str(n) for n in band_names)
        if len(names) != b:
            raise UnsupportedImageError(f"{name}: {len(names)} band names for {b} bands")
    info = RasterInfo(image.dtype.name, depth, b, tuple(int(v) for v in lo), tuple(int(v) for v in hi), nodata, names)
    return info, masks


def restore_nodata(block: np.ndarray, valid: np.ndarray | None, nodata: int | None) -> np.ndarray:
    """Put nodata back where ``valid`` is False; a decoded valid pixel that came out as nodata in every band
    is moved one step off it (it must stay valid after a GeoTIFF round trip)."""
    if nodata is None:
        return block
    clash = np.all(block == nodata, axis=2)
    if valid is not None:
        clash &= valid
    if clash.any():
        top = np.iinfo(block.dtype).max
        block[clash, 0] = nodata + 1 if nodata < top else nodata - 1
    if valid is not None:
        block[~valid] = nodata
    return block


# --- the nodata mask, coded losslessly ------------------------------------------------------------------
# Each row XORed with the row above, packed to bits, deflated: on the 108 nodata tiles of satellite/train
# 86 bytes a tile, where plain packed bits took 138, JPEG XL lossless 129 (effort 3) or 62 (effort 7,
# at 47× the time: 19 ms a tile); bench/band_coding.py --mask-only.
def pack_mask(valid: np.ndarray) -> bytes:
    """The (h, w) valid mask of a tile, losslessly: rows XORed with the row above, packed bits, deflated."""
    d = valid.astype(bool)
    d[1:] ^= valid[:-1].astype(bool)
    return zlib.compress(np.packbits(d, axis=None).tobytes(), 9)


def unpack_mask(data: bytes, h: int, w: int) -> np.ndarray:
    """The (h, w) valid mask of a tile; CorruptStreamError unless it inflates to exactly its size."""
    packed = inflate_exact(data, -(-h * w // 8), "nodata mask")
    d = np.unpackbits(np.frombuffer(packed, np.uint8), count=h * w).astype(bool).reshape(h, w)
    return np.logical_xor.accumulate(d, axis=0)
