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

import hashlib
import time
from dataclasses import dataclass
from datetime import datetime

from ..config import StorageOptions
from ..retry import SourceChangedError, backoff, is_transient
from ..storage import filesystem, is_precondition_failed, is_s3, object_info, single_attempt

OK, PERMANENT, TRANSIENT, CHANGED = "", "fetch", "transient", "changed"


def fetch_objects(batch, storage: StorageOptions | None = None, attempts: int = 4, backoff_s: float = 0.5,
                  defer_over_bytes: int | None = None):
    """Read each listed object's bytes (a pyarrow Table with key, version, size, etag, mtime).

    Returns the batch plus ``data`` (large_binary; empty unless ok), ``fetch_error`` (string,
    "" when ok), ``fetch_error_kind`` ("" ok, "fetch" permanent, "transient" retries
    exhausted, "changed" not the listed version any more) and ``deferred`` (bool): an object listed
    larger than ``defer_over_bytes`` is not read here but by its replica (:func:`stage_one`), so a scene
    larger than memory never travels through the object store. Never raises for one object.
    """
    import pyarrow as pa

    attempts = max(1, int(attempts))
    cols = {c: batch.column(c).to_pylist() if c in batch.column_names else [None] * batch.num_rows
            for c in ("key", "version", "size", "etag", "mtime")}
    data, errors, kinds, deferred = [], [], [], []
    for i in range(batch.num_rows):
        row = {c: cols[c][i] for c in cols}
        later = defer_over_bytes is not None and row["size"] is not None and int(row["size"]) > defer_over_bytes
        blob, error, kind = (b"", "", OK) if later else fetch_one(row, storage, attempts, backoff_s)
        data.append(blob)
        errors.append(error)
        kinds.append(kind)
        deferred.append(later)
    return (batch.append_column("data", pa.array(data, pa.large_binary()))
            .append_column("fetch_error", pa.array(errors, pa.string()))
            .append_column("fetch_error_kind", pa.array(kinds, pa.string()))
            .append_column("deferred", pa.array(deferred, pa.bool_())))


def fetch_one(row: dict, storage: StorageOptions | None, attempts: int = 4, backoff_s: float = 0.5) -> tuple[bytes, str, str]:
    """(data, error, kind) for one listed object; see :func:`fetch_objects`."""
    data, error, kind = _retrying(row, storage, attempts, backoff_s, _read_listed_version)
    return (data if data is not None else b""), error, kind


@dataclass
class Staged:
    """A listed object copied to local disk: its size and the sha256 of its bytes."""

    size: int
    sha256: str


def stage_one(row: dict, storage: StorageOptions | None, dest: str, attempts: int = 4,
              backoff_s: float = 0.5) -> tuple[Staged | None, str, str]:
    """(Staged, "", "") once the listed version of ``row``'s object is copied to ``dest`` a chunk at a time
    (memory: one chunk), else (None, error, kind) with the kinds and retries of :func:`fetch_one`."""
    return _retrying(row, storage, attempts, backoff_s, lambda fs, path, r: _copy_listed_version(fs, path, r, dest))


def _retrying(row: dict, storage, attempts: int, backoff_s: float, read):
    """``read(fs, path, row)`` under the fetch's retry policy: (value, "", "") or (None, error, kind)."""
    key = str(row["key"])
    for attempt in range(1, attempts + 1):
        try:
            fs, path = filesystem(key, storage)
            return read(single_attempt(fs), path, row), "", OK
        except SourceChangedError as exc:
            return None, str(exc)[:2000], CHANGED
        except Exception as exc:  # one unreadable object must not stop the batch
            message = f"{type(exc).__name__}: {exc}"
            if is_precondition_failed(exc):
                return None, f"changed since it was listed (ETag {row.get('etag')!r} no longer matches): {message}"[:2000], CHANGED
            if not is_transient(exc):
                return None, message[:2000], PERMANENT
            if attempt == attempts:
                return None, f"gave up after {attempts} attempts: {message}"[:2000], TRANSIENT
            time.sleep(backoff(attempt, backoff_s))
    raise AssertionError("unreachable")


