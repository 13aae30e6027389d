"""The hyperprior's view of tiles: padding to the model's stride and batching by padded shape.

    tile (h, w) ─pad_tile─▶ padded to the model's stride (DOWNSAMPLING), edge-replicated
    tile ids ─batches─▶ same padded shape, ≤ batch_size tiles and ≤ PIXELS_PER_BATCH pixels per forward pass
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Iterator

import numpy as np

from codec.families.hyperprior.model.config import DOWNSAMPLING
from codec.format.tiles import DEFAULT_TILE, Box

# padded pixels per forward pass (encode and decode): 8 default 256² tiles; larger tiles go fewer at a time
PIXELS_PER_BATCH = 8 * DEFAULT_TILE * DEFAULT_TILE


def padded_size(w: int, h: int) -> tuple[int, int]:
    return -(-w // DOWNSAMPLING) * DOWNSAMPLING, -(-h // DOWNSAMPLING) * DOWNSAMPLING


def latent_grid(padded: tuple[int, int]) -> tuple[int, int]:
    """(rows, cols) of the hyper-latent of a tile padded to ``(pw, ph)``."""
    pw, ph = padded
    return ph // DOWNSAMPLING, pw // DOWNSAMPLING


def pad_tile(tile: np.ndarray, pw: int, ph: int) -> np.ndarray:
    """Edge-replicate a (h, w, C) tile to (ph, pw, C); replication keeps borders cheap to code."""
    h, w = tile.shape[:2]
    if (h, w) == (ph, pw):
        return tile
    return np.pad(tile, ((0, ph - h), (0, pw - w), (0, 0)), mode="edge")


def batches(boxes: list[Box], ids: Iterable[int], batch_size: int,
            max_pixels: int | None = None) -> Iterator[tuple[tuple[int, int], list[int]]]:
    """``((pw, ph), ids)`` chunks of tiles with one padded shape: each chunk is one forward pass.

    Groups in order of first appearance; a chunk has at most ``batch_size`` tiles and
    ``max_pixels`` (default :data:`PIXELS_PER_BATCH`) padded pixels, and at least one tile:
    ``batch_size`` alone would put 8 tiles of 4096² (134 MP) in one pass.
    """
    max_pixels = PIXELS_PER_BATCH if max_pixels is None else max_pixels
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i in ids:
        groups[padded_size(boxes[i][2], boxes[i][3])].append(i)
    for (pw, ph), members in groups.items():
        n = max(1, min(batch_size, max_pixels // (pw * ph)))
        for s in range(0, len(members), n):
            yield (pw, ph), members[s : s + n]
