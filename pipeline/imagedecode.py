"""Image bytes → uint8 array and georeferencing, with errors a stats row can carry.

PNG, JPEG, WebP go through Pillow; TIFF (GeoTIFF included) through tifffile,
which also gives the GeoTIFF tags we carry into the record.
"""

from __future__ import annotations

import io
import json

import numpy as np

from codec.errors import UnsupportedImageError
from codec.imageio import read_image, to_array

GEO_TAGS = {33550: "ModelPixelScale", 33922: "ModelTiepoint", 34264: "ModelTransformation",
            34735: "GeoKeyDirectory", 34736: "GeoDoubleParams", 34737: "GeoAsciiParams", 42112: "GDAL_METADATA",
            42113: "GDAL_NODATA"}


class ImageTooLargeError(UnsupportedImageError):
    """More pixels than the configured limit (decompression-bomb guard)."""


def is_tiff(data: bytes) -> bool:
    return data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def decode_image(data: bytes, name: str, max_pixels: int) -> tuple[np.ndarray, str | None]:
    """(pixels, georeferencing JSON or None)."""
    if not data:
        raise UnsupportedImageError(f"{name}: empty object (0 bytes)")
    if is_tiff(data):
        return _decode_tiff(data, name, max_pixels)
    try:
        return read_image(data, name=name, max_pixels=max_pixels), None
    except UnsupportedImageError as exc:
        if "exceeds the limit" in str(exc):
            raise ImageTooLargeError(str(exc)) from exc
        raise


def _decode_tiff(data: bytes, name: str, max_pixels: int) -> tuple[np.ndarray, str | None]:
    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages[0]
            h, w = page.imagelength, page.imagewidth
            if h * w > max_pixels:
                raise ImageTooLargeError(f"{name}: {w}×{h} = {w * h} pixels exceeds the limit of {max_pixels}")
            geo = _geo(page)
            arr = page.asarray()
    except (UnsupportedImageError, ImageTooLargeError):
        raise
    except Exception as exc:
        # tifffile can't read it: let Pillow try (and name the error if it fails too)
        try:
            from PIL import Image

            with Image.open(io.BytesIO(data)) as im:
                if im.size[0] * im.size[1] > max_pixels:
                    raise ImageTooLargeError(f"{name}: {im.size[0]}×{im.size[1]} pixels exceeds the limit of {max_pixels}")
                return to_array(im, name), None
        except UnsupportedImageError:
            raise
        except Exception:
            raise UnsupportedImageError(f"{name}: cannot decode TIFF ({exc})") from exc
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[1:] == (h, w):  # separate planes
        arr = np.moveaxis(arr, 0, -1)
    if arr.dtype != np.uint8:
        raise UnsupportedImageError(f"{name}: {arr.dtype} TIFF samples are not supported; the codec takes 8-bit images")
    if arr.ndim == 3 and arr.shape[2] not in (1, 3, 4):
        raise UnsupportedImageError(f"{name}: {arr.shape[2]}-band TIFF is not supported (1, 3 or 4 bands)")
    return np.ascontiguousarray(arr), geo


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
