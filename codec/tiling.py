"""Tile grid arithmetic: boxes, padding to the model's stride, batching by shape."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from .model import DOWNSAMPLING


def grid_boxes(width: int, height: int, tile: int) -> list[tuple[int, int, int, int]]:
    """(x, y, w, h) of every tile, row-major."""
    return [
        (x, y, min(tile, width - x), min(tile, height - y))
        for y in range(0, height, tile)
        for x in range(0, width, tile)
    ]


def padded_size(w: int, h: int) -> tuple[int, int]:
    return -(-w // DOWNSAMPLING) * DOWNSAMPLING, -(-h // DOWNSAMPLING) * DOWNSAMPLING


def pad_tile(tile: np.ndarray, pw: int, ph: int) -> np.ndarray:
    """Edge-replicate a (h, w, C) tile to (ph, pw, C); replication keeps borders cheap to code."""
    h, w = tile.shape[:2]
    if (h, w) == (ph, pw):
        return tile
    return np.pad(tile, ((0, ph - h), (0, pw - w), (0, 0)), mode="edge")


def batches(boxes: list[tuple[int, int, int, int]], ids, batch_size: int):
    """Tile ids grouped by padded shape, in chunks of ``batch_size``: each chunk is one forward pass."""
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i in ids:
        groups[padded_size(boxes[i][2], boxes[i][3])].append(i)
    for (pw, ph), members in groups.items():
        for s in range(0, len(members), batch_size):
            yield (pw, ph), members[s : s + batch_size]


def intersecting(boxes, region: tuple[int, int, int, int]) -> list[int]:
    rx, ry, rw, rh = region
    return [i for i, (x, y, w, h) in enumerate(boxes) if x < rx + rw and rx < x + w and y < ry + rh and ry < y + h]
