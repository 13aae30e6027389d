"""GeoTIFF I/O at the edges through rasterio/GDAL, the field's library (issue 26).

    read_georef(source) -> GeoInfo | None     what GDAL reports of a TIFF's georeferencing and metadata
    write_tiff(pixels, georef, ...) -> bytes  a Cloud Optimized GeoTIFF (default) or a plain tiled GeoTIFF

Pixels are still read by tifffile (codec.images.imageio): its reader is where the loader's rules live (size
checks from the header before a pixel is decoded, the refusals, palette/MinIsWhite/associated-alpha
semantics, overview pages skipped) and it reads the exact stored grid. What the georeferencing *means*
(CRS as WKT2, PixelIsPoint, GCPs, scale/offset, colour interpretation) is GDAL's to say, so GDAL reads it.

COG: GDAL's "COG" driver, 512² blocks, overviews (AVERAGE, nodata-aware) when the raster is over 512 px,
ZSTD with the horizontal predictor (lossless). A plain TIFF is GDAL's GTiff, tiled, same compression.
"""

from __future__ import annotations

import base64
import warnings
from pathlib import Path

import numpy as np

from codec.format.georef import GCP, BandInfo, GeoInfo

COG_OPTIONS = {"BLOCKSIZE": "512", "COMPRESS": "ZSTD", "PREDICTOR": "YES", "LEVEL": "9", "OVERVIEWS": "AUTO",
               "RESAMPLING": "AVERAGE", "BIGTIFF": "IF_SAFER"}
PLAIN_OPTIONS = {"TILED": "YES", "BLOCKXSIZE": "512", "BLOCKYSIZE": "512", "COMPRESS": "ZSTD", "PREDICTOR": "2",
                 "ZSTD_LEVEL": "9", "BIGTIFF": "IF_SAFER"}


