"""Errors the codec raises; all derive from :class:`CodecError`."""


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
