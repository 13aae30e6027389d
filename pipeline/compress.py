"""The archival job's driver: list → fetch → decode/encode/verify on codec replicas → commit segments.

    under the output's lease (Archive.acquire_lease), after recovering uncommitted files:
    iter_objects(input) ─▶ anti-join with Archive.latest_state ─▶ _runs/RUN/listing/part-N.parquet
    ray.data.read_parquet(listing) ─▶ map_batches(stages.fetch.fetch_objects)   CPU tasks
                                   ─▶ driver.actor_map(stages.encode.CodecReplica)  one per GPU, or CPU replicas
                                   ─▶ driver.results: dedupe by key ─▶ SegmentWriter
                                   ─▶ Archive.commit_segment (records + stats, then the manifest)
                                   ─▶ stac.Catalogue.add_segment (the segment's items, then the collection)
    JobSummary ─▶ _runs/RUN/summary.json
"""

from __future__ import annotations

import io
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from codec.families.minnen2018 import chosen_warning
from codec.registry import default_model_name

from . import driver, stac
from .archive import Archive, Lease
from .config import CompressJobConfig
from .numbers_display import size
from .model_store import model_resolver
from .retry import set_write_budget
from .schema import LISTING_SCHEMA, RECORD_SCHEMA, STATS_SCHEMA, listing_row
from .storage import check_readable, check_writable, iter_objects

LISTING_SHARD_ROWS = 50_000
RETRIED_BY_DEFAULT = ("transient", "changed")  # error kinds that a rerun tries again without --retry-errors


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
    exact: int = 0  # ok records decoded bit-exactly (PSNR inf): counted here, not in the mean
    segments: int = 0
    orphans_removed: int = 0
    cluster_retries: int = 0  # passes run again after the cluster lost a node, an actor or an object
    seconds: float = 0.0
    errors_by_kind: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)  # about the run's choices (a model below JPEG quality)

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

    def add(self, row: dict) -> None:
        """Count one replica row (ok or error)."""
        self.processed += 1
        if row["status"] != "ok":
            self.errors += 1
            self.errors_by_kind[row["error_kind"]] = self.errors_by_kind.get(row["error_kind"], 0) + 1
            return
        self.ok += 1
        self.bytes_in += row["original_bytes"] or 0
        self.bytes_out += row["compressed_bytes"] or 0
        self.pixels += (row["width"] or 0) * (row["height"] or 0)
        if row["psnr"] is not None and math.isfinite(row["psnr"]):
            self.psnr_sum += row["psnr"]
            self.psnr_n += 1
        elif row["psnr"] == math.inf:
            self.exact += 1

    def to_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio, "mean_bpp": self.mean_bpp, "mean_psnr": self.mean_psnr,
                "error_fraction": self.error_fraction}

    def _psnr_text(self) -> str:
        """Mean PSNR of the lossy records; exact ones (a --lossless run's, all of them) said as such, never nan."""
        exact = f"{self.exact} exact (lossless)" if self.exact else ""
        if not self.psnr_n:
            return f"every record exact: {exact}" if exact else "PSNR not measured"
        return f"mean PSNR {self.mean_psnr:.2f} dB" + (f" ({self.psnr_n} records; {exact})" if exact else "")

    def table(self) -> str:
        mp = self.pixels / 1e6
        s = max(self.seconds, 1e-9)
        lines = [
            f"run {self.run_id}",
            f"  images      {self.processed} processed ({self.ok} ok, {self.errors} errors), "
            f"{self.skipped_committed} already archived, {self.listed} listed",
            f"  data        {size(self.bytes_in)} in → {size(self.bytes_out)} out, ratio {self.ratio:.1f}×",
            f"  quality     mean {self.mean_bpp:.3f} bpp, {self._psnr_text()}",
            f"  throughput  {self.processed / s:.2f} images/s, {mp / s:.2f} MP/s over {self.seconds:.1f} s",
            f"  commits     {self.segments} segments" + (f", {self.orphans_removed} orphaned files removed" if self.orphans_removed else ""),
        ]
        lines += [f"  {w}" for w in self.warnings]
        if self.errors_by_kind:
            lines.append("  errors      " + ", ".join(f"{k}: {v}" for k, v in sorted(self.errors_by_kind.items())))
        return "\n".join(lines)


