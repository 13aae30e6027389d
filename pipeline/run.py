"""The archival job: list → fetch → decode/encode/verify on codec replicas → commit segments.

    listing (driver, streamed, skips committed keys) ─▶ _runs/RUN/listing/*.parquet
    ray.data.read_parquet ─▶ map_batches(fetch_objects)            CPU tasks
                          ─▶ map_batches(CodecReplica, ActorPool)  one replica per GPU, or CPU replicas
                          ─▶ driver: dedupe by key ─▶ Archive.commit_segment (records + stats + manifest)
"""

from __future__ import annotations

import io
import json
import math
import time
from dataclasses import asdict, dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from .archive import RECORD_SCHEMA, STATS_SCHEMA, Archive
from .config import CompressJobConfig
from .model_store import install_model
from .storage import check_readable, check_writable, iter_objects

LISTING_SCHEMA = pa.schema([("key", pa.string()), ("version", pa.string()), ("size", pa.int64()),
                            ("etag", pa.string()), ("mtime", pa.string())])
LISTING_SHARD_ROWS = 50_000


@dataclass
class JobSummary:
    run_id: str
    listed: int = 0
    skipped_committed: int = 0
    processed: int = 0
    ok: int = 0
    errors: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    pixels: int = 0
    psnr_sum: float = 0.0
    psnr_n: int = 0
    segments: int = 0
    orphans_removed: int = 0
    seconds: float = 0.0
    errors_by_kind: dict = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.bytes_in / self.bytes_out if self.bytes_out else float("nan")

    @property
    def mean_bpp(self) -> float:
        return self.bytes_out * 8 / self.pixels if self.pixels else float("nan")

    @property
    def mean_psnr(self) -> float:
        return self.psnr_sum / self.psnr_n if self.psnr_n else float("nan")

    @property
    def error_fraction(self) -> float:
        return self.errors / self.processed if self.processed else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio, "mean_bpp": self.mean_bpp, "mean_psnr": self.mean_psnr,
                "error_fraction": self.error_fraction}

    def table(self) -> str:
        mp = self.pixels / 1e6
        s = max(self.seconds, 1e-9)
        lines = [
            f"run {self.run_id}",
            f"  images      {self.processed} processed ({self.ok} ok, {self.errors} errors), "
            f"{self.skipped_committed} already archived, {self.listed} listed",
            f"  data        {_size(self.bytes_in)} in → {_size(self.bytes_out)} out, ratio {self.ratio:.1f}×",
            f"  quality     mean {self.mean_bpp:.3f} bpp, mean PSNR {self.mean_psnr:.2f} dB",
            f"  throughput  {self.processed / s:.2f} images/s, {mp / s:.2f} MP/s over {self.seconds:.1f} s",
            f"  commits     {self.segments} segments" + (f", {self.orphans_removed} orphaned files removed" if self.orphans_removed else ""),
        ]
        if self.errors_by_kind:
            lines.append("  errors      " + ", ".join(f"{k}: {v}" for k, v in sorted(self.errors_by_kind.items())))
        return "\n".join(lines)


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return ""


RETRIED_BY_DEFAULT = ("transient", "changed")  # error kinds that a rerun tries again without --retry-errors


def _pending(cfg: CompressJobConfig, state: dict[str, tuple], obj) -> bool:
    """Does ``obj`` still need archiving, given its key's latest committed (version, status, error_kind)?"""
    prev = state.get(obj.key)
    if prev is None or prev[0] != obj.version:
        return True
    if prev[1] != "error":
        return False
    return cfg.retry_errors or prev[2] in RETRIED_BY_DEFAULT


def write_listing(cfg: CompressJobConfig, archive: Archive, summary: JobSummary) -> list[str]:
    """Stream the input listing, keep what is not committed yet, write it as Parquet shards.

    Each shard of listed objects is anti-joined with the committed state of exactly its keys
    (``Archive.latest_state``), so memory follows the shard, not the archive.
    """
    shards, objs = [], []

    def flush():
        if not objs:
            return
        t = archive.latest_state([o.key for o in objs])
        state = {k: (v, s, e) for k, v, s, e in zip(*(t[c].to_pylist() for c in t.column_names))}
        rows = []
        for o in objs:
            if _pending(cfg, state, o):
                rows.append({"key": o.key, "version": o.version, "size": o.size, "etag": o.etag, "mtime": o.mtime})
            else:
                summary.skipped_committed += 1
        objs.clear()
        if rows:
            buf = io.BytesIO()
            pq.write_table(pa.Table.from_pylist(rows, schema=LISTING_SCHEMA), buf)
            path = archive.run_path(cfg.run_id, "listing", f"part-{len(shards):05d}.parquet")
            archive.put(path, buf.getvalue())
            shards.append(path)

    for obj in iter_objects(cfg.input, cfg.storage, cfg.extensions):
        summary.listed += 1
        objs.append(obj)
        if len(objs) >= LISTING_SHARD_ROWS:
            flush()
    flush()
    return shards


