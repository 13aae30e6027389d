"""Training data: which files, which are held out, and the one random-crop sampler.

Every random crop in the project (training batches, the PCA start, export calibration,
the Ray retraining job's crops and calibration) is cut by :func:`random_crop`, so they all
draw the same way: top, left, then the two flips, in that order, from the ``rng`` given.
"""

from __future__ import annotations

import hashlib
from pathlib import Path, PurePath
from typing import Sequence

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp", ".ppm"}


def list_images(dirs: Sequence[Path]) -> list[Path]:
    """Image files under ``dirs`` (sorted); refuses Kodak, the evaluation set, so no run trains on it."""
    files = [p for d in dirs for p in sorted(Path(d).rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES]
    if any("kodak" in str(p).lower() for p in files):
        raise ValueError("Kodak is the evaluation set: never train on it")
    return files


def split_validation(files: Sequence[PurePath], fraction: float) -> tuple[list, list]:
    """(train, held out) by a hash of each file name: stable as folders grow, never mixing a file."""
    def is_val(p: PurePath) -> bool:
        return int(hashlib.sha1(p.name.encode()).hexdigest(), 16) % 1000 < fraction * 1000

    return [p for p in files if not is_val(p)], [p for p in files if is_val(p)]


def load_rgb(path: Path) -> np.ndarray:
    """An image file as uint8 RGB (H, W, 3)."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def random_crop(image: np.ndarray, size: int, rng: np.random.Generator, flip: bool = True) -> np.ndarray:
    """A ``size``×``size`` crop at a uniform position, mirrored left-right and/or upside-down with
    probability ½ each when ``flip`` (a view, not a copy). The image must be at least ``size`` on each side."""
    h, w = image.shape[:2]
    if min(h, w) < size:
        raise ValueError(f"a {size}×{size} crop does not fit in a {h}×{w} image")
    y, x = rng.integers(h - size + 1), rng.integers(w - size + 1)
    c = image[y : y + size, x : x + size]
    if flip:
        c = c[:, ::-1] if rng.random() < 0.5 else c
        c = c[::-1] if rng.random() < 0.5 else c
    return c


def crop_batch(images: Sequence[np.ndarray], n: int, size: int, rng: np.random.Generator,
               flip: bool = True) -> np.ndarray:
    """``n`` random crops (uint8, (n, size, size, C)), each from an image drawn with replacement
    among those at least ``size`` on each side."""
    usable = [im for im in images if min(im.shape[:2]) >= size]
    if not usable:
        raise ValueError(f"no training image is at least {size}×{size}")
    out = np.empty((n, size, size, usable[0].shape[2]), dtype=np.uint8)
    for i in range(n):
        out[i] = random_crop(usable[rng.integers(len(usable))], size, rng, flip)
    return out


def to_tensor(crops: np.ndarray):
    """uint8 crops (N, H, W, C) → float tensor (N, C, H, W) in [0, 1], what the model trains on."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float().div_(255.0)
