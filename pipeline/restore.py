"""Committed records → images, one key for a person or many keys as a Ray Data job.

    Archive.record_index (driver: latest committed record per key, no bitstreams)
        ─▶ ray.data.from_arrow ─▶ map_batches(RestoreReplica, ActorPool)   reads the bitstreams of its
                                                                           keys, verifies, decodes, writes
        ─▶ driver: progress, summary, OUTPUT/_restore_log/ID.parquet (one row per key, ok or error)

Every decode checks the stream's checksums first (``codec.decode``): a corrupt record
becomes an ``error`` row naming its key, never a wrong image. GeoTIFF inputs come back
as GeoTIFF with their georeferencing (shifted to the region's origin for a region).
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa

from .archive import Archive
from .config import RestoreJobConfig, StorageOptions
from .storage import filesystem

RESULT_SCHEMA = pa.schema([
    ("key", pa.string()), ("status", pa.string()), ("error", pa.string()), ("output", pa.string()),
    ("width", pa.int32()), ("height", pa.int32()), ("model_id", pa.string()), ("seconds", pa.float64()),
    ("restore_id", pa.string()),
])
SUFFIX = {"png": ".png", "tiff": ".tif"}


# --- pure functions over arrays and records ----------------------------------------------
def image_format(requested: str, geo: str | None) -> str:
    """``auto`` restores georeferenced records as GeoTIFF and the rest as PNG."""
    if requested != "auto":
        return requested
    return "tiff" if geo else "png"


class UnsafeKeyError(ValueError):
    """A key whose path would restore outside the output root."""


def output_name(key: str, fmt: str) -> str:
    """Where a key's image goes below the output prefix: its normalised path without scheme, with
    the format's suffix appended unless the name already ends in it (``x.png`` → ``x.png``,
    ``x.jpg`` → ``x.jpg.png``, so ``x.png`` and ``x.jpg`` stay apart).

    ``.`` and empty segments are dropped and ``..`` resolved; a key that climbs above the root
    raises :class:`UnsafeKeyError`.
    """
    parts: list[str] = []
    for seg in key.split("://", 1)[-1].replace("\\", "/").split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            if not parts:
                raise UnsafeKeyError(f"{key}: its path climbs above the output root; refusing to restore it")
            parts.pop()
            continue
        if "\x00" in seg:
            raise UnsafeKeyError(f"{key}: a NUL byte in the path")
        parts.append(seg)
    if not parts:
        raise UnsafeKeyError(f"{key}: no file name left after normalising the path")
    path = "/".join(parts)
    suffixes = (".tif", ".tiff") if fmt == "tiff" else (SUFFIX[fmt],)
    return path if path.lower().endswith(suffixes) else path + SUFFIX[fmt]


def output_names(keys: list[str], fmts: list[str]) -> list[str | UnsafeKeyError]:
    """:func:`output_name` for many keys, made distinct: keys that would land on one file
    (``/a/x.png`` and ``s3://a/x.png``; ``x.jpg`` and ``x.jpg.png``) each get ``~HASH`` before
    the suffix, except one whose own name is that file. Unsafe keys come back as the error."""
    import hashlib

    names: list = []
    for k, f in zip(keys, fmts):
        try:
            names.append(output_name(k, f))
        except UnsafeKeyError as exc:
            names.append(exc)
    groups: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        if isinstance(n, str):
            groups.setdefault(n, []).append(i)
    for name, members in groups.items():
        if len(members) < 2:
            continue
        keep = next((i for i in members if keys[i].split("://", 1)[-1].strip("/") == name), None)
        for i in members:
            if i != keep:
                stem, dot, ext = name.rpartition(".")
                names[i] = f"{stem}~{hashlib.sha1(keys[i].encode()).hexdigest()[:8]}.{ext}"
    return names


def decode_record(record: dict, region: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """The image (or the region's crop) of one record; only the tiles covering a region are decoded."""
    import codec

    data = record["bitstream"]
    if region is None:
        return codec.decode(data)
    header = codec.read_header(data)
    x, y, w, h = region
    if x >= header.width or y >= header.height:
        raise ValueError(f"region {region} lies outside the {header.width}×{header.height} image")
    # clip to the image: a region that runs over the edge gives what is there
    return codec.decode_region(data, (x, y, min(w, header.width - x), min(h, header.height - y)), header=header)


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


GEO_TAG_TYPES = {  # tag → (code, TIFF type)
    "ModelPixelScale": (33550, 12), "ModelTiepoint": (33922, 12), "ModelTransformation": (34264, 12),
    "GeoKeyDirectory": (34735, 3), "GeoDoubleParams": (34736, 12), "GeoAsciiParams": (34737, 2),
    "GDAL_METADATA": (42112, 2), "GDAL_NODATA": (42113, 2),
}


def encode_image(arr: np.ndarray, fmt: str, geo_tags: dict | None = None, icc_profile: bytes | None = None,
                 exif: bytes | None = None) -> bytes:
    """PNG via Pillow, or (Geo)TIFF via tifffile with the georeferencing tags written back.

    The source's ICC profile and raw EXIF (kept in the record) are written back too.
    """
    buf = io.BytesIO()
    if fmt == "png":
        from PIL import Image

        extra = {k: v for k, v in (("icc_profile", icc_profile), ("exif", exif)) if v}
        Image.fromarray(arr).save(buf, format="PNG", **extra)
    elif fmt == "tiff":
        import tifffile

        extratags = [(34675, 7, len(icc_profile), icc_profile, True)] if icc_profile else []
        orientation = _exif_orientation(exif)
        if orientation:
            extratags.append((274, 3, 1, orientation, True))
        for name, value in (geo_tags or {}).items():
            code, dtype = GEO_TAG_TYPES[name]
            if dtype == 2:
                value = str(value)
                extratags.append((code, dtype, 0, value, True))
            else:
                value = [value] if np.isscalar(value) else list(value)
                extratags.append((code, dtype, len(value), value, True))
        photometric = "rgb" if arr.ndim == 3 and arr.shape[2] in (3, 4) else "minisblack"
        extrasamples = ["unassalpha"] if arr.ndim == 3 and arr.shape[2] == 4 else None
        tifffile.imwrite(buf, arr, photometric=photometric, extrasamples=extrasamples, extratags=extratags,
                         compression="zlib")
    else:
        raise ValueError(f"unknown image format {fmt!r} (png or tiff)")
    return buf.getvalue()


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


def restore_record(record: dict, fs, out_path: str, region=None, fmt: str = "auto",
                   model_registry: str | None = None, storage: StorageOptions | None = None,
                   installed: set | None = None) -> dict:
    """Decode one record and write its image to ``out_path``; returns a result row (error rows instead of raising).

    ``installed`` caches the model ids already installed in this process.
    """
    from .model_store import install_model
    from .storage import put_atomic

    t0 = time.time()
    row = {"key": record["key"], "status": "ok", "error": None, "output": None, "width": None, "height": None,
           "model_id": record.get("model_id"), "seconds": None}
    try:
        if installed is None or record["model_id"] not in installed:
            install_model(record["model_id"], model_registry, storage)  # whatever model the record names
            if installed is not None:
                installed.add(record["model_id"])
        arr = decode_record(record, region)
        kind = image_format(fmt, record.get("geo"))
        data = encode_image(arr, kind, shifted_geo(record.get("geo"), region) if kind == "tiff" else None,
                            icc_profile=record.get("icc_profile"), exif=record.get("exif"))
        put_atomic(fs, out_path, data)
        row.update(output=out_path, width=arr.shape[1], height=arr.shape[0])
    except BaseException as exc:  # noqa: BLE001 — corrupt record, unknown model, bad region, write failure,
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):  # a panic in native code: name the key, go on
            raise
        row.update(status="error", error=f"{record['key']}: {type(exc).__name__}: {exc}")
    row["seconds"] = time.time() - t0
    return row


def restore_one(archive_url: str, key: str, out: str, region=None, fmt: str = "auto",
                storage: StorageOptions | None = None, model_registry: str | None = None) -> dict:
    """One key, no Ray: find its latest committed record without scanning the archive, decode, write."""
    archive = Archive(archive_url, storage)
    record = archive.find_record(key)
    if record is None:
        return {"key": key, "status": "error", "error": f"{key}: no committed record in {archive_url}",
                "output": None, "width": None, "height": None, "model_id": None, "seconds": 0.0}
    fs, path = filesystem(out, storage)
    return restore_record(record, fs, path, region, fmt, model_registry, storage)


# --- the Ray Data job ------------------------------------------------------------------------
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
        self.installed: set[str] = set()

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = []
        by_file: dict[str, list[str]] = {}
        outputs = dict(zip(batch["key"].to_pylist(), batch["output"].to_pylist()))
        for key, file in zip(batch["key"].to_pylist(), batch["file"].to_pylist()):
            by_file.setdefault(file, []).append(key)
        for file, keys in by_file.items():
            try:
                found = {r["key"]: r for r in self.archive.read_records(file, keys).to_pylist()}
            except Exception as exc:
                found, read_error = {}, f"{type(exc).__name__}: {exc}"
            else:
                read_error = "record not found in its committed file"
            for key in keys:
                if key not in found:
                    rows.append({"key": key, "status": "error", "error": f"{key}: {read_error}"})
                    continue
                record = found[key]
                fmt = image_format(self.cfg.format, record.get("geo"))
                path = f"{self.out_root}/{outputs[key]}"
                rows.append(restore_record(record, self.out_fs, path, self.cfg.region, fmt, self.cfg.model_registry,
                                           self.cfg.storage, self.installed))
        for r in rows:
            r["restore_id"] = self.cfg.restore_id
        return pa.Table.from_pylist(rows, schema=RESULT_SCHEMA)


@dataclass
class RestoreSummary:
    restore_id: str
    selected: int = 0
    ok: int = 0
    errors: int = 0
    pixels: int = 0
    seconds: float = 0.0
    log: str = ""
    error_rows: list = field(default_factory=list)

    def table(self) -> str:
        s = max(self.seconds, 1e-9)
        lines = [f"restore {self.restore_id}",
                 f"  images      {self.selected} selected: {self.ok} restored, {self.errors} errors",
                 f"  throughput  {self.ok / s:.2f} images/s, {self.pixels / 1e6 / s:.2f} MP/s over {self.seconds:.1f} s",
                 f"  log         {self.log}"]
        lines += [f"  error       {r['error']}" for r in self.error_rows[:20]]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return asdict(self)


def run_restore(cfg: RestoreJobConfig, progress: bool = True) -> RestoreSummary:
    import ray
    from tqdm import tqdm

    from .run import replica_plan

    t0 = time.time()
    summary = RestoreSummary(cfg.restore_id)
    archive = Archive(cfg.archive, cfg.storage)
    index = archive.record_index(keys=cfg.keys, prefix=cfg.prefix)
    results: list[dict] = []
    if cfg.keys:  # a key asked for that has no committed record is an error row, not silence
        have = set(index["key"].to_pylist())
        results += [{"key": k, "status": "error", "error": f"{k}: no committed record in {cfg.archive}",
                     "restore_id": cfg.restore_id} for k in cfg.keys if k not in have]
    # every output name is chosen here, for the whole selection, so that no two keys share a file
    names = output_names(index["key"].to_pylist(),
                         [image_format(cfg.format, g) for g in index["geo"].to_pylist()])
    unsafe = [i for i, n in enumerate(names) if isinstance(n, Exception)]
    results += [{"key": index["key"][i].as_py(), "status": "error", "error": str(names[i]),
                 "restore_id": cfg.restore_id} for i in unsafe]
    summary.selected = index.num_rows + len(results) - len(unsafe)
    if unsafe:
        keep = pa.array([not isinstance(n, Exception) for n in names])
        index = index.filter(keep)
        names = [n for n in names if not isinstance(n, Exception)]
    index = index.append_column("output", pa.array(names, pa.string()))

    if index.num_rows:
        if not ray.is_initialized():
            ray.init(log_to_driver=False, include_dashboard=False)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.wait_for_min_actors_s = cfg.replica_start_timeout_s
        n, resources, threads = replica_plan(cfg)
        ds = ray.data.from_arrow(index.select(["key", "file", "output"])).repartition(
            target_num_rows_per_block=cfg.batch_size)
        ds = ds.map_batches(
            RestoreReplica, fn_constructor_kwargs={"config": cfg, "cpu_threads": threads}, batch_size=cfg.batch_size,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(min_size=n, max_size=n, max_tasks_in_flight_per_actor=2), **resources)
        with tqdm(total=index.num_rows, desc="restore", unit="img", disable=not progress, mininterval=1) as bar:
            for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                results += batch.to_pylist()
                bar.update(batch.num_rows)

    for r in results:
        if r["status"] == "ok":
            summary.ok += 1
            summary.pixels += r["width"] * r["height"]
        else:
            summary.errors += 1
            summary.error_rows.append(r)
    summary.seconds = time.time() - t0
    out = Archive(cfg.output, cfg.storage)
    summary.log = f"{out.url}/_restore_log/{cfg.restore_id}.parquet"
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(results, schema=RESULT_SCHEMA), buf)
    out.put(out.path("_restore_log", f"{cfg.restore_id}.parquet"), buf.getvalue())
    return summary


__all__ = ["run_restore", "restore_one", "restore_record", "decode_record", "encode_image", "shifted_geo",
           "output_name", "image_format", "RestoreReplica", "RestoreSummary", "RESULT_SCHEMA"]
