import json

import numpy as np
import pytest
import torch
from PIL import Image

import codec
from codec.families.hyperprior.model import ModelConfig
from codec.training.data import list_images
from codec.training.export import export
from codec.training.train import TrainConfig, train
from conftest import natural_image

TINY = ModelConfig(channels=16, latent_channels=24, hyper_channels=16)


@pytest.fixture()
def folder(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(4):
        Image.fromarray(natural_image(96, 120, seed=i)).save(d / f"{i}.png")
    return d


def test_train_checkpoints_resumes_and_exports(folder, tmp_path):
    out = tmp_path / "run"
    cfg = TrainConfig(data=[folder], out=out, model=TINY, steps=6, batch_size=2, crop=64, checkpoint_every=3,
                      eval_every=3, validation_fraction=0.0)
    train(cfg)
    state = torch.load(out / "checkpoint.pt", weights_only=False)
    assert state["step"] == 6
    first = {k: v.clone() for k, v in state["model"].items()}
    train(cfg.model_copy(update={"steps": 9}))  # resumes at 6, runs 3 more
    state = torch.load(out / "checkpoint.pt", weights_only=False)
    assert state["step"] == 9
    assert any(not torch.equal(first[k], v) for k, v in state["model"].items())
    log = json.loads((out / "train_log.json").read_text())
    assert all(np.isfinite(r["loss"]) for r in log if "loss" in r)

    reg = codec.Registry(tmp_path / "reg")
    model_id = export(out / "checkpoint.pt", "tiny", [folder], reg)
    loaded = reg.load(model_id)
    img = natural_image(70, 90)
    data = codec.encode(img, loaded, quality=0.5).data
    assert codec.decode(data, loaded).shape == img.shape


def test_kodak_is_never_training_data(tmp_path):
    d = tmp_path / "kodak"
    d.mkdir()
    Image.new("RGB", (8, 8)).save(d / "kodim01.png")
    with pytest.raises(ValueError, match="Kodak"):
        list_images([d])


def test_config_validation_names_missing_data(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        TrainConfig(data=[tmp_path / "missing"], out=tmp_path)
