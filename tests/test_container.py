import struct
import tracemalloc
import zlib

import numpy as np
import pytest

import codec
from codec.format import container as bitstream, inflate
from codec.families.hyperprior import tiling
from codec.errors import StreamTooLargeError
from codec.options import DecodeOptions
from codec.images.imageio import DEFAULT_MAX_PIXELS
from conftest import natural_image
from test_stream_fuzz import build, join, parse, rgba_image, split


@pytest.fixture(scope="module")
def stream(model, image):
    return codec.encode(image, model, quality=0.5, tile_size=128).data


def test_header_describes_the_image(stream, model):
    h = codec.read_header(stream)
    assert (h.width, h.height, h.channels, h.tile_size) == (330, 200, 3, 128)
    assert h.version == codec.FORMAT_VERSION and h.model_id == model.model_id and h.model_hash == model.sha256
    assert h.grid == (2, 3) and len(h.tiles) == 6
    # tile index: offsets are contiguous and cover the payload exactly
    ends = [t.offset + t.length for t in h.tiles]
    assert [t.offset for t in h.tiles] == [0] + ends[:-1]
    assert h.header_len + ends[-1] == len(stream)


def test_flipped_payload_byte_names_the_tile(stream):
    h = codec.read_header(stream)
    data = bytearray(stream)
    data[h.header_len + h.tiles[4].offset + 9] ^= 0x40
    with pytest.raises(codec.CorruptStreamError, match=r"tile 4 \(row 1, col 1\) checksum"):
        codec.decode(bytes(data))
    # tiles that are intact still decode on their own (random access)
    x, y, w, hh = h.tile_box(0)
    assert codec.decode_region(bytes(data), (x, y, w, hh)).shape == (hh, w, 3)


def test_flipped_header_byte_is_detected(stream):
    data = bytearray(stream)
    data[20] ^= 0x01
    with pytest.raises(codec.CorruptStreamError, match="header checksum"):
        codec.decode(bytes(data))


@pytest.mark.parametrize("cut", [0, 3, 10, 60, -1, -100])
def test_truncated_stream_raises(stream, cut):
    data = stream[:cut]
    with pytest.raises(codec.CorruptStreamError, match="truncated|too short|not a TLIC"):
        codec.decode(data)


def test_trailing_bytes_raise(stream):
    with pytest.raises(codec.CorruptStreamError, match="trailing"):
        codec.decode(stream + b"\0\0")


def test_not_a_stream(tmp_path):
    with pytest.raises(codec.CorruptStreamError, match="not a TLIC stream"):
        codec.decode(b"\x89PNG\r\n\x1a\n" + bytes(100))


def test_future_version_is_refused(stream):
    data = bytearray(stream)
    struct.pack_into("<H", data, 4, max(bitstream.VERSIONS) + 1)
    with pytest.raises(codec.CorruptStreamError, match="unsupported format version"):
        codec.read_header(bytes(data))


def test_every_single_byte_corruption_is_caught_or_harmless(stream):
    """No flipped byte may yield a silently different image."""
    reference = codec.decode(stream)
    rng = np.random.default_rng(1)
    for pos in rng.choice(len(stream), size=40, replace=False):
        data = bytearray(stream)
        data[pos] ^= 1 << int(rng.integers(8))
        try:
            out = codec.decode(bytes(data))
        except codec.CodecError:
            continue
        assert np.array_equal(out, reference), f"byte {pos} changed the image silently"


def test_wrong_model_names_the_needed_one(stream, model, tmp_path):
    other_reg = codec.Registry(tmp_path)
    net = codec.load_model("default").model
    import copy

    clone = copy.deepcopy(net)
    with __import__("torch").no_grad():
        clone.g_s.linear.bias.add_(0.01)
    other_reg.register("aerial", clone)
    other = other_reg.load("aerial")
    with pytest.raises(codec.ModelMismatchError, match=f"encoded with model {model.model_id}"):
        codec.decode(stream, other)


# --- decompression bombs and size limits ----------------------------------------------------------

@pytest.fixture(scope="module")
def rgba_stream(model):
    return codec.encode(rgba_image(130, 200), model, quality=0.5, tile_size=64).data


def _with_alpha(stream: bytes, tile: int, alpha: bytes) -> bytes:
    raw = parse(stream)
    z, y, _ = split(raw.blobs[tile])
    raw.blobs[tile] = join(z, y, alpha)
    return build(raw)


def test_alpha_bomb_is_refused_without_inflating_it(rgba_stream, model):
    data = _with_alpha(rgba_stream, 0, zlib.compress(bytes(64 << 20)))  # 64 MiB of alpha for a 64×64 tile
    tracemalloc.start()
    try:
        with pytest.raises(codec.CorruptStreamError, match=r"tile 0 \(row 0, col 0\).*alpha"):
            codec.decode(data, model)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20


