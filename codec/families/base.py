"""The interface every model family implements, and the weights envelope they share.

A family is what turns a model's weights into a model, says which inputs it codes, and encodes or decodes
the tiles its coder id (``CODER_LEARNED``) marks. ``codec.api`` and ``codec.registry`` reach a family only
through the table in :mod:`codec.families`; a new family is one folder plus one row there.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from codec.format.container import Header
    from codec.format.tiles import Box
    from codec.options import DecodeOptions, EncodeOptions
    from codec.loaded import LoadedModel
    from codec.results import EncodeResult

WEIGHTS_FORMAT = "tlic-weights-1"


class Family(Protocol):
    name: str

    def model_from_state(self, state: dict) -> Any:
        """The model of a loaded weights dict (tensors, dicts, numbers: ``torch.load(weights_only=True)``)."""

    def weights_state(self, model: Any, **metadata) -> dict:
        """What a weights file of ``model`` holds (the inverse of :meth:`model_from_state`)."""

    def refuses(self, raster: bool, options: "EncodeOptions") -> str | None:
        """Why this family cannot code such an input (None: it can)."""

    def encode_image(self, image: np.ndarray, loaded: "LoadedModel", options: "EncodeOptions") -> "EncodeResult":
        """The v1 stream of an 8-bit gray/RGB/RGBA image."""

    def encode_raster(self, img: np.ndarray, header: "Header", valid: list, counts: np.ndarray, loaded: "LoadedModel",
                      options: "EncodeOptions") -> "EncodeResult":
        """The stream of a checked (H, W, B) raster whose header (RasterInfo included) is built; ``valid``: per
        tile its valid mask or None, ``counts``: valid pixels per tile."""

    def decode_image(self, data: bytes, header: "Header", loaded: "LoadedModel", region: "Box", ids: list[int],
                     options: "DecodeOptions") -> np.ndarray:
        """``region`` of an 8-bit (v1) stream from its tiles ``ids`` (their checksums already verified)."""

    def decode_raster_tiles(self, data: bytes, header: "Header", loaded: "LoadedModel", ids: list[int],
                            region: "Box", out: np.ndarray, options: "DecodeOptions") -> None:
        """Write the learned raster tiles ``ids`` into ``out`` (the region's (h, w, bands) array)."""


def write_weights(state: dict, path) -> None:
    """Write a weights dict (``path``: a file name or a binary file object): the one weights writer."""
    import torch

    torch.save(state, path)


def weights_bytes_of(state: dict) -> bytes:
    buf = io.BytesIO()
    write_weights(state, buf)
    return buf.getvalue()
