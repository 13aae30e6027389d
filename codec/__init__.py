"""A tiled learned image codec with per-tile quality targeting and device-exact decoding.

    >>> import codec
    >>> result = codec.encode(rgb_uint8, target_psnr=38)      # or quality=0.5, target_bpp=0.3
    >>> image = codec.decode(result.data)                      # any device
    >>> crop = codec.decode_region(result.data, (x, y, w, h))  # only the tiles that cover it

Layout (the folders draw the architecture; ``jobs/`` → ``pipeline/`` → ``codec/``, never back up):

    ground floor (no torch)  errors.py (+ the one damaged-tile mapping), options.py (RateTarget, EncodeOptions,
                             DecodeOptions), results.py (EncodeResult), quality.py (u16 quality codes), metrics.py,
                             rangecoder.py (constriction range coding; parallel.py maps it over processes)
    format/                  container.py (header, tile index with coder ids, blobs), tiles.py (the grid),
                             raster.py (the raster description and THE raster rule), inflate.py (bounded inflate)
    tilecoders/              per-tile coders keyed by the coder id of each index entry (jxl_exact today)
    families/                the Family interface and ONE table name → family: hyperprior/ (model/, engine,
                             ratecontrol, coding, rasters, bands), minnen2018/
    images/                  the file I/O edge: imageio.py (files → pixels, or a refusal), prep.py (arrays in/out)
    registry.py              which weights a model id means (built through the family table)
    api.py                   encode / decode / decode_region / read_header: wiring only
    training/                training, export, evaluation: a client of the codec

This package never imports Ray. Importing it (and reading a header) imports no torch: the names below load
their module on first use.
"""

from __future__ import annotations

import importlib

from codec.errors import (CodecError, CorruptStreamError, ImageTooLargeError, ModelMismatchError, ModelNotFoundError,
                          StreamTooLargeError, UnsupportedContentError, UnsupportedImageError)
from codec.format.container import FORMAT_VERSION, Header
from codec.options import DEFAULT_TARGET_PSNR, DecodeOptions, EncodeOptions, RateTarget
from codec.results import EncodeResult

_LAZY = {  # name -> module (imported on first use: these pull in torch)
    "encode": "codec.api", "decode": "codec.api", "decode_region": "codec.api", "read_header": "codec.api",
    "load_model": "codec.registry", "LoadedModel": "codec.registry", "Registry": "codec.registry",
    "get_coder": "codec.families.hyperprior.engine",
}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'codec' has no attribute {name!r}")


__all__ = [
    "encode", "decode", "decode_region", "read_header", "get_coder", "load_model", "EncodeResult", "Header",
    "LoadedModel", "Registry", "FORMAT_VERSION", "CodecError", "CorruptStreamError", "ModelMismatchError",
    "ModelNotFoundError", "UnsupportedImageError", "UnsupportedContentError", "ImageTooLargeError",
    "StreamTooLargeError", "RateTarget", "EncodeOptions", "DecodeOptions", "DEFAULT_TARGET_PSNR",
]
