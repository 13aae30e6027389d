"""Crafted and fuzzed streams: every damaged stream is a CodecError or a well-formed image, never a crash.

Mutated streams get their header CRC and tile CRCs recomputed, so the checks behind the
checksums (header fields, tile index, range decoder, alpha inflation) are what is tested.
"""

from __future__ import annotations

import math
import resource
import struct
import time
import zlib
from dataclasses import dataclass

import constriction
import numpy as np
import pytest

import codec
from codec.format import container as bitstream
from codec import rangecoder
from codec.families.hyperprior.tiling import padded_size
from conftest import natural_image

_PREFIX, _IMAGE, _TILE, _CRC = (struct.Struct(f) for f in ("<4sHI", "<IIBHBfI", "<QIHBI", "<I"))
_LENGTHS = struct.Struct("<II")


@dataclass
class Raw:
    """A stream's header fields and tile blobs, editable without any of the container's checks."""

    version: int
    model_id: bytes
    model_hash: bytes
    width: int
    height: int
    channels: int
    tile_size: int
    mode: int
    target: float
    tiles: list[list[int]]  # per tile: [offset, length, quality code, flags, crc]
    blobs: list[bytes]
    n_tiles: int | None = None  # None: len(tiles)
    header_len: int | None = None  # None: what the fields need
    tail: bytes = b""  # payload bytes after the blobs


def parse(data: bytes) -> Raw:
    _, version, header_len = _PREFIX.unpack_from(data, 0)
    pos = _PREFIX.size
    id_len = data[pos]
    model_id, model_hash = data[pos + 1 : pos + 1 + id_len], data[pos + 1 + id_len : pos + 33 + id_len]
    pos += 33 + id_len
    w, h, c, ts, mode, target, n = _IMAGE.unpack_from(data, pos)
    pos += _IMAGE.size
    tiles = [list(_TILE.unpack_from(data, pos + k * _TILE.size)) for k in range(n)]
    blobs = [data[header_len + t[0] : header_len + t[0] + t[1]] for t in tiles]
    return Raw(version, model_id, model_hash, w, h, c, ts, mode, target, tiles, blobs)


def build(raw: Raw, layout: bool = True) -> bytes:
    """Serialise ``raw``. ``layout``: offsets, lengths and CRCs follow the blobs; otherwise the entries
    are kept and each CRC is recomputed over the bytes the entry points at. The header CRC is always
    recomputed (at the position the header length field gives, when there is one)."""
    tiles = [list(t) for t in raw.tiles]
    payload = b"".join(raw.blobs) + raw.tail
    if layout:
        offset = 0
        for t, blob in zip(tiles, raw.blobs):
            t[0], t[1], t[4] = offset, len(blob), zlib.crc32(blob)
            offset += len(blob)
    else:
        for t in tiles:
            seg = payload[t[0] : t[0] + t[1]]
            if len(seg) == t[1]:
                t[4] = zlib.crc32(seg)
    n = len(tiles) if raw.n_tiles is None else raw.n_tiles
    mid = (bytes([len(raw.model_id)]) + raw.model_id + raw.model_hash
           + _IMAGE.pack(raw.width, raw.height, raw.channels, raw.tile_size, raw.mode, raw.target, n)
           + b"".join(_TILE.pack(*t) for t in tiles))
    natural = _PREFIX.size + len(mid) + _CRC.size
    header_len = natural if raw.header_len is None else raw.header_len
    out = bytearray(_PREFIX.pack(b"TLIC", raw.version, header_len) + mid + bytes(_CRC.size) + payload)
    if _CRC.size <= header_len <= len(out):
        out[header_len - _CRC.size : header_len] = _CRC.pack(zlib.crc32(out[: header_len - _CRC.size]))
    return bytes(out)


def split(blob: bytes) -> tuple[bytes, bytes, bytes]:
    z_len, y_len = _LENGTHS.unpack_from(blob, 0)
    end = _LENGTHS.size + z_len + y_len
    return blob[_LENGTHS.size : _LENGTHS.size + z_len], blob[_LENGTHS.size + z_len : end], blob[end:]