def replica_plan(cfg: CompressJobConfig) -> tuple[int, dict, int]:
    """(replicas, resources per replica, CPU threads per replica) from the cluster's resources."""
    import ray

    res = ray.cluster_resources()
    gpus, cpus = res.get("GPU", 0), int(res.get("CPU", 1))
    if gpus >= cfg.gpus_per_replica:
        n = cfg.replicas or max(1, int(gpus / cfg.gpus_per_replica))
        # a CPU share for decoding and entropy coding, leaving half the CPUs to the fetch tasks
        return n, {"num_gpus": cfg.gpus_per_replica, "num_cpus": min(1.0, cpus / (2 * n))}, max(1, cpus // n)
    n = cfg.replicas or max(1, cpus // 4)
    return n, {"num_cpus": 1}, max(1, cpus // n)


def run_job(cfg: CompressJobConfig, progress: bool = True) -> JobSummary:
    """Archive what is new under ``cfg.input`` as one run, the output's only writer while it lasts.

    Raises LeaseHeldError if another live run holds the output, ArchiveError if the run id was
    used before, StorageAccessError / ModelNotFoundError before anything is written.
    """
    t0 = time.time()
    summary = JobSummary(cfg.run_id)
    check_readable(cfg.input, cfg.storage)
    check_writable(cfg.output, cfg.storage)
    # pin NAME to NAME@VERSION once, so every replica uses the same weights even if a new
    # version is registered mid-run (and a missing model fails here, not in every replica)
    cfg = cfg.model_copy(update={"model": install_model(cfg.model, cfg.model_registry, cfg.storage)})
    archive = Archive(cfg.output, cfg.storage)
    with archive.acquire_lease(cfg.run_id, cfg.lease_ttl_s) as lease:
        archive.check_new_run(cfg.run_id)
        summary.orphans_removed = len(archive.recover(lease))
        shards = write_listing(cfg, archive, summary)
        if shards:
            _process(cfg, archive, lease, shards, summary, progress)
        summary.seconds = time.time() - t0
        lease.check()
        archive.put(archive.run_path(cfg.run_id, "summary.json"), json.dumps(summary.to_dict(), indent=1).encode())
    return summary


def _process(cfg: CompressJobConfig, archive: Archive, lease, shards: list[str], summary: JobSummary,
             progress: bool) -> None:
    """Stream the listed keys through fetch and the codec replicas; commit segments as rows arrive."""
    import ray
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    from .fetch import fetch_objects
    from .replica import CodecReplica

    todo = summary.listed - summary.skipped_committed
    if not ray.is_initialized():
        ray.init(log_to_driver=False, include_dashboard=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    # start every replica before dispatching work (and fail loudly if the cluster can't host them)
    ctx.wait_for_min_actors_s = cfg.replica_start_timeout_s
    n, resources, threads = replica_plan(cfg)
    ds = ray.data.read_parquet(shards, filesystem=PyFileSystem(FSSpecHandler(archive.fs)), schema=LISTING_SCHEMA)
    # one listing shard is one block of up to 50k keys: split it (streaming) so that every
    # replica gets work and each fetch holds only a batch of objects in memory
    ds = ds.repartition(target_num_rows_per_block=cfg.batch_size)
    ds = ds.map_batches(fetch_objects, fn_kwargs={"storage": cfg.storage, "attempts": cfg.fetch_attempts},
                        batch_size=cfg.batch_size, batch_format="pyarrow", num_cpus=0.5)
    # Ray Data restarts replicas and retries their tasks forever by default: bound both (Ray 2.60
    # has no named parameters for these, hence its deprecation warning on **ray_remote_args). A batch
    # whose image kills its replica is retried; CodecReplica turns a key that killed it twice into
    # a `crashed` row, so (batch_size + 2) tries always end.
    ds = ds.map_batches(
        CodecReplica,
        fn_constructor_kwargs={"config": cfg, "cpu_threads": threads},
        batch_size=cfg.batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(min_size=n, max_size=n, max_tasks_in_flight_per_actor=2),
        max_restarts=cfg.max_replica_restarts,
        max_task_retries=cfg.batch_size + 2,
        **resources,
    )

    seen: set[str] = set()
    pending: list[dict] = []
    pending_bytes = 0
    bar = tqdm(total=todo, desc="archive", unit="img", disable=not progress, mininterval=1)

    def commit():
        nonlocal pending_bytes
        if pending:
            records = [r for r in pending if r["status"] == "ok"]
            archive.commit_segment(
                lease, summary.segments,
                pa.Table.from_pylist(records, schema=RECORD_SCHEMA),
                pa.Table.from_pylist(pending, schema=STATS_SCHEMA),
            )
            summary.segments += 1
            pending.clear()
            pending_bytes = 0

    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        for row in batch.to_pylist():
            if row["key"] in seen:  # a retried task re-emitted it
                continue
            seen.add(row["key"])
            pending.append(row)
            pending_bytes += len(row["bitstream"] or b"")
            _account(summary, row)
            bar.update(1)
            if len(pending) >= cfg.segment_rows or pending_bytes >= cfg.segment_bytes:
                commit()
    commit()
    bar.close()


def _account(s: JobSummary, row: dict) -> None:
    s.processed += 1
    if row["status"] == "ok":
        s.ok += 1
        s.bytes_in += row["original_bytes"] or 0
        s.bytes_out += row["compressed_bytes"] or 0
        s.pixels += (row["width"] or 0) * (row["height"] or 0)
        if row["psnr"] is not None and math.isfinite(row["psnr"]):
            s.psnr_sum += row["psnr"]
            s.psnr_n += 1
    else:
        s.errors += 1
        s.errors_by_kind[row["error_kind"]] = s.errors_by_kind.get(row["error_kind"], 0) + 1
