"""Rasters through the codec (stream version 2): any band count, uint8/uint16, nodata, exact tiles,
GeoTIFF in and out. Small synthetic rasters and a tiny untrained model where quality is irrelevant;
the shipped default model where it matters."""

from __future__ import annotations

import hashlib
import json
import struct
import zlib

import numpy as np
import pytest

import codec
from codec.families.hyperprior import bands as band_coding
from codec.format import raster as bands
from codec.format import container as bitstream
from codec.images.imageio import load_image, write_geotiff
from codec.metrics import band_peaks, bits_per_sample, raster_band_psnr, raster_psnr
from codec.families.hyperprior.model import HyperpriorCodec, ModelConfig
from codec.registry import LoadedModel, default_model_name, model_from_weights, weights_bytes

RNG = np.random.default_rng(17)
GEO = json.dumps({"tags": {"ModelPixelScale": [10.0, 10.0, 0.0], "ModelTiepoint": [0.0, 0.0, 0.0, 500000.0, 4.0e6, 0.0],
                           "GeoKeyDirectory": [1, 1, 0, 2, 1024, 0, 1, 1, 3072, 0, 1, 32629]}})


@pytest.fixture(scope="module")
def tiny() -> LoadedModel:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = HyperpriorCodec(ModelConfig(channels=16, latent_channels=24, hyper_channels=16)).eval()
    net.finalize(torch.rand(2, 3, 64, 64))
    blob = weights_bytes(net)
    return LoadedModel(model_from_weights(blob).eval(), "tiny@1", hashlib.sha256(blob).digest())


