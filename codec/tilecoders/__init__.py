"""Tile coders: one uniform interface, keyed by the coder id each tile's index entry stores.

    TileContext(height, width, bands, dtype, nodata, prediction)   what a coder knows about the tile
    coder.encode(block, ctx) -> bytes        block: (h, w, bands) uint8/uint16, exactly the tile
    coder.decode(payload, ctx) -> block      CorruptStreamError when the payload is not a valid tile of ctx's shape

The pattern is imagecodecs' ``X_encode``/``X_decode``: each coder module holds a pair of pure functions and
one :class:`TileCoder` row here names them. Ids are assigned in :mod:`codec.format.container` (``CODER_*``):

    0  learned         the stream's model family codes the tile (batched on a device: codec.families)
    1  jxl_exact       JPEG XL lossless per band (codec.tilecoders.jxl_exact)
    2  jxl_lossy       JPEG XL lossy, per band triplet, distance searched to a target (codec.tilecoders.jxl_lossy)
    3  avif444         AVIF 4:4:4, 8-bit tiles, quality level searched to a target (codec.tilecoders.avif444)
    4  nearlossless    every sample within ±E (max_error): grid-quantised JPEG XL or JPEG-LS (codec.tilecoders.nearlossless)
    5  j2k             JPEG 2000 9/7 aimed at a PSNR, any tile (codec.tilecoders.j2k)

A coder that refines the learned reconstruction (near-lossless: prediction + residual quantised with step
2E+1) says ``needs_prediction``; its context then carries the tile's learned reconstruction. See the README,
"How to add a tile coder".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from codec.errors import CorruptStreamError, UnsupportedImageError
from codec.format import raster
from codec.format.container import (CODER_AVIF_444, CODER_IDS, CODER_J2K, CODER_JXL_EXACT, CODER_JXL_LOSSY,
                                    CODER_LEARNED, CODER_NEAR_LOSSLESS)
from codec.tilecoders import avif444, j2k, jxl_exact, jxl_lossy, nearlossless


@dataclass(frozen=True)
class TileContext:
    """What a tile coder knows besides the pixels or the payload: the tile's shape and samples, the raster's
    nodata value, (for coders that refine it) the learned reconstruction of the tile, and (for error-bounded
    coders, encode only: the payload records it) the bound ``max_error``."""

    height: int
    width: int
    bands: int
    dtype: str  # "uint8" or "uint16" (int16 rasters are coded as uint16: codec.format.raster.to_coded)
    nodata: raster.Nodata = None  # the raster's rule (RasterInfo.rule): an int per pixel, a tuple per band
    prediction: np.ndarray | None = None  # (h, w, bands) of dtype: the learned tile, for needs_prediction coders
    max_error: int | None = None  # error-bounded coders (nearlossless): the bound every sample must keep

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.height, self.width, self.bands

    @property
    def mask_bands(self) -> int | None:
        """The bands of the tile's nodata mask: None for a (h, w) pixel mask, ``bands`` under the band rule."""
        return self.bands if raster.per_band(self.nodata) else None


@dataclass(frozen=True)
class TileCoder:
    """One row of the table. ``encode``/``decode`` are None only for the learned coder, whose tiles the model
    family codes in batches on a device (codec.families), not one at a time."""

    id: int
    name: str
    encode: Callable[[np.ndarray, TileContext], bytes] | None
    decode: Callable[[bytes, TileContext], np.ndarray] | None
    exact: bool = False  # decodes bit for bit to the input
    needs_prediction: bool = False

    def encode_tile(self, block: np.ndarray, ctx: TileContext) -> bytes:
        if self.encode is None:
            raise ValueError(f"tile coder {self.name!r} codes whole batches through its model family, not tiles")
        if block.shape != ctx.shape:
            raise ValueError(f"tile coder {self.name!r}: block {block.shape} is not the context's {ctx.shape}")
        if self.needs_prediction and ctx.prediction is None:
            raise ValueError(f"tile coder {self.name!r} needs the learned prediction of the tile in its context")
        return self.encode(block, ctx)

    def decode_tile(self, payload: bytes, ctx: TileContext) -> np.ndarray:
        if self.decode is None:
            raise ValueError(f"tile coder {self.name!r} decodes whole batches through its model family, not tiles")
        block = self.decode(payload, ctx)
        if block.shape != ctx.shape or block.dtype != np.dtype(ctx.dtype):
            raise CorruptStreamError(f"{self.name} tile decodes to {block.dtype} {block.shape}, "
                                     f"the tile is {ctx.dtype} {ctx.shape}")
        return block


CODERS: dict[int, TileCoder] = {}


def register(coder: TileCoder) -> TileCoder:
    """Add ``coder`` to the table (its id must be assigned in codec.format.container and not taken)."""
    if coder.id not in CODER_IDS:
        raise ValueError(f"tile coder {coder.name!r}: id {coder.id} is not assigned in codec.format.container")
    taken = CODERS.get(coder.id)
    if taken is not None and taken != coder:
        raise ValueError(f"tile coder id {coder.id} is taken by {taken.name!r}")
    if any(c.name == coder.name and c.id != coder.id for c in CODERS.values()):
        raise ValueError(f"tile coder name {coder.name!r} is taken")
    CODERS[coder.id] = coder
    return coder


def unregister(coder_id: int) -> None:
    """Remove a coder (tests that register a temporary one)."""
    CODERS.pop(coder_id, None)


def coder(coder_id: int) -> TileCoder:
    """The coder of a tile's index entry; CorruptStreamError for an id this decoder has no coder for."""
    try:
        return CODERS[coder_id]
    except KeyError:
        raise CorruptStreamError(f"tile coder id {coder_id} has no coder in this decoder") from None


def by_name(name: str) -> TileCoder:
    """The coder called ``name`` (what EncodeOptions.tile_coder names); UnsupportedImageError if none."""
    for c in CODERS.values():
        if c.name == name:
            return c
    raise UnsupportedImageError(f"no tile coder named {name!r} (known: {', '.join(sorted(c.name for c in CODERS.values()))})")


LEARNED = register(TileCoder(CODER_LEARNED, "learned", None, None))
JXL_EXACT = register(TileCoder(CODER_JXL_EXACT, "jxl_exact", jxl_exact.encode, jxl_exact.decode, exact=True))
JXL_LOSSY = register(TileCoder(CODER_JXL_LOSSY, "jxl_lossy", jxl_lossy.encode, jxl_lossy.decode))
AVIF_444 = register(TileCoder(CODER_AVIF_444, "avif444", avif444.encode, avif444.decode))
J2K = register(TileCoder(CODER_J2K, "j2k", j2k.encode, j2k.decode))
NEAR_LOSSLESS = register(TileCoder(CODER_NEAR_LOSSLESS, "nearlossless", nearlossless.encode, nearlossless.decode))
