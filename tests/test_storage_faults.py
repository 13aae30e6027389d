"""Archive writes and source reads through a faulty store (devtools/faultproxy): retried within one
policy, one request per try, and a store that stays down, is full or forbids writes is StorageAccessError."""

import errno
import os

import pyarrow as pa
import pytest

from devtools.faultproxy import Rule
from pipeline.config import StorageOptions
from pipeline.retry import RetryPolicy
from pipeline.stages.fetch import fetch_objects
from pipeline.storage import StorageAccessError, filesystem, put_atomic, put_if_absent

FAST = RetryPolicy(attempts=8, base_s=0.05, cap_s=0.2, budget_s=5.0)


def proxied(s3_server, proxy) -> StorageOptions:
    return StorageOptions(endpoint_url=proxy.url, access_key=s3_server.access_key, secret_key=s3_server.secret_key,
                          region="us-east-1")


def test_put_atomic_retries_503_one_request_per_try(s3_server, bucket, fault_proxy):
    fs, path = filesystem(f"s3://{bucket}/a/x.bin", proxied(s3_server, fault_proxy))
    rule = fault_proxy.add(Rule(method="PUT", path="/a/x.bin", status=503, times=3))
    put_atomic(fs, path, b"payload", retry=FAST)
    assert rule.hits == 3, "botocore and s3fs retry nothing themselves: 3 faults, 3 of our tries"
    assert s3_server.filesystem().cat(f"{bucket}/a/x.bin") == b"payload"


def test_create_only_put_whose_first_try_landed_is_not_a_conflict(s3_server, bucket, fault_proxy):
    fs, path = filesystem(f"s3://{bucket}/m/0001.json", proxied(s3_server, fault_proxy))
    rule = fault_proxy.add(Rule(method="PUT", path="/m/0001.json", status=500, times=1, landed=True))
    assert put_if_absent(fs, path, b'{"owner": "me"}', retry=FAST) is True
    assert rule.hits == 1
    assert put_if_absent(fs, path, b'{"owner": "someone else"}', retry=FAST) is False, "a real conflict still is one"


def test_a_store_that_stays_down_is_a_storage_error_within_the_budget(s3_server, bucket, fault_proxy):
    fs, path = filesystem(f"s3://{bucket}/down.bin", proxied(s3_server, fault_proxy))
    rule = fault_proxy.add(Rule(method="PUT", path="/down.bin", status=503))
    with pytest.raises(StorageAccessError, match=r"storage kept failing .*attempts.*committed segments are intact"):
        put_atomic(fs, path, b"x", retry=RetryPolicy(attempts=4, base_s=0.05, cap_s=0.1, budget_s=5))
    assert rule.hits == 4


def test_access_denied_on_put_is_not_retried(s3_server, bucket, fault_proxy):
    fs, path = filesystem(f"s3://{bucket}/denied.bin", proxied(s3_server, fault_proxy))
    rule = fault_proxy.add(Rule(method="PUT", path="/denied.bin", status=403, code="AccessDenied"))
    with pytest.raises(StorageAccessError, match="not writable with these credentials"):
        put_if_absent(fs, path, b"x", retry=FAST)
    assert rule.hits == 1


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_a_full_or_read_only_local_output_is_a_storage_error(tmp_path, monkeypatch, code):
    fs, path = filesystem(str(tmp_path / "out" / "seg.parquet"))
    calls = []

    def broken(*a, **kw):
        calls.append(a)
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(StorageAccessError, match="full, read-only"):
        put_atomic(fs, path, b"x", retry=FAST)
    assert len(calls) == 1
    assert not [p for p in os.listdir(tmp_path / "out")], "no temporary file left behind"


def listing(s3_server, bucket, name: str) -> pa.Table:
    info = s3_server.filesystem().info(f"{bucket}/{name}")
    return pa.table({"key": [f"s3://{bucket}/{name}"], "version": [info["ETag"].strip('"')],
                     "size": [info["size"]], "etag": [info["ETag"].strip('"')], "mtime": [None]})


def test_a_source_failing_every_get_is_fetched_exactly_attempts_times(s3_server, bucket, fault_proxy):
    s3_server.filesystem().pipe(f"{bucket}/src/a.png", b"image bytes")
    rule = fault_proxy.add(Rule(method="GET", path="/src/a.png", status=503))
    out = fetch_objects(listing(s3_server, bucket, "src/a.png"), proxied(s3_server, fault_proxy), attempts=4,
                        backoff_s=0.01).to_pylist()[0]
    assert rule.hits == 4, "one GET per attempt: not attempts x botocore x s3fs"
    assert out["fetch_error_kind"] == "transient" and "gave up after 4 attempts" in out["fetch_error"]


def test_a_corrupted_body_is_transient_and_a_clean_rerun_reads_it(s3_server, bucket, fault_proxy):
    data = bytes(range(256)) * 32
    s3_server.filesystem().pipe(f"{bucket}/src/c.png", data)
    storage = proxied(s3_server, fault_proxy)
    rule = fault_proxy.add(Rule(method="GET", path="/src/c.png", corrupt=True))
    out = fetch_objects(listing(s3_server, bucket, "src/c.png"), storage, attempts=3, backoff_s=0.01).to_pylist()[0]
    assert rule.hits == 3 and out["fetch_error_kind"] == "transient", out["fetch_error"]
    assert "Checksum" in out["fetch_error"] and out["data"] == b""
    fault_proxy.clear()
    out = fetch_objects(listing(s3_server, bucket, "src/c.png"), storage, attempts=3, backoff_s=0.01).to_pylist()[0]
    assert out["fetch_error_kind"] == "" and out["data"] == data
