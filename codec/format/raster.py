"""Band coding of rasters (any band count, uint8/uint16/int16, optional nodata): the one home of how bands
become the 3-channel images the model codes, and back. Pure functions over arrays, no model.

    raster (H, W, B) ─describe─▶ RasterInfo (dtype, bit depth, per-band lo/hi over VALID samples, nodata, names)
    tile block (h, w, B) ─valid_mask─▶ bool (h, w) under the pixel rule, (h, w, B) under the band rule
                         ─normalised(group)─▶ float32 (h, w, 3) in [0, 1], nodata filled smoothly (push-pull)
    float (n, 3, h, w) ─to_raw(group)─▶ the group's bands as integers in [lo, hi]

The decision (fixed for issue 17, measured in bench/band_coding.py): band b is mapped linearly to
[0, 1] with lo_b/hi_b = the min/max of its valid pixels (hi = lo → scale 1), and the bands are coded in
groups of 3 consecutive bands in band order, each group as one RGB-like image through the model; a
last group of 1 or 2 bands repeats its last band (the repeat is not decoded). Nodata pixels are
filled before coding with a smooth push-pull fill, so they cost almost nothing, and put back exactly
from the losslessly coded mask on decode (:func:`pack_mask`).

Nodata (issue 26), two rules (:data:`NODATA_MODES`):

- ``"band"``, GDAL's meaning and the default: a sample is nodata in ITS band when it equals that band's
  nodata value (one value for every band, as a GeoTIFF's GDAL_NODATA, or one per band). Every such sample
  comes back exactly; the mask is per band, written once when every band shares it (:func:`pack_mask`).
- ``"pixel"``, the rule of streams before issue 26 (and on request): a pixel is nodata only when EVERY band
  equals the one value; a valid pixel's samples equal to it are coded like any other.

The rule travels as a plain value (:data:`Nodata`): an int is the pixel rule's value, a tuple the band
rule's per-band values (None: the band has none). ``RasterInfo.rule`` is the stream's.

Signed rasters (issue 26): int16 samples are coded as uint16 ``value + 32768`` (:func:`to_coded`), so every
coder, mode and bound works unchanged (ranges and errors are offset-free; PSNR peaks are taken on the real
values, RasterInfo.band_peaks); the stream records
int16 (dtype byte 2) and decode maps back (:func:`from_coded`). lo/hi and nodata in RasterInfo are in the
coded domain; ``real`` gives a coded value's sample value. float32 products (reflectance, DEMs in metres)
are not taken: they would need a declared quantisation step (scale/offset to integers, the step chosen by
the caller as the product's precision) in front of this mapping, then ``max_error`` in steps is an error
bound in physical units and exact tiles are exact to the step; NaN nodata would map to a reserved integer.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from codec.errors import CorruptStreamError, UnsupportedImageError
from codec.format.inflate import inflate_exact
from codec.metrics import peak_of

DTYPES = ("uint8", "uint16")  # what coded samples are; RasterInfo.dtype is one of them
SAMPLE_DTYPES = ("uint8", "uint16", "int16")  # what rasters may hold; the stream's dtype byte is the index
SIGNED_OFFSET = 32768  # int16 value + this = the uint16 it is coded as
NODATA_MODES = ("band", "pixel")  # GDAL's per-band rule (the default), the per-pixel rule of older streams
GROUP = 3  # bands per model pass (the model's channels)

Nodata = int | tuple[int | None, ...] | None  # int: the pixel rule's value; tuple: the band rule's, per band


@dataclass(frozen=True)
class RasterInfo:
    """What a decoder needs to turn coded groups back into the raster (all of it travels in the header)."""

    dtype: str  # the coded samples: "uint8" or "uint16" (int16 rasters: "uint16" with signed)
    bit_depth: int  # significant bits per sample (1..16); informational (written back to GeoTIFFs)
    bands: int
    lo: tuple[int, ...]  # per band: smallest valid value (coded domain)
    hi: tuple[int, ...]  # per band: largest valid value (== lo for a constant band)
    nodata: int | None = None  # the value every band with nodata shares (pixel rule: THE value); coded domain
    band_names: tuple[str, ...] | None = None
    band_nodata: tuple[int | None, ...] | None = None  # the band rule's per-band values; None: the pixel rule
    signed: bool = False  # int16 samples, coded as uint16 value + SIGNED_OFFSET

    @property
    def band_peaks(self) -> np.ndarray:
        """Each band's PSNR peak, codec.metrics.band_peaks's rule from the header (on the real values)."""
        off = SIGNED_OFFSET if self.signed else 0
        return np.array([peak_of(lo - off, h - off) for lo, h in zip(self.lo, self.hi)], dtype=np.float64)

    @property
    def rule(self) -> Nodata:
        """What valid_mask/restore_nodata take: the band rule's tuple, else the pixel rule's value (or None)."""
        return self.band_nodata if self.band_nodata is not None else self.nodata

    @property
    def has_nodata(self) -> bool:
        return self.nodata is not None or self.band_nodata is not None and any(v is not None for v in self.band_nodata)

    @property
    def mask_bands(self) -> int | None:
        """The bands of a tile's nodata mask: None for a (h, w) pixel mask, ``bands`` under the band rule."""
        return self.bands if self.band_nodata is not None else None

    @property
    def nodata_mode(self) -> str | None:
        """"band", "pixel", or None without nodata."""
        return None if not self.has_nodata else "band" if self.band_nodata is not None else "pixel"

    @property
    def sample_dtype(self) -> str:
        """What the raster holds and decode returns: "int16" for a signed raster, else the coded dtype."""
        return "int16" if self.signed else self.dtype

    def real(self, value: int | None) -> int | None:
        """A coded value (lo, hi, nodata) as the raster's sample value."""
        return None if value is None else value - SIGNED_OFFSET if self.signed else value

    @property
    def real_nodata(self) -> int | None:
        """The shared nodata value as a sample value (what a GeoTIFF's GDAL_NODATA says)."""
        return self.real(self.nodata)

    @property
    def real_rule(self) -> Nodata:
        """:attr:`rule` in the raster's own sample values (what valid_mask takes for the decoded array)."""
        if self.band_nodata is not None:
            return tuple(self.real(v) for v in self.band_nodata)
        return self.real(self.nodata)

    @property
    def real_band_nodata(self) -> tuple[int | None, ...] | None:
        """Per band nodata as sample values: the band rule's, or the pixel rule's value for every band."""
        if self.band_nodata is not None:
            return tuple(self.real(v) for v in self.band_nodata)
        return None if self.nodata is None else (self.real(self.nodata),) * self.bands

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
    """(H, W) → (H, W, 1) view; (H, W, B) unchanged (a lazily read raster: a lazy view, see :func:`to_coded`)."""
    if image.ndim != 2:
        return image
    return image.mapped(band_axis=True) if hasattr(image, "mapped") else image[..., None]


