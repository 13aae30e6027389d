"""The tile-coder table: a coder registered under a free id codes every tile of a raster, the stream says so in
version 3 (a coder byte per tile), and every decode path reads it; v2 keeps its bytes where it can spell the coders."""

from __future__ import annotations

import numpy as np
import pytest

import codec
from codec import tilecoders
from codec.errors import CorruptStreamError, UnsupportedImageError
from codec.format import container
from codec.tilecoders import TileCoder


def _raw_encode(block, ctx):
    return np.ascontiguousarray(block).tobytes()


def _raw_decode(payload, ctx):
    size = ctx.height * ctx.width * ctx.bands * np.dtype(ctx.dtype).itemsize
    if len(payload) != size:
        raise CorruptStreamError(f"raw tile of {len(payload)} bytes, expected {size}")
    return np.frombuffer(payload, dtype=ctx.dtype).reshape(ctx.shape)


@pytest.fixture
def raw_coder(monkeypatch):
    free = sorted(container.CODER_IDS - set(tilecoders.CODERS))
    if not free:  # every assigned id is taken: a test-only id beyond them
        free = [max(container.CODER_IDS) + 1]
        ids = container.CODER_IDS | set(free)
        monkeypatch.setattr(container, "CODER_IDS", ids)
        monkeypatch.setattr(tilecoders, "CODER_IDS", ids)
    coder = tilecoders.register(TileCoder(free[0], "raw-test", _raw_encode, _raw_decode, exact=True))
    yield coder
    tilecoders.unregister(coder.id)


def scene(h=70, w=90, bands=4):
    rng = np.random.default_rng(0)
    return rng.integers(0, 4000, size=(h, w, bands), dtype=np.uint16)


def test_a_new_coder_writes_version_3_and_every_decode_path_reads_it(raw_coder):
    r = scene()
    result = codec.encode(r, None, tile_size=64, tile_coder="raw-test", name="scene.tif")
    header = codec.read_header(result.data)
    assert header.version == container.CODER_VERSION
    assert {t.coder for t in header.tiles} == {raw_coder.id}
    assert np.array_equal(codec.decode(result.data), r)
    assert np.array_equal(codec.decode_region(result.data, (50, 10, 30, 60)), r[10:70, 50:80])


def test_a_stream_naming_an_unknown_coder_is_corrupt(raw_coder):
    data = codec.encode(scene(), None, tile_size=64, tile_coder="raw-test").data
    tilecoders.unregister(raw_coder.id)
    try:
        with pytest.raises(CorruptStreamError, match=f"coder id {raw_coder.id}"):
            codec.decode(data)
    finally:
        tilecoders.register(raw_coder)


def test_exact_tiles_keep_the_v2_spelling():
    r = scene(40, 40, 2)
    result = codec.encode(r, None, lossless=True, tile_size=64)
    assert codec.read_header(result.data).version == container.RASTER_VERSION
    assert np.array_equal(codec.decode(result.data), r)


def test_the_table_refuses_clashes_and_unknown_names(raw_coder):
    with pytest.raises(ValueError, match="taken"):
        tilecoders.register(TileCoder(raw_coder.id, "other", _raw_encode, _raw_decode))
    with pytest.raises(ValueError, match="not assigned"):
        tilecoders.register(TileCoder(250, "far", _raw_encode, _raw_decode))
    with pytest.raises(UnsupportedImageError, match="no tile coder named 'nope'"):
        tilecoders.by_name("nope")


def test_the_table_names_every_registered_coder():
    names = {i: c.name for i, c in tilecoders.CODERS.items()}
    assert names == {0: "learned", 1: "jxl_exact", 2: "jxl_lossy", 3: "avif444", 4: "nearlossless", 5: "j2k"}
