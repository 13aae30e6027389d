"""The restore job's driver: committed records → images, one key for a person or many keys as a Ray Data job.

    Archive.record_index (driver: latest committed record per key, no bitstreams)
        ─▶ output_names: every key's output file, chosen here for the whole selection
        ─▶ ray.data.from_arrow ─▶ driver.actor_map(stages.restore.RestoreReplica)   reads the bitstreams
                                                      of its keys, verifies, decodes, writes the images
        ─▶ driver.results: progress, RestoreSummary, OUTPUT/_restore_log/ID.parquet (one row per key)

``restore_one`` is the same for one key without Ray: the record is found without scanning the archive;
``restore_ref`` for one record named by its href (a STAC item's record asset, pipeline.record_ref).
"""

from __future__ import annotations

import io
import time
from dataclasses import asdict, dataclass, field

import pyarrow as pa

from . import driver
from .archive import Archive
from .config import RestoreJobConfig, StorageOptions
from .model_store import model_resolver
from .schema import RESULT_SCHEMA, restore_row
from .stages.restore import image_format, restore_record
from .storage import filesystem

RESTORE_MAX_RESTARTS = 20  # per restore replica, before the job fails

SUFFIX = {"png": ".png", "tiff": ".tif"}


# --- where each key's image goes --------------------------------------------------------------
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


@dataclass
class RestoreSummary:
    """What a restore did: its table is what jobs/restore.py prints."""

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

    def add(self, row: dict) -> None:
        """Count one result row (ok or error)."""
        if row["status"] == "ok":
            self.ok += 1
            self.pixels += row["width"] * row["height"]
        else:
            self.errors += 1
            self.error_rows.append(row)

    def to_dict(self) -> dict:
        return asdict(self)


def restore_one(archive_url: str, key: str, out: str, region=None, fmt: str = "auto",
                storage: StorageOptions | None = None, model_registry: str | None = None, cog: bool = True) -> dict:
    """One key, no Ray: find its latest committed record without scanning the archive, decode, write."""
    archive = Archive(archive_url, storage)
    record = archive.find_record(key)
    if record is None:
        return restore_row(key, f"{key}: no committed record in {archive_url}", seconds=0.0)
    fs, path = filesystem(out, storage)
    return restore_record(record, fs, path, region, fmt, model_resolver(model_registry, storage), cog=cog)


def restore_ref(href: str, out: str, region=None, fmt: str = "auto", storage: StorageOptions | None = None,
                model_registry: str | None = None, cog: bool = True) -> dict:
    """Exactly the record a STAC item's record asset names (:mod:`pipeline.record_ref`), no Ray, no scan."""
    from .record_ref import RecordNotFoundError, RecordRef, read_record

    try:
        ref = RecordRef.parse(href)
        record = read_record(ref, storage)
    except (ValueError, RecordNotFoundError) as exc:
        return restore_row(href, str(exc), seconds=0.0)
    fs, path = filesystem(out, storage)
    return restore_record(record, fs, path, region, fmt, model_resolver(model_registry, storage), cog=cog)


def run_restore(cfg: RestoreJobConfig, progress: bool = True) -> RestoreSummary:
    """Restore the selected keys (``cfg.keys``, ``cfg.prefix`` or all) below ``cfg.output``; every key gets a result row."""
    t0 = time.time()
    summary = RestoreSummary(cfg.restore_id)
    index, results = _selection(cfg)
    summary.selected = index.num_rows + len(results)
    if index.num_rows:
        driver.local_ray_on_loopback()
        import ray

        from .stages.restore import RestoreReplica

        driver.start(cfg.replica_start_timeout_s)
        ds = ray.data.from_arrow(index.select(["key", "file", "output"])).repartition(
            target_num_rows_per_block=cfg.batch_size)
        # bounded like the compress job's replicas (a record that kills its replica 3 times fails the
        # job rather than looping); rows of a retried batch are counted once
        ds = driver.actor_map(ds, RestoreReplica, cfg, max_restarts=RESTORE_MAX_RESTARTS, max_task_retries=3)
        results += driver.results(ds, index.num_rows, "restore", progress, unique="key")
    for r in results:
        summary.add(r)
    summary.seconds = time.time() - t0
    _write_log(cfg, results, summary)
    return summary


def _selection(cfg: RestoreJobConfig) -> tuple[pa.Table, list[dict]]:
    """(the latest committed record of each selected key with its output name, error rows of keys that have none).

    A key asked for that has no committed record, or whose path is unsafe, is an error row, not silence.
    """
    index = Archive(cfg.archive, cfg.storage).record_index(keys=cfg.keys, prefix=cfg.prefix)
    errors: list[dict] = []
    if cfg.keys:
        have = set(index["key"].to_pylist())
        errors += [restore_row(k, f"{k}: no committed record in {cfg.archive}", restore_id=cfg.restore_id)
                   for k in cfg.keys if k not in have]
    keys = index["key"].to_pylist()
    formats = [_format_of(cfg.format, k, r) for k, r in zip(keys, index.select(["geo", "dtype", "bands"]).to_pylist())]
    names = output_names(keys, [f if isinstance(f, str) else "tiff" for f in formats])
    names = [f if isinstance(f, Exception) else n for n, f in zip(names, formats)]  # a refused format is the error
    safe = [not isinstance(n, Exception) for n in names]
    errors += [restore_row(index["key"][i].as_py(), str(n), restore_id=cfg.restore_id)
               for i, n in enumerate(names) if not safe[i]]
    if not all(safe):
        index = index.filter(pa.array(safe))
        names = [n for n in names if not isinstance(n, Exception)]
    return index.append_column("output", pa.array(names, pa.string())), errors


def _format_of(requested: str, key: str, record: dict) -> str | ValueError:
    """The file format a record restores as, or why it cannot (PNG asked for a 16-bit or multi-band raster)."""
    try:
        return image_format(requested, record["geo"], record["dtype"], record["bands"])
    except ValueError as exc:
        return ValueError(f"{key}: {exc}")


def _write_log(cfg: RestoreJobConfig, results: list[dict], summary: RestoreSummary) -> None:
    """One row per key, ok or error, as OUTPUT/_restore_log/ID.parquet."""
    import pyarrow.parquet as pq

    out = Archive(cfg.output, cfg.storage)
    summary.log = out.restore_log_url(cfg.restore_id)
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(results, schema=RESULT_SCHEMA), buf)
    out.put(out.restore_log(cfg.restore_id), buf.getvalue())


__all__ = ["run_restore", "restore_one", "restore_ref", "output_name", "output_names", "UnsafeKeyError", "RestoreSummary"]