def check_raster(image, name: str = "image") -> np.ndarray:
    """The (H, W, B) view of a raster the codec takes, or UnsupportedImageError saying why not."""
    if not hasattr(image, "dtype") or not hasattr(image, "shape"):
        raise UnsupportedImageError(f"{name}: expected a numpy array, got {type(image).__name__}")
    if image.dtype.name not in SAMPLE_DTYPES:
        raise UnsupportedImageError(f"{name}: {image.dtype} samples are not supported; rasters are uint8, uint16 or "
                                    "int16 (float data would need a quantisation step the caller must choose)")
    if image.ndim not in (2, 3):
        raise UnsupportedImageError(f"{name}: shape {image.shape} is not (H, W) or (H, W, bands)")
    image = as_bands(image)
    h, w, b = image.shape
    if h == 0 or w == 0 or b == 0:
        raise UnsupportedImageError(f"{name}: empty raster {image.shape}")
    if h >= 2**32 or w >= 2**32 or b > 65535:
        raise UnsupportedImageError(f"{name}: {image.shape} exceeds the format's limits (32-bit sides, 65535 bands)")
    return image


def to_coded(image: np.ndarray) -> np.ndarray:
    """The coded samples of a checked raster: int16 as uint16 ``value + 32768`` (a copy; a lazily read raster,
    one with ``mapped`` like codec.images.windowed.WindowedRaster, converts each window it reads), others as they are."""
    if image.dtype == np.int16:
        if hasattr(image, "mapped"):
            return image.mapped(_coded_block, np.uint16)
        return _coded_block(image)
    return image