def raster(h: int, w: int, bands_: int, dtype=np.uint16, nodata: int | None = None, seed: int = 0) -> np.ndarray:
    """Smooth correlated bands (a 12-bit or 8-bit range), with a nodata corner when ``nodata`` is given."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    base = np.sin(xx / 9.0) + np.cos(yy / 13.0) + 0.2 * rng.standard_normal((h, w))
    top = 4000 if dtype == np.uint16 else 240
    out = np.stack([(base * (1 + 0.1 * b) + 2.5) / 5.5 * top * (0.6 + 0.04 * b) + 5 for b in range(bands_)], axis=2)
    out = np.clip(out, 1, top).astype(dtype)
    if nodata is not None:
        out[(xx + yy) < min(h, w) // 2] = nodata  # a triangular nodata border, all bands
    return out


def valid_of(a: np.ndarray, nodata) -> np.ndarray:
    return np.ones(a.shape[:2], bool) if nodata is None else ~np.all(bands.as_bands(a) == nodata, axis=2)


# --- round trips: every band count × dtype × nodata ---------------------------------------------------
@pytest.mark.parametrize("n_bands", [1, 2, 3, 4, 10])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("nodata", [None, 0])
def test_learned_round_trip_keeps_shape_dtype_band_order_and_nodata(tiny, n_bands, dtype, nodata):
    a = raster(70, 90, n_bands, dtype, nodata)
    r = codec.encode(a, tiny, quality=0.7, nodata=nodata, tile_size=64)
    eight_bit_image = dtype == np.uint8 and n_bands in (1, 3, 4) and nodata is None
    assert r.header.version == (1 if eight_bit_image else 2)
    d = codec.decode(r.data, tiny)
    want = a.shape if n_bands > 1 else a.shape[:2]
    assert d.shape == want and d.dtype == dtype
    valid = valid_of(a, nodata)
    if nodata is not None:
        assert (bands.as_bands(d)[~valid] == nodata).all()  # nodata exactly back
        assert not np.all(bands.as_bands(d)[valid] == nodata, axis=-1).any()  # and nowhere else
    if not eight_bit_image:
        lo = bands.as_bands(a)[valid].min(0)
        hi = bands.as_bands(a)[valid].max(0)
        dv = bands.as_bands(d)[valid]
        assert (dv >= lo).all() and (dv <= hi).all()  # each band stays in its own range: order kept
    assert r.bits_per_sample == pytest.approx(len(r.data) * 8 / (70 * 90 * n_bands))


def test_band_order_is_kept_through_learned_coding():
    """Bands of very different levels come back at their own levels (the default model, 3+2 bands)."""
    a = raster(64, 64, 5)
    for b in range(5):
        a[..., b] = a[..., b] // 4 + 600 * b
    d = codec.decode(codec.encode(a, "default", quality=0.9).data)
    means = bands.as_bands(d).reshape(-1, 5).mean(0)
    assert np.all(np.abs(means - a.reshape(-1, 5).mean(0)) < 30)


def test_eight_bit_rgb_stays_version_1_and_rasters_are_version_2(tiny):
    rgb = raster(64, 64, 3, np.uint8)
    assert codec.encode(rgb, tiny, quality=0.5).header.version == 1
    assert codec.encode(rgb, tiny, quality=0.5, nodata=0).header.version == 2
    assert codec.encode(rgb[..., :2].copy(), tiny, quality=0.5).header.version == 2
    assert codec.encode(rgb.astype(np.uint16), tiny, quality=0.5).header.version == 2


# --- lossless -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_bands", [1, 2, 3, 4, 10])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_lossless_is_bit_exact(tiny, n_bands, dtype):
    a = raster(70, 90, n_bands, dtype, nodata=0)
    a[5, 60] = np.iinfo(dtype).max  # full range, one pixel
    a[64:, 64:] = 0  # a tile of nothing but nodata
    a[:64, 64:, -1] = np.minimum(a[:64, 64:, -1], 200)  # a 16-bit band with 8-bit values in one tile
    r = codec.encode(a, tiny, lossless=True, nodata=0, tile_size=64)
    assert all(t.lossless for t in r.header.tiles) and r.header.lossless and r.psnr == float("inf")
    d = codec.decode(r.data)  # no model needed for exact tiles
    assert d.dtype == dtype and np.array_equal(bands.as_bands(d), bands.as_bands(a))
    assert np.array_equal(bands.as_bands(codec.decode_region(r.data, (30, 10, 50, 60))), bands.as_bands(a)[10:70, 30:80])


def test_target_psnr_beyond_the_model_falls_back_to_exact_tiles(tiny):
    a = raster(64, 64, 4, nodata=0)
    r = codec.encode(a, tiny, target_psnr=90, tile_size=64)
    assert all(t.lossless for t in r.header.tiles) and r.missed_tiles == 0
    assert np.array_equal(codec.decode(r.data, tiny), a)
    flagged = codec.encode(a, tiny, target_psnr=90, tile_size=64, lossless_fallback=False)
    assert flagged.missed_tiles == 1 and not any(t.lossless for t in flagged.header.tiles)


# --- metrics: defined once, nodata never counts ----------------------------------------------------------
def test_raster_psnr_ignores_nodata_and_judges_each_band_by_its_own_range():
    a = raster(40, 50, 3, nodata=0)
    valid = valid_of(a, 0)
    d = a.copy()
    d[valid] = np.clip(d[valid].astype(int) + RNG.integers(-20, 21, d[valid].shape), 1, 65535).astype(np.uint16)
    wrecked = d.copy()
    wrecked[~valid] = 60000  # garbage in nodata: must not change the figure
    p = raster_psnr(a, d, valid)
    assert raster_psnr(a, wrecked, valid) == p
    assert raster_psnr(a, wrecked) < p - 10  # counted, it would
    def band_db(b):
        ref = a[..., b][valid].astype(float)
        peak = ref.max() - min(ref.min(), 0)  # its own valid values and 0 (codec.metrics.peak_of), not the image's
        return 10 * np.log10(peak**2 / np.mean((ref - d[..., b][valid]) ** 2))

    by_hand = np.mean([band_db(b) for b in range(3)])
    assert p == pytest.approx(by_hand, abs=1e-9)
    assert raster_psnr(a, a, valid) == float("inf")
    assert bits_per_sample(1000, 10, 20, 4) == 10.0


def test_encoder_psnr_is_the_decoded_raster_psnr_and_targets_hold(tiny):
    a = raster(100, 130, 4, nodata=0)
    valid = valid_of(a, 0)
    r = codec.encode(a, "default", target_psnr=32, tile_size=64, nodata=0, lossless_fallback=False)
    assert 0 < r.missed_tiles < len(r.header.tiles)  # both kinds of tile are checked below
    d = codec.decode(r.data)
    assert r.psnr == pytest.approx(raster_psnr(a, d, valid), abs=0.02)
    boxes = r.header.boxes()
    for i, (x, y, w, h) in enumerate(boxes):
        if r.header.tiles[i].missed_target:
            continue
        peaks = band_peaks(a, valid)  # the image's, per band
        bands_db = raster_band_psnr(a[y:y + h, x:x + w], d[y:y + h, x:x + w], valid[y:y + h, x:x + w], peaks)
        assert bands_db.min() >= 32 - 0.01, f"tile {i}: {bands_db}"  # every band meets the target
        assert r.tile_psnr[i] == pytest.approx(bands_db.min(), abs=0.02)


def test_target_bits_per_sample_is_met(tiny):
    a = raster(64, 128, 4, nodata=0)
    r = codec.encode(a, tiny, target_bpp=0.5, tile_size=64)
    assert r.bits_per_sample <= 0.5


def test_nodata_costs_nearly_nothing():
    a = raster(128, 128, 3)
    holed = a.copy()
    holed[:, :64] = 0  # half of the raster is nodata
    full = codec.encode(a, "default", quality=0.5).data
    half = codec.encode(holed, "default", quality=0.5, nodata=0).data
    assert len(half) < 0.65 * len(full)


# --- region decode --------------------------------------------------------------------------------------
def test_region_decode_equals_the_crop_of_a_full_decode(tiny):
    a = raster(150, 170, 5, nodata=0)
    r = codec.encode(a, tiny, quality=0.6, nodata=0, tile_size=128)
    full = codec.decode(r.data, tiny)
    for box in [(0, 0, 170, 150), (30, 40, 100, 70), (129, 129, 41, 21), (5, 140, 1, 1)]:
        x, y, w, h = box
        assert np.array_equal(codec.decode_region(r.data, box, tiny), full[y:y + h, x:x + w])


# --- container v2: header fields, strict validation -------------------------------------------------------
def test_header_carries_raster_description(tiny):
    a = raster(70, 60, 5, nodata=0)
    names = ["B02", "B03", "B04", "B08", "Bé"]
    r = codec.encode(a, tiny, quality=0.5, nodata=0, band_names=names, bit_depth=12)
    h = codec.read_header(r.data)
    valid = valid_of(a, 0)
    assert h.version == 2 and h.bands == 5 and h.dtype == "uint16"
    assert h.raster.nodata == 0 and h.raster.band_names == tuple(names) and h.raster.bit_depth == 12
    assert h.raster.lo == tuple(int(v) for v in a[valid].min(0)) and h.raster.hi == tuple(int(v) for v in a[valid].max(0))


def _resealed(data: bytearray, header_len: int) -> bytes:
    struct.pack_into("<I", data, header_len - 4, zlib.crc32(bytes(data[: header_len - 4])))
    return bytes(data)


def test_corrupt_v2_headers_are_refused_with_a_cause(tiny):
    a = raster(64, 64, 4, nodata=0)
    data = codec.encode(a, tiny, quality=0.5, nodata=0, band_names=list("abcd")).data
    h = codec.read_header(data)
    raster_at = 4 + 2 + 4 + 1 + len(h.model_id) + 32 + bitstream._IMAGE.size
    cases = {
        raster_at: (5, "unknown sample type"),  # dtype
        raster_at + 1: (17, "bit depth"),  # bit depth
        raster_at + 4: (0x40, "unknown raster flags"),
    }
    for pos, (value, match) in cases.items():
        bad = bytearray(data)
        bad[pos] = value
        with pytest.raises(codec.CorruptStreamError, match=match):
            codec.read_header(_resealed(bad, h.header_len))
    bad = bytearray(data)
    struct.pack_into("<HH", bad, raster_at + bitstream._RASTER.size, 3000, 2000)  # lo > hi
    with pytest.raises(codec.CorruptStreamError, match="range"):
        codec.read_header(_resealed(bad, h.header_len))
    bad = bytearray(data)
    bad[4 + 2 + 4 + 1 + len(h.model_id) + 32 + 8] = 3  # channels byte must be 0 in v2
    with pytest.raises(codec.CorruptStreamError, match="channels byte"):
        codec.read_header(_resealed(bad, h.header_len))
    with pytest.raises(codec.CorruptStreamError):
        codec.read_header(data[: h.header_len - 9])


def test_corrupt_v2_tiles_are_refused(tiny):
    a = raster(64, 128, 4, nodata=0)
    for lossless in (False, True):
        data = bytearray(codec.encode(a, tiny, quality=0.5, nodata=0, tile_size=64, lossless=lossless).data)
        h = codec.read_header(bytes(data))
        data[h.header_len + 5] ^= 0xFF
        with pytest.raises(codec.CorruptStreamError, match="checksum"):
            codec.decode(bytes(data), tiny)


def test_nodata_mask_cannot_inflate_past_its_tile():
    bomb = zlib.compress(bytes(10_000))
    with pytest.raises(codec.CorruptStreamError, match="nodata mask"):
        bands.unpack_mask(bomb, 64, 64)
    good = np.zeros((5, 7), bool)
    good[2:, 3:] = True
    assert np.array_equal(bands.unpack_mask(bands.pack_mask(good), 5, 7), good)


# --- GeoTIFF in and out; the CLI ------------------------------------------------------------------------
def test_geotiff_write_read_keeps_geo_nodata_band_names_dtype(tmp_path):
    a = raster(33, 47, 6, nodata=0)
    names = ("B05", "B06", "B07", "B8A", "B11", "B12")
    data = write_geotiff(a, GEO, nodata=0, band_names=names, bit_depth=12)
    got = load_image(data, "s2.tif")
    assert got.pixels.dtype == np.uint16 and np.array_equal(got.pixels, a)
    assert got.nodata == 0 and got.band_names == names and got.bit_depth == 12 and got.is_raster
    geo = json.loads(got.geo)
    assert geo["crs"] == "EPSG:32629" and geo["geotransform"] == [500000.0, 10.0, 0.0, 4.0e6, 0.0, -10.0]
    planar = tmp_path / "planar.tif"
    import tifffile

    tifffile.imwrite(planar, np.moveaxis(a, -1, 0), photometric="minisblack", planarconfig="separate")
    assert np.array_equal(load_image(planar, "planar.tif").pixels, a)


@pytest.mark.parametrize("n_bands", [1, 2, 3, 4, 10])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_geotiff_round_trip_of_every_band_count_and_dtype(n_bands, dtype):
    a = raster(20, 30, n_bands, dtype)
    got = load_image(write_geotiff(a, GEO, nodata=0), "x.tif")
    want = a if n_bands > 1 else a[..., 0]
    assert got.pixels.dtype == dtype and np.array_equal(got.pixels, want) and got.nodata == 0
    assert json.loads(got.geo)["crs"] == "EPSG:32629"


def test_georeferenced_raster_through_codec_and_back(tiny, tmp_path):
    a = raster(64, 80, 4, nodata=0)
    loaded = load_image(write_geotiff(a, GEO, nodata=0, band_names=list("ABCD")), "in.tif")
    r = codec.encode(loaded.pixels, tiny, lossless=True, nodata=loaded.nodata, band_names=loaded.band_names)
    info = codec.read_header(r.data).raster
    back = load_image(write_geotiff(codec.decode(r.data), loaded.geo, nodata=info.nodata, band_names=info.band_names), "out.tif")
    assert np.array_equal(back.pixels, a) and back.band_names == tuple("ABCD") and back.nodata == 0
    assert json.loads(back.geo)["geotransform"] == json.loads(loaded.geo)["geotransform"]


def test_bad_raster_options_are_refused_by_name(tiny):
    a = raster(16, 16, 3)
    with pytest.raises(codec.UnsupportedImageError, match="scene.tif.*nodata"):
        codec.encode(a, tiny, quality=0.5, nodata=70000, name="scene.tif")
    with pytest.raises(codec.UnsupportedImageError, match="scene.tif.*band names"):
        codec.encode(a, tiny, quality=0.5, band_names=["a"], name="scene.tif")
    with pytest.raises(codec.UnsupportedImageError, match="scene.tif.*bit depth"):
        codec.encode(a, tiny, quality=0.5, bit_depth=8, name="scene.tif")


def test_model_choice_for_rasters():
    assert default_model_name(False) == "default"

    class Has:
        def versions(self, name):
            return [1] if name == "satellite" else []

    assert default_model_name(True, [Has()]) == "satellite"
    assert default_model_name(False, [Has()]) == "default"


def test_band_groups_and_fill():
    assert bands.band_groups(1) == [[0, 0, 0]]
    assert bands.band_groups(4) == [[0, 1, 2], [3, 3, 3]]
    assert bands.band_groups(5) == [[0, 1, 2], [3, 4, 4]]
    assert bands.real_bands([3, 4, 4]) == [0, 1]
    x = np.zeros((32, 32, 1), np.float32)
    x[:, 16:] = 1.0
    valid = np.ones((32, 32), bool)
    valid[:, :8] = False
    filled = band_coding.fill_nodata(x.copy(), valid)
    assert np.array_equal(filled[valid], x[valid]) and 0.0 <= filled.min() and filled.max() <= 1.0


def test_cli_encodes_decodes_and_describes_a_geotiff_raster(tmp_path, capsys):
    from codec.cli import main

    a = raster(70, 90, 5, nodata=0)
    src = tmp_path / "scene.tif"
    src.write_bytes(write_geotiff(a, GEO, nodata=0, band_names=["B1", "B2", "B3", "B4", "B5"]))
    assert main(["encode", str(src), str(tmp_path / "x.tlic"), "--lossless"]) == 0
    assert "bits/sample (5 uint16 bands)" in capsys.readouterr().out
    assert main(["info", str(tmp_path / "x.tlic"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["bands"] == 5 and info["dtype"] == "uint16" and info["nodata"] == 0 and info["lossless"]
    assert info["band_names"] == ["B1", "B2", "B3", "B4", "B5"]
    assert main(["decode", str(tmp_path / "x.tlic"), str(tmp_path / "out.tif")]) == 0
    back = load_image(tmp_path / "out.tif", "out.tif")
    assert np.array_equal(back.pixels, a) and back.nodata == 0 and back.band_names == ("B1", "B2", "B3", "B4", "B5")
    assert main(["decode", str(tmp_path / "x.tlic"), str(tmp_path / "out.png")]) == 2  # 5 bands: TIFF only
    assert "needs a .tif output" in capsys.readouterr().err
    assert main(["encode", str(src), str(tmp_path / "y.tlic"), "--nodata", "1", "--quality", "0.5"]) == 0
    assert codec.read_header((tmp_path / "y.tlic").read_bytes()).raster.nodata == 1  # --nodata overrides the file's


def _reseal_all(data: bytearray, h) -> bytes:
    """Recompute every tile CRC in the index and the header CRC (so the checks behind them are tested)."""
    entry = h.header_len - 4 - len(h.tiles) * bitstream._TILE.size
    for k, t in enumerate(h.tiles):
        blob = bytes(data[h.header_len + t.offset : h.header_len + t.offset + t.length])
        struct.pack_into("<I", data, entry + k * bitstream._TILE.size + 15, zlib.crc32(blob))
    return _resealed(data, h.header_len)


@pytest.mark.parametrize("lossless", [False, True])
def test_fuzzed_v2_streams_decode_or_raise_codec_errors(tiny, lossless):
    a = raster(64, 128, 4, nodata=0)
    data = codec.encode(a, tiny, quality=0.5, nodata=0, tile_size=64, lossless=lossless, band_names=list("wxyz")).data
    h = codec.read_header(data)
    rng = np.random.default_rng(3)
    outcomes = {"ok": 0, "error": 0}
    for _ in range(40):
        bad = bytearray(data)
        for _ in range(int(rng.integers(1, 4))):
            pos = int(rng.integers(6, len(bad)))  # anything after the magic and version
            bad[pos] = int(rng.integers(0, 256))
        try:
            stream = _reseal_all(bad, h)
            out = codec.decode(stream, tiny)
            assert out.shape == a.shape and out.dtype == np.uint16
            outcomes["ok"] += 1
        except codec.CodecError:
            outcomes["error"] += 1
    assert outcomes["error"] > 0  # the mutations do reach checks


def test_memory_is_bounded_by_batches_not_the_raster(tiny):
    """numpy's allocations while coding a 1024² × 10 uint16 raster (20 MB) stay below one float32 copy of it
    (40 MB) or even the raster itself: floats exist per tile batch (2 tiles here) and band group only."""
    import tracemalloc

    a = np.zeros((1024, 1024, 10), np.uint16)
    a[:] = raster(256, 256, 10, nodata=0)[np.arange(1024) % 256][:, np.arange(1024) % 256]
    tracemalloc.start()
    try:
        r = codec.encode(a, tiny, quality=0.5, nodata=0, batch_size=2)
        _, enc_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        out = codec.decode(r.data, tiny, batch_size=2)
        _, dec_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out.shape == a.shape
    assert enc_peak < 0.75 * a.nbytes, enc_peak  # nodata masks and two batches, not the raster
    assert dec_peak < 1.5 * a.nbytes, dec_peak  # the output plus two batches
