"""The one image loader: file bytes or a path → the pixels the codec takes, plus what the
file says about them (ICC colour profile, EXIF, GeoTIFF georeferencing, nodata, band names).

Rasters (issue 17): a TIFF/GeoTIFF of unsigned samples of 9–16 bits (any band count, chunky or
planar), of signed 16-bit samples (int16, issue 26), or of 8 bits with more bands than gray/RGB/RGBA
(several extra samples), comes back as (H, W, bands) in file band order (uint16, int16 or uint8; (H, W)
for one band), with ``nodata`` from the
GDAL_NODATA tag, ``band_names`` from GDAL_METADATA's band descriptions and ``bit_depth`` from
BitsPerSample when under 16. 16-bit PNGs (gray, gray+alpha, RGB, RGBA) come back as uint16
through imagecodecs. :func:`write_geotiff` writes such a raster back with its dtype, band order,
nodata, band descriptions and georeferencing tags.

    load_image(source, name, max_pixels, max_bytes) -> LoadedImage   the archival pipeline, retraining
    read_image(source, name, max_pixels) -> np.ndarray                the CLI (pixels only)

The rule: an input comes back as exactly the pixel grid it stores, or as an
:class:`UnsupportedImageError` naming it and saying why. Three kinds of error:

* content the codec cannot keep faithfully (yet): the message says "not supported"
  (the pipeline's error_kind ``unsupported``);
* data that cannot be decoded (empty, truncated, damaged, not an image): any other
  UnsupportedImageError (error_kind ``decode``);
* :class:`ImageTooLargeError` (a subclass): more pixels than ``max_pixels``, or an estimated
  working set over ``max_bytes`` (error_kind ``too_large``). Both are decided from the
  file's header, before a single pixel is decoded (a 122-byte sparse TIFF that would
  decode to 268 MB is refused without allocating it).

Converted, losslessly or exactly as the file's own tags define:
  palette → RGB (RGBA if the palette has transparency); a TIFF palette through its 16-bit
  colour map (8-bit value = map value // 256; a map whose values are all < 256 is read as
  8-bit, as libtiff does) · 1-bit → grayscale 0/255 · TIFF MinIsWhite → inverted to
  MinIsBlack · gray+alpha → RGBA · a transparent colour (PNG/GIF tRNS) → RGBA ·
  premultiplied ("associated") alpha → straight alpha (Pillow's RGBa → RGBA) · a TIFF's
  single extra sample of unspecified meaning → kept as the 4th channel (coded losslessly,
  like alpha) · JPEG-compressed YCbCr TIFF → RGB (libtiff's conversion, what viewers show).

Refused ("not supported"):
  * float or signed samples, more than 16 bits, in any format; more than 8 bits in formats other
    than TIFF and PNG (Pillow would reduce them to 8 bits);
  * CMYK, in TIFF and JPEG. Decision: refuse rather than convert. Pillow's CMYK → RGB is the
    naive formula (R = (255 − C)(255 − K)/255) that ignores the file's colour profile, so
    printed colours change; CMYK JPEGs are moreover usually stored Adobe-inverted (Pillow
    assumes that convention, which a file without the Adobe marker does not follow), and
    coding the four inks as RGBA would label K as alpha. Convert CMYK files to RGB with their
    profile before archiving;
  * other colour spaces, never relabelled as RGB: YCbCr stored uncompressed, CIELab/ICCLab/
    ITULab, LogL/LogLuv, CFA (camera raw), and any Pillow mode other than 1/L/LA/P/RGB/RGBA;
  * more than one image in a file: multi-page TIFF, animated GIF/WebP/PNG (APNG) and
    multi-picture JPEG (MPO): "N pages/frames; only single-image files are archived".
    Reduced-resolution TIFF pages (the overviews of a cloud-optimised GeoTIFF, NewSubfileType
    bit 0) are copies of the first image, not images of their own, and are ignored; a file
    whose first image is itself a reduced-resolution preview (camera raw, DNG) is refused;
  * TIFF with more than one extra sample (beyond gray+alpha or RGBA), a depth (volume), or
    2/4-bit grayscale.

Orientation and colour: the pixels are the stored grid as-is. EXIF orientation is *not*
applied and no colour conversion is made from the ICC profile; both travel with the pixels
instead, for the record to keep and a restore to write back: ``LoadedImage.exif`` holds the
EXIF block as in a JPEG APP1 segment (starting ``b"Exif\\0\\0"``; for a TIFF, one built from its
Orientation tag when that is not 1) and ``LoadedImage.icc_profile`` the raw ICC profile.
Other metadata (XMP, PNG text/gAMA/cHRM, TIFF tags other than GeoTIFF, ICC and Orientation) is
not carried.

Memory: :func:`working_set_bytes` estimates the peak memory of loading and coding an image
from its dimensions; ``load_image(..., max_bytes=N)`` refuses images over N from the header.

Decompression bombs: Pillow's own check (an error above 2 × ``Image.MAX_IMAGE_PIXELS``, about
179 MP by default, below our ``DEFAULT_MAX_PIXELS``) is lifted while this loader opens and
decodes an image; ``max_pixels`` and ``max_bytes``, checked from the header first, replace it.
"""

from __future__ import annotations

import contextlib
import io
import json
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from codec.errors import ImageTooLargeError, UnsupportedContentError, UnsupportedImageError
from codec.format.georef import GeoInfo
from codec.format.raster import is_raster

DEFAULT_MAX_PIXELS = 1 << 31  # high enough for large satellite scenes, low enough to stop bombs