def _coded_block(block: np.ndarray) -> np.ndarray:
    return np.bitwise_xor(block.view(np.uint16), np.uint16(SIGNED_OFFSET))


def from_coded(block: np.ndarray, info: RasterInfo) -> np.ndarray:
    """Decoded coded samples as the raster's own: int16 back from uint16 (in place), others as they are."""
    if not info.signed:
        return block
    np.bitwise_xor(block, np.uint16(SIGNED_OFFSET), out=block)
    return block.view(np.int16)


def sample_rule(nodata, bands: int, mode: str = "band") -> Nodata:
    """The rule (in sample values) of a nodata a caller gives (one value or one per band) under ``mode``, as
    describe applies it; for callers that hold the pixels, not the stream (the pipeline's stats)."""
    if nodata is None:
        return None
    values = tuple(nodata) if isinstance(nodata, (tuple, list)) else (nodata,) * bands
    return values if mode == "band" else values[0]


def per_band(rule: Nodata) -> bool:
    """Whether ``rule`` is the band rule (its masks are (h, w, B))."""
    return isinstance(rule, tuple)


def valid_mask(block: np.ndarray, rule: Nodata) -> np.ndarray | None:
    """Where ``block`` holds data: bool (h, w) under the pixel rule (a pixel is nodata when EVERY band equals the
    value), (h, w, B) under the band rule (a sample is nodata when it equals its band's value; (h, w) when that
    mask is the same in every band, so memory stays a pixel mask's); None when every sample holds data (or
    there is no rule)."""
    if rule is None:
        return None
    block = as_bands(block)
    if per_band(rule):
        nod = np.zeros(block.shape, dtype=bool)
        for b, v in enumerate(rule):
            if v is not None:
                nod[..., b] = block[..., b] == v
        if (nod == nod[..., :1]).all():  # every band the same (scene borders): kept as one (h, w) mask
            nod = nod[..., 0]
    else:
        nod = np.all(block == rule, axis=2)
    return None if not nod.any() else ~nod


def _rule_of(nodata, mode: str, bands: int, dtype, name: str) -> tuple[int | None, tuple | None]:
    """(shared value, per-band values or None) in the coded domain of the nodata a caller gave: one number or
    one per band (None: none in that band), under ``mode``; refused when a value cannot occur in ``dtype``."""
    if nodata is None:
        return None, None
    if mode not in NODATA_MODES:
        raise UnsupportedImageError(f"{name}: nodata_mode {mode!r} is not one of {', '.join(NODATA_MODES)}")
    info = np.iinfo(dtype)
    values = list(nodata) if isinstance(nodata, (tuple, list, np.ndarray)) else [nodata] * bands
    if len(values) != bands:
        raise UnsupportedImageError(f"{name}: {len(values)} nodata values for {bands} bands")
    if mode == "pixel" and len(set(values)) != 1:
        raise UnsupportedImageError(f"{name}: the pixel nodata rule takes one value for every band, got {values}")
    coded = []
    for v in values:
        if v is not None and (isinstance(v, float) and not float(v).is_integer() or not info.min <= v <= info.max):
            raise UnsupportedImageError(f"{name}: nodata value {v!r} cannot occur in {np.dtype(dtype)} samples")
        coded.append(None if v is None else int(v) + (SIGNED_OFFSET if info.min < 0 else 0))
    if all(v is None for v in coded):
        return None, None
    shared = {v for v in coded if v is not None}
    common = shared.pop() if len(shared) == 1 else None
    return (common, None) if mode == "pixel" else (common, tuple(coded))


