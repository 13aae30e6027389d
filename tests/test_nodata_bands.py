"""Issue 26 item 4: nodata per band, GDAL's meaning (a sample is nodata in ITS band when it equals that band's
value), the default; the per-pixel rule of older streams on request (``nodata_mode="pixel"``). Every nodata
sample comes back exactly in every tile coder and mode, and no valid sample comes back as nodata."""

from __future__ import annotations

import numpy as np
import pytest

import codec
from codec.errors import CorruptStreamError, UnsupportedImageError
from codec.format import container, raster
from codec.metrics import band_peaks, peak_of, raster_psnr

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def scene(h: int = 96, w: int = 130, bands: int = 4, dtype=np.uint16, seed: int = 3) -> np.ndarray:
    """Smooth correlated bands with a 0 border in every band AND zeros in single bands of valid pixels (the
    issue's case: under the pixel rule those zeros were coded lossily and came back as thousands)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    top = 3000 if dtype == np.uint16 else 200
    base = 0.5 + 0.3 * np.sin(xx / 11) * np.cos(yy / 7)
    out = np.stack([np.clip(base * (1 + 0.1 * b) + rng.normal(0, 0.02, (h, w)), 0.05, 1) * top
                    for b in range(bands)], -1)
    out = np.rint(out).astype(dtype)
    out[(xx + yy) < 40] = 0  # the scene border: every band
    out[50:62, 70:95, 1] = 0  # a band's own gap (saturated / missing detector): GDAL says nodata in band 1 only
    out[20:30, 100:120, bands - 1] = 0
    return out


def gdal_mask(a: np.ndarray, values) -> np.ndarray:
    """What GDAL's per-band nodata rule says has data, sample by sample."""
    a = a if a.ndim == 3 else a[..., None]
    return np.stack([a[..., b] != v if v is not None else np.ones(a.shape[:2], bool) for b, v in enumerate(values)], -1)


MODES = {
    "learned-psnr": dict(target_psnr=40.0),
    "learned-quality": dict(quality=0.5),
    "j2k": dict(target_psnr=40.0, tools=("j2k",)),
    "jxl-lossy": dict(tile_coder="jxl_lossy"),
    "j2k-all": dict(tile_coder="j2k"),
    "near-lossless": dict(max_error=3),
    "exact": dict(lossless=True),
}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_nodata_sample_comes_back_exactly_in_every_mode(mode):
    a = scene()
    r = codec.encode(a, None, nodata=0, tile_size=64, **MODES[mode])
    assert r.header.raster.nodata_mode == "band" and r.header.raster.real_nodata == 0
    d = codec.decode(r.data)
    want = gdal_mask(a, (0,) * 4)
    assert np.array_equal(gdal_mask(d, (0,) * 4), want)  # the same nodata samples, as GDAL reads them
    assert (d[~want] == 0).all()
    box = (17, 9, 80, 70)
    assert np.array_equal(codec.decode_region(r.data, box), d[9:79, 17:97])
    if mode == "near-lossless":
        assert np.abs(d.astype(int) - a)[want].max() <= 3
    if mode == "exact":
        assert np.array_equal(d, a)


def test_avif_tiles_keep_per_band_nodata_on_8bit_rasters():
    a = scene(dtype=np.uint8, bands=3)
    r = codec.encode(a, None, nodata=0, tile_size=64, tile_coder="avif444")
    d = codec.decode(r.data)
    assert np.array_equal(gdal_mask(d, (0,) * 3), gdal_mask(a, (0,) * 3))


def test_the_pixel_rule_on_request_codes_single_band_zeros_lossily():
    """The old rule is still there (and what every older stream has): a valid pixel's 0 in one band is data."""
    a = scene()
    r = codec.encode(a, None, nodata=0, nodata_mode="pixel", tile_size=64, quality=0.5)
    assert r.header.raster.nodata_mode == "pixel" and r.header.raster.band_nodata is None
    d = codec.decode(r.data)
    border = np.all(a == 0, axis=2)
    assert (d[border] == 0).all()
    assert not (d[50:62, 70:95, 1] == 0).all()  # coded as data, not kept as nodata
    assert not np.all(d[~border] == 0, axis=-1).any()  # no valid pixel came back as a nodata pixel


def test_per_band_values_and_bands_without_nodata():
    a = scene(bands=3)
    a[..., 1][a[..., 1] == 0] = 7  # band 1's nodata is 7; band 2 has none (its zeros are data)
    values = (0, 7, None)
    r = codec.encode(a, None, nodata=values, tile_size=64, target_psnr=40.0)
    info = container.read_header(r.data).raster
    assert info.band_nodata == values and info.nodata is None and info.real_band_nodata == values
    d = codec.decode(r.data)
    valid = gdal_mask(a, values)
    assert np.array_equal(gdal_mask(d, values), valid)
    assert r.psnr == pytest.approx(raster_psnr(a, d, valid), abs=0.02)


def test_pixel_rule_takes_one_value():
    with pytest.raises(UnsupportedImageError, match="pixel nodata rule takes one value"):
        codec.encode(scene(bands=2), None, nodata=(0, 5), nodata_mode="pixel", lossless=True)
    with pytest.raises(UnsupportedImageError, match="3 nodata values for 4 bands"):
        codec.encode(scene(), None, nodata=(0, 0, 0), lossless=True)
    with pytest.raises(ValueError, match="nodata_mode"):
        codec.encode(scene(), None, nodata=0, nodata_mode="sample", lossless=True)


