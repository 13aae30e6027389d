"""The model families, ONE table from a family name to the module that implements it
(:class:`codec.families.base.Family`), in the pattern of CompressAI's ``register_model``.

    hyperprior   variable-rate mean-scale hyperprior (model/, engine, rate control, band coding)
    minnen2018   Minnen et al.'s tiled context-prediction + conv-LSTM codec (ICIP 2018)

A family module is imported on first use only, so the table costs nothing (no torch) to read.
"""

from __future__ import annotations

import importlib

from codec.errors import ModelNotFoundError
from codec.families.base import WEIGHTS_FORMAT, Family

FAMILIES: dict[str, str] = {  # name -> module holding FAMILY (a Family)
    "hyperprior": "codec.families.hyperprior.family",
    "minnen2018": "codec.families.minnen2018.family",
}
LEGACY_FAMILY = "hyperprior"  # weights files written before families existed carry no "family" key


def register(name: str, module: str) -> None:
    """Add a family: ``module`` defines ``FAMILY``, a :class:`Family` called ``name``."""
    if name in FAMILIES and FAMILIES[name] != module:
        raise ValueError(f"model family {name!r} is already registered ({FAMILIES[name]})")
    FAMILIES[name] = module


def get(name: str) -> Family:
    """The family called ``name``; ModelNotFoundError for one this codec does not have."""
    if name not in FAMILIES:
        raise ModelNotFoundError(f"unknown model family {name!r} (known: {', '.join(sorted(FAMILIES))})")
    family = importlib.import_module(FAMILIES[name]).FAMILY
    if family.name != name:
        raise ValueError(f"{FAMILIES[name]} defines family {family.name!r}, the table says {name!r}")
    return family


def of_model(model) -> Family:
    """The family of a built model (every family's model class names it in ``family``)."""
    return get(model.family)


def of_state(state: dict, name: str = "weights") -> Family:
    """The family of a loaded weights dict."""
    if not isinstance(state, dict) or state.get("format") != WEIGHTS_FORMAT:
        raise ModelNotFoundError(f"{name} is not a {WEIGHTS_FORMAT} file")
    return get(state.get("family", LEGACY_FAMILY))


__all__ = ["FAMILIES", "Family", "get", "of_model", "of_state", "register"]
