"""The archival job against a faulty archive store (devtools/faultproxy in front of SeaweedFS), run as a user would.

A brownout shorter than --write-retry-s costs nothing; a longer one, or credentials that lose
write access mid-run, end in exit 4 with a message (no traceback), committed segments intact,
the lease released: the rerun after the fix starts at once and completes exactly once.
"""

import os
import subprocess

from devtools.faultproxy import Rule
from pipeline.archive import Archive
from test_pipeline_faults import assert_exactly_once, job_args, many_objects
from pipeline_fixtures import upload

DATA_PUTS = r"/archive/(records|stats|_manifests)/"


def run(bucket, env, *extra, timeout=600):
    return subprocess.run(job_args(bucket, "--segment-rows", "2", *extra), env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_a_put_brownout_shorter_than_the_retry_budget_completes_exactly_once(s3_server, bucket, fault_proxy,
                                                                               proxy_env):
    objects = many_objects(1)
    upload(s3_server.filesystem(), bucket, "raw", objects)
    rule = fault_proxy.add(Rule(method="PUT", path=DATA_PUTS, status=503, for_s=4.0))
    r = run(bucket, {**os.environ, **proxy_env}, "--write-retry-s", "40")
    assert r.returncode == 0, r.stderr[-3000:]
    assert rule.hits >= 2, "the brownout was met"
    assert_exactly_once(s3_server, bucket, {f"s3://{bucket}/raw/{k}" for k in objects})


def test_a_store_down_longer_than_the_budget_exits_4_then_the_rerun_starts_at_once(s3_server, bucket, fault_proxy,
                                                                                    proxy_env):
    objects = many_objects(1)
    upload(s3_server.filesystem(), bucket, "raw", objects)
    env = {**os.environ, **proxy_env}
    fault_proxy.add(Rule(method="PUT", path=DATA_PUTS, status=503))
    r = run(bucket, env, "--write-retry-s", "3", "--lease-ttl-s", "600")
    assert r.returncode == 4, r.stderr[-3000:]
    assert "storage kept failing" in r.stderr and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert Archive(f"s3://{bucket}/archive/").manifests(refresh=True) == [], "nothing committed"
    fault_proxy.clear()
    r = run(bucket, env)  # the 600 s lease was released: no wait
    assert r.returncode == 0, r.stderr[-3000:]
    assert_exactly_once(s3_server, bucket, {f"s3://{bucket}/raw/{k}" for k in objects})


def test_write_access_lost_mid_run_exits_4_keeps_commits_and_releases_the_lease(s3_server, bucket, fault_proxy,
                                                                               proxy_env):
    objects = many_objects(1)
    upload(s3_server.filesystem(), bucket, "raw", objects)
    env = {**os.environ, **proxy_env}
    rule = fault_proxy.add(Rule(method="PUT", path=r"/archive/(records|stats)/", status=403, code="AccessDenied",
                                after=2))  # the first segment's two files land
    r = run(bucket, env, "--lease-ttl-s", "600")
    assert r.returncode == 4, r.stderr[-3000:]
    assert "not writable with these credentials" in r.stderr and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert rule.hits == 1, "access denied is not retried"
    committed = Archive(f"s3://{bucket}/archive/").committed_table("stats", ["key"]).num_rows
    assert committed == 2, "the segment committed before the fault is intact"
    fault_proxy.clear()
    r = run(bucket, env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 already archived" in r.stdout
    assert_exactly_once(s3_server, bucket, {f"s3://{bucket}/raw/{k}" for k in objects})


def test_a_manifest_unreadable_for_longer_than_the_budget_moves_nothing_and_loses_nothing(s3_server, bucket,
                                                                                          fault_proxy, proxy_env):
    """Issue 28 item 1: the archive is the only copy of segment 1, and its manifest answers 500."""
    objects = many_objects(1)
    fs = s3_server.filesystem()
    upload(fs, bucket, "raw", objects)
    env = {**os.environ, **proxy_env}
    assert run(bucket, env).returncode == 0
    archive = Archive(f"s3://{bucket}/archive/")
    everything = sorted(archive.committed_table("stats", ["key"])["key"].to_pylist())
    second = archive.committed()[1]
    segment_keys = [k for k in everything if second.stats_keys[0] <= k <= second.stats_keys[1]]
    assert segment_keys
    for key in segment_keys:
        fs.rm(key.removeprefix("s3://"))  # the archive is now the only copy of these inputs
    rule = fault_proxy.add(Rule(method="GET", path=r"/archive/_manifests/000000000001\.json", status=500,
                                code="InternalError"))
    r = run(bucket, env, "--write-retry-s", "2")
    assert r.returncode == 4, r.stderr[-3000:]
    assert "000000000001" in r.stderr and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert rule.hits >= 2, "the read was retried"
    assert not fs.exists(f"{bucket}/archive/_quarantine"), "nothing moved"
    fault_proxy.clear()
    r = run(bucket, env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(Archive(f"s3://{bucket}/archive/").committed_table("stats", ["key"])["key"].to_pylist()) == everything
