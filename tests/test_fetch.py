"""Fetching listed objects: transient errors are retried (and reported as such when they persist),
permanent ones are not, and an object that changed since it was listed is never fetched as the
listed version."""

import errno
import os
import time

import fsspec
import pyarrow as pa
import pytest
from botocore.exceptions import ClientError, ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError
from fsspec.implementations.memory import MemoryFileSystem

from pipeline.config import StorageOptions
from pipeline.stages.fetch import STAGE_CHUNK, fetch_objects, is_transient, stage_one
from pipeline.storage import iter_objects

LISTING_SCHEMA = pa.schema([("key", pa.string()), ("version", pa.string()), ("size", pa.int64()),
                            ("etag", pa.string()), ("mtime", pa.string())])


def listing(url: str, storage=None) -> pa.Table:
    rows = [{"key": o.key, "version": o.version, "size": o.size, "etag": o.etag, "mtime": o.mtime}
            for o in iter_objects(url, storage)]
    return pa.Table.from_pylist(rows, schema=LISTING_SCHEMA)


def client_error(code: str, status: int, op: str = "GetObject") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, op)


def s3fs_style(exc: ClientError) -> OSError:
    """What s3fs raises after translating a ClientError (the original as __cause__)."""
    from s3fs.errors import translate_boto_error

    return translate_boto_error(exc)


@pytest.mark.parametrize("exc, transient", [
    (client_error("SlowDown", 503), True),
    (client_error("503", 503), True),
    (client_error("InternalError", 500), True),
    (client_error("RequestTimeout", 400), True),
    (client_error("BadGateway", 502), True),
    (client_error("GatewayTimeout", 504), True),
    (s3fs_style(client_error("SlowDown", 503)), True),
    (s3fs_style(client_error("InternalError", 500)), True),
    (ConnectTimeoutError(endpoint_url="http://x"), True),
    (ReadTimeoutError(endpoint_url="http://x"), True),
    (EndpointConnectionError(endpoint_url="http://x"), True),
    (ConnectionResetError("reset by peer"), True),
    (TimeoutError("timed out"), True),
    (OSError(errno.ETIMEDOUT, "timed out"), True),
    (client_error("NoSuchKey", 404), False),
    (client_error("AccessDenied", 403), False),
    (s3fs_style(client_error("NoSuchKey", 404)), False),
    (s3fs_style(client_error("AccessDenied", 403)), False),
    (FileNotFoundError("gone"), False),
    (PermissionError("denied"), False),
    (IsADirectoryError("a dir"), False),
    (ValueError("bad"), False),
])
def test_is_transient(exc, transient):
    assert is_transient(exc) is transient


def test_aiohttp_errors_are_transient():
    import aiohttp

    assert is_transient(aiohttp.ServerDisconnectedError())
    assert is_transient(aiohttp.ServerTimeoutError("read timeout"))
    assert is_transient(aiohttp.ClientPayloadError("truncated body"))


class FlakyFS(MemoryFileSystem):
    """A memory filesystem whose reads fail ``FAILS[path]`` times with ``ERROR`` before succeeding."""

    protocol = "flakytest"
    root_marker = ""
    store: dict = {}
    pseudo_dirs = [""]
    FAILS: dict = {}
    ERROR = None
    CALLS: dict = {}

    @classmethod
    def _strip_protocol(cls, path):
        if path.startswith("flakytest://"):
            path = path[len("flakytest://"):]
        return super()._strip_protocol(path)

    def cat_file(self, path, start=None, end=None, **kwargs):
        path = self._strip_protocol(path)
        self.CALLS[path] = self.CALLS.get(path, 0) + 1
        if self.FAILS.get(path, 0) > 0:
            self.FAILS[path] -= 1
            raise self.ERROR()
        return super().cat_file(path, start, end, **kwargs)


@pytest.fixture()
def flaky():
    fsspec.register_implementation("flakytest", FlakyFS, clobber=True)
    FlakyFS.store.clear()
    FlakyFS.FAILS.clear()
    FlakyFS.CALLS.clear()
    fs = FlakyFS()
    for name in ("a.png", "b.png", "c.png"):
        fs.pipe_file(f"/data/{name}", name.encode() * 10)
    return fs


def test_transient_errors_are_retried_until_they_pass(flaky):
    FlakyFS.ERROR = staticmethod(lambda: s3fs_style(client_error("SlowDown", 503)))
    FlakyFS.FAILS.update({"/data/a.png": 3, "/data/b.png": 1})
    out = fetch_objects(listing("flakytest:///data"), None, attempts=4, backoff_s=0.001).to_pylist()
    assert [r["fetch_error_kind"] for r in out] == ["", "", ""]
    assert [r["fetch_error"] for r in out] == ["", "", ""]
    assert [r["data"] for r in out] == [b"a.png" * 10, b"b.png" * 10, b"c.png" * 10]
    assert FlakyFS.CALLS == {"/data/a.png": 4, "/data/b.png": 2, "/data/c.png": 1}


