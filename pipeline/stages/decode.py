"""Image decode, on the codec replica: fetched bytes → pixels, or the reason they cannot be archived.

The loader is the codec's own (``codec.images.imageio.load_image``, shared with its CLI and with
retraining), so what the archive accepts is what the codec can round-trip. Its refusals
become the stats' ``error_kind``: ``too_large`` (over --max-pixels or --max-image-memory),
``unsupported`` (content the archive cannot keep faithfully: 16-bit, CMYK, multi-page) and
``decode`` (anything else: empty, truncated, not an image).
"""

from __future__ import annotations


class Rejected(Exception):
    """An input that gets an error row of ``kind`` instead of a record."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def decode_image(data: bytes | str, key: str, max_pixels: int, max_bytes: int, windowed: bool = False):
    """The image in ``data`` (bytes, or the path of a staged copy) as a ``codec.images.imageio`` image (pixels,
    geo, ICC profile, EXIF), or :class:`Rejected`. ``windowed``: a TIFF raster's pixels are read window by window."""
    from codec.errors import ImageTooLargeError, UnsupportedContentError, UnsupportedImageError
    from codec.images.imageio import load_image

    try:
        return load_image(data, key, max_pixels=max_pixels, max_bytes=max_bytes, windowed=windowed)
    except ImageTooLargeError as exc:
        raise Rejected("too_large", str(exc)) from None
    except UnsupportedContentError as exc:
        raise Rejected("unsupported", str(exc)) from None
    except UnsupportedImageError as exc:
        raise Rejected("decode", str(exc)) from None
    except BaseException as exc:  # noqa: BLE001 — one image must never stop the batch
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        raise Rejected("decode", f"{key}: {type(exc).__name__}: {exc}") from None
