"""Checkpoints of the committed state: every manifest up to a sequence, in one Parquet file.

A start reads the newest valid checkpoint and only the manifests after it, so its reads follow
the commits since the checkpoint, not the archive's history. Manifests stay the source of
truth: a checkpoint only repeats what they say, is written create-only under the lease every
``EVERY`` commits, carries the generation that wrote it (fenced like a manifest), and one that
does not parse is skipped for an older one.
"""

from __future__ import annotations

import io
from dataclasses import asdict, fields

import pyarrow as pa
import pyarrow.parquet as pq

EVERY = 64  # commits between checkpoints

_KEYS = pa.list_(pa.string())
SCHEMA = pa.schema([
    ("name", pa.string()), ("run_id", pa.string()), ("segment", pa.int64()), ("commit_seq", pa.int64()),
    ("committed_at", pa.string()), ("rows", pa.int64()), ("records", pa.int64()),
    ("files", pa.map_(pa.string(), pa.string())), ("record_keys", _KEYS), ("stats_keys", _KEYS),
    ("generation", pa.int64()),
])


def due(commit_seq: int) -> bool:
    """Is a checkpoint written after committing ``commit_seq`` (sequences EVERY-1, 2*EVERY-1, ...)?"""
    return (commit_seq + 1) % EVERY == 0


def encode(manifests: list, generation: int) -> bytes:
    """The Parquet bytes of a checkpoint of ``manifests`` (Manifest objects), written by ``generation``."""
    rows = []
    for m in manifests:
        row = asdict(m)
        row["files"] = list(m.files.items())
        row["record_keys"] = list(m.record_keys) if m.record_keys else None
        row["stats_keys"] = list(m.stats_keys) if m.stats_keys else None
        rows.append(row)
    table = pa.Table.from_pylist(rows, schema=SCHEMA).replace_schema_metadata({"generation": str(generation)})
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def decode(data: bytes, manifest_type) -> tuple[int | None, list]:
    """(generation that wrote it, its manifests) from a checkpoint's bytes; raises on a torn file."""
    table = pq.read_table(io.BytesIO(data))
    meta = table.schema.metadata or {}
    gen = meta.get(b"generation")
    names = {f.name for f in fields(manifest_type)}
    out = []
    for row in table.to_pylist():
        row = {k: v for k, v in row.items() if k in names}
        row["files"] = dict(row["files"])
        row["record_keys"] = tuple(row["record_keys"]) if row["record_keys"] else None
        row["stats_keys"] = tuple(row["stats_keys"]) if row["stats_keys"] else None
        out.append(manifest_type(**row))
    return (int(gen) if gen is not None else None), out
