"""The Ray side of the jobs' drivers, shared by the archival and the restore job.

    start(timeout)                        join the cluster (``ray job submit``) or start Ray in-process
    replica_plan(cfg)                     how many replicas the cluster holds, and what each gets
    actor_map(ds, Replica, cfg, ...)      ds.map_batches on a fixed pool of those replicas
    results(ds, total, desc)              the output rows, streamed to the driver, with a progress bar
    lost_to_the_cluster(exc)              was this failure the cluster's (a node, an actor, an object lost)?

A replica is a callable class (``stages.encode.CodecReplica``, ``stages.restore.RestoreReplica``)
built as ``Replica(config=cfg, cpu_threads=n)``: expensive state (a model) is made once per
actor, then reused for every batch. The pool is fixed in size (min = max) and every replica
is started before work is dispatched, so a cluster that cannot host them fails the job early.
"""

from __future__ import annotations

import os
import sys
from typing import Iterator, NamedTuple


class ReplicaPlan(NamedTuple):
    replicas: int
    resources: dict  # Ray resources per replica: num_gpus and/or num_cpus
    threads: int  # torch CPU threads per replica


def local_ray_on_loopback() -> None:
    """Make a Ray that this process starts itself (a job run without a cluster) listen on loopback only: Ray's
    single-machine mode, which Ray reads when it is first imported, so call this before ``import ray``. Under
    ``ray job submit`` (RAY_ADDRESS names the cluster) nothing changes (README "Network exposure")."""
    if not os.environ.get("RAY_ADDRESS") and "ray" not in sys.modules:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def start(replica_start_timeout_s: float) -> None:
    """Ray up, with Ray Data's own progress bars off (the jobs draw theirs) and a wait for every replica."""
    local_ray_on_loopback()
    import ray

    if not ray.is_initialized():
        ray.init(log_to_driver=False, include_dashboard=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    # start every replica before dispatching work (and fail loudly if the cluster can't host them)
    ctx.wait_for_min_actors_s = replica_start_timeout_s


def replica_plan(cfg) -> ReplicaPlan:
    """Replicas, resources and CPU threads per replica from the cluster's resources and
    ``cfg.replicas`` / ``cfg.gpus_per_replica``: GPUs / gpus_per_replica replicas on a GPU
    cluster, else one per 4 CPUs (``cfg.replicas`` overrides the count)."""
    import ray

    res = ray.cluster_resources()
    gpus, cpus = res.get("GPU", 0), int(res.get("CPU", 1))
    if gpus >= cfg.gpus_per_replica:
        n = cfg.replicas or max(1, int(gpus / cfg.gpus_per_replica))
        # a CPU share for decoding and entropy coding, leaving half the CPUs to the fetch tasks
        return ReplicaPlan(n, {"num_gpus": cfg.gpus_per_replica, "num_cpus": min(1.0, cpus / (2 * n))}, max(1, cpus // n))
    n = cfg.replicas or max(1, cpus // 4)
    return ReplicaPlan(n, {"num_cpus": 1}, max(1, cpus // n))


def actor_map(ds, replica: type, cfg, max_restarts: int | None = None, max_task_retries: int | None = None):
    """``ds.map_batches(replica)`` on a fixed pool of :func:`replica_plan`'s replicas, ``cfg.batch_size`` rows a call.

    Ray Data restarts replicas and retries their tasks forever by default; ``max_restarts`` and
    ``max_task_retries`` bound both (Ray 2.60 takes them only as ray_remote_args, hence its
    deprecation warning). None keeps Ray's default.
    """
    import ray

    n, resources, threads = replica_plan(cfg)
    bounds = {k: v for k, v in (("max_restarts", max_restarts), ("max_task_retries", max_task_retries)) if v is not None}
    return ds.map_batches(
        replica,
        fn_constructor_kwargs={"config": cfg, "cpu_threads": threads},
        batch_size=cfg.batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(min_size=n, max_size=n, max_tasks_in_flight_per_actor=2),
        **bounds,
        **resources,
    )


# Failures of the cluster, not of the work: a node, its raylet, an actor or an object store lost. A
# job that meets one commits what it has and runs the rest again (pipeline.compress.run_job).
CLUSTER_ERRORS = ("ActorDiedError", "ActorUnavailableError", "ActorUnschedulableError", "LocalRayletDiedError",
                  "NodeDiedError", "ObjectFetchTimedOutError", "ObjectLostError", "ObjectReconstructionFailedError",
                  "OwnerDiedError", "RaySystemError", "WorkerCrashedError")


def lost_to_the_cluster(exc: BaseException) -> bool:
    """True when ``exc``, or an exception it was raised from, is one of :data:`CLUSTER_ERRORS`."""
    import ray.exceptions

    kinds = tuple(getattr(ray.exceptions, n) for n in CLUSTER_ERRORS if hasattr(ray.exceptions, n))
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, kinds):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def results(ds, total: int, desc: str, progress: bool = True, unique: str | None = None,
            seen: set | None = None) -> Iterator[dict]:
    """The rows of ``ds`` as they arrive, counted on a progress bar of ``total``.

    With ``unique`` (a column), a row whose value was seen before is dropped: a task that Ray
    retried after its replica died may emit rows again. ``seen`` (the values seen so far) is
    kept by the caller across passes when it runs the rest again after a cluster failure.
    """
    from tqdm import tqdm

    seen = set() if seen is None else seen
    with tqdm(total=total, desc=desc, unit="img", disable=not progress, mininterval=1) as bar:
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            for row in batch.to_pylist():
                if unique is not None:
                    if row[unique] in seen:
                        continue
                    seen.add(row[unique])
                bar.update(1)
                yield row
