"""A raster read window by window: what lets a replica code a scene larger than its memory.

    GeoTIFF on local disk ─▶ rasterio (GDAL's block cache, capped) ─▶ WindowedRaster[y0:y1, x0:x1] ─▶ (h, w[, B]) array

The codec touches a raster only a tile (or a strip) at a time (``np.asarray(image[y:y+h, x:x+w])``), so an
object with ``shape``, ``dtype``, ``ndim`` and 2-D slicing is enough: no copy of the whole scene is held.
GDAL decodes whatever compression and layout the GeoTIFF has; its block cache is capped so that memory
follows the tile batch, not the scene.
"""

from __future__ import annotations

import warnings

import numpy as np

from codec.errors import SourceReadError

GDAL_CACHE_MB = 256  # one strip of 256² tiles of a 10-band 16-bit 10k-wide scene is 51 MB


class WindowedRaster:
    """A read-only (H, W, B) view ((H, W) for one band, as load_image gives it) of the samples of a file GDAL
    reads; ``raster[y0:y1, x0:x1]`` reads that window. :meth:`mapped` gives lazy views (int16's coded samples,
    the (H, W, 1) band axis) of the same open file."""

    def __init__(self, path: str, name: str | None = None):
        import rasterio
        import rasterio.errors

        self.path = str(path)
        self.name = name or self.path
        self._env = rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB * 2**20)
        with self._env, warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)  # georeferencing is read elsewhere
            self._ds = rasterio.open(self.path)
        self._transform = None
        self.dtype = np.dtype(self._ds.dtypes[0])
        bands = self._ds.count
        self.shape = (self._ds.height, self._ds.width) + ((bands,) if bands > 1 else ())
        self.ndim = len(self.shape)

    def mapped(self, transform=None, dtype=None, band_axis: bool = False) -> "WindowedRaster":
        """The same file, each window passed through ``transform`` (giving ``dtype``), or with a band axis."""
        view = object.__new__(WindowedRaster)
        view.__dict__.update(self.__dict__)
        previous = self._transform
        if transform is not None:
            view._transform = transform if previous is None else (lambda block: transform(previous(block)))
            view.dtype = np.dtype(dtype or self.dtype)
        if band_axis and self.ndim == 2:
            view.shape, view.ndim = self.shape + (1,), 3
        return view

    def __getitem__(self, key) -> np.ndarray:
        from rasterio.windows import Window

        rows, cols = _two_slices(key, self.shape)
        window = Window(cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start)
        try:
            with self._env:
                block = self._ds.read(window=window)  # (B, h, w)
        except Exception as exc:  # rasterio.errors.RasterioIOError and kin: a damaged block
            raise SourceReadError(f"{self.name}: cannot read rows {rows.start}–{rows.stop}, columns "
                                  f"{cols.start}–{cols.stop} ({type(exc).__name__}: {exc})") from exc
        block = block[0] if self.ndim == 2 else np.ascontiguousarray(np.moveaxis(block, 0, -1))
        return self._transform(block) if self._transform is not None else block

    def __array__(self, dtype=None, copy=None):
        out = self[:, :]
        return out if dtype is None else out.astype(dtype)

    def __len__(self) -> int:
        return self.shape[0]

    def close(self) -> None:
        self._ds.close()

    def __repr__(self) -> str:
        return f"WindowedRaster({self.path!r}, {self.dtype}{self.shape})"


def _two_slices(key, shape) -> tuple[slice, slice]:
    """(rows, cols) of a key of at most two step-1 slices (a trailing ``...`` or ``:`` allowed), clipped."""
    key = list(key) if isinstance(key, tuple) else [key]
    while key and (key[-1] is Ellipsis or (len(key) > 2 and key[-1] == slice(None))):
        key.pop()
    if len(key) > 2:
        raise IndexError(f"a WindowedRaster reads windows of every band, not {tuple(key)!r}")
    key += [slice(None)] * (2 - len(key))
    out = []
    for k, n in zip(key, shape[:2]):
        if not isinstance(k, slice):
            raise IndexError(f"a WindowedRaster reads windows (slices), not {k!r}")
        start, stop, step = k.indices(n)
        if step != 1:
            raise IndexError("a WindowedRaster reads contiguous windows (step 1)")
        out.append(slice(start, max(start, stop)))
    return out[0], out[1]
