"""Object storage through fsspec: filesystems from URLs, streamed listings, fail-fast checks."""

from __future__ import annotations

import contextlib
import errno
import glob as globlib
import os
import random
import re
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Iterator

import fsspec

from .config import StorageOptions


from .retry import RetryPolicy, retry_write
from .storage_errors import StorageAccessError, s3_error  # noqa: F401  (re-exported: callers import them from here)


def split_url(url: str) -> tuple[str, str]:
    """('s3', 'bucket/prefix') for 's3://bucket/prefix'; ('file', '/abs/path') for local paths."""
    if "://" in url:
        protocol, path = url.split("://", 1)
        return protocol, path
    return "file", url


def filesystem(url: str, storage: StorageOptions | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem and path for ``url``; S3 gets the endpoint/credentials in ``storage``."""
    protocol, path = split_url(url)
    if protocol in ("s3", "s3a"):
        import s3fs

        return s3fs.S3FileSystem(**(storage or StorageOptions()).s3fs_kwargs()), path
    fs, p = fsspec.core.url_to_fs(url)
    return fs, p


def pyarrow_filesystem(url: str, storage: StorageOptions | None = None):
    """A pyarrow filesystem and path for ``url`` (what Ray Train's storage_filesystem takes)."""
    protocol, path = split_url(url)
    if protocol in ("s3", "s3a"):
        from pyarrow.fs import S3FileSystem

        st = storage or StorageOptions()
        kw = {}
        if st.access_key and st.secret_key:
            kw.update(access_key=st.access_key.get_secret_value(), secret_key=st.secret_key.get_secret_value())
        if st.endpoint_url:
            scheme, _, host = st.endpoint_url.partition("://")
            kw.update(endpoint_override=host or scheme, scheme=scheme if host else "https")
        if st.region:
            kw["region"] = st.region
        return S3FileSystem(anonymous=st.anonymous, **kw), path
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    fs, p = filesystem(url, storage)
    return PyFileSystem(FSSpecHandler(fs)), p


def to_url(fs, path: str) -> str:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return path if protocol in ("file", "local") else f"{protocol}://{path}"


@dataclass(frozen=True)
class ObjectInfo:
    key: str  # full URL of the object
    size: int
    etag: str | None
    mtime: str | None  # ISO 8601

    @property
    def version(self) -> str:
        """What identifies this content: the ETag on object stores, size+mtime on filesystems."""
        return self.etag or f"{self.size}-{self.mtime}"


def object_info(fs, path: str, info: dict) -> ObjectInfo:
    """An fsspec ``info`` dict as an ObjectInfo (what listings yield and fetches re-check)."""
    etag = info.get("ETag") or info.get("etag")
    mtime = info.get("LastModified") or info.get("mtime") or info.get("last_modified")
    if isinstance(mtime, (int, float)):
        mtime = datetime.fromtimestamp(mtime).astimezone().isoformat()
    elif isinstance(mtime, datetime):
        mtime = mtime.isoformat()
    return ObjectInfo(to_url(fs, path), int(info.get("size") or 0), etag.strip('"') if etag else None,
                      str(mtime) if mtime else None)


def iter_objects(url: str, storage: StorageOptions | None = None, extensions: list[str] | None = None,
                 page_size: int = 1000) -> Iterator[ObjectInfo]:
    """Objects under a prefix (recursively) or matching a glob, streamed: never the whole listing in memory.

    Names starting with '.' or '_' (markers, hidden files) are skipped; with
    ``extensions``, only names ending in one of them (case-insensitive) are kept.
    A URL naming one object yields that object.

    S3 is listed with ``list_objects_v2``, ``page_size`` keys per request, one page
    held at a time, in the server's order (key order on AWS S3; SeaweedFS lists
    directory by directory, so a name like ``a-1.png`` can come after ``a/…``).
    Local folders are walked with ``os.scandir`` in exact key order, one directory's
    entries at a time. Globs follow fsspec's glob semantics (``*``, ``?``, ``[…]``
    within one path segment, ``**`` as a whole segment across any number of them):
    only the literal prefix before the first wildcard is listed, then filtered.
    Other filesystems fall back to fsspec's ``walk``/``glob``.
    """
    if page_size < 1:
        raise ValueError(f"page_size must be at least 1, not {page_size}")
    fs, path = filesystem(url, storage)
    exts = tuple(e.lower() for e in extensions) if extensions else None

    def keep(p: str) -> bool:
        name = p.rstrip("/").rsplit("/", 1)[-1]
        return not name.startswith((".", "_")) and (exts is None or name.lower().endswith(exts))

    s3, local = is_s3(fs), is_local(fs)
    if globlib.has_magic(path):
        pattern_path = fs._strip_protocol(path) + ("/" if path.endswith("/") else "")
        if s3 and not globlib.has_magic(pattern_path.split("/", 1)[0]):
            yield from _s3_glob(fs, pattern_path, keep, page_size)
        elif local:
            yield from _local_glob(fs, pattern_path, keep)
        else:  # other filesystems: fsspec's glob (materialises the matches)
            for p, info in sorted(fs.glob(path, detail=True).items()):
                if info.get("type") == "file" and keep(p):
                    yield object_info(fs, p, info)
        return
    if fs.isfile(path):
        yield object_info(fs, path, fs.info(path))
        return
    if s3:
        bucket, _, key = fs._strip_protocol(path).partition("/")
        prefix = key.strip("/") + "/" if key.strip("/") else ""
        for obj in _s3_pages(fs, bucket, prefix, page_size):
            full = f"{bucket}/{obj['Key']}"
            if keep(full):
                yield _s3_info(fs, full, obj)
    elif local:
        for full, st in _local_walk(fs._strip_protocol(path).rstrip("/") or "/"):
            if keep(full):
                yield _stat_info(fs, full, st)
    else:
        for _, _, files in fs.walk(path, detail=True):
            for p, info in sorted(files.items()):
                full = info.get("name", p)
                if keep(full):
                    yield object_info(fs, full, info)


def _protocols(fs) -> tuple[str, ...]:
    return (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)


def is_s3(fs) -> bool:
    """An s3fs filesystem (what ``filesystem`` returns for s3:// and s3a:// URLs)."""
    return any(p in ("s3", "s3a") for p in _protocols(fs)) and hasattr(fs, "call_s3")


def is_local(fs) -> bool:
    from fsspec.implementations.local import LocalFileSystem

    return isinstance(fs, LocalFileSystem)


def _s3_pages(fs, bucket: str, prefix: str, page_size: int) -> Iterator[dict]:
    """The objects under ``prefix``, one ``list_objects_v2`` page (at most ``page_size`` keys) at a time."""
    token = None
    while True:
        kw = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": page_size}
        if token:
            kw["ContinuationToken"] = token
        page = fs.call_s3("list_objects_v2", **kw)
        for obj in page.get("Contents", []):
            if not obj["Key"].endswith("/"):  # a "directory" marker object, not content
                yield obj
        if not page.get("IsTruncated"):
            return
        token = page.get("NextContinuationToken")
        if not token:
            raise StorageAccessError(f"listing s3://{bucket}/{prefix}: a truncated page without a continuation token")


def _s3_info(fs, full: str, obj: dict) -> ObjectInfo:
    return object_info(fs, full, {"ETag": obj.get("ETag"), "LastModified": obj.get("LastModified"), "size": obj.get("Size")})


def _glob_parts(pattern: str) -> tuple[str, re.Pattern, int | None]:
    """(literal prefix before the first wildcard, compiled fsspec glob regex, max depth below the
    prefix's folder or None for ``**``)."""
    from fsspec.utils import glob_translate

    first = min(i for i in (pattern.find("*"), pattern.find("?"), pattern.find("[")) if i >= 0)
    literal = pattern[:first]
    depth = None if "**" in pattern else pattern[literal.rfind("/") + 1 :].count("/") + 1
    return literal, re.compile(glob_translate(pattern)), depth


def _s3_glob(fs, pattern: str, keep, page_size: int) -> Iterator[ObjectInfo]:
    literal, regex, _ = _glob_parts(pattern)
    bucket, _, key_prefix = literal.partition("/")
    for obj in _s3_pages(fs, bucket, key_prefix, page_size):
        full = f"{bucket}/{obj['Key']}"
        if regex.match(full) and keep(full):
            yield _s3_info(fs, full, obj)


def _local_glob(fs, pattern: str, keep) -> Iterator[ObjectInfo]:
    literal, regex, depth = _glob_parts(pattern)
    root = literal[: literal.rfind("/")] if "/" in literal else "."
    for full, st in _local_walk(root or "/", depth):
        if regex.match(full) and keep(full):
            yield _stat_info(fs, full, st)


def _local_walk(root: str, maxdepth: int | None = None, _depth: int = 1) -> Iterator[tuple[str, os.stat_result]]:
    """(path, stat) of the files under ``root`` in key order, holding one directory's entries at a time.

    Directories sort as ``name/`` so that the walk's order is the order of the full paths
    (``a-1.png`` < ``a/x.png``). Symbolic links are followed (as fsspec's walk did); a
    dangling one is listed with its own stat (reading it then fails as a fetch error).
    """
    try:
        with os.scandir(root) as it:
            entries = []
            for e in it:
                try:
                    is_dir = e.is_dir()
                except OSError:
                    is_dir = False
                entries.append((e.name + "/" if is_dir else e.name, e, is_dir))
    except (FileNotFoundError, NotADirectoryError):
        return
    entries.sort(key=lambda t: t[0])
    base = root.rstrip("/")
    for _, e, is_dir in entries:
        full = f"{base}/{e.name}"
        if is_dir:
            if maxdepth is None or _depth < maxdepth:
                yield from _local_walk(full, maxdepth, _depth + 1)
            continue
        try:
            st = e.stat()
        except OSError:
            st = e.stat(follow_symlinks=False)
        yield full, st


def _stat_info(fs, full: str, st: os.stat_result) -> ObjectInfo:
    """The same ObjectInfo (and so the same version string) that fsspec's info gave for local files."""
    return object_info(fs, full, {"size": st.st_size, "mtime": st.st_mtime})


# ---- S3 error codes, and writes ---------------------------------------------------------------


def is_precondition_failed(exc: BaseException) -> bool:
    """An S3 conditional request (If-Match, If-None-Match) that did not hold: HTTP 412."""
    code, status = s3_error(exc)
    return code == "PreconditionFailed" or status == 412 or str(code) == "412"


def _is_conditional_conflict(exc: BaseException) -> bool:
    """AWS answers 409 ConditionalRequestConflict while another conditional write to the key is in flight."""
    code, status = s3_error(exc)
    return code == "ConditionalRequestConflict" or (status == 409 and code != "BucketAlreadyOwnedByYou")


def put_if_absent(fs, path: str, data: bytes, retry: RetryPolicy | None = None) -> bool:
    """Create ``path`` holding ``data`` unless it exists: True if it now holds ``data`` because of
    this call, False if it already existed with other content. Atomic: of concurrent callers, one wins.

    S3: a conditional PUT (``If-None-Match: *``, s3fs ``mode="create"``). Local files: a
    temporary file in the same folder, hard-linked into place (``os.link`` fails if the name
    exists), so readers never see a partial file; where hard links are not supported,
    ``O_CREAT|O_EXCL``. Other filesystems: exists-then-write, which is *not* atomic.

    An object that already holds exactly ``data`` counts as written (True): that is how a
    retried PUT whose first attempt landed looks, so payloads that stand for one writer
    (a lease, a manifest) should carry something unique to it (an owner id, a timestamp).

    Transient failures are retried under ``retry`` (default ``retry.WRITE_RETRY``); a retry
    whose first attempt had landed finds the object holding ``data``, not a conflict. A failure
    that persists, or a full / read-only / forbidden output, raises StorageAccessError.
    """
    data = bytes(data)
    if is_s3(fs):
        one = single_attempt(fs)
        return retry_write(lambda: _s3_put_if_absent(one, path, data), f"s3://{path}", retry)
    if is_local(fs):
        local = fs._strip_protocol(path)
        return retry_write(lambda: _local_put_if_absent(local, data), local, retry)
    if fs.exists(path):
        return _holds(fs, path, data)
    parent = path.rstrip("/").rsplit("/", 1)[0]
    if parent and parent != path:
        fs.makedirs(parent, exist_ok=True)
    retry_write(lambda: fs.pipe_file(path, data), to_url(fs, path), retry)
    return True


def _s3_put_if_absent(fs, path: str, data: bytes) -> bool:
    """One create-only PUT (409 conflicts with a concurrent conditional write waited out), then a compare."""
    for attempt in range(6):
        try:
            fs.pipe_file(path, data, mode="create")
            return True
        except Exception as exc:
            if isinstance(exc, FileExistsError) or is_precondition_failed(exc):
                break
            if _is_conditional_conflict(exc) and attempt < 5:
                time.sleep(0.05 * 2**attempt * (0.5 + random.random()))
                continue
            raise
    return _holds(fs, path, data)


def single_attempt(fs):
    """``fs`` with botocore's and s3fs's own retries off (one request per call), so that our
    retry loop (pipeline.retry) is the only one and the requests per object are one bound."""
    if not is_s3(fs):
        return fs
    opts = dict(fs.storage_options)
    opts["config_kwargs"] = {**(opts.get("config_kwargs") or {}), "retries": {"total_max_attempts": 1, "mode": "standard"}}
    one = type(fs)(**opts)
    one.retries = 1  # s3fs's loop around every call (it retries SlowDown 5 times by itself)
    return one


def _holds(fs, path: str, data: bytes) -> bool:
    try:
        return fs.cat_file(path) == data
    except FileNotFoundError:  # existed a moment ago, deleted since: not ours either way
        return False


def _local_put_if_absent(path: str, data: bytes) -> bool:
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    tmp = _local_temp(path, data)
    try:
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return _local_holds(path, data)
        except OSError as exc:  # no hard links here (some FUSE/SMB mounts): create-exclusive instead
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.ENOSYS):
                raise
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            return _local_holds(path, data)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _local_holds(path: str, data: bytes) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read() == data
    except FileNotFoundError:
        return False


def _local_temp(path: str, data: bytes) -> str:
    """``data`` in a new hidden file beside ``path`` (synced; mode from the umask, as a plain create)."""
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.{uuid.uuid4().hex[:12]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return tmp


def put_atomic(fs, path: str, data: bytes, retry: RetryPolicy | None = None) -> None:
    """Write ``path`` whole: readers see the old content or the new one, never a partial file.

    Local files: a temporary file in the same folder, then ``os.replace``. Object stores: one
    ``pipe_file`` (an S3 PUT, or a multipart upload's completion, is atomic). Transient failures
    are retried under ``retry``; persistent, full, read-only or forbidden: StorageAccessError.
    """
    data = bytes(data)
    if is_local(fs):
        local = fs._strip_protocol(path)
        retry_write(lambda: _local_replace(local, data), local, retry)
        return
    if not is_s3(fs):
        parent = path.rstrip("/").rsplit("/", 1)[0]
        if parent and parent != path:
            fs.makedirs(parent, exist_ok=True)
    target = single_attempt(fs)
    retry_write(lambda: target.pipe_file(path, data), to_url(fs, path), retry)


def _local_replace(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = _local_temp(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def check_readable(url: str, storage: StorageOptions | None = None) -> None:
    """Fail fast (no secrets in the message) if the input can't be listed."""
    fs, path = filesystem(url, storage)
    try:
        root = path.split("*", 1)[0].rstrip("/") or path
        if not fs.exists(root):
            raise StorageAccessError(f"input {url} does not exist (missing bucket or prefix?)")
    except StorageAccessError:
        raise
    except PermissionError as exc:
        raise StorageAccessError(f"access denied listing {url}: check the credentials (AWS_ACCESS_KEY_ID/SECRET)") from exc
    except Exception as exc:  # endpoint unreachable, DNS, TLS, ...
        raise StorageAccessError(f"cannot reach {url}: {type(exc).__name__}: {_redact(str(exc))}") from exc


def check_writable(url: str, storage: StorageOptions | None = None) -> None:
    """Write and delete a probe object under ``url``; fail fast if that is not allowed."""
    fs, path = filesystem(url, storage)
    probe = f"{path.rstrip('/')}/_probe-{uuid.uuid4().hex}"
    try:
        bucket = path.split("/", 1)[0]
        if split_url(url)[0] in ("s3", "s3a"):
            if not fs.exists(bucket):
                raise StorageAccessError(f"output bucket {bucket!r} of {url} does not exist")
        else:
            fs.makedirs(path, exist_ok=True)
        fs.pipe(probe, b"")
        fs.rm(probe)
    except StorageAccessError:
        raise
    except PermissionError as exc:
        raise StorageAccessError(f"access denied writing to {url}: check the credentials") from exc
    except Exception as exc:
        raise StorageAccessError(f"cannot write to {url}: {type(exc).__name__}: {_redact(str(exc))}") from exc


def _redact(text: str) -> str:
    import os

    for var in ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN"):
        v = os.environ.get(var)
        if v:
            text = text.replace(v, "***")
    return text
