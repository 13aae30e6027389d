"""Normalise input arrays to what the model codes: 8-bit RGB, plus an optional alpha plane.

Accepted: uint8 arrays shaped (H, W), (H, W, 1), (H, W, 3) or (H, W, 4).
Grayscale is coded as RGB and returned as grayscale; alpha is kept losslessly.
Anything else (16-bit, float, 2 or 5+ channels, empty) is rejected with a clear
error: silently rescaling a 16-bit raster would lose data the user did not agree to.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from codec.errors import UnsupportedImageError


@dataclass
class PreparedImage:
    rgb: np.ndarray  # (H, W, 3) uint8 (may be a lazily read array such as a memmap)
    alpha: np.ndarray | None  # (H, W) uint8
    channels: int  # channels of the original: 1, 3 or 4

    @property
    def height(self) -> int:
        return self.rgb.shape[0]

    @property
    def width(self) -> int:
        return self.rgb.shape[1]

    def tile_rgb(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        """The tile as the model codes it: 3 channels (gray repeated)."""
        t = np.asarray(self.rgb[y : y + h, x : x + w])
        return np.repeat(t[..., :1], 3, axis=2) if self.channels == 1 else t[..., :3]

    def tile_colour(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        """The tile's own colour samples, contiguous (H, W, 1) for gray, (H, W, 3) otherwise: what a
        classical tile coder codes and what its error is judged on."""
        t = np.asarray(self.rgb[y : y + h, x : x + w])
        return np.ascontiguousarray(t[..., :1] if self.channels == 1 else t[..., :3])

    def tile_alpha(self, x: int, y: int, w: int, h: int) -> bytes | None:
        """The tile's alpha plane as the container stores it (row-major bytes), None without alpha."""
        return None if self.alpha is None else np.ascontiguousarray(self.alpha[y : y + h, x : x + w]).tobytes()


def prepare(image: np.ndarray, name: str = "image") -> PreparedImage:
    if not hasattr(image, "dtype") or not hasattr(image, "shape"):
        raise UnsupportedImageError(f"{name}: expected a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise UnsupportedImageError(
            f"{name}: {image.dtype} pixels are not supported; the codec takes 8-bit images "
            "(convert 16-bit or float rasters to uint8 explicitly)"
        )
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise UnsupportedImageError(f"{name}: shape {image.shape} is not (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)")
    h, w, c = image.shape
    if h == 0 or w == 0:
        raise UnsupportedImageError(f"{name}: empty image ({w}×{h})")
    if h >= 2**32 or w >= 2**32:
        raise UnsupportedImageError(f"{name}: {w}×{h} exceeds the format's 32-bit dimensions")
    if c == 1:
        return PreparedImage(image, None, 1)
    if c == 4:
        return PreparedImage(image, image[..., 3], 4)
    return PreparedImage(image, None, 3)


def finish(rgb: np.ndarray, alpha: np.ndarray | None, channels: int) -> np.ndarray:
    """Decoder-side inverse of :func:`prepare`."""
    if channels == 1:
        return np.round(rgb.astype(np.float32).mean(axis=2)).astype(np.uint8)
    if channels == 4:
        return np.concatenate([rgb, alpha[..., None]], axis=2)
    return rgb