def test_a_mask_every_band_shares_costs_about_one_band():
    valid = np.ones((256, 256), bool)
    valid[:90, :] = False
    valid[np.arange(256), np.arange(256)] = False
    one = raster.pack_mask(valid)
    ten = raster.pack_mask(np.repeat(valid[..., None], 10, axis=2), 10)
    assert len(ten) == len(one) + 1  # one layout byte: the shared mask is written once
    assert np.array_equal(raster.unpack_mask(ten, 256, 256, 10), np.repeat(valid[..., None], 10, axis=2))
    mixed = np.stack([valid, ~valid, valid], -1)
    assert np.array_equal(raster.unpack_mask(raster.pack_mask(mixed, 3), 256, 256, 3), mixed)


def test_header_round_trip_and_damage():
    a = scene(bands=3)
    r = codec.encode(a, None, nodata=(0, 0, 9), tile_size=64, lossless=True)
    h = container.read_header(r.data)
    assert h.raster.band_nodata == (0, 0, 9) and h.raster.has_nodata
    # the raster block's flags byte: after prefix, model id, sha256, image fields, dtype u8, depth u8, bands u16
    pos = container._PREFIX.size + 1 + len(h.model_id.encode()) + 32 + container._IMAGE.size + 4
    # clear the per-band nodata flag's partner (the nodata flag): a crafted header, refused by name
    bad = bytearray(r.data)
    assert bad[pos] & container.RASTER_BAND_NODATA
    bad[pos] &= ~container.RASTER_NODATA
    bad = _refresh_crc(bytes(bad), h.header_len)
    with pytest.raises(CorruptStreamError, match="per-band nodata"):
        container.read_header(bad)


def _refresh_crc(data: bytes, header_len: int) -> bytes:
    import struct
    import zlib

    head = data[: header_len - 4]
    return head + struct.pack("<I", zlib.crc32(head)) + data[header_len:]


def test_streams_without_the_flag_keep_the_pixel_rule():
    """An older stream (no per-band table) reads as the pixel rule: the golden v2 nodata stream decodes as before
    (tests/test_golden.py checks its bits); here: its header says pixel."""
    from pathlib import Path

    path = Path(__file__).parent / "data" / "golden" / "v2-u8-rgb-nodata.tlic"
    h = container.read_header(path.read_bytes())
    assert h.raster.nodata_mode == "pixel" and h.raster.nodata == 255 and h.raster.band_nodata is None


def test_declaring_a_zero_border_does_not_move_the_peak():
    """The growth of issue 26: under a range peak, taking a 0 border out of the valid samples raised each band's
    minimum and so its peak's demand; the peak is anchored at 0, so declaring it changes nothing."""
    a = scene(bands=2)
    a[a == 0] = 0
    valid = gdal_mask(a, (0, 0))
    assert np.array_equal(band_peaks(a), band_peaks(a, valid))
    assert peak_of(1000, 1097) == 1097 and peak_of(-300, 1200) == 1500 and peak_of(5, 5) == 5 and peak_of(0, 0) == 1
    cirrus = np.array([[0, 97], [40, 12]], np.uint16)
    assert band_peaks(cirrus)[0] == 97  # issue 23: still the band's own, not the image's


def test_gdal_writes_one_nodata_for_every_band(tmp_path):
    rasterio = pytest.importorskip("rasterio")
    from codec.images.gdalio import write_tiff

    a = scene(bands=3)
    path = tmp_path / "out.tif"
    path.write_bytes(write_tiff(a, nodata=(0, 0, 0)))
    with rasterio.open(path) as ds:
        assert ds.nodatavals == (0.0, 0.0, 0.0)
        assert np.array_equal(np.moveaxis(ds.read_masks(), 0, -1) > 0, gdal_mask(a, (0, 0, 0)))
    with pytest.raises(ValueError, match="one nodata value for all bands"):
        write_tiff(a, nodata=(0, 7, 0))


def test_a_file_asks_for_the_pixel_rule_with_gdal_nodata_values(tmp_path):
    """GDAL's per-dataset nodata (metadata NODATA_VALUES: a pixel is nodata when every band equals its value) is
    how a file asks for the pixel rule; GDAL_NODATA is GDAL's per-band rule, the default."""
    rasterio = pytest.importorskip("rasterio")
    from codec.images.imageio import load_image

    a = scene(bands=3)
    for name, kw, tags, mode in (("band.tif", dict(nodata=0), {}, "band"),
                                 ("pixel.tif", {}, {"NODATA_VALUES": "0 0 0"}, "pixel")):
        path = tmp_path / name
        with rasterio.open(path, "w", driver="GTiff", width=a.shape[1], height=a.shape[0], count=3,
                           dtype="uint16", **kw) as ds:
            ds.write(np.moveaxis(a, -1, 0))
            ds.update_tags(**tags)
        loaded = load_image(path.read_bytes(), name)
        assert (loaded.nodata, loaded.nodata_mode) == (0, mode)
        r = codec.encode(loaded.pixels, None, nodata=loaded.nodata, nodata_mode=loaded.nodata_mode, tile_size=64,
                         lossless=True)
        assert r.header.raster.nodata_mode == mode