def read_georef(source: bytes | str | Path) -> GeoInfo | None:
    """The GeoInfo of a TIFF (bytes or path) as GDAL reports it; None when GDAL finds nothing to keep
    (no CRS, transform, GCPs, tags or band metadata) or cannot open it."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
    from rasterio.io import MemoryFile

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            if isinstance(source, (bytes, bytearray, memoryview)):
                with MemoryFile(bytes(source)) as mem, mem.open() as ds:
                    info = _georef_of(ds)
            else:
                with rasterio.open(str(source)) as ds:
                    info = _georef_of(ds)
    except RasterioIOError:
        return None
    return None if info.empty else info


def _georef_of(ds) -> GeoInfo:
    tags = dict(ds.tags())
    raster_type = "point" if tags.pop("AREA_OR_POINT", "Area").lower() == "point" else "area"
    gcps, gcp_crs = ds.gcps
    identity = ds.transform.is_identity and not ds.crs
    bands = tuple(BandInfo(scale=float(ds.scales[i]), offset=float(ds.offsets[i]), units=ds.units[i] or "",
                           colorinterp=ds.colorinterp[i].name, description=ds.descriptions[i] or "",
                           tags=dict(ds.tags(i + 1)))
                  for i in range(ds.count))
    nodata = ds.nodatavals[0] if ds.nodatavals else None
    return GeoInfo(crs_wkt=_wkt(ds.crs), epsg=ds.crs.to_epsg() if ds.crs else None,
                   transform=None if identity or gcps else tuple(ds.transform.to_gdal()),
                   gcps=tuple(GCP(g.col, g.row, g.x, g.y, g.z or 0.0, g.id or "", g.info or "") for g in gcps),
                   gcp_crs_wkt=_wkt(gcp_crs) if gcps else None, raster_type=raster_type,
                   nodata=None if nodata is None else float(nodata), tags=tags, bands=bands)


def _wkt(crs) -> str | None:
    return crs.to_wkt(version="WKT2_2019") if crs else None


def write_tiff(pixels: np.ndarray, georef: GeoInfo | None = None, nodata=None, band_names=None,
               bit_depth: int | None = None, icc_profile: bytes | None = None, cog: bool = True) -> bytes:
    """A GeoTIFF of ``pixels`` ((H, W) or (H, W, bands)) with ``georef`` written back as GDAL writes it.

    ``nodata`` (the stream's: one value, or one per band: :func:`dataset_nodata`) wins over ``georef.nodata``;
    ``band_names`` fill descriptions ``georef`` lacks;
    ``bit_depth`` under the dtype's is GDAL's NBITS (plain TIFF only: the COG driver has no NBITS).
    """
    from rasterio.io import MemoryFile

    arr = pixels[..., None] if pixels.ndim == 2 else pixels
    h, w, count = arr.shape
    georef = georef or GeoInfo()
    nodata = dataset_nodata(nodata)
    if nodata is None:
        nodata = georef.nodata
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings(), MemoryFile() as src_mem:
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with src_mem.open(driver="GTiff", width=w, height=h, count=count, dtype=arr.dtype.name,
                          nodata=nodata, photometric=_photometric(arr, georef)) as ds:
            ds.write(np.moveaxis(arr, -1, 0))
            _set_metadata(ds, georef, band_names, icc_profile)
        with src_mem.open() as src, MemoryFile() as out:
            from rasterio.shutil import copy

            opts = dict(COG_OPTIONS) if cog else dict(PLAIN_OPTIONS)
            if not cog and bit_depth and bit_depth < 8 * arr.dtype.itemsize:
                opts.update(NBITS=str(int(bit_depth)), PREDICTOR="1")  # libtiff's predictor needs whole bytes
            copy(src, out.name, driver="COG" if cog else "GTiff", **opts)
            return out.read()


def dataset_nodata(nodata) -> float | None:
    """The one GDAL_NODATA value of ``nodata`` (a number, or one per band, None where a band has none).

    GDAL's GTiff (and COG) driver keeps ONE nodata value per dataset, read by GDAL as every band's (its
    per-band rule, which the codec's default band rule is). Per-band values that differ cannot be written:
    a ValueError says so rather than dropping them (a stream gets them only from an API caller)."""
    if nodata is None or not isinstance(nodata, (tuple, list)):
        return nodata
    values = {float(v) for v in nodata if v is not None}
    if len(values) > 1:
        raise ValueError(f"a GeoTIFF holds one nodata value for all bands; these bands have {sorted(values)} "
                         "(GDAL's GTiff driver keeps a single TIFFTAG_GDAL_NODATA)")
    if values and any(v is None for v in nodata):
        raise ValueError(f"a GeoTIFF's nodata value applies to every band; only some bands have one ({list(nodata)})")
    return values.pop() if values else None


def _photometric(arr: np.ndarray, georef: GeoInfo) -> str:
    """RGB for 8-bit 3/4-band images whose bands say red, green, blue (or say nothing: photos), else MINISBLACK."""
    interp = [b.colorinterp for b in georef.bands]
    rgb = arr.dtype == np.uint8 and arr.shape[2] in (3, 4) and (not interp or interp[:3] == ["red", "green", "blue"])
    return "RGB" if rgb else "MINISBLACK"


def _set_metadata(ds, georef: GeoInfo, band_names, icc_profile: bytes | None) -> None:
    from rasterio.control import GroundControlPoint
    from rasterio.crs import CRS
    from rasterio.enums import ColorInterp
    from rasterio.transform import Affine

    tags = dict(georef.tags)
    if georef.raster_type == "point":
        tags["AREA_OR_POINT"] = "Point"
    if tags:
        ds.update_tags(**tags)
    if georef.crs_wkt and not georef.gcps:
        ds.crs = CRS.from_wkt(georef.crs_wkt)
    if georef.transform is not None and not georef.gcps:
        ds.transform = Affine.from_gdal(*georef.transform)
    if georef.gcps:
        ds.gcps = ([GroundControlPoint(g.line, g.pixel, g.x, g.y, g.z, g.id or None, g.info or None)
                    for g in georef.gcps], CRS.from_wkt(georef.gcp_crs_wkt) if georef.gcp_crs_wkt else None)
    if icc_profile:
        ds.update_tags(ns="COLOR_PROFILE", SOURCE_ICC_PROFILE=base64.b64encode(icc_profile).decode())
    bands = georef.bands if len(georef.bands) == ds.count else ()
    for i, b in enumerate(bands):
        if b.description:
            ds.set_band_description(i + 1, b.description)
        if b.units:
            ds.set_band_unit(i + 1, b.units)
        if b.tags:
            ds.update_tags(i + 1, **b.tags)
    if bands:
        ds.scales = [b.scale for b in bands]
        ds.offsets = [b.offset for b in bands]
        ds.colorinterp = [ColorInterp[b.colorinterp] for b in bands]
    for i, name in enumerate(band_names or ()):
        if not (bands and bands[i].description):
            ds.set_band_description(i + 1, str(name))


def is_valid_cog(path: str | Path) -> tuple[bool, list[str]]:
    """rio-cogeo's verdict on a file (valid, errors): for tests and checks, rio-cogeo being a dev dependency."""
    from rio_cogeo.cogeo import cog_validate

    valid, errors, _ = cog_validate(str(path), quiet=True)
    return valid, errors


__all__ = ["read_georef", "write_tiff", "dataset_nodata", "is_valid_cog", "COG_OPTIONS", "PLAIN_OPTIONS"]
