"""The shipped registry after the default moved on: records made with an older default still decode.

``tests/data/default-v1-astronaut-96x160.tlic`` is a stream that ``default@1`` wrote (quality 0.6,
64 px tiles) before ``default@2`` existed; it must keep decoding by the model id it carries.
"""

from pathlib import Path

import numpy as np
import pytest

import codec
from codec.registry import DEFAULT_REGISTRY
from conftest import natural_image, psnr

OLD_STREAM = Path(__file__).parent / "data" / "default-v1-astronaut-96x160.tlic"
OLD_STREAM_PSNR = 30.36  # what default@1 decoded it to when it was written


def test_default_is_newer_than_the_first_model_and_both_load():
    versions = sorted(int(v) for v in DEFAULT_REGISTRY.index()["models"]["default"]["versions"])
    assert versions[0] == 1 and versions[-1] >= 2
    assert codec.load_model("default").model_id == f"default@{versions[-1]}"
    assert codec.load_model("default@1").model_id == "default@1"


def test_an_archived_default_v1_record_decodes_by_the_id_it_carries():
    data = OLD_STREAM.read_bytes()
    header = codec.read_header(data)
    assert header.model_id == "default@1" and header.model_hash == codec.load_model("default@1").sha256
    out = codec.decode(data)  # no model named: the header's id picks default@1
    assert out.shape == (96, 160, 3)
    assert psnr(natural_image(96, 160, 0), out) == pytest.approx(OLD_STREAM_PSNR, abs=0.05)
    region = codec.decode_region(data, (64, 32, 70, 50))
    # only the covering tiles are decoded (another batch shape: float synthesis may move a pixel by one level)
    assert np.abs(region.astype(int) - out[32:82, 64:134]).max() <= 1


def test_the_new_default_refuses_an_old_record_instead_of_decoding_garbage():
    with pytest.raises(codec.ModelMismatchError, match="default@1"):
        codec.decode(OLD_STREAM.read_bytes(), "default")


def test_new_records_name_the_new_default(image):
    r = codec.encode(image, quality=0.5)
    assert codec.read_header(r.data).model_id == codec.load_model("default").model_id != "default@1"