# Peak bytes per pixel of codec.encode(quality=0.5) followed by codec.decode, the input array
# included, by the channels the codec takes. Measured with tracemalloc (numpy's allocations)
# on 1024² and 2048² images: the slope between the two sizes, so the per-tile model buffers,
# which do not grow with the image, are left out. Peak RSS of load_image + encode + decode of a
# 4096² PNG agrees: 373 MB (gray) and 341 MB (RGB) over a warm process, i.e. these figures plus
# about 240 MB of per-batch model buffers that are the same for any image size (not counted here).
#   grayscale: decode's finish() averages the 3 decoded planes in float32 (3 + 12 + 4 B/px)
#   RGB:       the decoded array (3 B/px)
#   RGBA:      decoded RGB + alpha plane + the joined RGBA array (3 + 1 + 4 B/px)
# plus the input itself (1, 3 or 4 B/px). Not included: the pipeline's MS-SSIM check, which
# peaks at about 44 (gray) / 131 (colour) B/px on at most a 4096² crop (16.8 MP).
CODEC_PEAK_BYTES_PER_PIXEL = {1: 20, 3: 6, 4: 13}
# The decoder's own raster while it is turned into the array: Pillow stores every pixel of a
# multi-channel image in 4 bytes (1 for grayscale), per byte of sample.
DECODER_BYTES_PER_PIXEL = {1: 1, 2: 4, 3: 4, 4: 4}

# the georeferencing TIFF tags a record keeps: name → (code, TIFF type), read by load_image and
# written back by write_geotiff
GEO_TAG_TYPES = {
    "ModelPixelScale": (33550, 12), "ModelTiepoint": (33922, 12), "ModelTransformation": (34264, 12),
    "GeoKeyDirectory": (34735, 3), "GeoDoubleParams": (34736, 12), "GeoAsciiParams": (34737, 2),
    "GDAL_METADATA": (42112, 2), "GDAL_NODATA": (42113, 2),
}
GEO_TAGS = {code: name for name, (code, _) in GEO_TAG_TYPES.items()}  # code → name
ORIENTATION_TAG = 0x0112
EXIF_PREFIX = b"Exif\x00\x00"
TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")

_PILLOW_MODES = ("1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX")
_PNG_COLOUR = {0: "grayscale", 2: "RGB", 3: "palette", 4: "grayscale+alpha", 6: "RGBA"}


@dataclass
class LoadedImage:
    """One decoded image: what the codec codes, and the metadata a faithful record keeps beside it."""

    pixels: np.ndarray  # uint8, (H, W) gray, (H, W, 3) RGB or (H, W, 4) RGBA: the stored grid, not rotated;
    #                     rasters: uint8/uint16 (H, W) or (H, W, bands) in file band order
    geo: str | None = None  # GeoTIFF georeferencing as JSON ({"tags", "crs", "geotransform", "nodata"}) or None
    icc_profile: bytes | None = None  # the embedded ICC profile, raw; None when the file has none
    exif: bytes | None = None  # EXIF as in a JPEG APP1 segment (b"Exif\0\0" + TIFF header + IFDs), or None
    format: str | None = None  # the source format as Pillow names it: "PNG", "JPEG", "TIFF", "WEBP", ...
    nodata: int | None = None  # GDAL_NODATA when it is a value the samples can hold; None otherwise
    band_names: tuple[str, ...] | None = None  # GDAL_METADATA band descriptions (one per band), or None
    bit_depth: int | None = None  # significant bits per sample when the file says (< 16 for uint16), else None
    georef: GeoInfo | None = None  # a GeoTIFF's georeferencing as GDAL reports it (the stream's v4 block)
    nodata_mode: str = "band"  # GDAL_NODATA: GDAL's per-band rule; "pixel" where the file asks for GDAL's
    #                            per-dataset rule (GDAL_METADATA NODATA_VALUES, one value for every band)

    @property
    def bands(self) -> int:
        return self.channels

    @property
    def is_raster(self) -> bool:
        """Coded as a raster (stream v2) when encoded as loaded (:func:`codec.format.raster.is_raster`)."""
        return self.codes_as_raster()

    def codes_as_raster(self, lossless: bool = False) -> bool:
        """Whether encoding this image (losslessly or not) codes it as a raster: THE rule, with everything
        the encoder will be given (nodata, bit depth, band names)."""
        return is_raster(self.pixels.dtype, self.channels, nodata=self.nodata, bit_depth=self.bit_depth,
                         band_names=self.band_names, lossless=lossless)

    @property
    def height(self) -> int:
        return self.pixels.shape[0]

    @property
    def width(self) -> int:
        return self.pixels.shape[1]

    @property
    def channels(self) -> int:
        return 1 if self.pixels.ndim == 2 else self.pixels.shape[2]


# A windowed raster (load_image(..., windowed=True)): what does not grow with the scene (the model and runtime,
# GDAL's block cache, a strip of source and decoded samples), a byte per pixel of nodata mask, and the record
# three times (the tiles' payloads and the packed stream; then the row, its Arrow table and the block Ray
# stores). The record is taken as WINDOWED_RECORD_SHARE of the samples' bytes, above the largest share
# measured (lossless coding of a noisy 12-bit scene: 0.52); lossy modes need far less. Measured against
# peak RSS in bench/pipeline_throughput.py --scene (bench/results/pipeline_scene_*.log).
WINDOWED_FIXED_BYTES = 1 << 30
WINDOWED_RECORD_SHARE = 0.6


