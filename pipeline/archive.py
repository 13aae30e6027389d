"""The archive layout, its single-writer lease and its commit protocol.

    OUTPUT/records/run=RUN/part-SEG.parquet     one row per image: the bitstream and its source
    OUTPUT/stats/run=RUN/part-SEG.parquet       one row per input, ok or error
    OUTPUT/_manifests/SEQ.json                  written last, create-only: the commit point of a segment
    OUTPUT/_checkpoints/SEQ.parquet             every manifest up to SEQ (every 64 commits, create-only)
    OUTPUT/_lease/GEN.json                      the run that may write (one generation per holder)
    OUTPUT/_quarantine/RUN/...                  uncommitted files that recovery moved out of the way
    OUTPUT/_runs/RUN/listing/part-N.parquet     what the run set out to archive (its listing shards)
    OUTPUT/_runs/RUN/replicas/HOST-PID.json     each codec replica: host, GPUs, device, model
    OUTPUT/_runs/RUN/inflight/ID.json           keys a replica is coding now (left behind if it dies)
    OUTPUT/_runs/RUN/summary.json               the run's JobSummary
    OUTPUT/stac/collection.json                 the STAC catalogue of the committed records (pipeline.stac)
    OUTPUT/stac/items/ITEM.json                 one item per archived key; written after each commit
    RESTORED/_restore_log/ID.parquet            a restore's result per key (under the restore's output)

:class:`Archive` names every one of these paths; nothing else in the pipeline builds them.

Guarantees, and where they come from:

- **One writer.** A run writes only while it holds the output's lease: ``_lease/GEN.json``
  created with a create-only PUT (a conditional PUT on S3, ``link`` on a local disk), renewed
  while the run lives. Another run sees a live lease and stops (:class:`LeaseHeldError`); it
  takes over only after the lease expired, by creating generation GEN+1 (create-only again,
  so two would-be successors cannot both win).
- **Commit points.** A segment's two Parquet files are written first, then its manifest, named
  by the archive-wide commit sequence and created create-only: a manifest is never overwritten,
  and two writers can never both commit sequence N. A segment without a manifest never happened.
- **Relocatable.** Manifests name files relative to the archive root, so a copy of an archive
  (another bucket, prefix, mount point or symlink) is a complete, independent archive.
- **Recovery touches nothing committed.** ``recover()`` runs under the lease, so every other
  run's lease is gone; files that no manifest names are *moved* to ``_quarantine/`` (never
  deleted), and their keys, being uncommitted, are processed again. A manifest that cannot be
  read (a storage error past the retry budget) stops recovery before anything moves
  (:class:`ArchiveUnreadableError`, exit 4); one that reads but is torn keeps every unnamed
  file in place until an operator runs ``python -m pipeline.archive check|repair OUTPUT``.
- **Readers degrade, they do not fail.** An unreadable manifest or one whose files are missing
  is skipped and reported in :attr:`Archive.problems`; the rest of the archive reads.
- **Starts follow the commits since the last checkpoint**, not the archive's history: a start
  reads the newest checkpoint and only the manifests after it (:mod:`pipeline.checkpoint`).
- **Latest wins by commit sequence**, stored in each manifest (not by file or run names).
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq

from . import checkpoint, retry
from .config import StorageOptions
from .schema import RECORD_SCHEMA, STATS_SCHEMA
from .storage import filesystem, put_atomic, put_if_absent, to_url
from .storage_errors import StorageAccessError

RECORDS, STATS, MANIFESTS, LEASES, QUARANTINE, RUNS = "records", "stats", "_manifests", "_lease", "_quarantine", "_runs"
RESTORE_LOG, CHECKPOINTS, STAC = "_restore_log", "_checkpoints", "stac"
RUN_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
DEFAULT_LEASE_TTL_S = 120.0
#: the longest one archive PUT can stay in flight: botocore's connect (60 s) plus read (60 s) timeout
#: (our retry loop starts each attempt afresh, and a process paused longer is fenced, not waited for)
MAX_INFLIGHT_PUT_S = 120.0


def archive_url(url: str) -> str:
    """The archive of ``url``, which names the archive or its ``stats/``: ``s3://a/stats/`` → ``s3://a/``."""
    url = url.rstrip("/")
    return url[: -len("/" + STATS)] + "/" if url.endswith("/" + STATS) else url + "/"


def folder_url(url: str, kind: str) -> str:
    """Where a person (or DuckDB) finds the ``records`` or ``stats`` of the archive at ``url``."""
    return f"{url.rstrip('/')}/{kind}/"


