"""Every Parquet schema the pipeline writes, and the builders of its rows.

    LISTING_SCHEMA  _runs/RUN/listing/*.parquet   what a run still has to archive (driver ─▶ fetch)
    ROW_SCHEMA      codec replica ─▶ driver       one row per input: the stats columns + the record-only ones
    RECORD_SCHEMA   records/run=RUN/*.parquet     the ``ok`` rows' bitstreams and source metadata
    STATS_SCHEMA    stats/run=RUN/*.parquet       every row, ok or error, without the bitstream
    RESULT_SCHEMA   _restore_log/ID.parquet       one row per restored key, ok or error

Rows are plain dicts keyed by these schemas' names (``pa.Table.from_pylist`` takes them as
they are); the builders below are the only places that fill them in, so a new column is
added here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa

LISTING_SCHEMA = pa.schema([("key", pa.string()), ("version", pa.string()), ("size", pa.int64()),
                            ("etag", pa.string()), ("mtime", pa.string())])

RECORD_SCHEMA = pa.schema([
    ("key", pa.string()), ("version", pa.string()), ("source_size", pa.int64()), ("etag", pa.string()),
    ("mtime", pa.string()), ("bitstream", pa.large_binary()), ("model_id", pa.string()),
    ("format_version", pa.int16()), ("width", pa.int32()), ("height", pa.int32()), ("channels", pa.int8()),
    ("geo", pa.string()), ("run_id", pa.string()),
    ("icc_profile", pa.binary()), ("exif", pa.binary()),
    # rasters (codec.images.imageio): sample type, band count, the nodata value and band descriptions of the source
    ("bands", pa.int16()), ("dtype", pa.string()), ("nodata", pa.float64()), ("band_names", pa.list_(pa.string())),
    # issue 27: the sha256 (hex) of the source bytes as fetched, for the STAC item's file:checksum (older records: null)
    ("source_sha256", pa.string()),
])

# per band of the source, over its valid samples (nodata left out): the STAC raster extension's statistics
BAND_STATS_TYPE = pa.struct([("minimum", pa.float64()), ("maximum", pa.float64()), ("mean", pa.float64()),
                             ("stddev", pa.float64()), ("valid_percent", pa.float64())])

STATS_SCHEMA = pa.schema([
    ("key", pa.string()), ("version", pa.string()), ("status", pa.string()), ("error_kind", pa.string()),
    ("error", pa.string()), ("original_bytes", pa.int64()), ("compressed_bytes", pa.int64()), ("bpp", pa.float64()),
    ("ratio", pa.float64()), ("psnr", pa.float64()), ("ms_ssim", pa.float64()), ("mode", pa.string()),
    ("target", pa.float64()), ("tile_quality_min", pa.float64()), ("tile_quality_mean", pa.float64()),
    ("tile_quality_max", pa.float64()), ("tiles", pa.int32()), ("tiles_missed", pa.int32()), ("width", pa.int32()),
    ("height", pa.int32()), ("channels", pa.int8()), ("model_id", pa.string()), ("encode_seconds", pa.float64()),
    ("replica", pa.string()), ("run_id", pa.string()), ("timestamp", pa.timestamp("us", tz="UTC")),
    # rasters: bits / (pixels × bands) and PSNR as codec.metrics defines them for any bit depth
    ("bands", pa.int16()), ("dtype", pa.string()), ("bits_per_sample", pa.float64()),
    ("nodata_fraction", pa.float64()), ("lossless_tiles", pa.int32()),
    # issue 23: which tool coded how many tiles (codec.tilecoders names), and per band the PSNR and the largest
    # |error| measured on the decoded record; psnr_peak says what each band's PSNR is judged against
    ("tile_coders", pa.map_(pa.string(), pa.int32())), ("band_psnr", pa.list_(pa.float64())),
    ("band_max_error", pa.list_(pa.int64())), ("psnr_peak", pa.string()),
    ("effort", pa.int8()),  # issue 24: the encode effort (latent refinement level) the job ran at
    # issue 23 item 4: the largest |decoded − source| over every valid sample (mode max_error: target is the bound E)
    ("max_abs_error", pa.int64()),
    ("band_stats", pa.list_(BAND_STATS_TYPE)),  # issue 27: per band of the source (older stats: null)
])

# what a replica emits per input: every stats column plus the record-only ones
ROW_SCHEMA = pa.schema(list(STATS_SCHEMA) + [f for f in RECORD_SCHEMA if f.name not in STATS_SCHEMA.names])

RESULT_SCHEMA = pa.schema([
    ("key", pa.string()), ("status", pa.string()), ("error", pa.string()), ("output", pa.string()),
    ("width", pa.int32()), ("height", pa.int32()), ("model_id", pa.string()), ("seconds", pa.float64()),
    ("restore_id", pa.string()),
])

MAX_ERROR_CHARS = 2000  # an error message is cut here: a stats row is not a log file


# --- the archival job ---------------------------------------------------------------------------
def listing_row(obj) -> dict:
    """A listed object (``storage.ObjectInfo``) as a listing shard's row."""
    return {"key": obj.key, "version": obj.version, "size": obj.size, "etag": obj.etag, "mtime": obj.mtime}


