"""The minnen2018 family's row of the family table (codec.families): weights, inputs, coding."""

from __future__ import annotations

import numpy as np
import torch

from codec.families.base import WEIGHTS_FORMAT
from codec.families.minnen2018 import FAMILY as NAME, coding
from codec.families.minnen2018.model import Minnen2018Codec, Minnen2018Config
from codec.options import DecodeOptions, EncodeOptions


class Minnen2018Family:
    name = NAME

    def model_from_state(self, state: dict) -> Minnen2018Codec:
        """Bit-statistics buffers may have any number of rows."""
        model = Minnen2018Codec(Minnen2018Config(**state["config"]))
        sd = state["state_dict"]
        model.bit_ones = torch.empty_like(sd["bit_ones"])
        model.bit_total = torch.empty_like(sd["bit_total"])
        model.load_state_dict(sd)
        return model.eval()

    def weights_state(self, model: Minnen2018Codec, **metadata) -> dict:
        return {
            "format": WEIGHTS_FORMAT,
            "family": NAME,
            "config": model.config.to_dict(),
            "state_dict": {k: v.detach().float().contiguous() for k, v in model.state_dict().items()},
            **({"metadata": metadata} if metadata else {}),
        }

    def refuses(self, raster: bool, options: EncodeOptions) -> str | None:
        if raster:
            return ("the minnen2018 family codes 8-bit gray/RGB images, not rasters (16-bit, multi-band, nodata "
                    "or lossless): use a hyperprior model")
        if options.effort:
            return f"effort {options.effort}: latent refinement is the hyperprior family's; minnen2018 encodes at effort 0"
        return None

    def encode_image(self, image: np.ndarray, loaded, options: EncodeOptions):
        return coding.encode(image, loaded, options.target, tile_size=options.tile_size, name=options.name)

    def encode_raster(self, img, header, valid, counts, loaded, options: EncodeOptions):
        raise ValueError(self.refuses(True, options))

    def decode_image(self, data, header, loaded, region, ids, options: DecodeOptions) -> np.ndarray:
        return coding.decode_region(data, header, loaded, region, max_pixels=options.max_pixels,
                                    max_bits=options.max_bits)

    def decode_raster_tiles(self, data, header, loaded, ids, region, out, options: DecodeOptions) -> None:
        raise ValueError(f"{header.model_id} is a minnen2018 model: it codes no raster tiles")


FAMILY = Minnen2018Family()
