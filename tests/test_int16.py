"""Issue 26 item 5: int16 rasters (DEMs, SAR) coded faithfully: the same targets, the error-bounded mode and
exact tiles; negative values and a -9999 nodata; decode returns int16 with the same values; metrics on the real
values; the loader reads and the restore writes int16 GeoTIFFs."""

from __future__ import annotations

import numpy as np
import pytest

import codec
from codec.errors import UnsupportedImageError
from codec.format import container
from codec.metrics import band_max_error, band_peaks, raster_psnr

NODATA = -9999


def dem(h: int = 100, w: int = 130, bands: int = 1, seed: int = 5) -> np.ndarray:
    """Terrain-like int16 below and above sea level, with a -9999 void corner."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    planes = [-300 + 1500 * np.sin(xx / 19 + b) * np.cos(yy / 17) + rng.normal(0, 4, (h, w)) for b in range(bands)]
    out = np.rint(np.stack(planes, -1)).astype(np.int16)
    out[:20, :30] = NODATA
    return out[..., 0] if bands == 1 else out


@pytest.mark.parametrize("kw", [dict(target_psnr=40.0), dict(quality=0.5), dict(max_error=2), dict(lossless=True),
                                dict(target_psnr=44.0, tools=("j2k",))], ids=str)
@pytest.mark.parametrize("bands", [1, 3])
def test_int16_round_trips_with_negative_values_and_nodata(kw, bands):
    a = dem(bands=bands)
    valid = a != NODATA if bands == 1 else np.all(a != NODATA, axis=2)
    assert (a[valid] < 0).any() and (a[valid] > 0).any()
    r = codec.encode(a, None, nodata=NODATA, tile_size=64, **kw)
    h = container.read_header(r.data)
    assert h.dtype == "int16" and h.raster.signed and h.raster.real_nodata == NODATA
    d = codec.decode(r.data)
    assert d.dtype == np.int16 and d.shape == a.shape
    assert (d[~valid] == NODATA).all() and not (d[valid] == NODATA).any()
    assert np.array_equal(codec.decode_region(r.data, (11, 7, 90, 60)), d[7:67, 11:101])
    if "max_error" in kw:
        assert band_max_error(a, d, valid).max() <= kw["max_error"]
    if kw.get("lossless"):
        assert np.array_equal(d, a)
    if "target_psnr" in kw:  # the target judged on the real values, each band against its own peak
        assert r.psnr == pytest.approx(raster_psnr(a, d, valid), abs=0.02)
        assert np.array_equal(h.raster.band_peaks, band_peaks(a, valid))
        if r.missed_tiles == 0:
            assert r.psnr >= kw["target_psnr"] - 0.05


def test_an_int16_raster_codes_like_its_offset_uint16():
    """The mapping is exact and offset-free: an int16 raster costs what the same samples +32768 as uint16 do."""
    a = dem(bands=1)
    shifted = (a.astype(np.int32) + 32768).astype(np.uint16)
    r16 = codec.encode(a, None, nodata=NODATA, tile_size=64, max_error=3)
    ru = codec.encode(shifted, None, nodata=NODATA + 32768, tile_size=64, max_error=3)
    assert abs(len(r16.data) - len(ru.data)) <= 8  # the same tiles; the headers differ in dtype byte only


def test_int16_limits_and_refusals():
    a = dem()
    with pytest.raises(UnsupportedImageError, match="nodata value 40000 cannot occur in int16"):
        codec.encode(a, None, nodata=40000, lossless=True)
    with pytest.raises(UnsupportedImageError, match="int16 rasters are 16-bit"):
        codec.encode(a, None, bit_depth=12, lossless=True)
    with pytest.raises(UnsupportedImageError, match="float data would need a quantisation step"):
        codec.encode(a.astype(np.float32), None, lossless=True)
    extremes = np.array([[-32768, 32767], [0, -1]], np.int16)
    r = codec.encode(extremes, None, tile_size=64, lossless=True)
    assert np.array_equal(codec.decode(r.data), extremes)


def test_int16_geotiff_in_and_out(tmp_path):
    """The loader reads an int16 GeoTIFF with its -9999 nodata; the restore writer (GDAL) writes it back int16."""
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import from_origin

    from codec.images.imageio import load_image
    from pipeline.stages.restore import encode_image

    a = dem(bands=2)
    src = tmp_path / "dem.tif"
    with rasterio.open(src, "w", driver="GTiff", width=a.shape[1], height=a.shape[0], count=2, dtype="int16",
                       nodata=NODATA, crs="EPSG:32633", transform=from_origin(500000, 4e6, 30, 30)) as ds:
        ds.write(np.moveaxis(a, -1, 0))
    loaded = load_image(src.read_bytes(), "dem.tif")
    assert loaded.pixels.dtype == np.int16 and loaded.nodata == NODATA and loaded.is_raster
    r = codec.encode(loaded.pixels, None, nodata=loaded.nodata, georef=loaded.georef, tile_size=64, max_error=1)
    d = codec.decode(r.data)
    out = tmp_path / "restored.tif"
    out.write_bytes(encode_image(d, "tiff", r.header.georef, nodata=r.header.raster.real_nodata))
    with rasterio.open(out) as ds:
        assert ds.dtypes == ("int16", "int16") and ds.nodata == NODATA and ds.crs.to_epsg() == 32633
        back = np.moveaxis(ds.read(), 0, -1)
    assert np.array_equal(back, d)
    assert np.abs(back.astype(int) - a)[a != NODATA].max() <= 1
