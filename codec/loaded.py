"""A model resolved from the registry: the network, the id every stream names, and the hash of its weights.

Its own module (torch-free, below the registry and the families) so that a family can name the type
without importing the registry that resolves it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from codec import families


@dataclass
class LoadedModel:
    model: Any  # a model of one family (codec.families: its ``family`` names the table row)
    model_id: str  # NAME@VERSION, written into every stream
    sha256: bytes

    @property
    def hash_hex(self) -> str:
        return self.sha256.hex()

    @property
    def family(self) -> "families.Family":
        return families.of_model(self.model)
