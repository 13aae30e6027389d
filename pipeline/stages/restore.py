"""The restore stage: committed records → image files, on restore replicas.

    batch of (key, records file, output name) ─▶ read those records' rows (row-group statistics
        skip the rest of the file) ─▶ per key: load the model it names, check and decode the
        stream, write PNG or (Geo)TIFF ─▶ one result row per key, ok or error

Every decode checks the stream's checksums first (``codec.decode``): a corrupt record
becomes an ``error`` row naming its key, never a wrong image. GeoTIFF inputs come back
as Cloud Optimized GeoTIFFs (``plain_tiff``: a plain tiled GeoTIFF) with the georeferencing the stream
carries (its v4 block, codec.format.georef; shifted to the region's origin for a region). Records from before
the block existed fall back to the record's GeoTIFF tags, read through GDAL the same way.
"""

from __future__ import annotations

import io
import json
import time

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from ..archive import Archive
from ..config import RestoreJobConfig
from ..model_store import model_resolver
from ..schema import RESULT_SCHEMA, restore_row
from ..storage import filesystem, put_atomic

if TYPE_CHECKING:
    from codec.registry import ModelResolver


# --- pure functions over arrays and records ----------------------------------------------
def image_format(requested: str, geo: str | None, dtype: str | None = None, bands: int | None = None) -> str:
    """``auto`` restores georeferenced records and rasters PNG cannot hold (16-bit, band counts other
    than 1, 3 and 4) as (Geo)TIFF and the rest as PNG.

    PNG asked for a raster it cannot hold is refused here, before anything is decoded.
    """
    from codec.format.raster import is_raster

    raster = is_raster(dtype or "uint8", 3 if bands is None else bands)  # THE rule, over what a record says
    if requested == "auto":
        return "tiff" if geo or raster else "png"
    if requested == "png" and raster:
        raise ValueError(f"PNG cannot hold a {bands}-band {dtype} raster: restore it as tiff (or auto)")
    return requested


def decode_record(record: dict, region: tuple[int, int, int, int] | None = None, model=None) -> np.ndarray:
    """The image (or the region's crop) of one record; only the tiles covering a region are decoded.

    ``model``: the record's model, loaded (default: a built-in model named by the stream)."""
    import codec

    data = record["bitstream"]
    if region is None:
        return codec.decode(data, model)
    header = codec.read_header(data)
    x, y, w, h = region
    if x >= header.width or y >= header.height:
        raise ValueError(f"region {region} lies outside the {header.width}×{header.height} image")
    # clip to the image: a region that runs over the edge gives what is there
    return codec.decode_region(data, (x, y, min(w, header.width - x), min(h, header.height - y)), model,
                               header=header)


def shifted_geo(geo: str | None, region: tuple[int, int, int, int] | None) -> dict | None:
    """The record's GeoTIFF tags, with the raster origin moved to the region's corner."""
    if not geo:
        return None
    info = json.loads(geo)
    tags = dict(info.get("tags", {}))
    if region:
        x0, y0 = region[:2]
        if "ModelTransformation" in tags:
            m = list(tags["ModelTransformation"])
            m[3] += m[0] * x0 + m[1] * y0
            m[7] += m[4] * x0 + m[5] * y0
            tags["ModelTransformation"] = m
        elif "ModelTiepoint" in tags and "ModelPixelScale" in tags:
            tp, sc = list(tags["ModelTiepoint"]), tags["ModelPixelScale"]
            tags["ModelTiepoint"] = [0.0, 0.0, tp[2], tp[3] + (x0 - tp[0]) * sc[0], tp[4] - (y0 - tp[1]) * sc[1], tp[5]]
    return tags


def record_georef(record: dict, region: tuple[int, int, int, int] | None):
    """The georeferencing a restore writes: the stream's block (v4), or for an older record its GeoTIFF tags
    as GDAL reads them; moved to the region's corner. None when the record has neither."""
    import codec

    georef = codec.read_header(record["bitstream"]).georef
    if georef is not None:
        return georef.shifted(*region[:2]) if region else georef
    tags = shifted_geo(record.get("geo"), region)
    if not tags:
        return None
    from codec.images.gdalio import read_georef
    from codec.images.imageio import write_geotiff

    return read_georef(write_geotiff(np.zeros((1, 1), np.uint8), tags))  # a 1-pixel TIFF carrying the tags


