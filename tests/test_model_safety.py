"""Model files from outside the process: checkpoints never run code when loaded, registry weights are
hashed and loaded from the same bytes, and a model store's versions are written create-only."""

import copy
import hashlib
import json
import pathlib
import threading

import pytest

from pipeline.model_store import model_resolver
import torch
from PIL import Image

import codec
from codec import registry as codec_registry
from codec.errors import ModelNotFoundError
from codec.families.hyperprior.model import HyperpriorCodec, ModelConfig
from conftest import natural_image

TINY = ModelConfig(channels=16, latent_channels=24, hyper_channels=16)


class Payload:
    """Unpickling this creates ``marker`` (stands for any code an attacker would run)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def evil_checkpoint(path, marker, **fields):
    torch.save({"model": {}, "optimizer": {}, "step": 1, "log": [], "model_config": {}, **fields,
                "extra": Payload(marker)}, path)


# ---- checkpoints -------------------------------------------------------------------------------


def test_retrain_checkpoint_loader_refuses_pickled_code(tmp_path):
    from pipeline.retrain import load_train_state

    marker = tmp_path / "pwned"
    evil_checkpoint(tmp_path / "state.pt", marker)
    with pytest.raises(Exception, match="(?i)checkpoint|weights only|unpickl"):
        load_train_state(tmp_path / "state.pt")
    assert not marker.exists(), "loading the checkpoint ran code"


def test_retrain_checkpoint_round_trip_is_weights_only(tmp_path):
    from codec.training.train import train_step
    from pipeline.retrain import load_train_state, save_train_state

    model = HyperpriorCodec(TINY)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    train_step(model, optimizer, torch.rand(2, 3, 64, 64))
    log = [{"step": 1, "time": 1.5, "loss": 2.0}, {"event": "resumed", "step": 1, "time": 2.0}]
    save_train_state(tmp_path / "state.pt", model, optimizer, 1, log)
    torch.load(tmp_path / "state.pt", weights_only=True)  # plain tensors, dicts, lists, numbers, strings
    state = load_train_state(tmp_path / "state.pt")
    assert state["step"] == 1 and state["log"] == log
    assert ModelConfig(**state["model_config"]) == TINY
    fresh = HyperpriorCodec(ModelConfig(**state["model_config"]))
    fresh.load_state_dict(state["model"])
    opt2 = torch.optim.Adam(fresh.parameters(), lr=1e-4)
    opt2.load_state_dict(state["optimizer"])
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))


@pytest.fixture()
def images(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(3):
        Image.fromarray(natural_image(96, 120, seed=i)).save(d / f"{i}.png")
    return d


def test_codec_train_resume_refuses_pickled_code(tmp_path, images):
    from codec.training.train import TrainConfig, train

    out = tmp_path / "run"
    out.mkdir()
    marker = tmp_path / "pwned"
    evil_checkpoint(out / "checkpoint.pt", marker)
    cfg = TrainConfig(data=[images], out=out, model=TINY, steps=2, batch_size=2, crop=64, checkpoint_every=1,
                      eval_every=100, validation_fraction=0.0, channels_last=False)
    with pytest.raises(Exception, match="(?i)checkpoint|weights only|unpickl"):
        train(cfg)
    assert not marker.exists(), "resuming ran code from the checkpoint"


def test_codec_train_checkpoints_are_weights_only_and_export(tmp_path, images):
    from codec.training.export import export, model_from_checkpoint
    from codec.training.train import SNAPSHOT_NAME, TrainConfig, train

    out = tmp_path / "run"
    cfg = TrainConfig(data=[images], out=out, model=TINY, steps=2, batch_size=2, crop=64, checkpoint_every=1,
                      eval_every=1, validation_fraction=0.0, channels_last=False)
    train(cfg)
    for name in ("checkpoint.pt", SNAPSHOT_NAME):
        state = torch.load(out / name, weights_only=True)
        assert state["step"] == 2 and isinstance(state["config"], dict)
    train(cfg.model_copy(update={"steps": 3}))  # resumes with the weights-only loader
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 3
    assert model_from_checkpoint(out / "checkpoint.pt").config == TINY
    reg = codec.Registry(tmp_path / "reg")
    assert reg.load(export(out / "checkpoint.pt", "tiny", [images], reg)).model_id == "tiny@1"


def test_export_refuses_pickled_code(tmp_path):
    from codec.training.export import model_from_checkpoint

    marker = tmp_path / "pwned"
    evil_checkpoint(tmp_path / "checkpoint.pt", marker, config={"model": {}})
    with pytest.raises(Exception, match="(?i)checkpoint|weights only|unpickl"):
        model_from_checkpoint(tmp_path / "checkpoint.pt")
    assert not marker.exists()


# ---- the codec registry: hash and load the same bytes -----------------------------------------


def test_registry_loads_the_bytes_it_hashed(tmp_path, model, monkeypatch):
    """A file swapped between the hash check and the load must not be what gets loaded."""
    reg = codec_registry.Registry(tmp_path / "reg")
    reg.register("m", copy.deepcopy(model.model))
    other = copy.deepcopy(model.model)
    with torch.no_grad():
        other.g_s.linear.bias.add_(0.5)
    codec_registry.save_weights(other, tmp_path / "other.pt")
    swapped = (tmp_path / "other.pt").read_bytes()
    target = tmp_path / "reg" / "m-v1.pt"
    real_read = pathlib.Path.read_bytes

    def read_then_swap(self):
        data = real_read(self)
        if self == target:
            target.write_bytes(swapped)  # an attacker (or a racing writer) replaces the file right after
        return data

    monkeypatch.setattr(pathlib.Path, "read_bytes", read_then_swap)
    loaded = codec_registry.Registry(tmp_path / "reg").load("m")
    assert torch.equal(loaded.model.g_s.linear.bias, model.model.g_s.linear.bias)


# ---- the model store --------------------------------------------------------------------------


@pytest.fixture()
def model_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TLIC_MODEL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _weights_of(spec: str) -> bytes:
    name, version = codec_registry.parse_spec(codec_registry.ModelResolver().resolve(spec))
    return codec_registry.BUILTIN.weights(name, version)[0]


@pytest.fixture(params=["s3", "local"])
def store_url(request, tmp_path):
    if request.param == "s3":
        request.getfixturevalue("s3_env")
        return f"s3://{request.getfixturevalue('bucket')}/models/"
    return str(tmp_path / "models")


def test_concurrent_registrations_never_share_a_version(store_url, model_cache, monkeypatch):
    from pipeline.model_store import ModelStore

    blobs = [_weights_of("default@1"), _weights_of("default")]
    assert blobs[0] != blobs[1]
    barrier = threading.Barrier(2)
    real_versions = ModelStore.versions
    local = threading.local()

    def versions_in_step(self, name):
        have = real_versions(self, name)
        if not getattr(local, "waited", False):  # both registrations see the same versions, then race
            local.waited = True
            try:
                barrier.wait(timeout=20)
            except threading.BrokenBarrierError:
                pass
        return have

    monkeypatch.setattr(ModelStore, "versions", versions_in_step)
    results, errors = {}, {}

    def register(i):
        try:
            results[i] = ModelStore(store_url).register("racer", blobs[i], note=f"writer {i}")
        except Exception as exc:  # a clean refusal is allowed; an overwrite is not
            errors[i] = exc

    threads = [threading.Thread(target=register, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    monkeypatch.setattr(ModelStore, "versions", real_versions)
    assert len(set(results.values())) == len(results), f"two registrations got the same version: {results}"
    assert len(results) >= 1
    for exc in errors.values():
        assert "concurrent" in str(exc)
    store = ModelStore(store_url)
    assert store.versions("racer") == list(range(1, len(results) + 1))
    for i, model_id in results.items():
        card = store.card(model_id)
        assert card["note"] == f"writer {i}" and card["model_id"] == model_id
        assert card["sha256"] == hashlib.sha256(blobs[i]).hexdigest()
        name, version = store.resolve(model_id)
        assert store.fs.cat_file(f"{store._dir(name, version)}/weights.pt") == blobs[i]
        assert model_resolver(store_url).load(model_id).sha256 == hashlib.sha256(blobs[i]).digest()


def test_register_never_overwrites_an_existing_card(store_url, model_cache, monkeypatch):
    """Even a writer that believes a version is free (a stale listing) cannot replace its card."""
    from pipeline.model_store import ModelStore

    store = ModelStore(store_url)
    assert store.register("solo", _weights_of("default@1"), note="first") == "solo@1"
    card_before = store.fs.cat_file(f"{store._dir('solo', 1)}/card.json")
    real_versions = ModelStore.versions
    monkeypatch.setattr(ModelStore, "versions", lambda self, name: [])  # every writer thinks v1 is free
    assert store.register("solo", _weights_of("default"), note="second") == "solo@2"
    monkeypatch.setattr(ModelStore, "versions", real_versions)
    assert store.fs.cat_file(f"{store._dir('solo', 1)}/card.json") == card_before
    assert json.loads(card_before)["note"] == "first"
    assert ModelStore(store_url).versions("solo") == [1, 2]


def test_tampered_cached_weights_are_refused(store_url, model_cache):
    from pipeline.model_store import ModelStore

    store = ModelStore(store_url)
    blob = _weights_of("default")
    model_id = store.register("cached", blob)
    assert model_resolver(store_url).load(model_id).model_id == model_id
    cached = store.cache.root / "cached-v1.pt"
    assert cached.read_bytes() == blob  # the cache holds exactly the verified bytes
    data = bytearray(blob)
    data[-10] ^= 1
    cached.write_bytes(bytes(data))
    with pytest.raises(ModelNotFoundError, match="does not match"):
        codec_registry.Registry(store.cache.root).load(model_id)
