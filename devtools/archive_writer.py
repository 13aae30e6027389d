"""A tiny archive writer for fencing tests: commit keys in segments through the Archive API.

    python -m devtools.archive_writer OUTPUT RUN_ID TTL_S N_KEYS SEGMENT_ROWS

Before each manifest PUT it prints ``PUT <segment>`` and waits 0.5 s, so a test can freeze it
(SIGSTOP) with the segment's data files written and its manifest in flight. Exit codes follow
jobs/compress_bucket.py: 0 done, 5 lease held or lost, 4 storage.
"""

from __future__ import annotations

import sys
import time
from datetime import datetime, timezone

import pyarrow as pa

from pipeline.archive import STATS, Archive, LeaseHeldError, LeaseLostError
from pipeline.schema import RECORD_SCHEMA, STATS_SCHEMA
from pipeline.storage_errors import StorageAccessError


def keys(n: int) -> list[str]:
    return [f"k{i:04d}" for i in range(n)]


def segment(keys: list[str], run_id: str) -> tuple[pa.Table, pa.Table]:
    """A segment's records and stats: one ok row per key, its bitstream naming the run."""
    now = datetime.now(timezone.utc)
    stats = [{"key": k, "version": "v1", "status": "ok", "error_kind": None, "run_id": run_id, "timestamp": now}
             for k in keys]
    records = [{"key": k, "version": "v1", "bitstream": f"{k}@{run_id}".encode(), "run_id": run_id} for k in keys]
    return pa.Table.from_pylist(records, schema=RECORD_SCHEMA), pa.Table.from_pylist(stats, schema=STATS_SCHEMA)


def write(archive: Archive, run_id: str, ttl_s: float, n: int, rows: int, before_put=None) -> None:
    """Archive those of ``keys(n)`` not yet committed, ``rows`` per segment, under a lease."""
    with archive.acquire_lease(run_id, ttl_s) as lease:
        archive.check_new_run(run_id)
        archive.recover(lease)
        done = set(archive.committed_table(STATS, ["key"])["key"].to_pylist())
        todo = [k for k in keys(n) if k not in done]
        for i in range(0, len(todo), rows):
            if before_put:
                before_put(i // rows)
            archive.commit_segment(lease, i // rows, *segment(todo[i : i + rows], run_id=run_id))
        lease.check()


def main(argv: list[str]) -> int:
    out, run_id, ttl, n, rows = argv[0], argv[1], float(argv[2]), int(argv[3]), int(argv[4])
    archive = Archive(out)
    real_put = archive._put_manifest

    def announced_put(lease, body):
        print(f"PUT {body['segment']}", flush=True)
        time.sleep(0.5)
        return real_put(lease, body)

    archive._put_manifest = announced_put
    try:
        write(archive, run_id, ttl, n, rows)
    except (LeaseHeldError, LeaseLostError) as exc:
        print(f"archive_writer: {exc}", file=sys.stderr)
        return 5
    except StorageAccessError as exc:
        print(f"archive_writer: {exc}", file=sys.stderr)
        return 4
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