class ArchiveError(RuntimeError):
    """The archive cannot be written as asked (its state is never changed when this is raised)."""


class LeaseHeldError(ArchiveError):
    """Another live run holds the output."""


class LeaseLostError(ArchiveError):
    """This run's lease expired or was taken over: it must stop writing."""


class ArchiveUnreadableError(StorageAccessError):
    """A manifest stayed unreadable (5xx, timeout, reset) past the retry budget: nothing was moved (exit 4)."""


def read_retried(fs, path: str, policy: retry.RetryPolicy | None = None) -> bytes:
    """``path``'s bytes, transient failures retried under ``policy`` (default: the write budget).

    A manifest that cannot be read is not a torn one: its files may be committed, so a read
    that keeps failing raises :class:`ArchiveUnreadableError` instead of being skipped.
    """
    policy = policy or retry.WRITE_RETRY
    start = time.monotonic()
    for attempt in range(1, policy.attempts + 1):
        try:
            return fs.cat_file(path)
        except Exception as exc:
            if not retry.is_transient(exc):
                raise
            wait = retry.backoff(attempt, policy.base_s, policy.cap_s)
            spent = time.monotonic() - start
            if attempt == policy.attempts or spent + wait > policy.budget_s:
                raise ArchiveUnreadableError(
                    f"cannot read {to_url(fs, path)}: storage kept failing for {spent:.0f} s ({attempt} attempts): "
                    f"{type(exc).__name__}: {exc}"[:600] + "; nothing was moved, rerun when storage is back") from exc
            time.sleep(wait)
    raise AssertionError("unreachable")


def check_run_id(run_id: str) -> str:
    if not RUN_ID_RE.match(run_id or ""):
        raise ValueError(f"run id {run_id!r}: use 1–128 letters, digits, '.', '_' or '-'")
    return run_id


@dataclass(frozen=True)
class Manifest:
    """One committed segment. ``files`` are paths relative to the archive root."""

    name: str  # the manifest's file name
    run_id: str
    segment: int
    commit_seq: int | None  # None for manifests written before commit sequences existed
    committed_at: str
    rows: int
    records: int
    files: dict
    record_keys: tuple | None
    stats_keys: tuple | None
    generation: int | None = None  # the lease generation that wrote it; None for older manifests (unknown)

    def fenced_by(self, fences: dict[int, int]) -> bool:
        """Written by an older generation after a takeover fenced it: above a newer generation's fence."""
        return is_fenced(self.generation, self.commit_seq, fences)

    @property
    def order(self) -> tuple:
        """Commit order: legacy manifests (by time) before sequenced ones (by sequence)."""
        return (0, self.committed_at, self.name) if self.commit_seq is None else (1, self.commit_seq, "")

    def overlaps(self, lo: str, hi: str, kind: str = STATS) -> bool:
        rng = self.stats_keys if kind == STATS else self.record_keys
        return rng is None or not (rng[1] < lo or rng[0] > hi)


def is_fenced(generation: int | None, seq: int | None, fences: dict[int, int]) -> bool:
    """Did a takeover after ``generation`` fence sequence ``seq`` out? (Unknown generation: never.)"""
    if generation is None or seq is None:
        return False
    return any(gen > generation and seq > fence for gen, fence in fences.items())


def _relative(path: str) -> str:
    """A manifest's file entry relative to the archive root.

    Older manifests stored absolute paths; what follows ``records/run=`` or ``stats/run=`` is the
    same in any copy of the archive, so those are read relative too.
    """
    path = path.replace("\\", "/")
    for kind in (RECORDS, STATS):
        i = path.rfind(f"{kind}/run=")
        if i == 0 or (i > 0 and path[i - 1] == "/"):
            return path[i:]
    return path.lstrip("/")


