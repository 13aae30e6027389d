"""One suite over the family table (codec.families.FAMILIES): every family's shipped models round-trip,
decode a region as the crop of the whole, name a damaged tile, refuse or code a raster, and decode the
streams stored by earlier versions (the golden corpus). A new family gets these checks by its table row."""

from __future__ import annotations

import random

import numpy as np
import pytest

import codec
from codec import families
from codec.errors import CodecError, CorruptStreamError, UnsupportedImageError
from codec.metrics import psnr
from codec.registry import BUILTIN
from conftest import natural_image
from test_golden import RECORD, make_golden
from test_stream_fuzz import build, parse


def builtin_models(family: str) -> list[str]:
    """The built-in NAME@VERSION ids of ``family`` (registry entries without a family are hyperprior)."""
    index = BUILTIN.index()["models"]
    return [f"{name}@{v}" for name, m in sorted(index.items()) for v, entry in sorted(m["versions"].items())
            if entry.get("family", families.LEGACY_FAMILY) == family]


FAMILY_MODELS = {name: builtin_models(name) for name in families.FAMILIES}
PHOTO_MODEL = {name: next((m for m in ids if not m.startswith("satellite")), ids[0])
               for name, ids in FAMILY_MODELS.items() if ids}


@pytest.fixture(scope="module", params=sorted(families.FAMILIES))
def family(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def loaded(family):
    assert FAMILY_MODELS[family], f"family {family!r} ships no built-in model"
    return codec.load_model(PHOTO_MODEL[family])


@pytest.fixture(scope="module")
def coded(loaded):
    image = natural_image(100, 140, 3)
    # the family's own tiles only (v1): other tools may win tiles at 30 dB, and this suite tests the family
    return image, codec.encode(image, loaded, target_psnr=30, tile_size=64, tools=("learned",))


def test_every_family_row_loads_and_names_itself(family, loaded):
    assert families.get(family).name == family
    assert loaded.family is families.get(family)


def test_round_trip_is_deterministic_and_reports_its_psnr(coded, loaded):
    image, result = coded
    out = codec.decode(result.data, loaded)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.array_equal(out, codec.decode(result.data, loaded))
    assert psnr(image, out) == pytest.approx(result.psnr, abs=0.05)
    assert psnr(image, out) > 18  # coded, not noise: every shipped model beats this at a 30 dB target


def test_region_is_the_crop_of_the_whole(coded, loaded):
    _, result = coded
    whole = codec.decode(result.data, loaded)
    for box in [(0, 0, 1, 1), (30, 20, 70, 50), (63, 63, 2, 2), (0, 0, 140, 100)]:
        x, y, w, h = box
        assert np.array_equal(codec.decode_region(result.data, box, loaded), whole[y : y + h, x : x + w])


def test_a_damaged_tile_is_a_corrupt_stream_naming_the_tile(coded, loaded):
    _, result = coded
    header = codec.read_header(result.data)
    k = len(header.tiles) // 2
    flipped = bytearray(result.data)
    flipped[header.header_len + header.tiles[k].offset + header.tiles[k].length // 2] ^= 0x5A
    with pytest.raises(CorruptStreamError, match=f"tile {k}\\b|{header.tile_label(k)}"):
        codec.decode(bytes(flipped), loaded)  # the checksum: before any model work


def test_a_forged_tile_decodes_or_is_refused_never_crashes(coded, loaded):
    """Payloads rewritten with a valid checksum: the family's decoder refuses them as CorruptStreamError or
    decodes an image of the right shape (a progressive family may read a prefix as a coarser tile)."""
    image, result = coded
    rng = random.Random(0)
    k = len(parse(result.data).blobs) // 2
    for damage in (lambda b: b[: len(b) // 2], lambda b: bytes(rng.randrange(256) for _ in b), lambda b: b"\0"):
        raw = parse(result.data)
        raw.blobs[k] = damage(raw.blobs[k])
        try:
            out = codec.decode(build(raw), loaded)
        except CorruptStreamError as exc:
            assert str(k) in str(exc)
        else:
            assert out.shape == image.shape and out.dtype == np.uint8


def test_a_raster_is_coded_or_refused_by_name(family, loaded):
    r = (natural_image(64, 64, 3).astype(np.uint16) * 200 + 7)
    try:
        result = codec.encode(r, loaded, target_psnr=35, name="scene.tif")
    except UnsupportedImageError as exc:
        assert "scene.tif" in str(exc)
        assert families.get(family).refuses(True, codec.options.EncodeOptions.from_keywords()) is not None
        return
    out = codec.decode(result.data, loaded)
    assert out.dtype == np.uint16 and out.shape == r.shape


def test_the_golden_corpus_holds_streams_of_every_family(family):
    """Old streams keep decoding (tests/test_golden.py checks every one bit for bit); each family has some."""
    ids = set(FAMILY_MODELS[family])
    stored = [name for name, rec in RECORD.items() if rec["model_id"] in ids]
    assert stored, f"no golden stream of family {family!r}: add one to tests/golden/make_golden.py"
    data = (make_golden.OUT / f"{stored[0]}.tlic").read_bytes()
    assert make_golden.sha(codec.decode(data)) == RECORD[stored[0]]["decoded"]


def test_errors_are_codec_errors():
    assert issubclass(CorruptStreamError, CodecError) and issubclass(UnsupportedImageError, CodecError)
