"""The archive layout and its commit protocol.

    OUTPUT/records/run=RUN/part-SEQ.parquet     one row per image: the bitstream and its source
    OUTPUT/stats/run=RUN/part-SEQ.parquet       one row per input, ok or error
    OUTPUT/_manifests/RUN-SEQ.json              written last: the commit point of a segment

A run commits in segments. Each segment's two Parquet files are written first and
its manifest last (one PUT, atomic on object stores), so a segment is either
committed (manifest present) or not. Files that no manifest names are leftovers of a
run that died mid-segment: ``recover()`` deletes them before the next run, whose
listing then re-processes their keys. Readers that must be exact read through the
manifests (``committed_dataset``); plain ``pyarrow.dataset``/DuckDB globs over
``records/`` and ``stats/`` see the same rows except in the moments between a crash
and the next run's recovery.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq

from .config import StorageOptions
from .storage import filesystem, to_url

RECORDS, STATS, MANIFESTS = "records", "stats", "_manifests"

RECORD_SCHEMA = pa.schema([
    ("key", pa.string()), ("version", pa.string()), ("source_size", pa.int64()), ("etag", pa.string()),
    ("mtime", pa.string()), ("bitstream", pa.large_binary()), ("model_id", pa.string()),
    ("format_version", pa.int16()), ("width", pa.int32()), ("height", pa.int32()), ("channels", pa.int8()),
    ("geo", pa.string()), ("run_id", pa.string()),
])

STATS_SCHEMA = pa.schema([
    ("key", pa.string()), ("version", pa.string()), ("status", pa.string()), ("error_kind", pa.string()),
    ("error", pa.string()), ("original_bytes", pa.int64()), ("compressed_bytes", pa.int64()), ("bpp", pa.float64()),
    ("ratio", pa.float64()), ("psnr", pa.float64()), ("ms_ssim", pa.float64()), ("mode", pa.string()),
    ("target", pa.float64()), ("tile_quality_min", pa.float64()), ("tile_quality_mean", pa.float64()),
    ("tile_quality_max", pa.float64()), ("tiles", pa.int32()), ("tiles_missed", pa.int32()), ("width", pa.int32()),
    ("height", pa.int32()), ("channels", pa.int8()), ("model_id", pa.string()), ("encode_seconds", pa.float64()),
    ("replica", pa.string()), ("run_id", pa.string()), ("timestamp", pa.timestamp("us", tz="UTC")),
])

# what a replica emits per input: every stats column plus the record-only ones
ROW_SCHEMA = pa.schema(list(STATS_SCHEMA) + [f for f in RECORD_SCHEMA if f.name not in STATS_SCHEMA.names])


@dataclass
class Segment:
    run_id: str
    seq: int
    records: str
    stats: str
    rows: int


class Archive:
    """An archive under an output URL (any fsspec filesystem)."""

    def __init__(self, url: str, storage: StorageOptions | None = None):
        self.url = url.rstrip("/")
        self.fs, self.root = filesystem(url, storage)
        self.root = self.root.rstrip("/")

    def _path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    # --- reading -------------------------------------------------------------------------
    def manifests(self) -> list[dict]:
        d = self._path(MANIFESTS)
        try:
            names = sorted(self.fs.ls(d, detail=False))
        except FileNotFoundError:
            return []
        out = []
        for n in names:
            if n.endswith(".json"):
                out.append(json.loads(self.fs.cat_file(n)))
        return out

    def committed_files(self, kind: str) -> list[str]:
        return [m["files"][kind] for m in self.manifests()]

    def committed_table(self, kind: str, columns: list[str] | None = None, filter=None) -> pa.Table:
        """The committed rows of ``records`` or ``stats`` (exactly the manifests' files)."""
        schema = RECORD_SCHEMA if kind == RECORDS else STATS_SCHEMA
        files = self.committed_files(kind)
        if not files:
            return schema.empty_table().select(columns) if columns else schema.empty_table()
        import pyarrow.dataset as ds

        dset = ds.dataset(files, schema=schema, format="parquet", filesystem=self.fs)
        return dset.to_table(columns=columns, filter=filter)

    def committed_versions(self) -> dict[str, tuple[str, str]]:
        """key → (version, status) of the latest committed stats row of every key."""
        t = self.committed_table(STATS, ["key", "version", "status", "run_id"])
        out: dict[str, tuple[str, str]] = {}
        for k, v, s in zip(t["key"].to_pylist(), t["version"].to_pylist(), t["status"].to_pylist()):
            out[k] = (v, s)  # segments are read in commit order, so later rows win
        return out

    def record_index(self, keys: list[str] | None = None, prefix: str | None = None) -> pa.Table:
        """The latest committed record of each key (no bitstreams), with the file that holds it.

        Columns: key, version, model_id, width, height, channels, geo, run_id, file.
        """
        import pyarrow.compute as pc
        import pyarrow.dataset as ds

        cols = ["key", "version", "model_id", "width", "height", "channels", "geo", "run_id"]
        wanted = set(keys) if keys is not None else None
        latest: dict[str, dict] = {}
        for m in self.manifests():  # commit order: a later record of a key replaces an earlier one
            lo_hi = m.get("record_keys")
            if not m.get("records") or (wanted is not None and lo_hi and not any(lo_hi[0] <= k <= lo_hi[1] for k in wanted)):
                continue
            filt = None
            if wanted is not None:
                filt = pc.field("key").isin(sorted(wanted))
            elif prefix:
                filt = pc.starts_with(pc.field("key"), prefix)
            f = m["files"][RECORDS]
            t = ds.dataset(f, schema=RECORD_SCHEMA, format="parquet", filesystem=self.fs).to_table(columns=cols, filter=filt)
            for row in t.to_pylist():
                latest[row["key"]] = {**row, "file": f}
        rows = [latest[k] for k in sorted(latest)]
        schema = pa.schema([RECORD_SCHEMA.field(c) for c in cols] + [("file", pa.string())])
        return pa.Table.from_pylist(rows, schema=schema)

    def read_records(self, file: str, keys: list[str], columns: list[str] | None = None) -> pa.Table:
        """Rows of ``keys`` from one records file; row-group statistics skip the rest of the file."""
        import pyarrow.compute as pc
        import pyarrow.dataset as ds

        dset = ds.dataset(file, schema=RECORD_SCHEMA, format="parquet", filesystem=self.fs)
        return dset.to_table(columns=columns, filter=pc.field("key").isin(keys))

    def find_record(self, key: str) -> dict | None:
        """The latest committed record of one key, bitstream included, or None.

        Walks the manifests newest first; their key ranges pick the segments that can
        hold the key, and of such a file only the row groups whose statistics admit it
        are read, so one image comes back without scanning the archive.
        """
        for m in reversed(self.manifests()):
            lo_hi = m.get("record_keys")
            if not m.get("records") or (lo_hi and not lo_hi[0] <= key <= lo_hi[1]):
                continue
            rows = self.read_records(m["files"][RECORDS], [key]).to_pylist()
            if rows:
                return {**rows[-1], "file": m["files"][RECORDS]}
        return None

    # --- writing -------------------------------------------------------------------------
    def commit_segment(self, run_id: str, seq: int, records: pa.Table, stats: pa.Table) -> Segment:
        """Write a segment's files sorted by key (so row-group statistics find one key fast), then its manifest."""
        name = f"part-{seq:06d}.parquet"
        rec_path = self._path(RECORDS, f"run={run_id}", name)
        st_path = self._path(STATS, f"run={run_id}", name)
        records = records.cast(RECORD_SCHEMA).sort_by("key")
        self._write_parquet(rec_path, records)
        self._write_parquet(st_path, stats.cast(STATS_SCHEMA).sort_by("key"))
        keys = records["key"]
        manifest = {
            "run_id": run_id, "segment": seq, "committed_at": datetime.now(timezone.utc).isoformat(),
            "rows": stats.num_rows, "records": records.num_rows,
            "files": {RECORDS: rec_path, STATS: st_path},
            "record_keys": [keys[0].as_py(), keys[-1].as_py()] if len(keys) else None,
        }
        self.put(self._path(MANIFESTS, f"{run_id}-{seq:06d}.json"), json.dumps(manifest, indent=1).encode())
        return Segment(run_id, seq, rec_path, st_path, stats.num_rows)

    def _write_parquet(self, path: str, table: pa.Table) -> None:
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd", row_group_size=64)
        self.put(path, buf.getvalue())

    def put(self, path: str, data: bytes) -> None:
        """Write one object in one PUT (object stores make it appear atomically)."""
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        self.fs.pipe_file(path, data)

    def recover(self) -> list[str]:
        """Delete data files that no manifest names (segments that never committed)."""
        committed = {f.rstrip("/") for m in self.manifests() for f in m["files"].values()}
        orphans = []
        for kind in (RECORDS, STATS):
            base = self._path(kind)
            if not self.fs.exists(base):
                continue
            for p in self.fs.find(base):
                if p.endswith(".parquet") and p.rstrip("/") not in committed:
                    orphans.append(p)
        for p in orphans:
            self.fs.rm(p)
        return [to_url(self.fs, p) for p in orphans]
