import struct

import numpy as np
import pytest

import codec
from codec import container


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
    struct.pack_into("<H", data, 4, container.FORMAT_VERSION + 1)
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
