"""A model's architecture and rate range (stored in its weights file), and its total stride."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

DOWNSAMPLING = 64  # total stride down to the hyper-latent: tiles are padded to a multiple


class ModelConfig(BaseModel):
    """Architecture and rate range of a model; stored in its weights file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    channels: int = 64  # N: transform width
    latent_channels: int = 192  # M: channels of y
    hyper_channels: int = 64  # channels of z
    gain_anchors: int = 6
    lambda_min: float = 0.0016  # λ at q=0 (distortion: MSE on [0,255] scale / 255²)
    lambda_max: float = 0.16  # λ at q=1
