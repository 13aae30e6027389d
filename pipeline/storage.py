"""Object storage through fsspec: filesystems from URLs, streamed listings, fail-fast checks."""

from __future__ import annotations

import glob as globlib
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Iterator

import fsspec

from .config import StorageOptions


class StorageAccessError(RuntimeError):
    """Storage cannot be reached, read or written (credentials, bucket, endpoint)."""


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


def _info(fs, path: str, info: dict) -> ObjectInfo:
    etag = info.get("ETag") or info.get("etag")
    mtime = info.get("LastModified") or info.get("mtime") or info.get("last_modified")
    if isinstance(mtime, (int, float)):
        mtime = datetime.fromtimestamp(mtime).astimezone().isoformat()
    elif isinstance(mtime, datetime):
        mtime = mtime.isoformat()
    return ObjectInfo(to_url(fs, path), int(info.get("size") or 0), etag.strip('"') if etag else None,
                      str(mtime) if mtime else None)


def iter_objects(url: str, storage: StorageOptions | None = None, extensions: list[str] | None = None) -> Iterator[ObjectInfo]:
    """Objects under a prefix or matching a glob, one directory listing at a time.

    Names starting with '.' or '_' (markers, hidden files) are skipped; with
    ``extensions``, only names ending in one of them (case-insensitive) are kept.
    """
    fs, path = filesystem(url, storage)
    exts = tuple(e.lower() for e in extensions) if extensions else None

    def keep(p: str) -> bool:
        name = p.rstrip("/").rsplit("/", 1)[-1]
        return not name.startswith((".", "_")) and (exts is None or name.lower().endswith(exts))

    if globlib.has_magic(path):
        for p, info in sorted(fs.glob(path, detail=True).items()):
            if info.get("type") == "file" and keep(p):
                yield _info(fs, p, info)
        return
    if fs.isfile(path):
        yield _info(fs, path, fs.info(path))
        return
    for _, _, files in fs.walk(path, detail=True):
        for p, info in sorted(files.items()):
            full = info.get("name", p)
            if keep(full):
                yield _info(fs, full, info)


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
