import copy

import numpy as np
import pytest
import torch

import codec
from codec.registry import BUILTIN, ModelResolver, Registry, parse_spec


def test_default_loads_with_verified_hash(model):
    import hashlib

    assert model.model_id == ModelResolver().resolve("default")
    blob, sha256 = BUILTIN.weights(*parse_spec(model.model_id))
    assert hashlib.sha256(blob).digest() == model.sha256 and sha256 == model.hash_hex


def test_versions_and_errors(tmp_path, model):
    reg = Registry(tmp_path)
    net = copy.deepcopy(model.model)
    assert reg.register("aerial", net, description="first") == "aerial@1"
    with torch.no_grad():
        net.g_s.linear.bias.add_(0.02)
    assert reg.register("aerial", net) == "aerial@2"
    assert reg.load("aerial").model_id == "aerial@2"
    assert reg.load("aerial@1").model_id == "aerial@1"
    with pytest.raises(codec.ModelNotFoundError, match="no version 7"):
        reg.load("aerial@7")
    with pytest.raises(codec.ModelNotFoundError, match="no model named 'x'"):
        reg.load("x")


def test_tampered_weights_are_refused(tmp_path, model):
    reg = Registry(tmp_path)
    reg.register("m", copy.deepcopy(model.model))
    f = tmp_path / "m-v1.pt"
    data = bytearray(f.read_bytes())
    data[-10] ^= 1
    f.write_bytes(bytes(data))
    with pytest.raises(codec.ModelNotFoundError, match="does not match the registry"):
        reg.load("m")


def test_old_version_still_decodes_after_a_new_default(tmp_path, model, image):
    """Records name NAME@VERSION; registering a newer version must not break them."""
    reg = Registry(tmp_path)
    reg.register("default", copy.deepcopy(model.model))
    v1 = reg.load("default")
    data = codec.encode(image, v1, quality=0.5).data
    net = copy.deepcopy(model.model)
    with torch.no_grad():
        net.g_s.linear.bias.add_(0.05)
    reg.register("default", net)
    assert reg.load("default").model_id == "default@2"
    stored = codec.read_header(data).model_id
    assert stored == "default@1"
    out = codec.decode(data, reg.load(stored))
    assert np.array_equal(out, codec.decode(data, v1))
    with pytest.raises(codec.ModelMismatchError):
        codec.decode(data, reg.load("default"))
