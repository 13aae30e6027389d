"""Errors the codec raises; all derive from :class:`CodecError`. Torch-free (the ground floor)."""

import struct


class CodecError(Exception):
    """Base class of every error the codec reports on purpose."""


class CorruptStreamError(CodecError):
    """The bitstream is damaged, truncated or not a bitstream of ours."""


class ModelMismatchError(CodecError):
    """The stream was encoded with another model than the one given."""


class UnsupportedImageError(CodecError):
    """The input image has a shape, mode or depth the codec does not take."""


class ModelNotFoundError(CodecError):
    """No registered model matches the requested name, version or hash."""


class ImageTooLargeError(UnsupportedImageError):
    """The image is over the loader's pixel limit or memory budget (decompression-bomb guard).

    Raised from the file's header, before any pixel is decoded.
    """


class StreamTooLargeError(CorruptStreamError):
    """The stream describes more pixels than the caller's ``max_pixels`` allows (a decompression bomb,
    or an image too large for this reader); a CorruptStreamError so that every handler of untrusted
    streams refuses it too."""


class SourceReadError(UnsupportedImageError):
    """A window of a raster read lazily (codec.images.windowed) could not be read: a damaged or truncated file
    found only once coding reached it. The pipeline's ``decode`` error kind, like any unreadable image."""


class UnsupportedContentError(UnsupportedImageError):
    """A readable image the archive cannot keep faithfully (yet): CMYK, multi-page, float samples… The
    pipeline's ``unsupported`` error kind (a plain UnsupportedImageError is ``decode``: not an image)."""


# --- the one "damaged tile" mapping ----------------------------------------------------------------
# what a damaged tile makes a range decoder (constriction) or a family's parser raise
TILE_DECODE_ERRORS = (AssertionError, ValueError, OverflowError, struct.error)


def is_panic(exc: BaseException) -> bool:
    """A Rust panic inside constriction: pyo3 raises PanicException, a BaseException (not importable)."""
    return type(exc).__name__ == "PanicException"


def is_damaged_tile(exc: BaseException) -> bool:
    """Whether ``exc``, raised while decoding a tile's bytes, means the bytes are damaged (every family maps
    it to a :class:`CorruptStreamError` naming the tile) rather than a bug or an interrupt."""
    return isinstance(exc, (*TILE_DECODE_ERRORS, CorruptStreamError)) or is_panic(exc)


def damaged(where: str, exc: BaseException) -> CorruptStreamError:
    """The CorruptStreamError for a damaged tile (``where``: the tile's label)."""
    return CorruptStreamError(f"{where}: {exc}")