def run_job(cfg: CompressJobConfig, progress: bool = True) -> JobSummary:
    """Archive what is new under ``cfg.input`` as one run, the output's only writer while it lasts.

    Raises LeaseHeldError if another live run holds the output, ArchiveError if the run id was
    used before, StorageAccessError / ModelNotFoundError before anything is written, and
    StorageAccessError mid-run when an archive write keeps failing for ``cfg.write_retry_s`` or
    cannot succeed (full, read-only, forbidden): the lease is released on the way out.
    """
    t0 = time.time()
    summary = JobSummary(cfg.run_id)
    set_write_budget(cfg.write_retry_s)
    check_readable(cfg.input, cfg.storage)
    check_writable(cfg.output, cfg.storage)
    # pin NAME to NAME@VERSION once, so every replica uses the same weights even if a new
    # version is registered mid-run (and a missing model fails here, not in every replica)
    resolver = model_resolver(cfg.model_registry, cfg.storage)
    raster_model = cfg.raster_model or default_model_name(raster=True, sources=resolver.sources)
    cfg = cfg.model_copy(update={"model": resolver.resolve(cfg.model), "raster_model": resolver.resolve(raster_model)})
    note = chosen_warning(resolver.load(cfg.model))
    if note:
        summary.warnings.append(note)
        print(note, file=sys.stderr, flush=True)
    archive = Archive(cfg.output, cfg.storage)
    with archive.acquire_lease(cfg.run_id, cfg.lease_ttl_s, cfg.wait_for_lease_s,
                               progress=lambda m: print(m, file=sys.stderr, flush=True)) as lease:
        archive.check_new_run(cfg.run_id)
        summary.orphans_removed = len(archive.recover(lease))
        catalogue = stac.Catalogue.open(archive, lease)  # catches up with commits it lacks (a crash after one)
        shards = write_listing(cfg, archive, summary)
        if shards:
            _archive_listed(cfg, archive, lease, summary, shards, progress, catalogue)
        summary.seconds = time.time() - t0
        lease.check()
        archive.put(archive.run_summary(cfg.run_id), json.dumps(summary.to_dict(), indent=1).encode())
    return summary


def _archive_listed(cfg: CompressJobConfig, archive: Archive, lease: Lease, summary: JobSummary,
                    shards: list[str], progress: bool, catalogue=None) -> None:
    """The listed keys through the replicas into committed segments. When the cluster fails under the
    run (a node or its raylet lost with a replica or the blocks it held: :func:`driver.lost_to_the_cluster`),
    what arrived is committed, what is left is listed again and run again, up to ``cfg.cluster_retries``
    times: a lost node costs a retry, not the run. Keys already received are never listed twice."""
    writer = SegmentWriter(cfg, archive, lease, summary, catalogue)
    received: set[str] = set()
    todo, written = summary.listed - summary.skipped_committed, len(shards)
    while shards:
        try:
            for row in driver.results(_dataset(cfg, archive, shards), todo, "archive", progress, unique="key",
                                      seen=received):
                writer.add(row)
            break
        except Exception as exc:
            if not driver.lost_to_the_cluster(exc) or summary.cluster_retries >= cfg.cluster_retries:
                raise
            writer.commit()
            summary.cluster_retries += 1
            print(f"the cluster failed under the run ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                  f"{len(received)} images in, {summary.segments} segments committed; running the rest again "
                  f"(retry {summary.cluster_retries} of {cfg.cluster_retries})", file=sys.stderr, flush=True)
            todo -= len(received)
            shards = write_listing(cfg, archive, JobSummary(cfg.run_id), exclude=received, first_shard=written)
            written += len(shards)
    writer.commit()


def _pending(cfg: CompressJobConfig, state: dict[str, tuple], obj) -> bool:
    """Does ``obj`` still need archiving, given its key's latest committed (version, status, error_kind)?"""
    prev = state.get(obj.key)
    if prev is None or prev[0] != obj.version:
        return True
    if prev[1] != "error":
        return False
    return cfg.retry_errors or prev[2] in RETRIED_BY_DEFAULT