@pytest.mark.parametrize("alpha", [
    pytest.param(zlib.compress(bytes(64 * 64 - 1)), id="short"),
    pytest.param(zlib.compress(bytes(64 * 64 + 1)), id="long"),
    pytest.param(zlib.compress(bytes(64 * 64))[:-3], id="truncated"),
    pytest.param(zlib.compress(bytes(64 * 64)) + b"\0", id="trailing"),
    pytest.param(b"", id="missing"),
    pytest.param(b"not zlib", id="not_zlib"),
])
def test_alpha_plane_of_the_wrong_size_is_refused(rgba_stream, model, alpha):
    with pytest.raises(codec.CorruptStreamError, match=r"tile 0 \(row 0, col 0\).*alpha"):
        codec.decode(_with_alpha(rgba_stream, 0, alpha), model)


@pytest.mark.parametrize("overlap_coding,batches_ahead", [(False, 1), (True, 2)])
def test_alpha_planes_are_inflated_per_batch(rgba_stream, model, monkeypatch, overlap_coding, batches_ahead):
    """Memory is bounded by the batch: no alpha plane is inflated before its batch is decoded
    (with coding overlapped, the next batch is parsed while this one is synthesised)."""
    events = []

    class SpyZlib:
        def __getattr__(self, name):
            return getattr(zlib, name)

        def decompress(self, *a, **k):
            events.append("inflate")
            return zlib.decompress(*a, **k)

        def decompressobj(self, *a, **k):
            events.append("inflate")
            return zlib.decompressobj(*a, **k)

    monkeypatch.setattr(inflate, "zlib", SpyZlib())  # the one bounded inflate (codec.format.inflate)
    _, coder = codec.get_coder(model)
    synthesize = coder.synthesize
    monkeypatch.setattr(coder, "synthesize", lambda y, q: events.append("synthesize") or synthesize(y, q))
    assert codec.decode(rgba_stream, model, batch_size=2, overlap_coding=overlap_coding).shape == (130, 200, 4)
    assert events.count("inflate") == 12
    assert events[: events.index("synthesize")].count("inflate") <= 2 * batches_ahead


def test_max_pixels_defaults_to_the_image_reader_limit():
    assert DecodeOptions().max_pixels == DEFAULT_MAX_PIXELS  # decode and decode_region take DecodeOptions' fields


def test_decode_refuses_a_stream_over_max_pixels(stream, model):
    h = codec.read_header(stream)
    with pytest.raises(StreamTooLargeError, match=rf"330×200.*limit of {h.width * h.height - 1}"):
        codec.decode(stream, model, max_pixels=h.width * h.height - 1)
    assert issubclass(StreamTooLargeError, codec.CorruptStreamError)
    assert codec.decode(stream, model, max_pixels=h.width * h.height).shape == (200, 330, 3)


def test_decode_region_counts_the_tiles_it_decodes(stream, model):
    """A 1×1 region still decodes a whole 128² tile: the limit bounds that work, not just the crop."""
    with pytest.raises(StreamTooLargeError, match="limit of 16383"):
        codec.decode_region(stream, (0, 0, 1, 1), model, max_pixels=128 * 128 - 1)
    assert codec.decode_region(stream, (0, 0, 1, 1), model, max_pixels=128 * 128).shape == (1, 1, 3)
    with pytest.raises(StreamTooLargeError):
        codec.decode_region(stream, (100, 100, 60, 60), model, max_pixels=3 * 128 * 128)  # 4 tiles


def test_a_huge_claimed_image_is_refused_before_any_allocation(stream, model):
    """A 4 KB stream claiming 50000×50000 pixels in 4096² tiles: refused by the default limit, quickly."""
    raw = parse(stream)
    raw.width = raw.height = 50_000
    raw.tile_size = 4096
    n = 13 * 13
    raw.tiles, raw.blobs = [list(raw.tiles[0]) for _ in range(n)], [raw.blobs[0]] * n
    data = build(raw)
    assert codec.read_header(data).width == 50_000
    tracemalloc.start()
    try:
        with pytest.raises(StreamTooLargeError, match=f"limit of {DEFAULT_MAX_PIXELS}"):
            codec.decode(data, model, max_pixels=DEFAULT_MAX_PIXELS)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_region_of_a_truncated_stream_is_refused(stream, model):
    """The tile index must lie inside the stream, even when the region's own tiles are intact."""
    with pytest.raises(codec.CorruptStreamError, match="truncated"):
        codec.decode_region(stream[:-10], (0, 0, 8, 8), model)


def test_batches_are_capped_by_pixels(model, monkeypatch):
    assert tiling.PIXELS_PER_BATCH // (256 * 256) >= 8  # default tiles keep batch 8: the same bytes as before
    monkeypatch.setattr(tiling, "PIXELS_PER_BATCH", 2 * 64 * 64)
    sizes = []
    _, coder = codec.get_coder(model)
    for name in ("analyse", "synthesize"):
        real = getattr(coder, name)
        monkeypatch.setattr(coder, name, lambda x, *a, real=real: sizes.append(len(x)) or real(x, *a))
    data = codec.encode(natural_image(130, 200), model, quality=0.5, tile_size=64).data
    codec.decode(data, model)
    assert max(sizes) == 2