FETCH_TASK_RETRIES = 2  # Ray re-runs of a fetch task whose worker died (compress._dataset passes it)


def _read_listed_version(fs, path: str, row: dict) -> bytes:
    if is_s3(fs):
        data, got = _s3_get(fs, path, row.get("etag"))
        _check_s3(row, got, len(data))
        return data
    data = fs.cat_file(path)
    _check_restat(fs, path, row, len(data))
    return data


STAGE_CHUNK = 8 << 20


def _copy_listed_version(fs, path: str, row: dict, dest: str) -> Staged:
    """Stream the listed version of ``path`` into ``dest``, hashing it; the same version checks as a fetch."""
    digest, size = hashlib.sha256(), 0
    with open(dest, "wb") as out:
        def sink(chunk: bytes) -> None:
            nonlocal size
            out.write(chunk)
            digest.update(chunk)
            size += len(chunk)

        if is_s3(fs):
            got = _s3_get(fs, path, row.get("etag"), sink)[1]
            _check_s3(row, got, size)
        else:
            with fs.open(path, "rb") as src:
                while chunk := src.read(STAGE_CHUNK):
                    sink(chunk)
            _check_restat(fs, path, row, size)
    return Staged(size, digest.hexdigest())


def _check_s3(row: dict, got_etag: str | None, size: int) -> None:
    """The GET answered the listed version: its ETag (for servers that ignore If-Match) and its size."""
    etag = row.get("etag")
    if etag and got_etag and got_etag.strip('"') != etag.strip('"'):
        raise SourceChangedError(f"changed since it was listed: ETag {got_etag.strip(chr(34))!r}, listed {etag!r}")
    if row.get("size") is not None and size != int(row["size"]):
        raise SourceChangedError(f"changed since it was listed: {size} bytes, listed {row['size']}")


def _check_restat(fs, path: str, row: dict, size: int) -> None:
    """Re-stat after reading (not S3): a rewrite before or during the read shows in ETag, size or mtime."""
    etag = row.get("etag")
    now = object_info(fs, path, fs.info(path))
    if etag and now.etag:
        if now.etag != etag:
            raise SourceChangedError(f"changed since it was listed: ETag {now.etag!r}, listed {etag!r}")
        return
    listed_size = int(row["size"]) if row.get("size") is not None else None
    if listed_size is not None and (now.size != listed_size or size != listed_size):
        raise SourceChangedError(f"changed since it was listed: {size} bytes read, {now.size} now, listed {listed_size}")
    if row.get("mtime") and now.mtime and not _same_instant(row["mtime"], now.mtime):
        raise SourceChangedError(f"changed since it was listed: modified {now.mtime}, listed {row['mtime']}")


def _same_instant(a: str, b: str) -> bool:
    """ISO times compared as instants (a worker's time zone may differ from the lister's)."""
    try:
        return datetime.fromisoformat(a) == datetime.fromisoformat(b)
    except ValueError:
        return a == b


def _s3_get(fs, path: str, etag: str | None, sink=None) -> tuple[bytes, str | None]:
    """One GET of the object, conditional on ``etag``: (bytes, the response's ETag); with ``sink``, the body
    goes to ``sink(chunk)`` a chunk at a time instead (and the bytes returned are empty)."""
    from fsspec.asyn import sync

    bucket, key, version_id = fs.split_path(path)
    kw = {"IfMatch": f'"{etag.strip(chr(34))}"'} if etag else {}
    if version_id:
        kw["VersionId"] = version_id
    response = fs.call_s3("get_object", Bucket=bucket, Key=key, **kw)
    body = response["Body"]
    try:
        if sink is None:
            data = sync(fs.loop, body.read)
        else:
            data = b""
            while chunk := sync(fs.loop, body.read, STAGE_CHUNK):
                sink(chunk)
    finally:
        body.close()
    return data, response.get("ETag")


__all__ = ["fetch_objects", "fetch_one", "stage_one", "is_transient", "backoff", "SourceChangedError"]
