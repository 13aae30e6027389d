"""The tile grid: the ONE computation of tile boxes and their intersection with a region (part of the
format: a stream's tile index is row-major over this grid). Padding and batching for a model live with
the family (:mod:`codec.families.hyperprior.tiling`).

    image W×H, tile T ─grid─▶ rows × cols, row-major ─tile_box(i)─▶ (x, y, w, h) (edge tiles smaller)

:class:`codec.format.container.Header` answers ``grid``/``tile_box``/``boxes`` from here, and so does
anything that draws a stream's tile map.
"""

from __future__ import annotations

Box = tuple[int, int, int, int]  # (x, y, w, h)

MIN_TILE, MAX_TILE = 64, 4096  # tile sizes: multiples of 64 in this range
DEFAULT_TILE = 256


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
