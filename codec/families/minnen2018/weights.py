"""The minnen2018 weights file: the shared ``tlic-weights-1`` envelope (codec.families.base) with a
``family`` key; the writer is the family table's one writer."""

from __future__ import annotations

from codec.families.base import weights_bytes_of, write_weights
from codec.families.minnen2018 import FAMILY
from codec.families.minnen2018.family import FAMILY as _FAMILY
from codec.families.minnen2018.model import Minnen2018Codec


def weights_state(model: Minnen2018Codec, **metadata) -> dict:
    return _FAMILY.weights_state(model, **metadata)


def save_weights(model: Minnen2018Codec, path, **metadata) -> None:
    write_weights(weights_state(model, **metadata), path)


def weights_bytes(model: Minnen2018Codec) -> bytes:
    return weights_bytes_of(weights_state(model))


def model_from_state(state: dict) -> Minnen2018Codec:
    return _FAMILY.model_from_state(state)


__all__ = ["FAMILY", "weights_state", "save_weights", "weights_bytes", "model_from_state"]
