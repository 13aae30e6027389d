"""The fault proxy itself: transparent when idle, and each rule does what it says, exactly as often."""

import time

import pytest
import s3fs

from devtools.faultproxy import FaultProxy, Rule


def through(s3_server, proxy, **kw) -> s3fs.S3FileSystem:
    """A client with every retry layer off (botocore's and s3fs's), so each call is one request."""
    fs = s3fs.S3FileSystem(key=s3_server.access_key, secret=s3_server.secret_key, endpoint_url=proxy.url,
                             config_kwargs={"s3": {"addressing_style": "path"}, "retries": {"total_max_attempts": 1},
                                            **kw}, use_listings_cache=False, skip_instance_cache=True)
    fs.retries = 1
    return fs


def test_signed_put_get_and_listing_pass_through(s3_server, bucket, fault_proxy):
    fs = through(s3_server, fault_proxy)
    fs.pipe(f"{bucket}/a/x.bin", b"hello" * 1000)
    assert fs.cat(f"{bucket}/a/x.bin") == b"hello" * 1000
    assert fs.ls(f"{bucket}/a") == [f"{bucket}/a/x.bin"]
    assert fs.info(f"{bucket}/a/x.bin")["size"] == 5000
    big = bytes(range(256)) * 40000  # 10 MB: a multipart upload through the proxy
    with fs.open(f"{bucket}/a/big.bin", "wb", block_size=5 * 2**20) as f:
        f.write(big)
    assert fs.cat(f"{bucket}/a/big.bin") == big
    assert fault_proxy.requests > 5


def test_wrong_keys_are_still_rejected_through_the_proxy(s3_server, bucket, fault_proxy):
    fs = s3fs.S3FileSystem(key=s3_server.access_key, secret="wrong" * 8, endpoint_url=fault_proxy.url,
                           config_kwargs={"s3": {"addressing_style": "path"}}, skip_instance_cache=True)
    with pytest.raises(PermissionError):
        fs.cat(f"{bucket}/nothing")


def test_a_rule_fails_exactly_times_then_lets_requests_through(s3_server, bucket, fault_proxy):
    fs = through(s3_server, fault_proxy)
    fs.pipe(f"{bucket}/k", b"data")
    rule = fault_proxy.add(Rule(method="GET", path=r"/k$", status=503, times=2))
    for _ in range(2):
        with pytest.raises(OSError) as info:
            fs.cat(f"{bucket}/k")
        assert "SlowDown" in repr(info.value.__cause__) or "503" in str(info.value)
    assert fs.cat(f"{bucket}/k") == b"data"
    assert rule.hits == 2
    fault_proxy.clear()


def test_rule_matches_method_and_path_only(s3_server, bucket, fault_proxy):
    fs = through(s3_server, fault_proxy)
    rule = fault_proxy.add(Rule(method="PUT", path="/only-this", status=500))
    fs.pipe(f"{bucket}/other", b"1")
    with pytest.raises(Exception):
        fs.pipe(f"{bucket}/only-this", b"2")
    assert fs.cat(f"{bucket}/other") == b"1" and not fs.exists(f"{bucket}/only-this")
    assert rule.hits == 1


def test_window_rule_fails_only_during_its_window(s3_server, bucket, fault_proxy):
    fs = through(s3_server, fault_proxy)
    fs.pipe(f"{bucket}/w", b"w")
    rule = fault_proxy.add(Rule(method="GET", path="/w$", status=500, for_s=0.5))
    with pytest.raises(Exception):
        fs.cat(f"{bucket}/w")
    time.sleep(0.7)
    assert fs.cat(f"{bucket}/w") == b"w"
    assert rule.hits == 1


def test_reset_and_delay(s3_server, bucket, fault_proxy):
    fs = through(s3_server, fault_proxy)
    fs.pipe(f"{bucket}/r", b"r")
    reset = fault_proxy.add(Rule(method="GET", path="/r$", reset=True))
    with pytest.raises(Exception):  # aiohttp may re-send once on a pooled connection: every try is reset
        fs.cat(f"{bucket}/r")
    assert reset.hits >= 1
    fault_proxy.clear()
    fault_proxy.add(Rule(method="GET", path="/r$", delay_s=0.6, times=1))
    t0 = time.monotonic()
    assert fs.cat(f"{bucket}/r") == b"r"
    assert time.monotonic() - t0 >= 0.6


def test_corrupt_body_is_caught_by_botocore_checksum(s3_server, bucket, fault_proxy):
    from botocore.exceptions import FlexibleChecksumError

    fs = through(s3_server, fault_proxy)
    fs.pipe(f"{bucket}/c", bytes(range(256)) * 64)
    rule = fault_proxy.add(Rule(method="GET", path="/c$", corrupt=True, times=1))
    with pytest.raises(Exception) as info:
        fs.cat(f"{bucket}/c")
    chain, exc = [], info.value
    while exc is not None:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    assert any(isinstance(e, FlexibleChecksumError) for e in chain), chain
    assert rule.hits == 1
    assert fs.cat(f"{bucket}/c") == bytes(range(256)) * 64


def test_probability_is_seeded(s3_server, bucket, fault_proxy):
    fs = through(s3_server, fault_proxy)
    fs.pipe(f"{bucket}/p", b"p")

    def run(seed):
        fault_proxy.clear()
        rule = fault_proxy.add(Rule(method="GET", path="/p$", status=500, probability=0.5, seed=seed))
        outcome = []
        for _ in range(12):
            try:
                fs.cat(f"{bucket}/p")
                outcome.append(0)
            except Exception:
                outcome.append(1)
        return outcome, rule.hits

    first, hits = run(7)
    assert run(7) == (first, hits) and 0 < hits < 12


def test_bad_rules_and_upstreams_are_refused():
    with pytest.raises(ValueError, match="does nothing"):
        Rule(path="x")
    with pytest.raises(ValueError, match="probability"):
        Rule(status=500, probability=2)
    with pytest.raises(ValueError, match="upstream"):
        FaultProxy("ftp://127.0.0.1:1")


def test_binds_loopback_only(s3_server):
    with FaultProxy(s3_server.endpoint_url) as proxy:
        assert proxy.url.startswith("http://127.0.0.1:")
