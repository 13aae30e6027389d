"""Encode effort (issue 24): refined latents, the unchanged decoder, and every mode's promise kept.

A tiny untrained model keeps these fast: refinement lowers its objective as it does the shipped model's.
Effort 0's bytes are the golden corpus' (tests/test_golden.py encodes at the default effort)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

import codec
from codec.families.hyperprior.model import HyperpriorCodec, ModelConfig
from codec.options import EFFORT_ITERATIONS, EncodeOptions
from codec.quality import code_of, q_tensor
from codec.registry import LoadedModel, model_from_weights, weights_bytes
from conftest import natural_image, psnr


@pytest.fixture(scope="module")
def tiny() -> LoadedModel:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = HyperpriorCodec(ModelConfig(channels=16, latent_channels=24, hyper_channels=16)).eval()
    net.finalize(torch.rand(2, 3, 64, 64))
    blob = weights_bytes(net)
    return LoadedModel(model_from_weights(blob).eval(), "tiny@1", hashlib.sha256(blob).digest())


@pytest.fixture(scope="module")
def img() -> np.ndarray:
    return natural_image(64, 128, seed=1)


def rd_objective(model, data: bytes, original: np.ndarray, quality: float) -> float:
    """The training objective of a whole stream: its real bits per pixel + λ(q)·8-bit MSE."""
    out = codec.decode(data, model)
    lam = float(model.model.lmbda(q_tensor([code_of(quality)]))[0])
    mse = float(np.mean((out.astype(np.float64) - original) ** 2))
    return 8 * len(data) / (original.shape[0] * original.shape[1]) + lam * mse


def test_quality_effort_lowers_the_objective_and_decodes_the_same_every_time(tiny, img):
    plain = codec.encode(img, tiny, quality=0.5, tile_size=64)
    refined = codec.encode(img, tiny, quality=0.5, tile_size=64, effort=1)
    assert refined.data != plain.data  # the latents changed …
    assert codec.encode(img, tiny, quality=0.5, tile_size=64, effort=1).data == refined.data  # … deterministically
    first = codec.decode(refined.data, tiny)
    assert np.array_equal(first, codec.decode(refined.data, tiny))
    assert [t.quality for t in refined.header.tiles] == [t.quality for t in plain.header.tiles]
    assert rd_objective(tiny, refined.data, img, 0.5) <= rd_objective(tiny, plain.data, img, 0.5)
    for i, (x, y, w, h) in enumerate(refined.header.boxes()):  # the encoder measured what the decoder makes
        assert psnr(img[y : y + h, x : x + w], first[y : y + h, x : x + w]) == pytest.approx(refined.tile_psnr[i], abs=1e-9)


def test_target_psnr_with_effort_meets_the_target_on_every_tile(tiny, img):
    target = 6.0  # the untrained model tops out near 6.6 dB here
    r = codec.encode(img, tiny, target_psnr=target, tile_size=64, effort=1, tools=("learned",))
    out = codec.decode(r.data, tiny)
    for i, (x, y, w, h) in enumerate(r.header.boxes()):
        if not r.header.tiles[i].missed_target:
            assert psnr(img[y : y + h, x : x + w], out[y : y + h, x : x + w]) >= target, f"tile {i}"
    assert r.missed_tiles < len(r.header.tiles)  # the check above checked something
    plain = codec.encode(img, tiny, target_psnr=target, tile_size=64, tools=("learned",))
    assert len(r.data) <= len(plain.data)  # a refined tile is taken only where it is cheaper


def test_target_bpp_with_effort_stays_in_budget(tiny, img):
    r = codec.encode(img, tiny, target_bpp=1.0, tile_size=64, effort=1)
    assert 8 * len(r.data) / (img.shape[0] * img.shape[1]) <= 1.0


@pytest.mark.parametrize("bad", [-1, len(EFFORT_ITERATIONS), 1.5, True, "1"])
def test_bad_effort_is_refused(bad):
    with pytest.raises(ValueError, match=r"effort must be an integer in \[0, 3\], got"):
        EncodeOptions(effort=bad)


def test_job_config_carries_effort():
    from pydantic import ValidationError

    from pipeline.config import CompressJobConfig

    cfg = CompressJobConfig(input="/in", output="/out", effort=2)
    assert cfg.encode_options().effort == 2
    assert CompressJobConfig(input="/in", output="/out").encode_options().effort == 0
    with pytest.raises(ValidationError, match="effort must be an integer"):
        CompressJobConfig(input="/in", output="/out", effort=7)