def working_set_bytes(width: int, height: int, channels: int, bytes_per_sample: int = 1, raster: bool = False,
                      windowed: bool = False) -> int:
    """Estimated peak memory (bytes) to decode a ``width``×``height`` image and code it.

    ``channels``: of the decoded image (1 gray, 2 gray+alpha, 3 RGB, 4 RGBA; gray+alpha is
    coded as RGBA); ``bytes_per_sample``: of the file's samples (the decoder's raster). The
    decoder's raster plus the codec's measured peak (:data:`CODEC_PEAK_BYTES_PER_PIXEL`): a
    rough, deliberately conservative figure (the two peaks do not in fact coincide).

    Rasters (``raster=True``, or more than 4 channels): the codec
    works a tile batch and a band group at a time, so it holds the raster three times at most (the
    file decoder's array, the array as loaded, the decoded copy) plus a byte per pixel of nodata
    mask: ``(3·bands·bytes + 1)`` per pixel. ``windowed``: the source is read a window at a time
    (:data:`WINDOWED_FIXED_BYTES` + per pixel 1 + 3 · :data:`WINDOWED_RECORD_SHARE` · bands · bytes).
    """
    if windowed:
        record = WINDOWED_RECORD_SHARE * int(channels) * int(bytes_per_sample)
        return WINDOWED_FIXED_BYTES + int(int(width) * int(height) * (1 + 3 * record))
    if raster or channels > 4:
        if channels < 1:
            raise ValueError(f"channels must be positive, got {channels}")
        return int(width) * int(height) * (3 * int(channels) * int(bytes_per_sample) + 1)
    if channels not in DECODER_BYTES_PER_PIXEL:
        raise ValueError(f"channels must be 1, 2, 3 or 4, got {channels}")
    coded = 4 if channels == 2 else channels
    per_pixel = CODEC_PEAK_BYTES_PER_PIXEL[coded] + DECODER_BYTES_PER_PIXEL[channels] * int(bytes_per_sample)
    return int(width) * int(height) * per_pixel


def load_image(source: bytes | str | Path, name: str, max_pixels: int = DEFAULT_MAX_PIXELS,
               max_bytes: int | None = None, windowed: bool = False) -> LoadedImage:
    """Decode an image file (bytes or a path) to 8-bit pixels, with its ICC profile, EXIF and georeferencing.

    ``windowed`` (a path only): a TIFF raster is not decoded but opened window by window
    (:class:`codec.images.windowed.WindowedRaster`), so a scene larger than memory can be coded; its
    working set is then :func:`working_set_bytes` with ``windowed=True``. Photos decode as always.

    Raises :class:`ImageTooLargeError` (from the header, nothing decoded) over ``max_pixels``
    or when :func:`working_set_bytes` is over ``max_bytes``; :class:`UnsupportedImageError`
    otherwise, its message naming ``name`` and the cause ("not supported" for content refused
    on purpose, see the module's docstring).
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise UnsupportedImageError(f"{name}: empty object (0 bytes)")
        fp = io.BytesIO(source)
    else:
        try:
            fp = open(source, "rb")
        except OSError as exc:
            raise UnsupportedImageError(f"{name}: cannot open ({exc.strerror or exc})") from exc
    with fp:
        head = fp.read(32)
        if not head:
            raise UnsupportedImageError(f"{name}: empty file (0 bytes)")
        fp.seek(0)
        if head[:4] in TIFF_MAGIC:
            path = None if isinstance(source, (bytes, bytearray, memoryview)) or not windowed else str(source)
            loaded = _load_tiff(fp, name, max_pixels, max_bytes, path)
            if loaded is not None:
                return _with_georef(loaded, source)
            fp.seek(0)  # tifffile cannot parse it: Pillow tries (and names the error if it fails too)
        return _load_pillow(fp, name, head, max_pixels, max_bytes)


def _with_georef(loaded: LoadedImage, source) -> LoadedImage:
    """A GeoTIFF's (one with GeoTIFF or GDAL tags) georeferencing, read by GDAL (codec.images.gdalio), and the
    record's ``geo`` JSON derived from it (:meth:`GeoInfo.record`, plus the raw TIFF tags under "tags")."""
    if loaded.geo is None:
        return loaded
    from codec.images.gdalio import read_georef

    loaded.georef = read_georef(source)
    if loaded.georef is not None:
        loaded.geo = json.dumps({**loaded.georef.record(), "tags": json.loads(loaded.geo).get("tags", {})},
                                default=str)
    return loaded


