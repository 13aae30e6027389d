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

from .model import HyperpriorCodec, ModelConfig
from .registry import DEFAULT_REGISTRY, Registry
from .train import list_images, load_checkpoint, load_rgb


def calibration_batch(dirs: list[Path], n: int = 16, sizes=(256, 128, 64), seed: int = 0) -> torch.Tensor:
    """Random training crops that set the integer hyper-synthesis' activation ranges."""
    files = list_images(dirs)
    for size in sizes:
        crops = _crops(files, n, size, np.random.default_rng(seed))
        if crops:
            return torch.stack(crops)
    raise ValueError(f"no calibration image of at least {sizes[-1]}×{sizes[-1]} in {dirs}")


def _crops(files, n: int, size: int, rng) -> list[torch.Tensor]:
    crops = []
    for i in rng.permutation(len(files)):
        im = load_rgb(files[i])
        if min(im.shape[:2]) < size:
            continue
        y, x = rng.integers(im.shape[0] - size + 1), rng.integers(im.shape[1] - size + 1)
        crops.append(torch.from_numpy(im[y : y + size, x : x + size].copy()).permute(2, 0, 1).float() / 255)
        if len(crops) == n:
            break
    return crops


def model_from_checkpoint(path: Path) -> HyperpriorCodec:
    state = load_checkpoint(path)  # weights only: a checkpoint file never runs code
    model = HyperpriorCodec(ModelConfig(**state["config"]["model"]))
    model.load_state_dict(state["model"])
    return model.eval()


def export(checkpoint: Path, name: str, calibration: list[Path], registry: Registry = DEFAULT_REGISTRY, **metadata) -> str:
    model = model_from_checkpoint(checkpoint)
    model.finalize(calibration_batch(calibration))
    state = load_checkpoint(checkpoint)
    metadata.setdefault("train_steps", state["step"])
    metadata.setdefault("data", [str(p) for p in state["config"]["data"]])
    return registry.register(name, model, **metadata)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--name", default="default")
    ap.add_argument("--calibration", nargs="+", type=Path, required=True)
    ap.add_argument("--registry", type=Path, help="registry folder (default: the package's weights)")
    ap.add_argument("--description", default="")
    a = ap.parse_args(argv)
    reg = Registry(a.registry) if a.registry else DEFAULT_REGISTRY
    print(export(a.checkpoint, a.name, a.calibration, reg, description=a.description))


if __name__ == "__main__":
    main()
