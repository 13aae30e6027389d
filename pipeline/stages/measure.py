"""One pass over a source, a strip of tile rows at a time: its per-band statistics and, given the record, the
record's verification against it. Memory follows the strip, never the scene (issue 27: whole scenes).

    source[y0:y1] ──▶ valid_mask ──▶ band statistics (n, mean, M2, min, max per band)
         │                                      ▲
         └── codec.decode_region(record, strip) ┴─▶ nodata where it was? exact (lossless)?
                                                    squared error, max |error| per band

A strip is whole tile rows, so each tile of the record is decoded once; a small image is one strip.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

STRIP_SAMPLES = 1 << 24  # samples per strip (32 MB of uint16), at least one tile row


@dataclass
class SourcePass:
    """What one pass over a source measured. ``sse``/``count``/``max_error``: per band, only when a record was
    compared (``count``: valid pixels of each band)."""

    pixels: int
    bands: int
    stats: list = field(default_factory=list)  # per band [n, mean, M2, min, max]
    sse: np.ndarray | None = None
    count: np.ndarray | None = None
    max_error: np.ndarray | None = None

    @property
    def nodata_fraction(self) -> float:
        """Share of the source's samples that are nodata."""
        valid = sum(acc[0] for acc in self.stats)
        return 1.0 - valid / (self.pixels * self.bands) if self.pixels else 0.0

    def band_statistics(self) -> list[dict]:
        """Per band: min, max, mean, standard deviation and share (%) of valid samples (the STAC raster extension's)."""
        return [{"minimum": float(lo) if n else None, "maximum": float(hi) if n else None,
                 "mean": mean if n else None, "stddev": float(np.sqrt(m2 / n)) if n else None,
                 "valid_percent": 100.0 * n / self.pixels if self.pixels else 0.0} for n, mean, m2, lo, hi in self.stats]


class Mismatch(Exception):
    """The decoded record is not the source where it must be (nodata moved, a lossless record not exact)."""


def strip_rows(width: int, bands: int, tile: int) -> int:
    """Rows per strip: whole tile rows, as many as fit :data:`STRIP_SAMPLES` (at least one)."""
    return tile * max(1, STRIP_SAMPLES // max(1, tile * width * bands))


def measure_source(pixels, rule, tile: int = 256, decode_rows=None, exact: bool = False) -> SourcePass:
    """One pass over ``pixels`` (an array or a window reader: anything sliced ``[y0:y1]``) under the nodata
    ``rule`` (codec.format.raster.sample_rule). With ``decode_rows(y0, y1)`` (the record's rows y0..y1) it also
    compares the record: raises :class:`Mismatch` where nodata did not come back exactly, or (``exact``) any
    sample differs."""
    from codec.format.raster import as_bands, valid_mask

    h, w = pixels.shape[:2]
    bands = 1 if len(pixels.shape) == 2 else pixels.shape[2]
    out = SourcePass(h * w, bands, [[0, 0.0, 0.0, np.inf, -np.inf] for _ in range(bands)])
    if decode_rows is not None:
        out.sse, out.count, out.max_error = np.zeros(bands), np.zeros(bands, np.int64), np.zeros(bands, np.int64)
    step = strip_rows(w, bands, tile)
    for y in range(0, h, step):
        src = as_bands(np.asarray(pixels[y : y + step]))
        valid = valid_mask(src, rule)
        _add_stats(out.stats, src, valid)
        if decode_rows is not None:
            _compare(out, src, valid, as_bands(np.asarray(decode_rows(y, min(h, y + step)))), rule, exact)
    return out


def _add_stats(stats: list, src: np.ndarray, valid) -> None:
    """Fold a strip's valid samples into each band's [n, mean, M2, min, max], a megasample block at a time."""
    step = max(1, (1 << 20) // max(src.shape[1], 1))
    for r in range(0, src.shape[0], step):
        m = None if valid is None else valid[r : r + step]
        for b in range(src.shape[2]):
            x = src[r : r + step, :, b]
            mb = m if m is None or m.ndim == 2 else m[..., b]  # a band-rule mask: this band's samples
            x = (x if mb is None else x[mb]).astype(np.float64).ravel()
            if x.size:
                _combine(stats[b], x)


def _combine(acc: list, x: np.ndarray) -> None:
    """Fold a block of samples into [n, mean, M2, min, max] (parallel variance, Chan et al.: exact enough for any range)."""
    n, mean, m2 = acc[0], acc[1], acc[2]
    k, bm = x.size, float(x.mean())
    bm2 = float(((x - bm) ** 2).sum())
    tot = n + k
    delta = bm - mean
    acc[0], acc[1], acc[2] = tot, mean + delta * k / tot, m2 + bm2 + delta * delta * n * k / tot
    acc[3], acc[4] = min(acc[3], float(x.min())), max(acc[4], float(x.max()))


def _compare(out: SourcePass, src: np.ndarray, valid, dec: np.ndarray, rule, exact: bool) -> None:
    from codec.format.raster import valid_mask
    from codec.metrics import band_max_error, band_sse

    if dec.shape != src.shape or dec.dtype != src.dtype:
        raise Mismatch(f"decoded {dec.dtype}{dec.shape} != {src.dtype}{src.shape}")
    back = valid_mask(dec, rule)
    if not ((valid is None and back is None) or (valid is not None and back is not None and np.array_equal(valid, back))):
        raise Mismatch("nodata did not come back exactly where it was")
    if exact and not np.array_equal(dec, src):
        raise Mismatch("a lossless record did not decode bit-exactly")
    sse, count = band_sse(src, dec, valid)
    out.sse += sse
    out.count += np.broadcast_to(np.asarray(count, dtype=np.int64), out.count.shape)
    out.max_error = np.maximum(out.max_error, band_max_error(src, dec, valid))