@dataclass
class Lease:
    """The output's writer lease, renewed by a daemon thread while the run lives."""

    archive: "Archive"
    generation: int
    run_id: str
    owner: str
    ttl_s: float
    expires_at: float = 0.0
    lost: str | None = None
    fences: dict[int, int] = field(default_factory=dict)  # generation -> the highest commit it took over at
    quarantine_before: float = 0.0  # recovery moves unnamed files older than this (see Archive.recover)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def path(self) -> str:
        return self.archive.lease_path(self.generation)

    def body(self, released: bool = False) -> bytes:
        return json.dumps({"run_id": self.run_id, "owner": self.owner, "generation": self.generation,
                           "expires_at": self.expires_at, "released": released,
                           "fences": {str(g): f for g, f in self.fences.items()},
                           "renewed_at": datetime.now(timezone.utc).isoformat()}).encode()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._renew_loop, name=f"lease-{self.run_id}", daemon=True)
        self._thread.start()

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl_s / 4):
            try:
                self.renew()
            except LeaseLostError:
                return
            except Exception:  # a storage hiccup: try again next tick; check() stops commits if it lasts
                continue

    def _confirm_held(self) -> None:
        """Raise LeaseLostError unless the newest lease is this one; one that cannot be read is lost too."""
        try:
            current = self.archive.current_lease()
        except StorageAccessError as exc:
            self.lost = f"cannot read the current lease of {self.archive.url}, so it may be someone else's: {exc}"
            raise LeaseLostError(self.lost) from exc
        if current is None or current.get("generation") != self.generation or current.get("owner") != self.owner:
            self.lost = f"the lease on {self.archive.url} was taken over (now {current})"
            raise LeaseLostError(self.lost)

    def renew(self) -> None:
        if self.lost:
            raise LeaseLostError(self.lost)
        self._confirm_held()
        expires = time.time() + self.ttl_s
        put_atomic(self.archive.fs, self.path, json.dumps({**json.loads(self.body()), "expires_at": expires}).encode())
        self.expires_at = expires

    def check(self) -> None:
        """Raise unless this run still holds the lease with time to spare (called before every commit)."""
        if self.lost:
            raise LeaseLostError(self.lost)
        if time.time() > self.expires_at - self.ttl_s / 8:
            try:
                self.renew()  # its PUT is retried for the write budget: a brownout is not a lost lease
            except (LeaseLostError, StorageAccessError):
                raise  # taken over; or storage down past the budget (exit 4, the lease expires on its own)
            except Exception as exc:
                raise LeaseLostError(f"cannot renew the lease on {self.archive.url}: {exc}") from exc
        self._confirm_held()

    def release(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        if not self.lost:
            try:
                put_atomic(self.archive.fs, self.path, self.body(released=True))
            except Exception:
                pass  # it expires on its own

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class Archive:
    """An archive under an output URL (any fsspec filesystem)."""

    def __init__(self, url: str, storage: StorageOptions | None = None):
        self.url = url.rstrip("/")
        self.fs, self.root = filesystem(url, storage)
        self.root = self.root.rstrip("/")
        self.problems: list[str] = []  # what readers skipped, and why
        self.torn: list[str] = []  # manifests that read back but do not parse (their files are kept)
        self.fenced: list[Manifest] = []  # a stale generation's manifests after a takeover: never committed
        self._fences: dict[int, int] = {}
        self._manifests: list[Manifest] | None = None
        self._present: set[str] | None = None  # data files seen by the last listing

    # --- paths: every file of the layout above is named here --------------------------------
    def path(self, *parts: str) -> str:
        """``parts`` below the root (a manifest's relative file names, or one of the layout's folders)."""
        return "/".join([self.root, *parts])

    def lease_path(self, generation: int) -> str:
        return self.path(LEASES, f"{generation:012d}.json")

    def manifest_path(self, commit_seq: int) -> str:
        return self.path(MANIFESTS, f"{commit_seq:012d}.json")

    def checkpoint_path(self, commit_seq: int) -> str:
        return self.path(CHECKPOINTS, f"{commit_seq:012d}.parquet")

    @staticmethod
    def segment_files(run_id: str, segment: int) -> dict[str, str]:
        """A segment's records and stats files, relative to the root (as its manifest names them)."""
        name = f"part-{segment:06d}.parquet"
        return {RECORDS: f"{RECORDS}/run={run_id}/{name}", STATS: f"{STATS}/run={run_id}/{name}"}

    def quarantine_path(self, run_id: str, rel: str) -> str:
        return self.path(QUARANTINE, run_id, rel)

    def _run_path(self, run_id: str, *parts: str) -> str:
        return self.path(RUNS, run_id, *parts)

    def listing_shard(self, run_id: str, n: int) -> str:
        return self._run_path(run_id, "listing", f"part-{n:05d}.parquet")

    def replica_info(self, run_id: str, name: str) -> str:
        return self._run_path(run_id, "replicas", f"{name}.json")

    def inflight_dir(self, run_id: str) -> str:
        return self._run_path(run_id, "inflight")

    def inflight_marker(self, run_id: str, token: str) -> str:
        return self._run_path(run_id, "inflight", f"{token}.json")

    def run_summary(self, run_id: str) -> str:
        return self._run_path(run_id, "summary.json")

    def restore_log(self, restore_id: str) -> str:
        """A restore's log, below an archive opened on the restore's *output*."""
        return self.path(RESTORE_LOG, f"{restore_id}.parquet")

    def restore_log_url(self, restore_id: str) -> str:
        """:meth:`restore_log` as the URL a person is shown."""
        return f"{self.url}/{RESTORE_LOG}/{restore_id}.parquet"

    def stac_collection(self) -> str:
        """The STAC collection of the archive (pipeline.stac writes it last, after the items)."""
        return self.path(STAC, "collection.json")

    def stac_item(self, item_id: str) -> str:
        return self.path(STAC, "items", f"{item_id}.json")

    def url_of(self, path: str) -> str:
        """A path of this archive's filesystem as the URL a person (or a STAC href) uses."""
        return to_url(self.fs, path)

    # --- reading -------------------------------------------------------------------------
    def manifests(self, refresh: bool = False) -> list[Manifest]:
        """Every readable manifest, in commit order (cached; ``refresh`` re-lists)."""
        if self._manifests is not None and not refresh:
            return self._manifests
        try:
            names = self.fs.ls(self.path(MANIFESTS), detail=False)
        except FileNotFoundError:
            names = []
        self.torn, self._fences = [], self.fences()
        out, upto = self._newest_checkpoint()
        seen = {m.name for m in out}
        for n in sorted(names):
            stem = n.rsplit("/", 1)[-1][:-5]
            if not n.endswith(".json") or stem + ".json" in seen or (stem.isdigit() and int(stem) <= upto):
                continue
            try:
                data = read_retried(self.fs, n)  # a storage error that lasts raises: never taken for torn
            except FileNotFoundError:
                continue  # listed a moment ago, gone since
            try:
                out.append(self._parse_manifest(n, data))
            except Exception as exc:  # torn write (a crash on a non-atomic filesystem), or foreign junk
                self.torn.append(n)
                self._problem(f"unreadable manifest {to_url(self.fs, n)} skipped: {type(exc).__name__}: {exc}")
        out.sort(key=lambda m: m.order)
        self.fenced = [m for m in out if m.fenced_by(self._fences)]
        self._manifests, self._present = [m for m in out if not m.fenced_by(self._fences)], None
        return self._manifests

    def _newest_checkpoint(self) -> tuple[list[Manifest], int]:
        """The newest checkpoint that parses and is not fenced: its manifests and its sequence (-1: none)."""
        try:
            names = sorted(n for n in self.fs.ls(self.path(CHECKPOINTS), detail=False) if n.endswith(".parquet"))
        except FileNotFoundError:
            return [], -1
        for n in reversed(names):
            stem = n.rsplit("/", 1)[-1].split(".")[0]
            try:
                gen, found = checkpoint.decode(read_retried(self.fs, n), Manifest)
            except FileNotFoundError:
                continue
            except StorageAccessError:
                raise  # unreadable is not torn, here as for manifests
            except Exception as exc:  # torn or foreign: the manifests it repeats are still there
                self._problem(f"checkpoint {to_url(self.fs, n)} skipped: {type(exc).__name__}: {exc}")
                continue
            if stem.isdigit() and not is_fenced(gen, int(stem), self._fences):
                return found, int(stem)
        return [], -1

    def fences(self) -> dict[int, int]:
        """Every takeover's fence (generation -> highest commit it took over at), as the newest lease lists them.

        Each lease inherits its predecessor's fences, so one read gives the whole history.
        """
        current = self.current_lease() or {}
        return {int(g): int(f) for g, f in (current.get("fences") or {}).items()}

    @staticmethod
    def _parse_manifest(path: str, data: bytes) -> Manifest:
        m = json.loads(data)
        files = {k: _relative(m["files"][k]) for k in (RECORDS, STATS)}
        rk, sk = m.get("record_keys"), m.get("stats_keys")
        return Manifest(path.rsplit("/", 1)[-1], str(m["run_id"]), int(m["segment"]), m.get("commit_seq"),
                        str(m.get("committed_at", "")), int(m.get("rows", 0)), int(m.get("records", 0)), files,
                        tuple(rk) if rk else None, tuple(sk) if sk else None,
                        int(m["generation"]) if m.get("generation") is not None else None)

    def _problem(self, message: str) -> None:
        if message not in self.problems:
            self.problems.append(message)

    def _existing(self, kind: str) -> set[str]:
        """Data files present under ``records/`` or ``stats/`` (absolute paths), one listing."""
        base = self.path(kind)
        try:
            return {p.rstrip("/") for p in self.fs.find(base) if p.endswith(".parquet")}
        except FileNotFoundError:
            return set()

    def committed(self) -> list[Manifest]:
        """Manifests whose files are all present, in commit order; the others are reported, not read."""
        manifests = self.manifests()
        if self._present is None:
            self._present = self._existing(RECORDS) | self._existing(STATS)
        out = []
        for m in manifests:
            missing = [f for f in m.files.values() if self.path(f) not in self._present]
            if missing:
                self._problem(f"manifest {m.name} (run {m.run_id}) skipped: missing {', '.join(missing)}")
            else:
                out.append(m)
        return out

    def committed_files(self, kind: str) -> list[str]:
        """Absolute paths of the committed files of ``records`` or ``stats``, in commit order."""
        return [self.path(m.files[kind]) for m in self.committed()]

    def run_order(self) -> dict[str, int]:
        """run id → position of its first commit (later runs have larger numbers)."""
        order: dict[str, int] = {}
        for m in self.committed():
            order.setdefault(m.run_id, len(order))
        return order

    def committed_table(self, kind: str, columns: list[str] | None = None, filter=None) -> pa.Table:
        """The committed rows of ``records`` or ``stats`` (exactly the manifests' files), in commit order."""
        schema = RECORD_SCHEMA if kind == RECORDS else STATS_SCHEMA
        files = self.committed_files(kind)
        if not files:
            return schema.empty_table().select(columns) if columns else schema.empty_table()
        import pyarrow.dataset as ds

        return ds.dataset(files, schema=schema, format="parquet", filesystem=self.fs).to_table(columns=columns, filter=filter)

    def segment_table(self, manifest: Manifest, kind: str) -> pa.Table:
        """One committed segment's ``records`` or ``stats`` file, whole (at most a segment's bytes)."""
        import pyarrow.dataset as ds

        schema = RECORD_SCHEMA if kind == RECORDS else STATS_SCHEMA
        return ds.dataset(self.path(manifest.files[kind]), schema=schema, format="parquet",
                          filesystem=self.fs).to_table()

    def committed_dataset(self, kind: str):
        """A lazy ``pyarrow.dataset`` over the committed files (what DuckDB can scan without a copy)."""
        import pyarrow.dataset as ds

        schema = RECORD_SCHEMA if kind == RECORDS else STATS_SCHEMA
        return ds.dataset(self.committed_files(kind), schema=schema, format="parquet", filesystem=self.fs)

    def latest_state(self, keys: list[str]) -> pa.Table:
        """Latest committed (key, version, status, error_kind) of each of ``keys`` that has one.

        Reads only the segments whose key range overlaps ``keys`` and, in them, only the row
        groups that can hold them: memory follows the batch of keys, not the archive.
        """
        import pyarrow.compute as pc
        import pyarrow.dataset as ds

        cols = ["key", "version", "status", "error_kind"]
        empty = pa.schema([STATS_SCHEMA.field(c) for c in cols]).empty_table()
        if not keys:
            return empty
        lo, hi = min(keys), max(keys)
        wanted = pa.array(sorted(set(keys)), pa.string())
        filt = (pc.field("key") >= lo) & (pc.field("key") <= hi) & pc.field("key").isin(wanted)
        latest: dict[str, dict] = {}
        for m in self.committed():
            if not m.overlaps(lo, hi, STATS):
                continue
            t = ds.dataset(self.path(m.files[STATS]), schema=STATS_SCHEMA, format="parquet",
                           filesystem=self.fs).to_table(columns=cols, filter=filt)
            for row in t.to_pylist():
                latest[row["key"]] = row  # commit order: later rows win
        return pa.Table.from_pylist(list(latest.values()), schema=empty.schema)

    def record_index(self, keys: list[str] | None = None, prefix: str | None = None) -> pa.Table:
        """The latest committed record of each key (no bitstreams), with the file that holds it.

        Columns: key, version, model_id, width, height, channels, bands, dtype, geo, run_id, file.
        """
        import pyarrow.compute as pc
        import pyarrow.dataset as ds

        cols = ["key", "version", "model_id", "width", "height", "channels", "bands", "dtype", "geo", "run_id"]
        wanted = set(keys) if keys is not None else None
        latest: dict[str, dict] = {}
        for m in self.committed():  # commit order: a later record of a key replaces an earlier one
            lo_hi = m.record_keys
            if not m.records or (wanted is not None and lo_hi and not any(lo_hi[0] <= k <= lo_hi[1] for k in wanted)):
                continue
            filt = None
            if wanted is not None:
                filt = pc.field("key").isin(sorted(wanted))
            elif prefix:
                filt = pc.starts_with(pc.field("key"), prefix)
            f = self.path(m.files[RECORDS])
            t = ds.dataset(f, schema=RECORD_SCHEMA, format="parquet", filesystem=self.fs).to_table(columns=cols, filter=filt)
            for row in t.to_pylist():
                latest[row["key"]] = {**row, "file": f}
        rows = [latest[k] for k in sorted(latest)]
        schema = pa.schema([RECORD_SCHEMA.field(c) for c in cols] + [("file", pa.string())])
        return pa.Table.from_pylist(rows, schema=schema)

    def read_records(self, file: str, keys: list[str], columns: list[str] | None = None) -> pa.Table:
        """Rows of ``keys`` from one records file; row-group statistics skip the rest of the file."""
        import pyarrow.compute as pc
        import pyarrow.dataset as ds

        dset = ds.dataset(file, schema=RECORD_SCHEMA, format="parquet", filesystem=self.fs)
        return dset.to_table(columns=columns, filter=pc.field("key").isin(keys))

    def find_record(self, key: str) -> dict | None:
        """The latest committed record of one key, bitstream included, or None.

        Walks the manifests newest first; their key ranges pick the segments that can
        hold the key, and of such a file only the row groups whose statistics admit it
        are read, so one image comes back without scanning the archive.
        """
        for m in reversed(self.committed()):
            lo_hi = m.record_keys
            if not m.records or (lo_hi and not lo_hi[0] <= key <= lo_hi[1]):
                continue
            f = self.path(m.files[RECORDS])
            rows = self.read_records(f, [key]).to_pylist()
            if rows:
                return {**rows[-1], "file": f}
        return None

    # --- the lease -------------------------------------------------------------------------
    def current_lease(self) -> dict | None:
        """The newest lease generation's content (None if there never was one).

        Never an older generation instead: a newest one that cannot be read (storage errors past
        the retry budget) raises :class:`ArchiveUnreadableError`, and its holder is unknown. One
        that reads but does not parse (junk; lease writes are create-only, hence whole) counts
        as an expired holder of its generation.
        """
        try:
            names = sorted(n for n in self.fs.ls(self.path(LEASES), detail=False) if n.endswith(".json"))
        except FileNotFoundError:
            return None
        if not names:
            return None
        try:
            data = read_retried(self.fs, names[-1])
        except FileNotFoundError as exc:
            raise ArchiveUnreadableError(f"lease {to_url(self.fs, names[-1])} was listed but cannot be read") from exc
        try:
            return json.loads(data)
        except ValueError:
            gen = names[-1].rsplit("/", 1)[-1].split(".")[0]
            return {"generation": int(gen) if gen.isdigit() else 0, "expires_at": 0, "torn": True}

    def acquire_lease(self, run_id: str, ttl_s: float = DEFAULT_LEASE_TTL_S, wait_s: float = 0.0,
                      progress=None) -> Lease:
        """Become the output's single writer, or raise :class:`LeaseHeldError` naming the holder.

        ``wait_s`` > 0 waits that long for a held lease to expire (a crashed run's, typically),
        calling ``progress(message)`` every 10 s; a holder on this host whose process is gone is
        taken over at once (:func:`pipeline.lease_holder.holder_is_dead`).
        """
        check_run_id(run_id)
        owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        deadline, told = time.monotonic() + wait_s, time.monotonic()
        while True:
            try:
                return self._try_acquire(run_id, owner, ttl_s)
            except LeaseHeldError as exc:
                now = time.monotonic()
                if now >= deadline:
                    raise
                if progress and now - told >= 10:
                    progress(f"waiting for the lease ({deadline - now:.0f} s more at most): {exc}")
                    told = now
                time.sleep(min(1.0, max(0.05, deadline - now)))

    def _try_acquire(self, run_id: str, owner: str, ttl_s: float) -> Lease:
        from .lease_holder import holder_is_dead

        for _ in range(3):
            current = self.current_lease()
            live = current and not current.get("released") and float(current.get("expires_at", 0)) > time.time()
            if live and not holder_is_dead(current.get("owner")):
                left = float(current["expires_at"]) - time.time()
                raise LeaseHeldError(
                    f"{self.url} is being written by run {current.get('run_id')!r} (owner {current.get('owner')}, "
                    f"its lease runs {left:.0f} s more unless renewed); one run writes an output at a time. If that "
                    "run died, this output is free once its lease runs out (--wait-for-lease S waits for it)")
            gen = int(current.get("generation", 0)) + 1 if current else 1
            lease = Lease(self, gen, run_id, owner, ttl_s, expires_at=time.time() + ttl_s)
            self._fence(lease, current, holder_is_dead)
            if put_if_absent(self.fs, lease.path, lease.body()):
                lease.start()
                self._refence(lease.fences)
                return lease
        raise LeaseHeldError(f"{self.url}: another run took the lease at the same moment; try again")

    def _refence(self, fences: dict[int, int]) -> None:
        """Apply a new lease's fences to the manifests just read (no re-read: under the lease, any
        manifest that lands later is an older generation's above the fence, hence fenced)."""
        seen = [*(self._manifests or []), *self.fenced]
        self._fences = fences
        self.fenced = [m for m in seen if m.fenced_by(fences)]
        self._manifests = sorted((m for m in seen if not m.fenced_by(fences)), key=lambda m: m.order)

    def _fence(self, lease: Lease, previous: dict | None, holder_is_dead) -> None:
        """Record in ``lease`` the fence of its takeover and recovery's cut-off for unnamed files.

        Fence: the highest sequence committed now; an older generation's manifest above it (a
        paused writer waking up) is never committed. Cut-off: a previous holder that neither
        released its lease nor is known dead may still have a PUT in flight, for up to
        MAX_INFLIGHT_PUT_S, so only files older than that are moved.
        """
        seqs = [m.commit_seq for m in self.manifests(refresh=True) if m.commit_seq is not None]
        lease.fences = {**self._fences, lease.generation: max(seqs, default=-1)}
        live = previous and not previous.get("released") and not holder_is_dead(previous.get("owner"))
        lease.quarantine_before = time.time() - (MAX_INFLIGHT_PUT_S if live else 0.0)

    # --- writing (under the lease) -------------------------------------------------------
    def check_new_run(self, run_id: str) -> None:
        """A run id names one run forever: refuse one that already committed segments."""
        check_run_id(run_id)
        if any(m.run_id == run_id for m in self.manifests()):  # read at the takeover
            raise ArchiveError(f"run id {run_id!r} already has committed segments in {self.url}; "
                               "choose a new --run-id (reusing one would overwrite that run)")

    def next_commit_seq(self) -> int:
        """One above every sequence taken, fenced manifests' included (their names are taken too)."""
        seqs = [m.commit_seq for m in [*self.manifests(), *self.fenced] if m.commit_seq is not None]
        return (max(seqs) + 1) if seqs else len(self.manifests())

    def commit_segment(self, lease: Lease, seq: int, records: pa.Table, stats: pa.Table) -> Manifest:
        """Write a segment's files sorted by key (so row-group statistics find one key fast), then its manifest.

        The manifest is created create-only under the next commit sequence: if anything else
        committed that sequence, this run has lost the output and stops (its files stay
        uncommitted, for the next run's recovery).
        """
        lease.check()
        run_id = lease.run_id
        rel = self.segment_files(run_id, seq)
        records = _by_key(records.cast(RECORD_SCHEMA))
        stats = _by_key(stats.cast(STATS_SCHEMA))
        self._write_parquet(self.path(rel[RECORDS]), records)
        self._write_parquet(self.path(rel[STATS]), stats)
        rk, sk = records["key"], stats["key"]
        body = {
            "run_id": run_id, "segment": seq, "generation": lease.generation,
            "committed_at": datetime.now(timezone.utc).isoformat(),
            "rows": stats.num_rows, "records": records.num_rows, "files": rel,
            "record_keys": [rk[0].as_py(), rk[-1].as_py()] if len(rk) else None,
            "stats_keys": [sk[0].as_py(), sk[-1].as_py()] if len(sk) else None,
        }
        lease.check()
        manifest = self._put_manifest(lease, body)
        lease.check()  # a writer that woke up after a takeover: its manifest is fenced, and it stops here
        self.manifests().append(manifest)
        if checkpoint.due(manifest.commit_seq) and not self.torn:  # a torn manifest must stay visible
            put_if_absent(self.fs, self.checkpoint_path(manifest.commit_seq),
                          checkpoint.encode(self.manifests(), lease.generation))
        if self._present is not None:
            self._present |= {self.path(f) for f in rel.values()}
        return manifest

    def _put_manifest(self, lease: Lease, body: dict) -> Manifest:
        """Create the manifest under the next free sequence.

        A sequence taken by a stale generation's manifest (fenced by this lease's takeover) is
        skipped; one taken by anything else means another writer holds the output.
        """
        commit_seq = self.next_commit_seq()
        for _ in range(100):
            body = {**body, "commit_seq": commit_seq}
            path = self.manifest_path(commit_seq)
            if put_if_absent(self.fs, path, json.dumps(body, indent=1).encode()):
                return self._parse_manifest(path, json.dumps(body).encode())
            try:
                other = self._parse_manifest(path, read_retried(self.fs, path))
            except (ValueError, KeyError, TypeError, FileNotFoundError):
                other = None
            if other is None or not other.fenced_by(lease.fences):
                lease.lost = f"commit {commit_seq} of {self.url} was made by another writer"
                raise LeaseLostError(lease.lost)
            self.fenced.append(other)
            commit_seq += 1
        raise LeaseLostError(f"{self.url}: 100 sequences in a row taken by fenced manifests")

    def _write_parquet(self, path: str, table: pa.Table) -> None:
        """zstd and min/max statistics, except for the bitstreams: they are entropy-coded already and their
        min/max say nothing, and both cost the writer copies of every record (a 512 MB record: 8× its size in
        buffers with them, 3× without)."""
        buf = io.BytesIO()
        compression = {name: "none" if name == "bitstream" else "zstd" for name in table.column_names}
        statistics = [name for name in table.column_names if name != "bitstream"]
        pq.write_table(table, buf, compression=compression, write_statistics=statistics, row_group_size=64)
        self.put(path, buf.getvalue())

    def put(self, path: str, data: bytes) -> None:
        """Write one object whole: readers see the old bytes or the new, never a torn file."""
        put_atomic(self.fs, path, data)

    def unnamed_files(self) -> list[str]:
        """Data files (absolute paths) that no committed-to-be manifest names (fenced ones do not count);
        raises if a manifest cannot be read."""
        named = {self.path(f) for m in self.manifests(refresh=True) for f in m.files.values()}
        return sorted(p for kind in (RECORDS, STATS) for p in self._existing(kind) - named)

    def recover(self, lease: Lease) -> list[str]:
        """Move data files that no manifest names (segments that never committed) to ``_quarantine/``.

        Only under the lease: every run that could still be writing them has lost its lease, and
        a fenced manifest (a stale writer's, see :meth:`_fence`) names nothing committed. Only
        files older than ``lease.quarantine_before`` move (a live-looking previous holder may
        have a PUT in flight until MAX_INFLIGHT_PUT_S past our start); newer ones wait for a
        later run. Every manifest is read first (a storage error that outlasts the retry budget raises
        :class:`ArchiveUnreadableError` before any file moves); while a torn manifest exists,
        nothing moves, since it may name any of them (``python -m pipeline.archive check``).
        Returns the moved files' URLs (their new place).
        """
        lease.check()
        orphans = self.unnamed_files()
        if self.torn:
            self._problem(f"recovery moved nothing: {len(self.torn)} torn manifest(s) may name the "
                          f"{len(orphans)} unnamed file(s); see python -m pipeline.archive check {self.url}")
            return []
        young = [p for p in orphans if self.fs.modified(p).timestamp() >= lease.quarantine_before]
        if young:
            self._problem(f"recovery kept {len(young)} unnamed file(s) written less than {MAX_INFLIGHT_PUT_S:.0f} s "
                          "before this run's takeover (an older holder's PUT may be in flight); a later run moves them")
        moved = []
        for p in (p for p in orphans if p not in young):
            dest = self.quarantine_path(lease.run_id, p[len(self.root) + 1 :])
            self.fs.makedirs(dest.rsplit("/", 1)[0], exist_ok=True)
            self.fs.mv(p, dest)
            moved.append(to_url(self.fs, dest))
        return moved


if __name__ == "__main__":  # python -m pipeline.archive check|repair OUTPUT (the CLI lives in archive_check)
    import importlib
    import sys

    sys.exit(importlib.import_module("pipeline.archive_check").main())


def _by_key(table: pa.Table) -> pa.Table:
    """``table`` sorted by key; as it is when it already is (a copy of a segment's bitstreams saved)."""
    import pyarrow.compute as pc

    keys = table["key"]
    if table.num_rows < 2 or pc.all(pc.less_equal(keys[:-1], keys[1:])).as_py():
        return table
    return table.sort_by("key")
