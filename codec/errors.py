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