def join(z: bytes, y: bytes, rest: bytes = b"") -> bytes:
    return _LENGTHS.pack(len(z), len(y)) + z + y + rest


def z_spatial(raw: Raw, i: int) -> tuple[int, int]:
    cols = -(-raw.width // raw.tile_size)
    r, c = divmod(i, cols)
    w = min(raw.tile_size, raw.width - c * raw.tile_size)
    h = min(raw.tile_size, raw.height - r * raw.tile_size)
    pw, ph = padded_size(w, h)
    return ph // 64, pw // 64


def _hyper_index(model, spatial) -> np.ndarray:
    ch = model.model.config.hyper_channels
    return np.broadcast_to(np.arange(ch).reshape(-1, 1, 1), (ch, *spatial))


def z_with_escape(model, z: bytes, spatial, nbits: int) -> bytes:
    """Tile hyper-latent bytes whose first symbol is an escape announcing an ``nbits`` payload."""
    tables = model.model.hyper.tables
    index = _hyper_index(model, spatial)
    bins = tables.bin_index(rangecoder.decode(z, index, tables).ravel(), index.ravel())
    flat = index.ravel()
    bins[0] = tables.lengths[flat[0]] - 1  # escapes are decoded in position order: this one first
    enc = constriction.stream.queue.RangeEncoder()
    order, runs = rangecoder._groups(flat)
    for t, s, e in runs:
        enc.encode(bins[order[s:e]].astype(np.int32), tables.model(t))
    enc.encode(np.array([1], dtype=np.int32), constriction.stream.model.Uniform(2))
    enc.encode(np.array([nbits], dtype=np.int32), constriction.stream.model.Uniform(33))
    return enc.get_compressed().astype("<u4").tobytes()


def garbage_z(model, spatial) -> bytes:
    """Random words on which the range decoder gives up (constriction raised AssertionError here)."""
    tables, index = model.model.hyper.tables, _hyper_index(model, spatial)
    rng = np.random.default_rng(0)
    while True:
        data = rng.bytes(4 * int(rng.integers(1, 20)))
        try:
            rangecoder.decode(data, index, tables)
        except (AssertionError, rangecoder.RangeCodingError):
            return data


def rgba_image(h: int, w: int) -> np.ndarray:
    alpha = (np.add.outer(np.arange(h), 2 * np.arange(w)) % 256).astype(np.uint8)
    return np.dstack([natural_image(h, w, seed=1), alpha])


@pytest.fixture(scope="module")
def streams(model):
    """Small real streams with several tiles each: RGB, RGBA and gray, two qualities, two tile sizes."""
    rgb = natural_image(130, 200)
    return {
        "rgb": codec.encode(rgb, model, quality=0.3, tile_size=64).data,
        "rgba": codec.encode(rgba_image(130, 200), model, quality=0.8, tile_size=64).data,
        "gray": codec.encode(rgb[..., 1].copy(), model, quality=0.6, tile_size=128).data,
    }


def _expected_shape(h, box=None) -> tuple[int, ...]:
    w, hh = (h.width, h.height) if box is None else box[2:]
    return (hh, w) if h.channels == 1 else (hh, w, h.channels)


# --- named regressions: crafted streams that crashed or decoded where they must be refused ------
def _set(**fields):
    def mutate(raw, model):
        for k, v in fields.items():
            setattr(raw, k, v)
    return mutate


def _tile_flag(flag):
    def mutate(raw, model):
        raw.tiles[0][3] |= flag
    return mutate


def _escape(nbits):
    def mutate(raw, model):
        z, y, rest = split(raw.blobs[0])
        raw.blobs[0] = join(z_with_escape(model, z, z_spatial(raw, 0), nbits), y, rest)
    return mutate


def _garbage_z(raw, model):
    z, y, rest = split(raw.blobs[0])
    raw.blobs[0] = join(garbage_z(model, z_spatial(raw, 0)), y, rest)


def _every_tile_is_tile_0(raw, model):
    raw.tiles = [list(raw.tiles[0]) for _ in raw.tiles]  # overlapping entries, same total length
    raw.tail = bytes(sum(t[1] for t in raw.tiles) - len(raw.blobs[0]))
    raw.blobs = raw.blobs[:1]


def _grid_of(tile_size):
    def mutate(raw, model):  # a tile size the encoder never writes, with a tile count to match
        raw.tile_size = tile_size
        n = -(-raw.width // tile_size) * -(-raw.height // tile_size)
        raw.tiles, raw.blobs = (raw.tiles * n)[:n], (raw.blobs * n)[:n]
    return mutate


def _alpha_in_rgb(raw, model):
    raw.blobs[0] += zlib.compress(bytes(64 * 64))


def _index_outgrows_header(raw, model):
    raw.header_len = 67 + len(raw.model_id) + 19 * (len(raw.tiles) - 1)  # one entry short, CRC still valid


CRAFTED = {  # name: (mutation, what the error must say)
    "mode_9": (_set(mode=9), "unknown rate-control mode 9"),  # was IndexError
    "tile_size_0": (_set(tile_size=0), "tile size 0"),  # was ZeroDivisionError
    "tile_size_96": (_grid_of(96), "tile size 96"),
    "tile_size_8192": (_grid_of(8192), "tile size 8192"),
    "n_tiles_huge": (_set(n_tiles=2**32 - 1), "tile index lists 4294967295 tiles"),  # was struct.error
    "header_len_1": (_set(header_len=1), "header length 1"),  # was struct.error
    "header_len_2": (_set(header_len=2), "header length 2"),
    "header_len_3": (_set(header_len=3), "header length 3"),
    "index_outgrows_header": (_index_outgrows_header, "does not match its 12-tile index"),
    "model_id_not_utf8": (_set(model_id=b"default\xff"), "model id is not UTF-8"),  # was UnicodeDecodeError (exit 2)
    "empty_image": (_set(width=0, height=0, tiles=[], blobs=[]), "empty image"),
    "channels_2": (_set(channels=2), "2 channels"),
    "channels_0": (_set(channels=0), "0 channels"),
    "target_nan": (_set(target=math.nan), "target nan"),
    "target_inf": (_set(target=math.inf), "target inf"),
    "quality_target_above_1": (_set(target=1.5), "target 1.5"),
    "alpha_flag_on_rgb": (_tile_flag(bitstream.FLAG_ALPHA), "alpha flag"),
    "unknown_flag": (_tile_flag(0x80), "unknown flags 0x80"),
    "overlapping_tiles": (_every_tile_is_tile_0, "overlaps"),
    "alpha_bytes_in_rgb_tile": (_alpha_in_rgb, r"tile 0 \(row 0, col 0\): 26 unexpected bytes"),
    "garbage_payload": (_garbage_z, r"tile 0 \(row 0, col 0\): range decoder"),  # was constriction's AssertionError
    # 26-31 were a pyo3 PanicException, which escapes ``except Exception``
    **{f"escape_bits_{n}": (_escape(n), rf"tile 0 \(row 0, col 0\): escape payload of {n} bits") for n in range(26, 33)},
}


def crafted(stream: bytes, name: str, model) -> bytes:
    raw = parse(stream)
    layout = name != "overlapping_tiles"
    CRAFTED[name][0](raw, model)
    return build(raw, layout=layout)


@pytest.mark.parametrize("name", sorted(CRAFTED))
def test_crafted_stream_is_refused(streams, model, name):
    data = crafted(streams["rgb"], name, model)
    with pytest.raises(codec.CorruptStreamError, match=CRAFTED[name][1]):
        codec.decode(data, model)
    with pytest.raises(codec.CorruptStreamError, match=CRAFTED[name][1]):
        codec.decode_region(data, (0, 0, 1, 1), model)


@pytest.mark.parametrize("name,workers", [("escape_bits_28", 0), ("garbage_payload", 0), ("escape_bits_28", 2)])
def test_tile_decode_failures_name_the_tile(streams, model, name, workers):
    raw = parse(crafted(streams["rgb"], name, model))
    raw.blobs = raw.blobs[6:] + raw.blobs[:6]  # the damaged tile, now tile 6, mid-batch
    raw.tiles = raw.tiles[6:] + raw.tiles[:6]
    with pytest.raises(codec.CorruptStreamError, match=r"^tile 6 \(row 1, col 2\): "):
        codec.decode(build(raw), model, entropy_workers=workers)


def test_escape_count_guard_stops_before_constriction(streams, model, capfd):
    """A pyo3 panic also prints a Rust backtrace: the guard must refuse the count before that."""
    with pytest.raises(codec.CorruptStreamError, match="escape"):
        codec.decode(crafted(streams["rgb"], "escape_bits_30", model), model)
    assert "panicked" not in capfd.readouterr().err


def test_rgba_stream_without_alpha_flag_is_refused(streams, model):
    raw = parse(streams["rgba"])
    raw.tiles[3][3] &= ~bitstream.FLAG_ALPHA
    with pytest.raises(codec.CorruptStreamError, match="flag"):
        codec.read_header(build(raw))


def test_crafting_helpers_rebuild_the_stream_exactly(streams):
    for data in streams.values():
        assert build(parse(data)) == data


# --- the fuzz test -------------------------------------------------------------------------------
FUZZ_CASES = 300
FUZZ_MAX_PIXELS = 1 << 20  # keeps a mutated size from turning the test into a benchmark


def _header_mutation(raw: Raw, rng, model) -> bool:
    n, natural = len(raw.tiles), 67 + len(raw.model_id) + 19 * len(raw.tiles)
    choices = {
        "mode": [3, 9, 255, int(rng.integers(256))],
        "tile_size": [0, 1, 32, 63, 65, 96, 128, 4096, 4160, 8192, 65535, int(rng.integers(2**16))],
        "width": [0, 1, 63, 65, raw.width - 1, raw.width + 64, 2**31, 2**32 - 1, int(rng.integers(2**32))],
        "height": [0, 1, 63, 65, raw.height - 1, raw.height + 64, 2**32 - 1, int(rng.integers(2**32))],
        "channels": [0, 1, 2, 3, 4, 5, 255],
        "n_tiles": [0, 1, n - 1, n + 1, 2**16, 2**32 - 1],
        "header_len": [0, 1, 2, 3, 4, 66, 67, natural - 1, natural + 1, natural + 19, 2**32 - 1],
        "target": [math.nan, math.inf, -math.inf, -1.0, 0.0, 2.0, 1e30],
        "model_id": [b"", b"\xff", raw.model_id + b"\xc3", rng.bytes(int(rng.integers(1, 40)))],
        "model_hash": [bytes([raw.model_hash[0] ^ 1]) + raw.model_hash[1:]],
    }
    field = list(choices)[rng.integers(len(choices))]
    values = choices[field]
    setattr(raw, field, values[rng.integers(len(values))])
    return True


def _entry_mutation(raw: Raw, rng, model) -> bool:
    if not raw.tiles:
        return True
    t = raw.tiles[rng.integers(len(raw.tiles))]
    k = int(rng.integers(4))
    if k == 0:  # offset: anywhere in (or past) the payload
        t[0] = int(rng.choice([0, 1, t[0] + 1, t[0] - 1, 2**64 - 1, int(rng.integers(sum(map(len, raw.blobs)) + 16))])) % 2**64
        return False
    if k == 1:  # length
        t[1] = int(rng.choice([0, 1, 7, 8, t[1] - 1, t[1] + 1, 2**32 - 1])) % 2**32
        return False
    if k == 2:
        t[2] = int(rng.integers(2**16))  # any quality code decodes: it only scales the latents
    else:
        t[3] = int(rng.integers(256))
    return True


def _payload_mutation(raw: Raw, rng, model) -> bool:
    if not raw.blobs:
        return True
    i = int(rng.integers(len(raw.blobs)))
    blob = bytearray(raw.blobs[i])
    k = int(rng.integers(7 if len(blob) >= _LENGTHS.size else 4))  # 4-6 edit the parts of a blob
    if k == 0:  # flip a few bytes
        for p in rng.integers(len(blob), size=int(rng.integers(1, 4))):
            blob[p] ^= 1 << int(rng.integers(8))
    elif k == 1:  # truncate
        del blob[int(rng.integers(len(blob))) :]
    elif k == 2:  # insert
        p = int(rng.integers(len(blob) + 1))
        blob[p:p] = rng.bytes(int(rng.integers(1, 9)))
    elif k == 3:  # swap two tiles' blobs
        j = int(rng.integers(len(raw.blobs)))
        raw.blobs[i], raw.blobs[j] = raw.blobs[j], raw.blobs[i]
        return True
    elif k == 4:  # an escape announcing a long payload
        z, y, rest = split(bytes(blob))
        try:
            blob = join(z_with_escape(model, z, z_spatial(raw, i), int(rng.integers(20, 33))), y, rest)
        except (ValueError, IndexError, ZeroDivisionError):  # an earlier mutation left no tile geometry or z to craft from
            pass
    elif k == 5:  # garbage latents
        z, y, rest = split(bytes(blob))
        if rng.integers(2):
            z = rng.bytes(len(z))
        else:
            y = rng.bytes(len(y))
        blob = join(z, y, rest)
    else:  # another alpha plane: short, long, or a small bomb
        z, y, _ = split(bytes(blob))
        size = int(rng.choice([0, 1, 64 * 64 - 1, 64 * 64 + 1, 1 << 24]))
        blob = join(z, y, zlib.compress(bytes(size)) if rng.integers(4) else rng.bytes(16))
    raw.blobs[i] = bytes(blob)
    return True


MUTATIONS = (_header_mutation, _entry_mutation, _payload_mutation)


def _mutate(stream: bytes, rng, model) -> bytes:
    raw = parse(stream)
    layout = True
    for _ in range(int(rng.integers(1, 3))):
        layout &= MUTATIONS[rng.integers(len(MUTATIONS))](raw, rng, model)
    return build(raw, layout)


def _check(call, shape) -> None:
    try:
        out = call()
    except (codec.CorruptStreamError, codec.ModelMismatchError):
        return
    assert out.dtype == np.uint8 and out.shape == shape


def test_fuzzed_streams_raise_codec_errors_or_decode_to_the_header_shape(streams, model):
    rng = np.random.default_rng(20240611)
    for data in streams.values():  # warm up: the model and its coding tables are loaded once
        codec.decode(data, model)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    names = sorted(streams)
    slowest = 0.0
    for case in range(FUZZ_CASES):
        data = _mutate(streams[names[case % len(names)]], rng, model)
        t = time.perf_counter()
        try:
            h = codec.read_header(data)
        except codec.CorruptStreamError:
            h = None
        if h is None:
            for call in (lambda: codec.decode(data, model), lambda: codec.decode_region(data, (0, 0, 1, 1), model)):
                with pytest.raises(codec.CorruptStreamError):
                    call()
            continue
        x, y = int(rng.integers(h.width)), int(rng.integers(h.height))
        box = (x, y, int(rng.integers(1, h.width - x + 1)), int(rng.integers(1, h.height - y + 1)))
        _check(lambda: codec.decode(data, model, max_pixels=FUZZ_MAX_PIXELS), _expected_shape(h))
        _check(lambda: codec.decode_region(data, box, model, max_pixels=FUZZ_MAX_PIXELS), _expected_shape(h, box))
        slowest = max(slowest, time.perf_counter() - t)
    rss_growth_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert slowest < 10, f"one fuzz case took {slowest:.1f} s"
    assert rss_growth_mib < 300, f"peak memory grew by {rss_growth_mib:.0f} MiB"