@dataclass(frozen=True)
class RowContext:
    """What every row of one replica says about how it was made (fixed for the replica's life)."""

    run_id: str
    mode: str  # target_psnr, quality, target_bpp, max_error or lossless
    target: float | None  # None when lossless; the bound E under max_error
    replica: str  # host:pid/gpuN
    effort: int = 0  # the job's encode effort

    @classmethod
    def of(cls, cfg, replica: str) -> "RowContext":
        if cfg.lossless:
            return cls(cfg.run_id, "lossless", None, replica, cfg.effort)
        mode, target = cfg.mode
        return cls(cfg.run_id, mode, float(target), replica, cfg.effort)


PSNR_PEAKS = {"photo": "bit_depth", "raster": "band_range"}  # psnr_peak: 255 for photos; a raster band's valid range


@dataclass(frozen=True)
class Verified:
    """Quality measured on the decoded record (verification): 8-bit images over the colour channels,
    rasters by codec.metrics.raster_psnr (no MS-SSIM); per band (colour channels of a photo) the PSNR
    and the largest absolute error."""

    psnr: float
    ms_ssim: float | None
    band_psnr: list[float] | None = None
    band_max_error: list[int] | None = None


def base_row(listed: dict, ctx: RowContext) -> dict:
    """A fetched listing row as an ``error`` row with nothing known yet: what every outcome starts from."""
    row = dict.fromkeys(ROW_SCHEMA.names)
    row.update(key=str(listed["key"]), version=listed["version"], source_size=int(listed["size"]),
               etag=listed["etag"], mtime=listed["mtime"], status="error", original_bytes=int(listed["size"]),
               mode=ctx.mode, target=ctx.target, replica=ctx.replica, run_id=ctx.run_id, effort=ctx.effort,
               timestamp=datetime.now(timezone.utc))
    return row


def error_row(row: dict, kind: str, message: str) -> dict:
    """``row`` as an error of ``kind`` (one of the ``error_kind`` values the README lists)."""
    row.update(status="error", error_kind=kind, error=message[:MAX_ERROR_CHARS])
    return row


def ok_row(row: dict, result, image, seconds: float, measured: Verified | None, source) -> dict:
    """``row`` filled in from a codec ``EncodeResult`` of ``image`` (a ``codec.images.imageio`` image) and
    ``source``, the pass over its samples (pipeline.stages.measure.SourcePass: band statistics, nodata share)."""
    q = np.array([tile.quality for tile in result.header.tiles])
    h, w = image.pixels.shape[:2]
    row.update(
        status="ok", bitstream=result.data, compressed_bytes=len(result.data), bpp=result.bpp,
        tile_quality_min=float(q.min()), tile_quality_mean=float(q.mean()), tile_quality_max=float(q.max()),
        tiles=len(q), tiles_missed=result.missed_tiles, width=w, height=h,
        channels=result.header.bands if result.header.bands <= 127 else None,  # int8: `bands` holds any count
        format_version=result.header.version, encode_seconds=seconds, psnr=result.psnr,
        model_id=result.header.model_id,  # what the stream says decodes it
        bands=result.header.bands, dtype=result.header.dtype, bits_per_sample=result.bits_per_sample,
        nodata_fraction=source.nodata_fraction, lossless_tiles=sum(t.lossless for t in result.header.tiles),
        nodata=image.nodata, band_names=list(image.band_names) if image.band_names else None,
    )
    row.update(tile_coders=tile_coder_counts(result.header),
               psnr_peak=PSNR_PEAKS["raster" if result.header.raster is not None else "photo"])
    if result.band_psnr is not None:
        row["band_psnr"] = [float(v) for v in result.band_psnr]
    if measured is not None:
        row.update(psnr=measured.psnr, ms_ssim=measured.ms_ssim)
        if measured.band_psnr is not None:
            row.update(band_psnr=measured.band_psnr, band_max_error=measured.band_max_error,
                       max_abs_error=max(measured.band_max_error, default=0))
    row.update(geo=image.geo, icc_profile=image.icc_profile, exif=image.exif, band_stats=source.band_statistics())
    row["ratio"] = row["original_bytes"] / row["compressed_bytes"]
    return row


def tile_coder_counts(header) -> list[tuple[str, int]]:
    """Tiles per tile coder (codec.tilecoders names, table order) as the ``tile_coders`` map column."""
    from codec import tilecoders

    ids = [t.coder for t in header.tiles]
    return [(tilecoders.coder(i).name, ids.count(i)) for i in sorted(set(ids))]


def nodata_rule(image):
    """The nodata rule the codec codes ``image`` with (codec.format.raster.sample_rule: GDAL's per-band rule
    unless the file asks for the per-pixel one), in sample values; None when it has no nodata."""
    from codec.format.raster import image_bands, sample_rule

    return sample_rule(image.nodata, image_bands(image.pixels), getattr(image, "nodata_mode", "band"))


# --- restores -----------------------------------------------------------------------------------
def restore_row(key: str, error: str | None = None, **fields) -> dict:
    """A restore result: ``ok`` unless ``error`` is given; ``fields`` fill in other RESULT_SCHEMA columns."""
    row = dict.fromkeys(RESULT_SCHEMA.names)
    row.update(key=key, status="error" if error else "ok", error=error, **fields)
    return row
