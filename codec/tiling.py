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


def context_window(read, width: int, height: int, box, pw: int, ph: int, margin: int) -> np.ndarray:
    """The tile padded to (ph, pw) plus ``margin`` pixels of real neighbours on each side.

    ``read(x, y, w, h)`` returns image pixels; outside the image, edges are replicated.
    Analysing a tile with its neighbours' pixels gives latents near the tile border that
    know what lies beyond it, at no cost in bits.
    """
    x, y, _, _ = box
    x0, y0 = max(x - margin, 0), max(y - margin, 0)
    x1, y1 = min(x + pw + margin, width), min(y + ph + margin, height)
    crop = read(x0, y0, x1 - x0, y1 - y0)
    pad = ((y0 - (y - margin), (y + ph + margin) - y1), (x0 - (x - margin), (x + pw + margin) - x1), (0, 0))
    return np.pad(crop, pad, mode="edge") if any(a or b for a, b in pad[:2]) else crop


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
