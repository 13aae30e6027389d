"""Fetching listed objects for the archive (a Ray Data ``map_batches`` stage).

Every input row comes out as one output row, with its bytes or a reason:

- transient errors (S3 503 SlowDown, 500/502/504, timeouts, connection resets) are retried
  with bounded exponential backoff and jitter; if they persist the row's kind is ``transient``;
- permanent errors (not found, access denied, not a file, ...) are not retried: ``fetch``;
- an object that is no longer the version that was listed is ``changed``, never fetched under
  the old version's label: on S3 the GET carries the listed ETag as ``If-Match`` (a 412 means
  it changed) and the ETag of the response is compared as well (for servers that ignore
  If-Match); elsewhere the file is re-stat'ed after reading and its size and modification
  time compared with the listed ones.

``transient`` and ``changed`` rows are worth trying again on the next run; ``fetch`` rows are not.
"""

from __future__ import annotations

import errno
import random
import time
from datetime import datetime

from ..config import StorageOptions
from ..storage import filesystem, is_precondition_failed, is_s3, object_info, s3_error

OK, PERMANENT, TRANSIENT, CHANGED = "", "fetch", "transient", "changed"
TRANSIENT_CODES = frozenset({"500", "502", "503", "504", "SlowDown", "RequestTimeout", "InternalError",
                             "ServiceUnavailable", "Throttling", "ThrottlingException", "RequestLimitExceeded"})
TRANSIENT_STATUS = frozenset({500, 502, 503, 504})
TRANSIENT_ERRNOS = frozenset({errno.ETIMEDOUT, errno.ECONNRESET, errno.ECONNREFUSED, errno.ECONNABORTED,
                              errno.EPIPE, errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.EAGAIN})
PERMANENT_TYPES = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
MAX_BACKOFF_S = 20.0


class SourceChangedError(Exception):
    """The object is no longer the version that was listed."""


def _transient_types() -> tuple[type, ...]:
    types: list[type] = [TimeoutError, ConnectionError]  # TimeoutError covers socket.timeout, asyncio's, fsspec's
    try:
        from botocore import exceptions as bx

        types += [bx.ConnectionError, bx.HTTPClientError, bx.IncompleteReadError, bx.ResponseStreamingError]
    except (ImportError, AttributeError):
        pass
    try:
        import aiohttp

        types += [aiohttp.ClientConnectionError, aiohttp.ServerTimeoutError, aiohttp.ClientPayloadError]
    except ImportError:
        pass
    return tuple(types)


_TRANSIENT_TYPES: tuple[type, ...] | None = None


def is_transient(exc: BaseException) -> bool:
    """Is ``exc`` worth retrying: a server-side hiccup, throttling, a timeout or a broken connection?

    Not found, access denied and not-a-file are permanent, whatever caused them. For an S3
    error the code decides (s3fs keeps the botocore ClientError as ``__cause__``); otherwise
    the exception's type or errno, along its cause chain.
    """
    global _TRANSIENT_TYPES
    if isinstance(exc, (*PERMANENT_TYPES, SourceChangedError)):
        return False
    code, status = s3_error(exc)
    if code is not None or status is not None:
        return str(code) in TRANSIENT_CODES or status in TRANSIENT_STATUS
    if _TRANSIENT_TYPES is None:
        _TRANSIENT_TYPES = _transient_types()
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, _TRANSIENT_TYPES):
            return True
        if isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS:
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def backoff(attempt: int, base_s: float, cap_s: float = MAX_BACKOFF_S) -> float:
    """Seconds to wait after failed ``attempt`` (1, 2, ...): exponential, capped, with jitter (50–100%)."""
    ceiling = min(cap_s, base_s * 2 ** (attempt - 1))
    return ceiling * (0.5 + 0.5 * random.random())


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
            return _read_listed_version(fs, path, row), "", OK
        except SourceChangedError as exc:
            return b"", str(exc)[:2000], CHANGED
        except Exception as exc:  # one unreadable object must not stop the batch
            message = f"{type(exc).__name__}: {exc}"
            if is_precondition_failed(exc):
                return b"", f"changed since it was listed (ETag {row.get('etag')!r} no longer matches): {message}"[:2000], CHANGED
            if not is_transient(exc):
                return b"", message[:2000], PERMANENT
            if attempt == attempts:
                return b"", f"{message} (gave up after {attempts} attempts)"[:2000], TRANSIENT
            time.sleep(backoff(attempt, backoff_s))
    raise AssertionError("unreachable")


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
