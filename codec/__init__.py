"""A tiled learned image codec with per-tile quality targeting and device-exact decoding.

    >>> import codec
    >>> result = codec.encode(rgb_uint8, target_psnr=38)      # or quality=0.5, target_bpp=0.3
    >>> image = codec.decode(result.data)                      # any device
    >>> crop = codec.decode_region(result.data, (x, y, w, h))  # only the tiles that cover it

This package never imports Ray; the archival pipeline builds on it.
"""

from .api import EncodeResult, decode, decode_region, encode, get_coder, read_header
from .container import FORMAT_VERSION, Header
from .errors import (CodecError, CorruptStreamError, ImageTooLargeError, ModelMismatchError, ModelNotFoundError,
                     StreamTooLargeError, UnsupportedImageError)
from .registry import LoadedModel, Registry, load_model

__all__ = [
    "encode", "decode", "decode_region", "read_header", "get_coder", "load_model", "EncodeResult", "Header",
    "LoadedModel", "Registry", "FORMAT_VERSION", "CodecError", "CorruptStreamError", "ModelMismatchError",
    "ModelNotFoundError", "UnsupportedImageError", "ImageTooLargeError", "StreamTooLargeError",
]