def encode_image(arr: np.ndarray, fmt: str, georef=None, icc_profile: bytes | None = None,
                 exif: bytes | None = None, nodata: float | None = None, band_names=None, cog: bool = True) -> bytes:
    """PNG via Pillow, or GeoTIFF via GDAL (``codec.images.gdalio.write_tiff``: a COG unless ``cog`` is False;
    dtype, band order, ``georef`` (a codec.format.georef.GeoInfo), nodata and band descriptions).

    The source's ICC profile and raw EXIF (kept in the record) are written back too (a TIFF keeps
    the EXIF orientation only). A TIFF with an EXIF orientation other than 1 is written by tifffile
    (``write_geotiff``): GDAL cannot write the Orientation tag, and a COG has no place for it.
    """
    if fmt == "png":
        from PIL import Image

        buf = io.BytesIO()
        extra = {k: v for k, v in (("icc_profile", icc_profile), ("exif", exif)) if v}
        Image.fromarray(arr).save(buf, format="PNG", **extra)
        return buf.getvalue()
    if fmt == "tiff":
        from codec.images.gdalio import write_tiff
        from codec.images.imageio import write_geotiff

        orientation = _exif_orientation(exif)
        if orientation and georef is None:
            return write_geotiff(arr, None, nodata=nodata, band_names=band_names, icc_profile=icc_profile,
                                 extratags=[(274, 3, 1, orientation, True)])
        return write_tiff(arr, georef, nodata=nodata, band_names=band_names, icc_profile=icc_profile, cog=cog)
    raise ValueError(f"unknown image format {fmt!r} (png or tiff)")


def _exif_orientation(exif: bytes | None) -> int | None:
    """The EXIF Orientation tag (TIFF keeps only that of the source's EXIF)."""
    if not exif:
        return None
    from PIL import Image

    tags = Image.Exif()
    try:
        tags.load(exif)
    except Exception:
        return None
    v = tags.get(274)
    return int(v) if v and v != 1 else None


# --- one record, and the replica that restores a batch of them --------------------------------
def restore_record(record: dict, fs, out_path: str, region=None, fmt: str = "auto",
                   models: "ModelResolver | None" = None, cog: bool = True) -> dict:
    """Decode one record and write its image to ``out_path``; returns a result row (error rows instead of raising).

    ``models`` finds the model the record names (built-in ones only when None); it caches loads.
    """
    from codec.registry import ModelResolver

    t0 = time.time()
    row = restore_row(record["key"], model_id=record.get("model_id"))
    try:
        model = (models or ModelResolver()).load(record["model_id"])  # whatever model the record names
        arr = decode_record(record, region, model)
        kind = image_format(fmt, record.get("geo"), record.get("dtype"), record.get("bands"))
        data = encode_image(arr, kind, record_georef(record, region) if kind == "tiff" else None,
                            icc_profile=record.get("icc_profile"), exif=record.get("exif"),
                            nodata=record.get("nodata"), band_names=record.get("band_names"), cog=cog)
        put_atomic(fs, out_path, data)
        row.update(output=out_path, width=arr.shape[1], height=arr.shape[0])
    except BaseException as exc:  # noqa: BLE001 — corrupt record, unknown model, bad region, write failure,
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):  # a panic in native code: name the key, go on
            raise
        row.update(status="error", error=f"{record['key']}: {type(exc).__name__}: {exc}")
    row["seconds"] = time.time() - t0
    return row


class RestoreReplica:
    """A restore replica: reads the bitstreams of its batch's keys and writes their images.

    Models load on first use (records may name several) and stay cached for the replica's life.
    """

    def __init__(self, config: RestoreJobConfig, cpu_threads: int | None = None):
        import torch

        self.cfg = config
        if cpu_threads:
            torch.set_num_threads(cpu_threads)
        self.archive = Archive(config.archive, config.storage)
        self.out_fs, self.out_root = filesystem(config.output, config.storage)
        self.out_root = self.out_root.rstrip("/")
        self.models = model_resolver(config.model_registry, config.storage)

    def __call__(self, batch: pa.Table) -> pa.Table:
        """One result row per key of ``batch`` (columns key, file, output), whatever happens to any one."""
        outputs = dict(zip(batch["key"].to_pylist(), batch["output"].to_pylist()))
        by_file: dict[str, list[str]] = {}
        for key, file in zip(batch["key"].to_pylist(), batch["file"].to_pylist()):
            by_file.setdefault(file, []).append(key)
        rows = [row for file, keys in by_file.items() for row in self._restore_file(file, keys, outputs)]
        for r in rows:
            r["restore_id"] = self.cfg.restore_id
        return pa.Table.from_pylist(rows, schema=RESULT_SCHEMA)

    def _restore_file(self, file: str, keys: list[str], outputs: dict[str, str]) -> list[dict]:
        """The keys whose latest records one committed file holds: one read of the file, then each key."""
        try:
            found = {r["key"]: r for r in self.archive.read_records(file, keys).to_pylist()}
        except Exception as exc:
            found, read_error = {}, f"{type(exc).__name__}: {exc}"
        else:
            read_error = "record not found in its committed file"
        rows = []
        for key in keys:
            if key not in found:
                rows.append(restore_row(key, f"{key}: {read_error}"))
                continue
            record = found[key]
            fmt = self.cfg.format  # restore_record resolves auto (and refuses png for rasters) per record
            rows.append(restore_record(record, self.out_fs, f"{self.out_root}/{outputs[key]}", self.cfg.region, fmt,
                                       self.models, cog=not self.cfg.plain_tiff))
        return rows


__all__ = ["RestoreReplica", "restore_record", "decode_record", "encode_image", "shifted_geo", "record_georef",
           "image_format"]