def read_image(source: str | Path | bytes, name: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an image file (path or bytes) to a uint8 array the codec takes (:func:`load_image`'s pixels)."""
    name = name or (str(source) if not isinstance(source, (bytes, bytearray, memoryview)) else "image")
    return load_image(source, name, max_pixels).pixels


def write_image(path: str | Path, array: np.ndarray, format: str | None = None, cog: bool = True, **raster) -> None:
    """Write an image file, the format from ``format`` or the extension: ``.tif``/``.tiff`` as a GeoTIFF through
    GDAL (:func:`codec.images.gdalio.write_tiff`: a COG unless ``cog=False``, taking ``raster``'s keywords:
    georef, nodata, band_names, bit_depth), 16-bit
    PNG through imagecodecs, 8-bit gray/RGB/RGBA through Pillow. A raster no other format holds (more
    than 4 bands, nodata, band names) must go to a TIFF: ValueError naming the path otherwise."""
    fmt = (format or Path(path).suffix.lstrip(".")).upper()
    if fmt in ("TIF", "TIFF", "GTIFF"):
        from codec.images.gdalio import write_tiff

        Path(path).write_bytes(write_tiff(array, cog=cog, **raster))
        return
    bands = 1 if array.ndim == 2 else array.shape[2]
    if any(v is not None for v in raster.values()) or array.dtype not in (np.uint8, np.uint16) or bands > 4:
        raise ValueError(f"{path}: a {bands}-band {array.dtype} raster"
                         f"{' with ' + ', '.join(k for k, v in raster.items() if v is not None) if raster else ''} "
                         "needs a .tif output")
    if array.ndim == 3 and bands == 1:
        array = array[..., 0]
    if array.dtype == np.uint16:
        if fmt != "PNG":
            raise ValueError(f"{path}: 16-bit samples need a .png or .tif output")
        import imagecodecs

        Path(path).write_bytes(imagecodecs.png_encode(array))
        return
    if bands == 2:
        raise ValueError(f"{path}: a 2-band raster needs a .tif output")
    Image.fromarray(array).save(path, format=format)



def write_geotiff(pixels: np.ndarray, geo: str | dict | None = None, nodata: int | float | None = None,
                  band_names=None, bit_depth: int | None = None, icc_profile: bytes | None = None,
                  extratags=()) -> bytes:
    """A (Geo)TIFF of ``pixels`` ((H, W) or (H, W, bands), uint8/uint16; chunky, deflate + predictor):
    dtype and band order as given, ``geo`` (LoadedImage.geo JSON, or its "tags" dict) written back,
    GDAL_NODATA from ``nodata`` and band descriptions from ``band_names`` in GDAL_METADATA (GDAL's own
    conventions, so GDAL/rasterio read them as nodata and band descriptions), ``bit_depth`` as GDAL's
    NBITS. 8-bit 3/4-band images are tagged RGB(A), everything else MinIsBlack with extra samples."""
    import tifffile

    if pixels.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"write_geotiff writes uint8/uint16 rasters, got {pixels.dtype}")
    tags = dict(json.loads(geo).get("tags", {}) if isinstance(geo, str) else (geo or {}))
    tags.pop("GDAL_NODATA", None)
    if nodata is not None:
        tags["GDAL_NODATA"] = str(int(nodata)) if float(nodata).is_integer() else repr(float(nodata))
    bands = 1 if pixels.ndim == 2 else pixels.shape[2]
    if band_names is not None or bit_depth is not None:
        tags["GDAL_METADATA"] = gdal_metadata(band_names, bit_depth, tags.get("GDAL_METADATA"))
    out = list(extratags) + ([(34675, 7, len(icc_profile), icc_profile, True)] if icc_profile else [])
    for name, value in tags.items():
        if name not in GEO_TAG_TYPES:
            continue
        code, ttype = GEO_TAG_TYPES[name]
        if ttype == 2:
            out.append((code, 2, 0, str(value), True))
        else:
            value = [value] if np.isscalar(value) else list(value)
            out.append((code, ttype, len(value), value, True))
    if pixels.ndim == 3 and bands == 1:
        pixels = pixels[..., 0]
    rgb = pixels.dtype == np.uint8 and bands in (3, 4)
    extrasamples = (["unassalpha"] if rgb and bands == 4 else ["unspecified"] * (bands - (3 if rgb else 1))) or None
    buf = io.BytesIO()
    tifffile.imwrite(buf, pixels, photometric="rgb" if rgb else "minisblack", planarconfig="contig" if bands > 1 else None,
                     extrasamples=extrasamples, extratags=out, compression="zlib", predictor=True)
    return buf.getvalue()


def gdal_metadata(band_names=None, bit_depth: int | None = None, existing: str | None = None) -> str:
    """GDAL_METADATA XML with band descriptions (``role="description"``) and NBITS, keeping ``existing``'s other items."""
    import xml.etree.ElementTree as ET

    root = ET.Element("GDALMetadata")
    if existing:
        try:
            for item in ET.fromstring(str(existing).strip("\x00 ")):
                if item.get("role") != "description" and item.get("name") != "NBITS":
                    root.append(item)
        except ET.ParseError:
            pass
    if bit_depth is not None:
        ET.SubElement(root, "Item", name="NBITS", domain="IMAGE_STRUCTURE").text = str(int(bit_depth))
    for b, name in enumerate(band_names or ()):
        ET.SubElement(root, "Item", name="DESCRIPTION", sample=str(b), role="description").text = str(name)
    return ET.tostring(root, encoding="unicode")


def _gdal_metadata(xml: str | None):
    """The GDAL_METADATA tag's XML root; None when absent or unparsable (the tag is advisory)."""
    if not xml:
        return None
    import xml.etree.ElementTree as ET

    try:
        return ET.fromstring(str(xml).strip("\x00 "))
    except ET.ParseError:
        return None


def _gdal_band_names(xml: str | None, bands: int) -> tuple[str, ...] | None:
    """Band descriptions from GDAL_METADATA, when every band has one."""
    root = _gdal_metadata(xml)
    if root is None:
        return None
    names = {}
    for item in root.iter("Item"):
        if item.get("role") == "description" and item.get("sample", "").isdigit():
            names[int(item.get("sample"))] = item.text or ""
    return tuple(names[b] for b in range(bands)) if names and set(names) == set(range(bands)) else None


def _pixel_nodata(xml: str | None, bands: int, dtype, name: str) -> int | None:
    """GDAL's per-dataset nodata (GDAL_METADATA item NODATA_VALUES, one value per band: a pixel is nodata when
    every band equals its value) as the codec's pixel rule; one value for every band, else not supported."""
    root = _gdal_metadata(xml)
    if root is None:
        return None
    text = next((i.text for i in root.iter("Item") if i.get("name") == "NODATA_VALUES" and not i.get("sample")), None)
    if not text:
        return None
    values = {_nodata_value(v, dtype) for v in text.split()}
    if len(text.split()) != bands or len(values) != 1 or None in values:
        raise _not_supported(name, f"per-pixel nodata NODATA_VALUES {text!r} for {bands} bands",
                             " (the pixel rule takes one value that every band can hold)")
    return values.pop()


def _gdal_nbits(xml: str | None) -> int | None:
    if not xml:
        return None
    import re

    m = re.search(r'<Item name="NBITS"[^>]*>\s*(\d+)\s*<', str(xml))
    return int(m.group(1)) if m else None


def _nodata_value(text, dtype) -> int | None:
    """GDAL_NODATA as a sample value, or None when it is not one ``dtype`` can hold (then no pixel is nodata)."""
    if text is None:
        return None
    try:
        v = float(str(text).strip("\x00 "))
    except ValueError:
        return None
    info = np.iinfo(dtype)
    return int(v) if v.is_integer() and info.min <= v <= info.max else None


# --- limits ------------------------------------------------------------------------------------
def _check_size(name: str, width: int, height: int, channels: int, bytes_per_sample: int,
                max_pixels: int, max_bytes: int | None, raster: bool = False, windowed: bool = False) -> None:
    if width <= 0 or height <= 0:
        raise UnsupportedImageError(f"{name}: empty image ({width}×{height})")
    if width * height > max_pixels:
        raise ImageTooLargeError(f"{name}: {width}×{height} = {width * height} pixels exceeds the limit of {max_pixels}")
    if max_bytes is not None:
        need = working_set_bytes(width, height, channels, bytes_per_sample, raster, windowed)
        if need > max_bytes:
            raise ImageTooLargeError(f"{name}: {width}×{height}×{channels} needs an estimated working set of {need} bytes, "
                                     f"over the memory limit of {max_bytes} bytes")


_bomb_lock = threading.Lock()
_bomb_users = 0
_bomb_saved: int | None = None


@contextlib.contextmanager
def _pillow_bomb_check_lifted():
    """Lift Pillow's decompression-bomb limit while loaders run (ours, from the header, replaces it).

    ``Image.MAX_IMAGE_PIXELS`` is a process-wide setting: the first loader in lifts it, the last
    one out puts back what was there. Other code decoding with Pillow in other threads at that
    very moment goes without Pillow's check; nothing else is changed.
    """
    global _bomb_users, _bomb_saved
    with _bomb_lock:
        if _bomb_users == 0:
            _bomb_saved = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
        _bomb_users += 1
    try:
        yield
    finally:
        with _bomb_lock:
            _bomb_users -= 1
            if _bomb_users == 0:
                Image.MAX_IMAGE_PIXELS = _bomb_saved


# --- Pillow: PNG, JPEG, WebP, GIF, BMP, ... (and TIFFs tifffile cannot parse) -------------------
def _not_supported(name: str, what: str, advice: str = "") -> UnsupportedContentError:
    return UnsupportedContentError(f"{name}: {what} is not supported" + (f"; {advice}" if advice else ""))


def _refuse_multi(name: str, count: int, unit: str, kind: str) -> UnsupportedContentError:
    return UnsupportedContentError(f"{name}: {count} {unit}; only single-image files are archived ({kind} is not supported)")


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in ("LA", "La", "PA", "RGBA", "RGBa") or "transparency" in im.info or (
        im.mode == "P" and getattr(im.palette, "mode", "") == "RGBA")


def _check_pillow_content(im: Image.Image, name: str, head: bytes) -> int:
    """Refuse what Pillow would truncate or mislabel; returns the decoded image's channel count."""
    mode, fmt = im.mode, im.format or "image"
    if fmt == "PNG" and head[12:16] == b"IHDR" and head[24] > 8:  # _load_png16 takes the ones we can read exactly
        colour = _PNG_COLOUR.get(head[25], f"colour type {head[25]}")
        raise _not_supported(name, f"{head[24]}-bit PNG ({colour})",
                             "(Pillow would silently keep only the high 8 bits)")
    if fmt == "TIFF":
        bits = im.tag_v2.get(258, (8,))
        bits = max(bits) if isinstance(bits, tuple) else int(bits)
        if bits > 8:
            raise _not_supported(name, f"{bits}-bit TIFF", "the codec takes unsigned 8- or 16-bit integer samples")
    deep = _deep_tile(im)
    if deep:
        raise _not_supported(name, f"{deep} {fmt}", "the codec reads this kind only as 8-bit (Pillow would silently reduce it to 8 bits)")
    if mode.startswith("I") or mode == "F":
        depth = "16-bit" if "16" in mode else "32-bit float" if mode == "F" else "32-bit"
        raise _not_supported(name, f"{mode} ({depth}) images", "convert to 8-bit first")
    if mode == "CMYK":
        raise _not_supported(name, f"CMYK colour ({fmt})", "convert to RGB with the file's colour profile first")
    if mode not in _PILLOW_MODES:
        raise _not_supported(name, f"{mode} colour ({fmt})", "convert to RGB first")
    channels = 4 if _has_alpha(im) else 1 if mode in ("1", "L") else 3
    if fmt == "TIFF":  # Pillow drops samples it has no mode for (RGB + an unspecified extra sample)
        samples = int(im.tag_v2.get(277, 1))
        held = {"1": 1, "L": 1, "P": 1, "LA": 2, "La": 2, "PA": 2, "RGB": 3, "RGBX": 3}.get(mode, 4)
        if samples > held:
            raise _not_supported(name, f"a TIFF with {samples} samples per pixel read as {mode} (a sample would be lost)")
    return channels


def _deep_tile(im: Image.Image) -> str | None:
    """"16-bit" etc. when Pillow would read more than 8 bits per sample into an 8-bit mode (PPM, SGI, ...)."""
    for tile in getattr(im, "tile", None) or ():
        codec_name, args = tile[0], tile[-1]
        if codec_name in ("ppm", "ppm_plain") and isinstance(args, tuple) and args and isinstance(args[-1], int):
            if args[-1] > 255:  # maxval: rescaled to 0–255 on reading
                return f"{args[-1].bit_length()}-bit (maxval {args[-1]})"
        rawmode = args if isinstance(args, str) else args[0] if isinstance(args, tuple) and args and isinstance(args[0], str) else ""
        base, _, suffix = rawmode.partition(";")
        if suffix.startswith(("16B", "16L", "16N")) or (suffix == "16" and base in ("L", "LA", "I")):
            return "16-bit" if not im.mode.startswith("I") else None
        if suffix.startswith("32") and not (im.mode.startswith("I") or im.mode == "F"):
            return "32-bit"
    return None


def _frames(im: Image.Image) -> int:
    if not getattr(im, "is_animated", False):
        return 1
    return int(getattr(im, "n_frames", 1))


def to_array(im: Image.Image, name: str = "image") -> np.ndarray:
    """A loaded Pillow image → uint8 (H, W), (H, W, 3) or (H, W, 4), by the rules in the module's docstring."""
    mode = im.mode
    alpha = _has_alpha(im)
    if mode.startswith("I") or mode == "F":
        raise _not_supported(name, f"{mode} ({'16-bit' if '16' in mode else '32-bit'}) images", "convert to 8-bit first")
    if mode == "La":  # premultiplied gray+alpha: through RGBa, which Pillow un-premultiplies
        g, a = np.asarray(im).transpose(2, 0, 1)
        im = Image.fromarray(np.dstack([g, g, g, a]), "RGBa")
        mode = "RGBa"
    if mode in ("P", "PA", "1", "L", "RGB") and alpha:
        im = im.convert("RGBA")
    elif mode == "P":
        im = im.convert("RGB")
    elif mode == "1":
        im = im.convert("L")
    elif mode in ("LA", "RGBa"):
        im = im.convert("RGBA")
    elif mode == "RGBX":
        im = im.convert("RGB")
    elif mode not in ("L", "RGB", "RGBA"):
        raise _not_supported(name, f"{mode} colour", "convert to RGB first")
    return np.asarray(im)


def _exif_block(raw) -> bytes | None:
    """EXIF as a JPEG APP1 payload (``Exif\\0\\0`` + TIFF header), however the container stored it."""
    if not raw:
        return None
    raw = bytes(raw)
    if raw[:4] in (b"II*\x00", b"MM\x00*"):
        return EXIF_PREFIX + raw
    return raw


def _load_png16(fp, name: str, head: bytes, max_pixels: int, max_bytes: int | None) -> LoadedImage:
    """A 16-bit PNG (gray, gray+alpha, RGB, RGBA) as uint16 samples, through imagecodecs (libpng/zlib-ng)."""
    import imagecodecs

    width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    bands = {0: 1, 2: 3, 4: 2, 6: 4}[head[25]]
    _check_size(name, width, height, bands, 2, max_pixels, max_bytes, raster=True)
    try:
        pixels = imagecodecs.png_decode(fp.read())
    except Exception as exc:
        raise UnsupportedImageError(f"{name}: cannot decode PNG ({type(exc).__name__}: {exc})") from exc
    if pixels.dtype != np.uint16 or pixels.shape[:2] != (height, width):
        raise UnsupportedImageError(f"{name}: 16-bit PNG decoded as {pixels.dtype} {pixels.shape}")
    return LoadedImage(np.ascontiguousarray(pixels), format="PNG")


def _load_pillow(fp, name: str, head: bytes, max_pixels: int, max_bytes: int | None) -> LoadedImage:
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR" and head[24] == 16 and head[25] in (0, 2, 4, 6):
        return _load_png16(fp, name, head, max_pixels, max_bytes)
    with _pillow_bomb_check_lifted():
        try:
            im = Image.open(fp)
        except UnidentifiedImageError as exc:
            raise UnsupportedImageError(f"{name}: not a recognised image format") from exc
        except Image.DecompressionBombError as exc:  # only if Pillow's limit was set while we ran
            raise ImageTooLargeError(f"{name}: {exc}") from exc
        except Exception as exc:  # a damaged header: struct errors, bad values, truncation
            raise UnsupportedImageError(f"{name}: cannot decode image ({type(exc).__name__}: {exc})") from exc
        with im:
            try:
                frames = _frames(im)
            except Exception as exc:
                raise UnsupportedImageError(f"{name}: cannot decode image ({type(exc).__name__}: {exc})") from exc
            if frames > 1:
                unit = "pages" if im.format == "TIFF" else "frames"
                raise _refuse_multi(name, frames, unit, f"a multi-image {im.format}")
            channels = _check_pillow_content(im, name, head)
            _check_size(name, im.size[0], im.size[1], channels, 1, max_pixels, max_bytes)
            try:
                im.load()
                pixels = to_array(im, name)
            except UnsupportedImageError:
                raise
            except Image.DecompressionBombError as exc:
                raise ImageTooLargeError(f"{name}: {exc}") from exc
            except Exception as exc:  # truncated or damaged data
                raise UnsupportedImageError(f"{name}: cannot decode image ({type(exc).__name__}: {exc})") from exc
            return LoadedImage(pixels, None, im.info.get("icc_profile") or None, _exif_block(im.info.get("exif")),
                               im.format)


# --- TIFF (GeoTIFF included): tifffile reads the tags, and the pixels where it has the codec ----
def _load_tiff(fp, name: str, max_pixels: int, max_bytes: int | None, path: str | None = None) -> LoadedImage | None:
    import tifffile

    try:
        tif = tifffile.TiffFile(fp)
    except Exception:
        return None
    with tif:
        try:
            pages = tif.pages
            count = len(pages)
            page = pages[0]
        except Exception as exc:
            raise UnsupportedImageError(f"{name}: cannot decode TIFF ({type(exc).__name__}: {exc})") from exc
        if count > 1 and any(not int(pages[i].subfiletype) & 1 for i in range(1, count)):
            raise _refuse_multi(name, count, "pages", "multi-page TIFF")
        if _is_tiff_raster(page):
            return _load_tiff_raster(page, name, max_pixels, max_bytes, path)
        plan = _tiff_plan(page, name)
        _check_size(name, page.imagewidth, page.imagelength, plan["channels"], 1, max_pixels, max_bytes)
        geo, icc = _geo(page), page.tags.valueof(34675)
        orientation = page.tags.valueof(274)
        exif = None
        if orientation not in (None, 1):
            block = Image.Exif()
            block[ORIENTATION_TAG] = int(orientation)
            exif = block.tobytes()
        arr, tiff_error = None, None
        if not plan["pillow"]:
            try:
                arr = page.asarray()
            except Exception as exc:  # no codec for it here (LZW, JPEG without imagecodecs), or damage
                tiff_error = exc
        if arr is None:
            pixels = _pillow_decode_tiff(fp, name, plan, tiff_error)
        else:
            pixels = _interpret_tiff(arr, page, plan)
        want = (page.imagelength, page.imagewidth) + ((plan["channels"] if plan["channels"] != 2 else 4,)
                                                       if plan["channels"] > 1 else ())
        if pixels.shape != want or pixels.dtype != np.uint8:
            raise _not_supported(name, f"this TIFF layout (decoded as {pixels.dtype} {pixels.shape}, expected {want})")
        xml = page.tags.valueof(42112)
        return LoadedImage(np.ascontiguousarray(pixels), geo, bytes(icc) if icc else None, exif, "TIFF",
                           _nodata_value(page.tags.valueof(42113), np.uint8),
                           _gdal_band_names(xml, 1 if pixels.ndim == 2 else pixels.shape[2]))


def _is_tiff_raster(page) -> bool:
    """Unsigned 9–16-bit samples, signed 16-bit MinIsBlack ones (int16: DEMs, SAR), or 8-bit MinIsBlack/RGB with
    more samples than gray(+alpha)/RGB(A)(+1)."""
    import tifffile

    P = tifffile.PHOTOMETRIC
    photometric, bits, spp = int(page.photometric), int(page.bitspersample), int(page.samplesperpixel)
    if int(page.subfiletype) & 1 or int(getattr(page, "imagedepth", 1)) > 1:
        return False
    if int(page.sampleformat) == 2:
        return bits == 16 and photometric == P.MINISBLACK
    if int(page.sampleformat) != 1:
        return False
    if photometric not in (P.MINISBLACK, P.RGB):
        return False
    if 8 < bits <= 16:
        return True
    extras = tuple(int(e) for e in page.extrasamples)
    if bits == 8 and photometric == P.MINISBLACK and spp == 2 and extras == (0,):
        return True  # two bands (an unspecified extra sample, not alpha): what GIS tools write for 2-band rasters
    return bits == 8 and spp > (2 if photometric == P.MINISBLACK else 4) and len(extras) > 1


def _load_tiff_raster(page, name: str, max_pixels: int, max_bytes: int | None, path: str | None = None) -> LoadedImage:
    """(H, W, bands) uint8/uint16/int16 samples in file band order, with nodata, band names, bit depth and geo;
    with ``path``, a :class:`~codec.images.windowed.WindowedRaster` of that file instead of decoded samples."""
    bits, spp, signed = int(page.bitspersample), int(page.samplesperpixel), int(page.sampleformat) == 2
    bps = 1 if bits <= 8 else 2
    _check_size(name, page.imagewidth, page.imagelength, spp, bps, max_pixels, max_bytes, raster=True,
                windowed=path is not None)
    h, w = page.imagelength, page.imagewidth
    want = (h, w) + ((spp,) if spp > 1 else ())
    dtype = np.int16 if signed else np.uint8 if bps == 1 else np.uint16
    try:
        if path is not None:
            from codec.images.windowed import WindowedRaster

            arr = WindowedRaster(path, name)
        else:
            arr = page.asarray()
    except Exception as exc:  # no codec for it, damage, or (windowed) GDAL cannot open it
        raise UnsupportedImageError(f"{name}: cannot decode TIFF ({type(exc).__name__}: {exc})") from exc
    if arr.ndim == 3 and spp > 1 and arr.shape == (spp, h, w):  # one plane per band
        arr = np.moveaxis(arr, 0, -1)
    if arr.shape != want or arr.dtype != dtype:
        raise _not_supported(name, f"this TIFF layout (decoded as {arr.dtype} {arr.shape}, expected {np.dtype(dtype)} {want})")
    xml = page.tags.valueof(42112)
    depth = None if signed else bits if bits < 16 and bps == 2 else _gdal_nbits(xml)
    icc = page.tags.valueof(34675)
    nodata, mode = _nodata_value(page.tags.valueof(42113), dtype), "band"
    if nodata is None:
        nodata, mode = _pixel_nodata(xml, spp, dtype, name), "pixel"
    pixels = arr if path is not None else np.ascontiguousarray(arr)
    return LoadedImage(pixels, _geo(page), bytes(icc) if icc else None, None, "TIFF",
                       nodata, _gdal_band_names(xml, spp), depth, nodata_mode="band" if nodata is None else mode)



def _pillow_decode_tiff(fp, name: str, plan: dict, tiff_error: Exception | None) -> np.ndarray:
    """Pixels of a TIFF that tifffile cannot decode here (LZW, JPEG: libtiff can), read the same way."""
    fp.seek(0)
    with _pillow_bomb_check_lifted():
        try:
            with Image.open(fp, formats=["TIFF"]) as im:
                im.load()
                if plan["colormap"] is not None and im.mode == "P":  # the colour map as _tiff_plan reads it
                    return plan["colormap"][np.asarray(im).astype(np.intp)]
                return to_array(im, name)
        except UnsupportedImageError:
            raise
        except Exception as exc:
            cause = f"{type(exc).__name__}: {exc}"
            if tiff_error is not None:
                cause = f"{type(tiff_error).__name__}: {tiff_error}; Pillow: {cause}"
            raise UnsupportedImageError(f"{name}: cannot decode TIFF ({cause})") from exc


def _tiff_plan(page, name: str) -> dict:
    """What the header says the pixels are, refusing what cannot be archived faithfully (nothing decoded)."""
    import tifffile

    P = tifffile.PHOTOMETRIC
    photometric, bits, spp = int(page.photometric), int(page.bitspersample), int(page.samplesperpixel)
    fmt, extras = int(page.sampleformat), tuple(int(e) for e in page.extrasamples)
    if int(page.subfiletype) & 1:
        raise _not_supported(name, "a TIFF whose first image is a reduced-resolution preview (camera raw, DNG?)")
    if int(getattr(page, "imagedepth", 1)) > 1:
        raise _not_supported(name, f"a TIFF volume ({page.imagedepth} deep)")
    if fmt != 1 or bits not in (1, 2, 4, 8):
        kind = {2: " signed", 3: " float"}.get(fmt, "" if fmt == 1 else f" (sample format {fmt})")
        raise _not_supported(name, f"{bits}-bit{kind} TIFF samples", "the codec takes unsigned 8- or 16-bit integer samples")
    try:
        pname = P(photometric).name
    except ValueError:
        pname = f"photometric {photometric}"
    if photometric == P.SEPARATED:
        raise _not_supported(name, f"CMYK colour (TIFF, {spp} inks)", "convert to RGB with the file's colour profile first")
    if photometric not in (P.MINISWHITE, P.MINISBLACK, P.RGB, P.PALETTE, P.YCBCR):
        raise _not_supported(name, f"{pname} colour (TIFF)", "convert to RGB first")
    if photometric == P.YCBCR and int(page.compression) not in (6, 7):  # OJPEG, JPEG: libtiff gives RGB
        raise _not_supported(name, f"YCBCR colour (TIFF, {tifffile.COMPRESSION(int(page.compression)).name})",
                             "convert to RGB first")
    if len(extras) > 1:
        raise _not_supported(name, f"a TIFF with {len(extras)} extra samples (beyond gray+alpha or RGBA)")
    colour = spp - len(extras)
    expect = {P.MINISWHITE: 1, P.MINISBLACK: 1, P.RGB: 3, P.YCBCR: 3, P.PALETTE: 1}[P(photometric)]
    if colour != expect or (photometric in (P.PALETTE, P.YCBCR) and extras):
        raise _not_supported(name, f"a {pname} TIFF with {spp} samples per pixel ({len(extras)} extra)")
    if bits != 8 and not (photometric == P.PALETTE or (bits == 1 and spp == 1)):
        raise _not_supported(name, f"{bits}-bit {pname} TIFF samples", "the codec takes unsigned 8- or 16-bit integer samples")
    colormap = None
    if photometric == P.PALETTE:
        cmap = page.colormap
        if cmap is None:
            raise UnsupportedImageError(f"{name}: palette TIFF without a colour map")
        cmap = np.asarray(cmap)
        colormap = np.ascontiguousarray((cmap if cmap.max() < 256 else cmap // 256).astype(np.uint8).T)  # (n, 3)
    channels = 3 if colormap is not None else spp
    return {"channels": channels, "colormap": colormap, "invert": photometric == P.MINISWHITE,
            "associated": bool(extras) and extras[0] == 1, "pillow": photometric == P.YCBCR}


def _interpret_tiff(arr: np.ndarray, page, plan: dict) -> np.ndarray:
    """tifffile's raw samples → what they mean (palette applied, MinIsWhite inverted, alpha straight)."""
    h, w, spp = page.imagelength, page.imagewidth, int(page.samplesperpixel)
    if arr.ndim == 3 and spp > 1 and arr.shape == (spp, h, w):  # one plane per sample
        arr = np.moveaxis(arr, 0, -1)
    if plan["colormap"] is not None:
        return plan["colormap"][arr.astype(np.intp)]
    if arr.dtype == bool:  # bilevel
        arr = arr.astype(np.uint8) * 255
    if plan["invert"]:
        arr = arr.copy()
        if arr.ndim == 2:
            arr = 255 - arr
        else:
            arr[..., 0] = 255 - arr[..., 0]
    if arr.ndim == 3 and arr.shape[2] == 2:  # gray + alpha → RGBA
        g, a = arr[..., 0], arr[..., 1]
        arr = np.dstack([g, g, g, a])
    if plan["associated"] and arr.ndim == 3 and arr.shape[2] == 4:
        arr = np.asarray(Image.fromarray(np.ascontiguousarray(arr), "RGBa").convert("RGBA"))
    return arr


def _geo(page) -> str | None:
    tags = {}
    for code, label in GEO_TAGS.items():
        tag = page.tags.get(code)
        if tag is not None:
            v = tag.value
            tags[label] = v.tolist() if hasattr(v, "tolist") else (list(v) if isinstance(v, tuple) else v)
    if not tags:
        return None
    out = {"tags": tags}
    epsg = _epsg(tags.get("GeoKeyDirectory"))
    if epsg:
        out["crs"] = f"EPSG:{epsg}"
    gt = _geotransform(tags)
    if gt:
        out["geotransform"] = gt
    if "GDAL_NODATA" in tags:
        out["nodata"] = str(tags["GDAL_NODATA"]).strip("\x00 ")
    return json.dumps(out, default=str)


def _epsg(keys) -> int | None:
    if not keys or len(keys) < 4:
        return None
    for i in range(4, len(keys) - 3, 4):
        key_id, loc, _, value = keys[i : i + 4]
        if key_id in (3072, 2048) and loc == 0 and value not in (0, 32767):
            return int(value)
    return None


def _geotransform(tags) -> list[float] | None:
    """GDAL-style (x0, dx, rx, y0, ry, dy) from the tie point and pixel scale, or the matrix."""
    if "ModelTransformation" in tags:
        m = tags["ModelTransformation"]
        return [m[3], m[0], m[1], m[7], m[4], m[5]]
    if "ModelTiepoint" in tags and "ModelPixelScale" in tags:
        tp, sc = tags["ModelTiepoint"], tags["ModelPixelScale"]
        return [tp[3] - tp[0] * sc[0], sc[0], 0.0, tp[4] + tp[1] * sc[1], 0.0, -sc[1]]
    return None


def is_tiff(data: bytes) -> bool:
    return bytes(data[:4]) in TIFF_MAGIC


__all__ = ["LoadedImage", "load_image", "read_image", "write_image", "write_geotiff", "gdal_metadata", "GEO_TAG_TYPES",
           "working_set_bytes", "to_array", "is_tiff",
           "DEFAULT_MAX_PIXELS", "CODEC_PEAK_BYTES_PER_PIXEL", "GEO_TAGS", "ImageTooLargeError", "UnsupportedImageError"]
