"""The minnen2018 weights file: the same ``tlic-weights-1`` envelope as the hyperprior family's, with a
``family`` key that :func:`codec.registry.model_from_weights` dispatches on."""

from __future__ import annotations

import io

import torch

from codec.families.minnen2018.model import Minnen2018Codec, Minnen2018Config

FAMILY = "minnen2018"


def weights_state(model: Minnen2018Codec, **metadata) -> dict:
    return {
        "format": "tlic-weights-1",
        "family": FAMILY,
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().float().contiguous() for k, v in model.state_dict().items()},
        **({"metadata": metadata} if metadata else {}),
    }


def save_weights(model: Minnen2018Codec, path, **metadata) -> None:
    torch.save(weights_state(model, **metadata), path)


def weights_bytes(model: Minnen2018Codec) -> bytes:
    buf = io.BytesIO()
    save_weights(model, buf)
    return buf.getvalue()


def model_from_state(state: dict) -> Minnen2018Codec:
    """Build the model from a loaded weights dict (bit-statistics buffers may have any number of rows)."""
    model = Minnen2018Codec(Minnen2018Config(**state["config"]))
    sd = state["state_dict"]
    model.bit_ones = torch.empty_like(sd["bit_ones"])
    model.bit_total = torch.empty_like(sd["bit_total"])
    model.load_state_dict(sd)
    return model.eval()
