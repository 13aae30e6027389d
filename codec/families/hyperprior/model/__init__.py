"""The model: a variable-rate mean-scale hyperprior (see :mod:`codec.families.hyperprior.model.hyperprior`).

    config.py      ModelConfig, DOWNSAMPLING
    layers.py      convolutions, simplified GDN, the two-path transform
    entropy.py     FactorizedPrior, GaussianConditional: forward / quantize / compress / decompress
    intnet.py      IntegerHyperSynthesis: the exact integer h_s the coder uses
    hyperprior.py  HyperpriorCodec: forward (training) and compress … decompress (coding)
"""

from codec.families.hyperprior.model.config import DOWNSAMPLING, ModelConfig
from codec.families.hyperprior.model.hyperprior import ForwardResult, HyperpriorCodec, Latents

__all__ = ["HyperpriorCodec", "ModelConfig", "Latents", "ForwardResult", "DOWNSAMPLING"]
