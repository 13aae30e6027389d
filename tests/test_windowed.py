"""Rasters read window by window (codec.images.windowed): the codec codes them to the same bytes as the
array in memory, for every dtype and band count, and slicing is refused where it would not be a window."""

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

import codec
from codec.errors import SourceReadError
from codec.images.imageio import load_image, working_set_bytes
from codec.images.windowed import WindowedRaster


def write(path, arr: np.ndarray, nodata=None, **extra) -> str:
    bands = 1 if arr.ndim == 2 else arr.shape[2]
    planes = arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)
    with rasterio.open(path, "w", driver="GTiff", width=arr.shape[1], height=arr.shape[0], count=bands,
                       dtype=arr.dtype.name, nodata=nodata, crs="EPSG:32633",
                       transform=from_origin(500000, 4000000, 10, 10), **extra) as ds:
        ds.write(planes)
    return str(path)


def scene(h, w, bands, dtype=np.uint16, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.add.outer(np.arange(h), 2 * np.arange(w)) % 500
    arr = np.stack([base * (b + 2) + rng.integers(0, 40, (h, w)) for b in range(bands)], -1)
    if dtype == np.int16:
        arr = arr - 1500
    arr = arr.astype(dtype)
    arr[:30, :40] = 0 if dtype != np.int16 else -9999
    return arr.squeeze()


@pytest.mark.parametrize("layout", [dict(tiled=True, blockxsize=256, blockysize=256, compress="deflate"),
                                    dict(compress="lzw", interleave="band"), {}])
def test_windows_read_the_samples_of_any_layout(tmp_path, layout):
    arr = scene(300, 270, 4)
    raster = WindowedRaster(write(tmp_path / "s.tif", arr, 0, **layout))
    assert (raster.shape, raster.dtype, raster.ndim) == (arr.shape, arr.dtype, 3)
    assert np.array_equal(raster[10:200, 37:101], arr[10:200, 37:101])
    assert np.array_equal(raster[250:], arr[250:]) and np.array_equal(raster[:, 260:], arr[:, 260:])
    assert np.array_equal(raster[290:400, ...], arr[290:400])  # clipped like an array
    assert np.array_equal(np.asarray(raster), arr)


def test_one_band_is_two_dimensional_like_load_image(tmp_path):
    arr = scene(100, 90, 1)
    path = write(tmp_path / "pan.tif", arr, 0)
    lazy, eager = load_image(path, "pan", windowed=True), load_image(path, "pan")
    assert isinstance(lazy.pixels, WindowedRaster) and isinstance(eager.pixels, np.ndarray)
    assert lazy.pixels.shape == eager.pixels.shape == (100, 90)
    assert np.array_equal(lazy.pixels[5:20, 3:9], eager.pixels[5:20, 3:9])
    assert (lazy.nodata, lazy.band_names, lazy.geo is not None) == (eager.nodata, eager.band_names, True)


def test_slices_that_are_not_windows_are_refused(tmp_path):
    raster = WindowedRaster(write(tmp_path / "s.tif", scene(40, 40, 3), 0))
    for key in [(slice(0, 10, 2), slice(None)), 3, (slice(None), slice(None), 1), (np.arange(3),)]:
        with pytest.raises(IndexError):
            raster[key]


@pytest.mark.parametrize("dtype, bands", [(np.uint16, 5), (np.int16, 1), (np.int16, 3), (np.uint8, 6)])
@pytest.mark.parametrize("mode", [dict(lossless=True), dict(max_error=8)])
def test_the_codec_codes_a_windowed_raster_to_the_same_bytes(tmp_path, dtype, bands, mode):
    arr = scene(300, 280, bands, dtype)
    nodata = -9999 if dtype == np.int16 else 0
    path = write(tmp_path / "s.tif", arr, nodata, tiled=True, blockxsize=256, blockysize=256, compress="deflate")
    lazy = load_image(path, "s", windowed=True)
    assert isinstance(lazy.pixels, WindowedRaster)
    eager = load_image(path, "s")
    a = codec.encode(eager.pixels, None, nodata=eager.nodata, **mode)
    b = codec.encode(lazy.pixels, None, nodata=lazy.nodata, **mode)
    assert a.data == b.data
    if mode.get("lossless"):
        assert np.array_equal(codec.decode(b.data), arr)


def test_photos_decode_as_always_and_gdal_failures_are_named(tmp_path):
    rgb = (np.arange(40 * 50 * 3) % 251).astype(np.uint8).reshape(40, 50, 3)
    photo = load_image(write(tmp_path / "rgb.tif", rgb, photometric="RGB"), "rgb", windowed=True)
    assert isinstance(photo.pixels, np.ndarray) and np.array_equal(photo.pixels, rgb)
    # a TIFF that tifffile parses but GDAL cannot open: a clear error naming the object
    import tifffile

    bad = tmp_path / "bad.tif"
    tifffile.imwrite(bad, scene(20, 20, 3))
    data = bytearray(bad.read_bytes())
    bad.write_bytes(bytes(data[: len(data) // 2]))  # truncated strips
    img = load_image(str(bad), "bad.tif", windowed=True)
    with pytest.raises(SourceReadError, match=r"bad.tif: cannot read rows 0–20"):
        codec.encode(img.pixels, None, lossless=True)


def test_windowed_working_set_grows_with_the_record_not_three_copies_of_the_scene():
    w = h = 10_000
    windowed = working_set_bytes(w, h, 10, 2, raster=True, windowed=True)
    in_memory = working_set_bytes(w, h, 10, 2, raster=True)
    assert windowed < in_memory  # the record (at most 0.6 of the samples, three times), never the scene three times
    assert working_set_bytes(w, h, 10, 1, raster=True, windowed=True) < windowed
    # the part that does not grow with the scene dominates a small one
    assert working_set_bytes(100, 100, 10, 2, windowed=True) < 1.01 * working_set_bytes(1, 1, 10, 2, windowed=True)


def test_copies_left_by_dead_replicas_are_removed_and_live_ones_kept(tmp_path):
    import os
    import subprocess

    from pipeline.stages.stage import PREFIX, remove_orphans

    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / f"{PREFIX}{dead.pid}-abc.tif").write_bytes(b"x")
    (tmp_path / f"{PREFIX}{os.getpid()}-def.tif").write_bytes(b"y")
    (tmp_path / "other.tif").write_bytes(b"z")
    assert remove_orphans(str(tmp_path)) == [f"{PREFIX}{dead.pid}-abc.tif"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"{PREFIX}{os.getpid()}-def.tif", "other.tif"])


def test_a_scratch_folder_that_cannot_be_used_is_a_transient_row_error(tmp_path):
    from types import SimpleNamespace

    from pipeline.stages.stage import staged_source

    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    cfg = SimpleNamespace(scratch_dir=str(blocker / "sub"), storage=None, fetch_attempts=1)
    with staged_source({"key": "s3://b/scene.tif", "deferred": True}, cfg) as (source, error):
        assert source is None and error[1] == "transient" and "scratch folder" in error[0]
