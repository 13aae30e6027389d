"""What an encode returns, the same for every family: the stream, its parsed header and what the encoder
measured. Torch-free (the ground floor)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from codec.format.container import Header
from codec.metrics import bits_per_sample


@dataclass
class EncodeResult:
    data: bytes
    header: Header
    tile_psnr: np.ndarray  # per tile, NaN where not measured (quality mode); inf for exact tiles
    psnr: float | None  # whole image, when every tile was measured: 8-bit v1 streams today's PSNR over all
    #                     colour samples; rasters codec.metrics.raster_psnr (valid pixels, each band's own peak)
    band_psnr: np.ndarray | None = None  # rasters, when every tile was measured: per band (codec.metrics.band_psnr)

    @property
    def bpp(self) -> float:
        return len(self.data) * 8 / (self.header.width * self.header.height)

    @property
    def bits_per_sample(self) -> float:
        """codec.metrics.bits_per_sample: bits / (pixels × bands) (RGB: bpp / 3)."""
        return bits_per_sample(len(self.data), self.header.height, self.header.width, self.header.bands)

    @property
    def raster_psnr(self) -> float | None:
        """The raster PSNR (codec.metrics) of a v2 stream; None for 8-bit v1 streams (see ``psnr``)."""
        return self.psnr if self.header.raster is not None else None

    @property
    def missed_tiles(self) -> int:
        return sum(t.missed_target for t in self.header.tiles)
