"""A tiled learned image codec with per-tile quality targeting and device-exact decoding.

    >>> import codec
    >>> result = codec.encode(rgb_uint8, target_psnr=38)      # or quality=0.5, target_bpp=0.3
    >>> image = codec.decode(result.data)                      # any device
    >>> crop = codec.decode_region(result.data, (x, y, w, h))  # only the tiles that cover it

Layout:

    api.py          encode / decode / decode_region / read_header: wiring only
    ratecontrol.py  RateTarget (the three modes, one validation) and the strategies that choose each tile's quality
    quality.py      the one representation of quality: the stored u16 code (level ↔ code ↔ q)
    engine.py       batches tiles through the model on a device (cached per model/device); no policy
    model/          HyperpriorCodec: training forward and the coding path (compress … decompress)
    rangecoder.py   constriction range coding of lists of tiles; parallel.py maps it over CPU processes
    bitstream.py    the container format (header, tile index, tile blobs)
    tiles.py        the tile grid: boxes, padding, batching by shape, intersection
    imageprep.py    arrays in and out (gray, RGB, RGBA)
    bands.py        rasters (any band count, uint8/uint16, nodata): normalisation, band groups, nodata fill and mask
    lossless.py     exact tiles (JPEG XL lossless per band)
    metrics.py      PSNR, MS-SSIM, and the one definition of raster metrics (bits per sample, raster PSNR)

This package never imports Ray; the archival pipeline builds on it.
"""

from codec.api import EncodeResult, decode, decode_region, encode, get_coder, read_header
from codec.format.container import FORMAT_VERSION, Header
from codec.errors import (CodecError, CorruptStreamError, ImageTooLargeError, ModelMismatchError, ModelNotFoundError,
                     StreamTooLargeError, UnsupportedImageError)
from codec.families.hyperprior.ratecontrol import DEFAULT_TARGET_PSNR, RateTarget
from codec.registry import LoadedModel, Registry, load_model

__all__ = [
    "encode", "decode", "decode_region", "read_header", "get_coder", "load_model", "EncodeResult", "Header",
    "LoadedModel", "Registry", "FORMAT_VERSION", "CodecError", "CorruptStreamError", "ModelMismatchError",
    "ModelNotFoundError", "UnsupportedImageError", "ImageTooLargeError", "StreamTooLargeError",
    "RateTarget", "DEFAULT_TARGET_PSNR",
]