def test_a_persistent_503_is_transient_after_exactly_attempts_tries(flaky):
    FlakyFS.ERROR = staticmethod(lambda: s3fs_style(client_error("SlowDown", 503)))
    FlakyFS.FAILS.update({"/data/b.png": 1000})
    t = time.perf_counter()
    out = fetch_objects(listing("flakytest:///data"), None, attempts=3, backoff_s=0.01).to_pylist()
    assert FlakyFS.CALLS["/data/b.png"] == 3
    assert time.perf_counter() - t < 5  # bounded backoff
    a, b, c = out
    assert (a["fetch_error_kind"], c["fetch_error_kind"]) == ("", "")
    assert b["fetch_error_kind"] == "transient" and b["data"] == b""
    assert "SlowDown" in b["fetch_error"] or "503" in b["fetch_error"] or "OSError" in b["fetch_error"]
    assert "3 attempts" in b["fetch_error"]


def test_permanent_errors_are_not_retried(flaky):
    FlakyFS.ERROR = staticmethod(lambda: PermissionError("access denied"))
    FlakyFS.FAILS.update({"/data/a.png": 1000})
    (a, _, _) = fetch_objects(listing("flakytest:///data"), None, attempts=4, backoff_s=0.001).to_pylist()
    assert a["fetch_error_kind"] == "fetch" and "PermissionError" in a["fetch_error"]
    assert FlakyFS.CALLS["/data/a.png"] == 1


def test_output_columns_and_types(flaky):
    out = fetch_objects(listing("flakytest:///data"), None)
    assert out.column_names == ["key", "version", "size", "etag", "mtime", "data", "fetch_error", "fetch_error_kind",
                                "deferred"]
    assert out.schema.field("deferred").type == pa.bool_() and not any(out.column("deferred").to_pylist())
    assert out.schema.field("data").type == pa.large_binary()
    assert out.schema.field("fetch_error").type == pa.string()
    assert out.schema.field("fetch_error_kind").type == pa.string()
    empty = fetch_objects(listing("flakytest:///data").slice(0, 0), None)
    assert empty.num_rows == 0 and empty.column_names == out.column_names


# ---- a real S3 server -------------------------------------------------------------------------


def test_s3_ok_and_missing_key_is_a_permanent_fetch_error(s3_server, s3_env, bucket):
    fs = s3_server.filesystem()
    fs.pipe(f"{bucket}/in/a.png", b"aaaa")
    fs.pipe(f"{bucket}/in/b.png", b"bbbbbb")
    batch = listing(f"s3://{bucket}/in/", StorageOptions())
    fs.rm(f"{bucket}/in/b.png")
    a, b = fetch_objects(batch, StorageOptions(), attempts=2, backoff_s=0.01).to_pylist()
    assert (a["data"], a["fetch_error"], a["fetch_error_kind"]) == (b"aaaa", "", "")
    assert b["fetch_error_kind"] == "fetch" and "FileNotFoundError" in b["fetch_error"] and b["data"] == b""


def test_s3_object_overwritten_after_listing_is_changed(s3_server, s3_env, bucket):
    fs = s3_server.filesystem()
    fs.pipe(f"{bucket}/in/a.png", b"version one")
    fs.pipe(f"{bucket}/in/b.png", b"stays")
    batch = listing(f"s3://{bucket}/in/", StorageOptions())
    fs.pipe(f"{bucket}/in/a.png", b"version two!")
    a, b = fetch_objects(batch, StorageOptions(), attempts=2, backoff_s=0.01).to_pylist()
    assert a["fetch_error_kind"] == "changed" and a["data"] == b""
    assert "listed" in a["fetch_error"] or "changed" in a["fetch_error"]
    assert (b["data"], b["fetch_error_kind"]) == (b"stays", "")


def test_s3_changed_is_caught_by_the_response_etag_when_if_match_is_ignored(s3_server, s3_env, bucket, monkeypatch):
    """Some S3-compatible servers ignore If-Match: the ETag of what came back is compared too."""
    import s3fs

    original = s3fs.S3FileSystem.call_s3
    seen = []

    def no_if_match(self, method, *args, **kwargs):
        seen.append(kwargs.pop("IfMatch", None))
        return original(self, method, *args, **kwargs)

    fs = s3_server.filesystem()
    fs.pipe(f"{bucket}/in/a.png", b"version one")
    batch = listing(f"s3://{bucket}/in/", StorageOptions())
    fs.pipe(f"{bucket}/in/a.png", b"version two!")
    monkeypatch.setattr(s3fs.S3FileSystem, "call_s3", no_if_match)
    (a,) = fetch_objects(batch, StorageOptions(), attempts=2, backoff_s=0.01).to_pylist()
    assert any(seen), "the fetch did not send If-Match"
    assert a["fetch_error_kind"] == "changed" and a["data"] == b""


