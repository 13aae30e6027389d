"""Reading and writing image files at the edge of the library (Pillow).

Conversions (documented in the README): palette → RGB (RGBA if it has
transparency), 1-bit → grayscale, gray+alpha → RGBA, CMYK/YCbCr → RGB.
16-bit and float rasters are rejected: the codec is 8-bit and silently
rescaling would lose data.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import UnsupportedImageError

DEFAULT_MAX_PIXELS = 1 << 31  # high enough for large satellite scenes, low enough to stop bombs


def to_array(im: Image.Image, name: str = "image") -> np.ndarray:
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        raise UnsupportedImageError(f"{name}: {mode} ({'16-bit' if '16' in mode else '32-bit'}) images are not supported; convert to 8-bit first")
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode == "1":
        im = im.convert("L")
    elif mode in ("LA", "PA", "La", "RGBa"):
        im = im.convert("RGBA")
    elif mode not in ("L", "RGB", "RGBA"):
        im = im.convert("RGB")
    return np.asarray(im)


def read_image(source: str | Path | bytes, name: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an image file (path or bytes) to a uint8 array the codec takes."""
    name = name or (str(source) if not isinstance(source, bytes) else "image")
    try:
        fp = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")
    except OSError as exc:
        raise UnsupportedImageError(f"{name}: cannot open ({exc.strerror or exc})") from exc
    with fp:
        try:
            with Image.open(fp) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise UnsupportedImageError(f"{name}: {w}×{h} = {w * h} pixels exceeds the limit of {max_pixels}")
                im.load()
                return to_array(im, name)
        except UnidentifiedImageError as exc:
            raise UnsupportedImageError(f"{name}: not a recognised image format") from exc
        except (OSError, SyntaxError, ValueError) as exc:  # truncated or damaged files
            raise UnsupportedImageError(f"{name}: cannot decode image ({exc})") from exc


def write_image(path: str | Path, array: np.ndarray, format: str | None = None) -> None:
    Image.fromarray(array).save(path, format=format)
