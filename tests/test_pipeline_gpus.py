"""Replicas are pinned one per GPU (fake GPUs declared to a local Ray)."""

import json

import pytest

from pipeline.archive import Archive
from pipeline.compress import run_job
from pipeline.config import CompressJobConfig
from pipeline.driver import replica_plan
from pipeline_fixtures import good_objects, upload


@pytest.fixture(scope="module")
def ray_two_gpus():
    import ray

    ray.shutdown()
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_one_replica_per_gpu_each_on_its_own_gpu(ray_two_gpus, s3_server, s3_env, bucket):
    objects = {f"{i}/{k}": v for i in range(4) for k, v in good_objects(i).items()}
    upload(s3_server.filesystem(), bucket, "raw", objects)
    cfg = CompressJobConfig(input=f"s3://{bucket}/raw/", output=f"s3://{bucket}/archive/", quality=0.5, batch_size=1)
    n, resources, _ = replica_plan(cfg)
    assert n == 2 and resources["num_gpus"] == 1.0 and resources["num_cpus"] <= 0.5
    summary = run_job(cfg, progress=False)
    assert summary.ok == len(objects)
    fs = s3_server.filesystem()
    announced = [json.loads(fs.cat(p)) for p in fs.glob(f"{bucket}/archive/_runs/{cfg.run_id}/replicas/*.json")]
    assert sorted(tuple(a["gpu_ids"]) for a in announced) == [("0",), ("1",)], announced
    # every row names the replica (and so the GPU) that encoded it
    replicas = {r["replica"] for r in Archive(cfg.output).committed_table("stats", ["replica"]).to_pylist()}
    assert replicas <= {a["replica"] for a in announced}


def test_fractional_gpus_pack_replicas(ray_two_gpus):
    cfg = CompressJobConfig(input="s3://a/", output="s3://b/", gpus_per_replica=0.5)
    n, resources, _ = replica_plan(cfg)
    assert n == 4 and resources["num_gpus"] == 0.5
