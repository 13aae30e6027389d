"""Faster and concurrent entropy coding must not change a single byte.

The range coder's grouping (radix-sorted table runs), entropy worker processes and the
overlap of coding with the next batch's transforms are all speed changes: streams must be
byte-identical with and without them, and streams written before them must still decode.
"""

from pathlib import Path

import constriction
import numpy as np
import pytest

import codec
from codec.format import container as bitstream
from codec import rangecoder
from codec.rangecoder import TableSet

OLD_STREAM = Path(__file__).parent / "data" / "default-v1-astronaut-96x160.tlic"


def reference_encode(values: np.ndarray, table_index: np.ndarray, tables: TableSet) -> bytes:
    """The coder's contract written the slow, obvious way: tables in increasing order, raster
    order inside a table, then every escape payload in raster order."""
    values, table_index = values.ravel().astype(np.int64), table_index.ravel().astype(np.int64)
    bins = tables.bin_index(values, table_index)
    enc = constriction.stream.queue.RangeEncoder()
    for t in np.unique(table_index):
        enc.encode(bins[table_index == t].astype(np.int32), tables.model(int(t)))
    for p in np.flatnonzero(bins == tables.lengths[table_index] - 1):
        rangecoder._encode_escape(enc, int(values[p]), int(table_index[p]), tables)
    return enc.get_compressed().astype("<u4").tobytes()


@pytest.mark.parametrize("n_tables", [3, 300])  # 300: table indexes past 8 bits sort as uint16
def test_range_coder_bytes_match_the_reference_order(n_tables):
    rng = np.random.default_rng(n_tables)
    lengths = rng.integers(3, 40, n_tables)
    pmfs = np.zeros((n_tables, lengths.max()))
    for t, n in enumerate(lengths):
        pmfs[t, :n] = rng.random(n) + 0.01
    tables = TableSet(pmfs, lengths, -(lengths // 2))
    table_index = rng.integers(0, n_tables, (7, 33, 5))
    values = rng.integers(-30, 30, table_index.shape)  # many outside their table: escapes
    values[0, 0, :3] = [10**6, -(10**6), 0]
    data = rangecoder.encode(values, table_index, tables)
    assert data == reference_encode(values, table_index, tables)
    assert np.array_equal(rangecoder.decode(data, table_index, tables), values)


def test_an_old_stream_re_encodes_to_its_own_bytes():
    """Symbols decoded from a stream written before these changes code back to the very same bytes."""
    data = OLD_STREAM.read_bytes()
    header = codec.read_header(data)
    net = codec.load_model(header.model_id).model
    for i in range(len(header.tiles)):
        z_bytes, y_bytes, _ = bitstream.tile_parts(data, header, i)
        _, _, w, h = header.tile_box(i)
        spatial = (-(-h // 64), -(-w // 64))
        z_hat = net.hyper.decompress([z_bytes], spatial)
        assert net.hyper.compress(z_hat) == [z_bytes]
        _, index = net.int_hs(z_hat)
        symbols = rangecoder.decode_each([y_bytes], index.numpy(), net.gaussian.tables)
        assert rangecoder.encode_each(symbols, index.numpy(), net.gaussian.tables) == [y_bytes]


def test_map_ahead_keeps_order_runs_one_item_ahead_and_raises_in_order():
    import threading

    from codec.families.hyperprior.engine import map_ahead

    producing_next = threading.Event()
    overlapped = []

    def fn(x):
        if x == 0:  # coding batch 0 must run while the next batch is being produced
            overlapped.append(producing_next.wait(5))
        if x == 3:
            raise KeyError("item 3")
        return x * 10

    def items():
        for x in range(5):
            if x == 1:
                producing_next.set()
            yield x

    got = []
    with pytest.raises(KeyError, match="item 3"):
        for item, result in map_ahead(fn, items()):
            got.append((item, result))
    assert overlapped == [True]
    assert got == [(0, 0), (1, 10), (2, 20)]
    assert list(map_ahead(lambda x: -x, range(4), overlap=False)) == [(0, 0), (1, -1), (2, -2), (3, -3)]


@pytest.mark.parametrize("mode", [{"quality": 0.45}, {"target_psnr": 36.0}])
def test_overlap_and_entropy_workers_give_identical_bytes(model, image, mode):
    image = image[:128]  # 12 tiles of 64² in 6 batches: coding overlaps 5 of them
    kwargs = dict(tile_size=64, batch_size=2, **mode)
    serial = codec.encode(image, model, overlap_coding=False, **kwargs)
    assert codec.encode(image, model, overlap_coding=True, **kwargs).data == serial.data
    pixels = codec.decode(serial.data, model, overlap_coding=False, batch_size=2)
    assert np.array_equal(codec.decode(serial.data, model, overlap_coding=True, batch_size=2), pixels)
    if "quality" in mode:  # the pool's start-up costs seconds: once is enough
        pooled = codec.encode(image, model, entropy_workers=2, **kwargs)
        assert pooled.data == serial.data
        assert np.array_equal(codec.decode(serial.data, model, entropy_workers=2, batch_size=2), pixels)


def test_raster_encode_overlap_gives_identical_bytes(model):
    """Rasters (stream version 2) go through the same overlapped coding: 5 uint16 bands, nodata."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:128, 0:192].astype(np.float64)
    base = np.sin(xx / 9.0) + np.cos(yy / 13.0) + 0.2 * rng.standard_normal(xx.shape)
    a = np.stack([(base + 2.5) * (700 + 90 * b) for b in range(5)], axis=2).astype(np.uint16)
    a[(xx + yy) < 40] = 0
    kwargs = dict(quality=0.6, nodata=0, tile_size=64, batch_size=2)  # 6 tiles × 2 band groups, 3 batches each
    serial = codec.encode(a, model, overlap_coding=False, **kwargs)
    assert serial.header.version == 2
    assert codec.encode(a, model, overlap_coding=True, **kwargs).data == serial.data


def test_overlap_defaults_to_on_only_where_coding_would_leave_hardware_idle(model):
    _, cpu = codec.get_coder(model)
    assert cpu.overlaps(None) is False and cpu.overlaps(True) is True
    _, pooled = codec.get_coder(model, entropy_workers=1)  # the pool starts lazily: nothing spawned here
    assert pooled.overlaps(None) is True and pooled.overlaps(False) is False