def describe(image: np.ndarray, tile_boxes, nodata=None, bit_depth: int | None = None,
             band_names=None, name: str = "image", nodata_mode: str = "band",
             signed: bool = False) -> tuple[RasterInfo, list[np.ndarray | None]]:
    """(RasterInfo, per-tile valid mask or None) of a checked raster in coded samples (:func:`to_coded`;
    ``signed``: it was int16), in one pass over its tiles.

    ``nodata``: one value or one per band, in the raster's own samples, under ``nodata_mode`` ("band": GDAL's
    per-band rule, "pixel": every band equal); a value outside the dtype's range is refused. ``bit_depth``
    defaults to the bits of the largest value (at least 1, at most the dtype's; int16: 16); ``band_names`` must
    be one string per band.
    """
    h, w, b = image.shape
    top = 255 if image.dtype == np.uint8 else 65535
    shared, band_values = _rule_of(nodata, nodata_mode, b, np.int16 if signed else image.dtype, name)
    rule = band_values if band_values is not None else shared
    lo = np.full(b, top, dtype=np.int64)
    hi = np.zeros(b, dtype=np.int64)
    masks: list[np.ndarray | None] = []
    for x, y, tw, th in tile_boxes:
        block = np.asarray(image[y : y + th, x : x + tw])
        valid = valid_mask(block, rule)
        masks.append(valid)
        lo, hi = _range_update(block, valid, lo, hi)
    empty = lo > hi  # no valid sample at all
    lo[empty], hi[empty] = (SIGNED_OFFSET if signed else 0), (SIGNED_OFFSET if signed else 0)
    depth = 16 if signed else max(int(hi.max()).bit_length(), 1)
    if signed and bit_depth not in (None, 16):
        raise UnsupportedImageError(f"{name}: int16 rasters are 16-bit, not {bit_depth}-bit")
    if bit_depth is not None and not signed:
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
    info = RasterInfo(image.dtype.name, depth, b, tuple(int(v) for v in lo), tuple(int(v) for v in hi), shared, names,
                      band_values, signed)
    return info, masks


def valid_counts(boxes, valid: list, bands: int, per_band_rule: bool) -> np.ndarray:
    """Valid pixels per tile, (n,); under the band rule valid samples per tile and band, (n, bands)."""
    if per_band_rule:
        return np.array([np.full(bands, bw * bh) if v is None else np.full(bands, v.sum()) if v.ndim == 2
                         else v.reshape(-1, bands).sum(0)
                         for (_, _, bw, bh), v in zip(boxes, valid)]).reshape(len(boxes), bands)
    return np.array([bw * bh if v is None else int(v.sum()) for (_, _, bw, bh), v in zip(boxes, valid)])


def _range_update(block: np.ndarray, valid: np.ndarray | None, lo: np.ndarray, hi: np.ndarray):
    """(lo, hi) per band widened by the valid samples of ``block``."""
    b = block.shape[2]
    if valid is None or valid.ndim == 2:
        vals = block.reshape(-1, b) if valid is None else block[valid]
        if len(vals):
            return np.minimum(lo, vals.min(0)), np.maximum(hi, vals.max(0))
        return lo, hi
    for k in range(b):
        vals = block[..., k][valid[..., k]]
        if vals.size:
            lo[k], hi[k] = min(lo[k], int(vals.min())), max(hi[k], int(vals.max()))
    return lo, hi


