"""Domain retraining: a 2-worker CPU Ray Train run that is killed mid-way, resumes, registers its model on
S3, and that model then archives and restores through the jobs."""

import json
import uuid

import pytest

import codec
from codec import registry as codec_registry
from codec.errors import ModelNotFoundError
from conftest import natural_image
from pipeline.archive import Archive
from pipeline.compress import run_job
from pipeline.config import CompressJobConfig, RestoreJobConfig, TrainJobConfig
from pipeline.model_store import JobModels, ModelStore, model_resolver
from pipeline.restore import run_restore
from pipeline.retrain import FAULT_ENV, run_training, split_keys
from pipeline_fixtures import png, upload

pytestmark = pytest.mark.usefixtures("ray_local")


def test_split_keeps_files_apart_and_is_stable():
    keys = [f"s3://b/d/img{i:03d}.png" for i in range(200)]
    train, held = split_keys(keys, 0.2)
    assert not set(train) & set(held) and sorted(train + held) == keys and 20 < len(held) < 60
    assert set(held) <= set(split_keys(keys + ["s3://b/d/new.png"], 0.2)[1])  # a new file moves no old one


@pytest.fixture()
def model_cache(tmp_path, monkeypatch):
    """A private model cache."""
    monkeypatch.setenv("TLIC_MODEL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_train_kill_resume_register_then_archive_and_restore(s3_server, s3_env, bucket, tmp_path, monkeypatch, model_cache):
    fs = s3_server.filesystem()
    upload(fs, bucket, "imagery/train", {f"scene{i}.png": png(natural_image(96, 128, 10 + i)) for i in range(8)})
    marker = tmp_path / "killed"
    monkeypatch.setenv(FAULT_ENV, f"3:{marker}")
    cfg = TrainJobConfig(data=f"s3://{bucket}/imagery/train/", name="aerialtest", registry=f"s3://{bucket}/models/",
                         storage_path=f"s3://{bucket}/train-runs/", run_name="t1", num_workers=2, cpus_per_worker=0.5,
                         steps=6, batch_size=2, crop=64, crops_per_image=2, checkpoint_every=2, holdout_fraction=0.3,
                         eval_images=2)
    outcome = run_training(cfg, progress=False)
    assert marker.exists(), "the fault was not injected"
    assert outcome.model_id == "aerialtest@1" and outcome.steps == 6
    assert outcome.resumed_at == [2]  # the group restarted from the step-2 checkpoint after the kill at step 3
    assert fs.glob(f"{bucket}/train-runs/t1/**/state.pt")  # checkpoints live in the run's S3 storage path

    store = ModelStore(cfg.registry)
    card = store.card("aerialtest")
    assert card["base"] == codec.load_model("default").model_id and card["training"]["steps_done"] == 6 and card["training"]["resumed_at"] == [2]
    assert len(card["sha256"]) == 64 and card["data"]["train_images"] + len(card["data"]["holdout_keys"]) == 8
    assert set(card["metrics"]) >= {"bd_rate_vs_base_pct", "per_image", "mean"}
    assert "aerialtest" in outcome.table or "held-out" in outcome.table

    # the compress job loads it from the registry by name; records name it
    upload(fs, bucket, "raw", {"x.png": png(natural_image(80, 112, 99))})
    job = CompressJobConfig(input=f"s3://{bucket}/raw/", output=f"s3://{bucket}/archive/", quality=0.5,
                            model="aerialtest", model_registry=cfg.registry)
    assert run_job(job, progress=False).ok == 1
    (rec,) = Archive(job.output).committed_table("records", ["key", "model_id"]).to_pylist()
    assert rec["model_id"] == "aerialtest@1"

    # a newer version does not strand the old records: restore finds the model each record names
    store.register("aerialtest", _weights_of("default"), note="second version")
    assert store.versions("aerialtest") == [1, 2]
    monkeypatch.setenv("TLIC_MODEL_CACHE", str(tmp_path / "fresh-cache"))
    summary = run_restore(RestoreJobConfig(archive=job.output, output=f"s3://{bucket}/restored/",
                                           model_registry=cfg.registry), progress=False)
    assert (summary.ok, summary.errors) == (1, 0)
    run_restore_without = run_restore(RestoreJobConfig(archive=job.output, output=f"s3://{bucket}/restored2/"), progress=False)
    assert run_restore_without.errors == 1 and "model-registry" in run_restore_without.error_rows[0]["error"]


def _weights_of(spec: str) -> bytes:
    name, version = codec_registry.parse_spec(codec_registry.ModelResolver().resolve(spec))
    return codec_registry.BUILTIN.weights(name, version)[0]


def test_registry_names_and_errors(s3_server, s3_env, bucket, model_cache):
    store = ModelStore(f"s3://{bucket}/models/")
    with pytest.raises(ValueError, match="built-in"):
        store.register("default", b"x")
    with pytest.raises(ValueError, match="model name"):
        store.register("Bad Name", b"x")
    with pytest.raises(ModelNotFoundError, match="no model named"):
        model_resolver(f"s3://{bucket}/models/").resolve("nothing")
    with pytest.raises(ModelNotFoundError, match="model-registry"):
        model_resolver(None).resolve("nothing")
    assert model_resolver(None).resolve("default") == codec.load_model("default").model_id
    mid = store.register("tiny", _weights_of("default"), note="copy of default")
    assert mid == "tiny@1" and json.loads(fs_cat(s3_server, f"{bucket}/models/tiny/v0001/card.json"))["note"] == "copy of default"
    assert model_resolver(f"s3://{bucket}/models/").load("tiny").model_id == "tiny@1"
    # a tampered upload is refused, not loaded
    s3_server.filesystem().pipe(f"{bucket}/models/tiny/v0001/weights.pt", _weights_of("default") + b"tampered")
    other = ModelStore(f"s3://{bucket}/models/")
    other.cache = codec_registry.Registry(model_cache / ("other-" + uuid.uuid4().hex[:6]))
    with pytest.raises(ModelNotFoundError, match="sha256"):
        JobModels([codec_registry.BUILTIN, other]).load("tiny@1")


def fs_cat(s3_server, path):
    return s3_server.filesystem().cat_file(path)
