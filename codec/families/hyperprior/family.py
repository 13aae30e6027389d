"""The hyperprior family's row of the family table (codec.families): weights, inputs, coding."""

from __future__ import annotations

import numpy as np

from codec.families.hyperprior import coding, rasters
from codec.families.hyperprior.model import HyperpriorCodec, ModelConfig
from codec.families.base import WEIGHTS_FORMAT
from codec.options import DecodeOptions, EncodeOptions


class HyperpriorFamily:
    name = "hyperprior"

    def model_from_state(self, state: dict) -> HyperpriorCodec:
        model = HyperpriorCodec(ModelConfig(**state["config"]))
        model.load_state_dict(state["state_dict"])
        model.load_coding_state(state["coding"])
        return model

    def weights_state(self, model: HyperpriorCodec, **metadata) -> dict:
        """Tensors, dicts, lists, strings and numbers only (loadable with ``torch.load(weights_only=True)``);
        no "family" key, so files written before families existed and now are the same."""
        return {
            "format": WEIGHTS_FORMAT,
            "config": model.config.model_dump(),
            "state_dict": {k: v.detach().float().contiguous() for k, v in model.state_dict().items()},
            "coding": model.coding_state(),
            **({"metadata": metadata} if metadata else {}),
        }

    def refuses(self, raster: bool, options: EncodeOptions) -> str | None:
        return None  # photos and rasters alike

    def encode_image(self, image: np.ndarray, loaded, options: EncodeOptions):
        return coding.encode_image(image, loaded, options)

    def encode_raster(self, img, header, valid, counts, loaded, options: EncodeOptions):
        return rasters.encode_raster(img, header, valid, counts, loaded, options)

    def decode_image(self, data, header, loaded, region, ids, options: DecodeOptions) -> np.ndarray:
        if options.max_bits is not None:
            raise ValueError(f"max_bits: progressive decoding needs a minnen2018 stream, this one is {header.model_id}'s")
        return coding.decode_image(data, header, loaded, region, ids, options)

    def decode_raster_tiles(self, data, header, loaded, ids, region, out, options: DecodeOptions) -> None:
        rasters.decode_raster_tiles(data, header, loaded, ids, region, out, options)


FAMILY = HyperpriorFamily()