def restore_nodata(block: np.ndarray, valid: np.ndarray | None, rule: Nodata) -> np.ndarray:
    """Put nodata back where ``valid`` is False; a decoded valid pixel (pixel rule) or sample (band rule) that came
    out as nodata is moved one step off it (it must stay valid after a GeoTIFF round trip)."""
    if rule is None:
        return block
    top = np.iinfo(block.dtype).max
    if not per_band(rule):
        clash = np.all(block == rule, axis=2)
        if valid is not None:
            clash &= valid
        if clash.any():
            block[clash, 0] = rule + 1 if rule < top else rule - 1
        if valid is not None:
            block[~valid] = rule
        return block
    for b, v in enumerate(rule):
        if v is None:
            continue
        band = block[..., b]
        vb = None if valid is None else valid if valid.ndim == 2 else valid[..., b]
        clash = band == v
        if vb is not None:
            clash &= vb
        band[clash] = v + 1 if v < top else v - 1
        if vb is not None:
            band[~vb] = v
    return block


# --- the nodata mask, coded losslessly ------------------------------------------------------------------
# Each row XORed with the row above, packed to bits, deflated: on the 108 nodata tiles of satellite/train
# 86 bytes a tile, where plain packed bits took 138, JPEG XL lossless 129 (effort 3) or 62 (effort 7,
# at 47× the time: 19 ms a tile); bench/band_coding.py --mask-only.
SHARED_MASK, BAND_MASKS = 0, 1  # the band rule's mask: first byte says which layout follows


def pack_mask(valid: np.ndarray, bands: int | None = None) -> bytes:
    """The valid mask of a tile, losslessly: (h, w) rows XORed with the row above, packed bits, deflated.

    ``bands`` (the band rule) adds a first byte: :data:`SHARED_MASK` then that (h, w) mask, every band's (the
    common case: a scene border; it costs one band's bytes), or :data:`BAND_MASKS` then the (h, w, B) mask with
    each band XORed with the band before it, so bands that mostly agree cost little more than one."""
    if bands is None:
        return _pack_planes(valid[None])
    if valid.ndim == 2 or (valid == valid[..., :1]).all():
        return bytes([SHARED_MASK]) + _pack_planes((valid if valid.ndim == 2 else valid[..., 0])[None])
    d = np.moveaxis(valid.astype(bool), 2, 0).copy()  # (B, h, w)
    d[1:] ^= d[:-1].copy()  # each band against the band before
    return bytes([BAND_MASKS]) + _pack_planes(d)


def _pack_planes(planes: np.ndarray) -> bytes:
    """(B, h, w) bool planes, each row XORed with the row above, packed to bits in order and deflated."""
    d = planes.astype(bool)
    d[:, 1:] ^= planes[:, :-1].astype(bool)
    return zlib.compress(np.packbits(d, axis=None).tobytes(), 9)


def _unpack_planes(data: bytes, n: int, h: int, w: int) -> np.ndarray:
    packed = inflate_exact(data, -(-n * h * w // 8), "nodata mask")
    d = np.unpackbits(np.frombuffer(packed, np.uint8), count=n * h * w).astype(bool).reshape(n, h, w)
    return np.logical_xor.accumulate(d, axis=1)


def unpack_mask(data: bytes, h: int, w: int, bands: int | None = None) -> np.ndarray:
    """The (h, w) valid mask of a tile, or (h, w, bands) when ``bands`` is given (the band rule);
    CorruptStreamError unless it inflates to exactly its size."""
    if bands is None:
        return _unpack_planes(data, 1, h, w)[0]
    if not data or data[0] not in (SHARED_MASK, BAND_MASKS):
        raise CorruptStreamError(f"unknown band mask layout {data[0] if data else 'missing'}")
    if data[0] == SHARED_MASK:
        return np.repeat(_unpack_planes(data[1:], 1, h, w)[0][..., None], bands, axis=2)
    return np.moveaxis(np.logical_xor.accumulate(_unpack_planes(data[1:], bands, h, w), axis=0), 0, 2)
