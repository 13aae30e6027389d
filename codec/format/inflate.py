"""The one bounded inflate: a deflated plane (an RGBA tile's alpha, a raster tile's nodata mask) must
inflate to exactly its size, and is refused as soon as it would exceed it (a deflate bomb costs nothing)."""

from __future__ import annotations

import zlib

from codec.errors import CorruptStreamError


def inflate_exact(data: bytes, size: int, what: str) -> bytes:
    """``data`` inflated, which must be exactly ``size`` bytes; CorruptStreamError naming ``what`` otherwise."""
    if not data:
        raise CorruptStreamError(f"{what} missing")
    d = zlib.decompressobj()
    try:
        plane = d.decompress(data, max(size, 1))  # max_length 0 would mean "no limit"
        if d.unconsumed_tail and d.decompress(d.unconsumed_tail, 1):
            raise CorruptStreamError(f"{what} inflates beyond the tile's {size} bytes")
    except zlib.error as exc:
        raise CorruptStreamError(f"{what} does not inflate: {exc}") from exc
    if not d.eof:
        raise CorruptStreamError(f"{what} is truncated")
    if d.unused_data:
        raise CorruptStreamError(f"{len(d.unused_data)} unexpected bytes after the {what}")
    if len(plane) != size:
        raise CorruptStreamError(f"{what} inflates to {len(plane)} bytes, the tile needs {size}")
    return plane