def write_listing(cfg: CompressJobConfig, archive: Archive, summary: JobSummary, exclude: set[str] = frozenset(),
                  first_shard: int = 0) -> list[str]:
    """Stream the input listing, keep what is not committed yet (nor in ``exclude``: received by this run
    already), write it as Parquet shards numbered from ``first_shard``.

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
            if o.key not in exclude and _pending(cfg, state, o):
                rows.append(listing_row(o))
            else:
                summary.skipped_committed += 1
        objs.clear()
        if rows:
            buf = io.BytesIO()
            pq.write_table(pa.Table.from_pylist(rows, schema=LISTING_SCHEMA), buf)
            path = archive.listing_shard(cfg.run_id, first_shard + len(shards))
            archive.put(path, buf.getvalue())
            shards.append(path)

    for obj in iter_objects(cfg.input, cfg.storage, cfg.extensions):
        summary.listed += 1
        objs.append(obj)
        if len(objs) >= LISTING_SHARD_ROWS:
            flush()
    flush()
    return shards


def _dataset(cfg: CompressJobConfig, archive: Archive, shards: list[str]):
    """The listed keys through fetch tasks and the codec replicas, as a (lazy, streaming) Ray dataset."""
    driver.local_ray_on_loopback()
    import ray
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    from .stages.encode import CodecReplica
    from .stages.fetch import FETCH_TASK_RETRIES, fetch_objects

    driver.start(cfg.replica_start_timeout_s)
    ds = ray.data.read_parquet(shards, filesystem=PyFileSystem(FSSpecHandler(archive.fs)), schema=LISTING_SCHEMA)
    # one listing shard is one block of up to 50k keys: split it (streaming) so that every
    # replica gets work and each fetch holds only a batch of objects in memory
    ds = ds.repartition(target_num_rows_per_block=cfg.batch_size)
    ds = ds.map_batches(fetch_objects, fn_kwargs={"storage": cfg.storage, "attempts": cfg.fetch_attempts,
                                                  "defer_over_bytes": cfg.window_over_bytes},
                        batch_size=cfg.batch_size, batch_format="pyarrow", num_cpus=0.5,
                        max_retries=FETCH_TASK_RETRIES)  # fetch_objects never raises: only a dead worker retries
    # a batch whose image kills its replica is retried; CodecReplica turns a key that killed it
    # CRASH_LIMIT times into a `crashed` row, so (batch_size + 2) tries always end
    return driver.actor_map(ds, CodecReplica, cfg, max_restarts=cfg.max_replica_restarts,
                            max_task_retries=cfg.batch_size + 2)


class SegmentWriter:
    """Replica rows in, committed segments out: a segment every ``segment_rows`` rows or ``segment_bytes`` of bitstreams."""

    def __init__(self, cfg: CompressJobConfig, archive: Archive, lease: Lease, summary: JobSummary,
                 catalogue: "stac.Catalogue | None" = None):
        self.cfg, self.archive, self.lease, self.summary = cfg, archive, lease, summary
        self.catalogue = catalogue
        self.pending: list[dict] = []
        self.pending_bytes = 0

    def add(self, row: dict) -> None:
        self.pending.append(row)
        self.pending_bytes += len(row["bitstream"] or b"")
        self.summary.add(row)
        if len(self.pending) >= self.cfg.segment_rows or self.pending_bytes >= self.cfg.segment_bytes:
            self.commit()

    def commit(self) -> None:
        """Commit what is pending as the run's next segment (its records are the ``ok`` rows), then its STAC items."""
        if not self.pending:
            return
        records = [r for r in self.pending if r["status"] == "ok"]
        manifest = self.archive.commit_segment(
            self.lease, self.summary.segments,
            pa.Table.from_pylist(records, schema=RECORD_SCHEMA),
            pa.Table.from_pylist(self.pending, schema=STATS_SCHEMA),
        )
        if self.catalogue is not None:
            self.catalogue.add_segment(manifest, records, self.pending)
        self.summary.segments += 1
        self.pending.clear()
        self.pending_bytes = 0
