"""Fetching listed objects for the archive (a Ray Data ``map_batches`` stage).

Every input row comes out as one output row, with its bytes or a reason:

- transient errors (S3 503 SlowDown, 500/502/504, timeouts, connection resets, a body that fails
  its checksum) are retried with bounded exponential backoff and jitter; if they persist the
  row's kind is ``transient`` and its error says how many GETs were made;
- the bound: ``attempts`` GETs per key per fetch task (botocore's and s3fs's own retries are off
  here, see storage.single_attempt); Ray re-runs a fetch task only if its worker dies, at most
  ``FETCH_TASK_RETRIES`` times, so a key is requested at most attempts × (1 + FETCH_TASK_RETRIES) times;
- permanent errors (not found, access denied, not a file, ...) are not retried: ``fetch``;
- an object that is no longer the version that was listed is ``changed``, never fetched under
  the old version's label: on S3 the GET carries the listed ETag as ``If-Match`` (a 412 means
  it changed) and the ETag of the response is compared as well (for servers that ignore
  If-Match); elsewhere the file is re-stat'ed after reading and its size and modification
  time compared with the listed ones.

``transient`` and ``changed`` rows are worth trying again on the next run; ``fetch`` rows are not.
"""

from __future__ import annotations

import time
from datetime import datetime

from ..config import StorageOptions
from ..retry import SourceChangedError, backoff, is_transient
from ..storage import filesystem, is_precondition_failed, is_s3, object_info, single_attempt

OK, PERMANENT, TRANSIENT, CHANGED = "", "fetch", "transient", "changed"


def fetch_objects(batch, storage: StorageOptions | None = None, attempts: int = 4, backoff_s: float = 0.5):
    """Read each listed object's bytes (a pyarrow Table with key, version, size, etag, mtime).

    Returns the batch plus ``data`` (large_binary; empty unless ok), ``fetch_error`` (string,
    "" when ok) and ``fetch_error_kind`` ("" ok, "fetch" permanent, "transient" retries
    exhausted, "changed" not the listed version any more). Never raises for one object.
    """
    import pyarrow as pa

    attempts = max(1, int(attempts))
    cols = {c: batch.column(c).to_pylist() if c in batch.column_names else [None] * batch.num_rows
            for c in ("key", "version", "size", "etag", "mtime")}
    data, errors, kinds = [], [], []
    for i in range(batch.num_rows):
        row = {c: cols[c][i] for c in cols}
        blob, error, kind = fetch_one(row, storage, attempts, backoff_s)
        data.append(blob)
        errors.append(error)
        kinds.append(kind)
    return (batch.append_column("data", pa.array(data, pa.large_binary()))
            .append_column("fetch_error", pa.array(errors, pa.string()))
            .append_column("fetch_error_kind", pa.array(kinds, pa.string())))


def fetch_one(row: dict, storage: StorageOptions | None, attempts: int = 4, backoff_s: float = 0.5) -> tuple[bytes, str, str]:
    """(data, error, kind) for one listed object; see :func:`fetch_objects`."""
    key = str(row["key"])
    for attempt in range(1, attempts + 1):
        try:
            fs, path = filesystem(key, storage)
            return _read_listed_version(single_attempt(fs), path, row), "", OK
        except SourceChangedError as exc:
            return b"", str(exc)[:2000], CHANGED
        except Exception as exc:  # one unreadable object must not stop the batch
            message = f"{type(exc).__name__}: {exc}"
            if is_precondition_failed(exc):
                return b"", f"changed since it was listed (ETag {row.get('etag')!r} no longer matches): {message}"[:2000], CHANGED
            if not is_transient(exc):
                return b"", message[:2000], PERMANENT
            if attempt == attempts:
                return b"", f"gave up after {attempts} attempts: {message}"[:2000], TRANSIENT
            time.sleep(backoff(attempt, backoff_s))
    raise AssertionError("unreachable")


FETCH_TASK_RETRIES = 2  # Ray re-runs of a fetch task whose worker died (compress._dataset passes it)


def _read_listed_version(fs, path: str, row: dict) -> bytes:
    etag = row.get("etag")
    if is_s3(fs):
        data, got = _s3_get(fs, path, etag)
        if etag and got and got.strip('"') != etag.strip('"'):
            raise SourceChangedError(f"changed since it was listed: ETag {got.strip(chr(34))!r}, listed {etag!r}")
        if row.get("size") is not None and len(data) != int(row["size"]):
            raise SourceChangedError(f"changed since it was listed: {len(data)} bytes, listed {row['size']}")
        return data
    data = fs.cat_file(path)
    now = object_info(fs, path, fs.info(path))  # re-stat after reading: a rewrite before or during the read shows
    if etag and now.etag:
        if now.etag != etag:
            raise SourceChangedError(f"changed since it was listed: ETag {now.etag!r}, listed {etag!r}")
        return data
    listed_size = int(row["size"]) if row.get("size") is not None else None
    if listed_size is not None and (now.size != listed_size or len(data) != listed_size):
        raise SourceChangedError(f"changed since it was listed: {len(data)} bytes read, {now.size} now, listed {listed_size}")
    if row.get("mtime") and now.mtime and not _same_instant(row["mtime"], now.mtime):
        raise SourceChangedError(f"changed since it was listed: modified {now.mtime}, listed {row['mtime']}")
    return data


def _same_instant(a: str, b: str) -> bool:
    """ISO times compared as instants (a worker's time zone may differ from the lister's)."""
    try:
        return datetime.fromisoformat(a) == datetime.fromisoformat(b)
    except ValueError:
        return a == b


def _s3_get(fs, path: str, etag: str | None) -> tuple[bytes, str | None]:
    """One GET of the whole object, conditional on ``etag``; (bytes, the response's ETag)."""
    from fsspec.asyn import sync

    bucket, key, version_id = fs.split_path(path)
    kw = {"IfMatch": f'"{etag.strip(chr(34))}"'} if etag else {}
    if version_id:
        kw["VersionId"] = version_id
    response = fs.call_s3("get_object", Bucket=bucket, Key=key, **kw)
    body = response["Body"]
    try:
        data = sync(fs.loop, body.read)
    finally:
        body.close()
    return data, response.get("ETag")


__all__ = ["fetch_objects", "fetch_one", "is_transient", "backoff", "SourceChangedError"]
