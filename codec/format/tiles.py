"""The tile grid: the ONE computation of tile boxes, padding, batching by shape and intersection.

    image W×H, tile T ─grid─▶ rows × cols, row-major ─tile_box(i)─▶ (x, y, w, h) (edge tiles smaller)
    tile (h, w) ─pad_tile─▶ padded to the model's stride (DOWNSAMPLING), edge-replicated
    tile ids ─batches─▶ same padded shape, ≤ batch_size tiles and ≤ PIXELS_PER_BATCH pixels per forward pass

:class:`codec.format.container.Header` answers ``grid``/``tile_box``/``boxes`` from here, and so does
anything that draws a stream's tile map.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Iterator

import numpy as np

from codec.families.hyperprior.model.config import DOWNSAMPLING

Box = tuple[int, int, int, int]  # (x, y, w, h)

MIN_TILE, MAX_TILE = 64, 4096  # tile sizes: multiples of 64 in this range
DEFAULT_TILE = 256
# padded pixels per forward pass (encode and decode): 8 default 256² tiles; larger tiles go fewer at a time
PIXELS_PER_BATCH = 8 * DEFAULT_TILE * DEFAULT_TILE


def check_tile_size(tile: int) -> int:
    """``tile`` if it is a valid tile size, else ValueError (the one statement of the rule)."""
    if tile % 64 or not MIN_TILE <= tile <= MAX_TILE:
        raise ValueError(f"tile_size must be a multiple of 64 in [{MIN_TILE}, {MAX_TILE}], got {tile}")
    return tile


def grid(width: int, height: int, tile: int) -> tuple[int, int]:
    """(rows, cols) of the tile grid."""
    return -(-height // tile), -(-width // tile)


def tile_box(i: int, width: int, height: int, tile: int) -> Box:
    """(x, y, w, h) of tile ``i`` (row-major) in image pixels."""
    r, c = divmod(i, grid(width, height, tile)[1])
    x, y = c * tile, r * tile
    return x, y, min(tile, width - x), min(tile, height - y)


def grid_boxes(width: int, height: int, tile: int) -> list[Box]:
    """(x, y, w, h) of every tile, row-major."""
    rows, cols = grid(width, height, tile)
    return [tile_box(i, width, height, tile) for i in range(rows * cols)]


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


def intersecting(boxes: list[Box], region: Box) -> list[int]:
    """Ids of the tiles that overlap ``region``."""
    rx, ry, rw, rh = region
    return [i for i, (x, y, w, h) in enumerate(boxes) if x < rx + rw and rx < x + w and y < ry + rh and ry < y + h]


def overlap(box: Box, region: Box) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """Where ``box`` and ``region`` overlap, as (rows, cols) slices into the region and into the box."""
    x, y, w, h = box
    x0, y0, rw, rh = region
    ix0, iy0 = max(x, x0), max(y, y0)
    ix1, iy1 = min(x + w, x0 + rw), min(y + h, y0 + rh)
    return ((slice(iy0 - y0, iy1 - y0), slice(ix0 - x0, ix1 - x0)),
            (slice(iy0 - y, iy1 - y), slice(ix0 - x, ix1 - x)))