# ---- local files --------------------------------------------------------------------------------


def test_local_file_rewritten_after_listing_is_changed(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    (d / "a.png").write_bytes(b"aaaa")
    (d / "b.png").write_bytes(b"bbbb")
    (d / "c.png").write_bytes(b"cccc")
    batch = listing(str(d))
    (d / "a.png").write_bytes(b"a longer file")  # new size
    (d / "b.png").write_bytes(b"BBBB")  # same size, new mtime
    st = os.stat(d / "b.png")
    os.utime(d / "b.png", ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    a, b, c = fetch_objects(batch, None).to_pylist()
    assert a["fetch_error_kind"] == "changed" and a["data"] == b""
    assert b["fetch_error_kind"] == "changed" and b["data"] == b""
    assert (c["data"], c["fetch_error_kind"]) == (b"cccc", "")


def test_local_missing_and_directory_are_fetch_errors(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    (d / "a.png").write_bytes(b"aaaa")
    (d / "b.png").write_bytes(b"bbbb")
    batch = listing(str(d))
    (d / "a.png").unlink()
    (d / "b.png").unlink()
    (d / "b.png").mkdir()
    a, b = fetch_objects(batch, None, attempts=3, backoff_s=0.001).to_pylist()
    assert a["fetch_error_kind"] == "fetch" and "FileNotFoundError" in a["fetch_error"]
    assert b["fetch_error_kind"] == "fetch"


# ---- sources over --window-over-bytes: deferred, then staged by the replica -----------------------


def test_large_objects_are_deferred_not_read(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    (d / "small.tif").write_bytes(b"s" * 10)
    (d / "large.tif").write_bytes(b"L" * 100)
    rows = {r["key"].rsplit("/", 1)[-1]: r for r in fetch_objects(listing(str(d)), None, defer_over_bytes=50).to_pylist()}
    small, large = rows["small.tif"], rows["large.tif"]
    assert (large["deferred"], large["data"], large["fetch_error"]) == (True, b"", "")
    assert (small["deferred"], small["data"]) == (False, b"s" * 10)


def test_s3_stage_copies_the_listed_version_in_chunks(s3_server, s3_env, bucket, tmp_path):
    import hashlib

    fs = s3_server.filesystem()
    body = os.urandom(2 * STAGE_CHUNK + 123)  # three chunks
    fs.pipe(f"{bucket}/in/a.tif", body)
    (row,) = listing(f"s3://{bucket}/in/", StorageOptions()).to_pylist()
    staged, error, kind = stage_one(row, StorageOptions(), str(tmp_path / "a.tif"), attempts=2, backoff_s=0.01)
    assert (error, kind) == ("", "")
    assert staged.size == len(body) and staged.sha256 == hashlib.sha256(body).hexdigest()
    assert (tmp_path / "a.tif").read_bytes() == body


def test_s3_stage_of_an_overwritten_object_is_changed(s3_server, s3_env, bucket, tmp_path):
    fs = s3_server.filesystem()
    fs.pipe(f"{bucket}/in/a.tif", b"version one")
    (row,) = listing(f"s3://{bucket}/in/", StorageOptions()).to_pylist()
    fs.pipe(f"{bucket}/in/a.tif", b"version two!")
    staged, error, kind = stage_one(row, StorageOptions(), str(tmp_path / "a.tif"), attempts=2, backoff_s=0.01)
    assert staged is None and kind == "changed", error


def test_local_stage_checks_the_version_and_missing_is_permanent(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    (d / "a.tif").write_bytes(b"aaaa")
    (d / "b.tif").write_bytes(b"bbbb")
    a, b = listing(str(d)).to_pylist()
    staged, error, kind = stage_one(a, None, str(tmp_path / "a.copy"))
    assert staged.size == 4 and (tmp_path / "a.copy").read_bytes() == b"aaaa" and kind == ""
    (d / "b.tif").write_bytes(b"a longer file")
    staged, error, kind = stage_one(b, None, str(tmp_path / "b.copy"))
    assert staged is None and kind == "changed"
    (d / "a.tif").unlink()
    staged, error, kind = stage_one(a, None, str(tmp_path / "a.copy"), attempts=2, backoff_s=0.001)
    assert staged is None and kind == "fetch" and "FileNotFoundError" in error
