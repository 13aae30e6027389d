"""Turn a training checkpoint into a registered, finalised model.

    python -m codec.export runs/default/checkpoint.pt --name default --calibration ../shared/data/train-natural

Finalising builds the coding tables and the integer hyper-synthesis (calibrated
on training crops, never on evaluation images) and registers the weights.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from codec.families.hyperprior.model import HyperpriorCodec, ModelConfig
from codec.registry import BUILTIN, Registry
from codec.training.data import list_images, load_rgb, random_crop, to_tensor
from codec.training.train import load_checkpoint


def calibration_batch(dirs: list[Path], n: int = 16, sizes=(256, 128, 64), seed: int = 0) -> torch.Tensor:
    """Random training crops that set the integer hyper-synthesis' activation ranges: ``n`` images'
    worth at the largest of ``sizes`` that some image fits."""
    files = list_images(dirs)
    for size in sizes:
        crops = calibration_crops(files, n, size, np.random.default_rng(seed))
        if crops:
            return to_tensor(np.stack(crops))
    raise ValueError(f"no calibration image of at least {sizes[-1]}×{sizes[-1]} in {dirs}")


def calibration_crops(files: list[Path], n: int, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Up to ``n`` unflipped crops, one per image, the images visited in a random order and read
    one at a time (a large training folder is never loaded whole)."""
    crops = []
    for i in rng.permutation(len(files)):
        im = load_rgb(files[i])
        if min(im.shape[:2]) >= size:
            crops.append(random_crop(im, size, rng, flip=False))
            if len(crops) == n:
                break
    return crops


def model_from_state(state: dict) -> HyperpriorCodec:
    """The model a checkpoint (or its weights-only snapshot) holds, in eval mode, not yet finalised."""
    model = HyperpriorCodec(ModelConfig(**state["config"]["model"]))
    model.load_state_dict(state["model"])
    return model.eval()


def model_from_checkpoint(path: Path) -> HyperpriorCodec:
    """Weights-only load: a checkpoint file never runs code (:class:`~codec.training.train.CheckpointError`)."""
    return model_from_state(load_checkpoint(path))


def export(checkpoint: Path, name: str, calibration: list[Path], registry: Registry = BUILTIN, **metadata) -> str:
    """Finalise a checkpoint's model (calibrated on crops of ``calibration``) and register it as the
    next version of ``name``; returns ``NAME@VERSION``. Steps and data are recorded unless given."""
    state = load_checkpoint(checkpoint)
    model = model_from_state(state)
    model.finalize(calibration_batch(calibration))
    metadata.setdefault("train_steps", state["step"])
    metadata.setdefault("data", [str(p) for p in state["config"]["data"]])
    return registry.register(name, model, **metadata)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m codec.export", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--name", default="default")
    ap.add_argument("--calibration", nargs="+", type=Path, required=True)
    ap.add_argument("--registry", type=Path, help="registry folder (default: the package's weights)")
    ap.add_argument("--description", default="")
    a = ap.parse_args(argv)
    reg = Registry(a.registry) if a.registry else BUILTIN
    print(export(a.checkpoint, a.name, a.calibration, reg, description=a.description))


if __name__ == "__main__":
    main()
