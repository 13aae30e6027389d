"""Issue 26: GeoTIFF in, GeoTIFF out, as GDAL sees it. Fixtures are small georeferenced TIFFs made here with
rasterio (600×520, so the COG check is meaningful); streams are coded exactly (--lossless), so quality is not
what is tested: what rasterio reads back from ``codec decode`` and a region decode is."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")
pytest.importorskip("rio_cogeo")

import codec  # noqa: E402
from codec.cli import main  # noqa: E402
from codec.errors import CorruptStreamError  # noqa: E402
from codec.format import container  # noqa: E402
from codec.format.georef import GCP, BandInfo, GeoInfo  # noqa: E402
from codec.images.gdalio import is_valid_cog, write_tiff  # noqa: E402
from codec.images.imageio import load_image  # noqa: E402

H, W = 600, 520
# a projected CRS with no EPSG code (a custom transverse Mercator): recorded as WKT, not EPSG:4326
CUSTOM = ('+proj=tmerc +lat_0=0 +lon_0=9.5 +k=0.9996 +x_0=600000 +y_0=0 +ellps=GRS80 +units=m +no_defs')


def scene(path, crs="EPSG:32633", point=False, gcps=None, bands=3) -> np.ndarray:
    """A georeferenced uint16 COG-like product: CRS, transform, nodata 0, scale/offset, units, colour
    interpretation, descriptions, dataset and band tags; pixels with zeros in some bands of valid pixels."""
    from rasterio.control import GroundControlPoint
    from rasterio.crs import CRS
    from rasterio.enums import ColorInterp
    from rasterio.transform import from_origin

    rng = np.random.default_rng(7)
    a = rng.integers(1, 4000, (bands, H, W)).astype(np.uint16)
    a[:, :40, :60] = 0  # nodata corner
    a[0, 100:110, 200:230] = 0  # partial zeros: valid pixels, one band 0
    prof = dict(driver="GTiff", width=W, height=H, count=bands, dtype="uint16", nodata=0, tiled=True,
                blockxsize=256, blockysize=256, compress="deflate")
    if gcps is None:
        prof.update(crs=CRS.from_user_input(crs), transform=from_origin(435720.0, 4_000_020.0, 30.0, 30.0))
    with rasterio.open(path, "w", **prof) as ds:
        ds.write(a)
        ds.update_tags(ACQUISITIONDATETIME="2021-07-01T10:20:30Z", SUN_ELEVATION="61.2")
        if point:
            ds.update_tags(AREA_OR_POINT="Point")
        if gcps is not None:
            ds.gcps = ([GroundControlPoint(r, c, x, y, 0.0) for r, c, x, y in gcps], CRS.from_epsg(4326))
        ds.scales, ds.offsets = (2e-5,) * bands, (-0.1,) * bands
        ds.colorinterp = [ColorInterp.blue, ColorInterp.green, ColorInterp.red][:bands]
        for b in range(bands):
            ds.set_band_description(b + 1, f"B{b + 2}")
            ds.set_band_unit(b + 1, "reflectance")
            ds.update_tags(b + 1, WAVELENGTH=str(0.48 + 0.08 * b))
    return np.moveaxis(a, 0, -1)


def described(path) -> dict:
    """What rasterio says about a file, the pixels' world placement included."""
    with rasterio.open(path) as ds:
        gcps, gcp_crs = ds.gcps
        return {"crs": ds.crs.to_wkt() if ds.crs else None, "transform": tuple(ds.transform)[:6],
                "nodata": ds.nodata, "descriptions": ds.descriptions, "scales": ds.scales, "offsets": ds.offsets,
                "units": ds.units, "colorinterp": ds.colorinterp, "tags": ds.tags(),
                "band_tags": [ds.tags(b + 1) for b in range(ds.count)],
                "gcps": [(g.row, g.col, g.x, g.y) for g in gcps], "gcp_crs": gcp_crs.to_wkt() if gcp_crs else None}


def roundtrip(tmp_path, src, *decode_args) -> tuple[dict, np.ndarray]:
    assert main(["encode", str(src), str(tmp_path / "x.tlic"), "--lossless"]) == 0
    out = tmp_path / "out.tif"
    assert main(["decode", str(tmp_path / "x.tlic"), str(out), *decode_args]) == 0
    with rasterio.open(out) as ds:
        pixels = np.moveaxis(ds.read(), 0, -1)
    return described(out), pixels


@pytest.mark.parametrize("crs", ["EPSG:32633", CUSTOM])
def test_codec_decode_writes_back_what_gdal_read_as_a_valid_cog(tmp_path, crs):
    src = tmp_path / "scene.tif"
    a = scene(src, crs=crs)
    got, pixels = roundtrip(tmp_path, src)
    assert got == described(src)
    assert np.array_equal(pixels, a)
    assert is_valid_cog(tmp_path / "out.tif") == (True, [])
    with rasterio.open(tmp_path / "out.tif") as ds:
        assert ds.block_shapes[0] == (512, 512) and ds.overviews(1) and ds.compression.name == "zstd"


def test_the_record_names_a_non_epsg_crs_by_its_wkt_and_an_epsg_one_by_code(tmp_path):
    scene(tmp_path / "u.tif")
    scene(tmp_path / "c.tif", crs=CUSTOM)
    utm, custom = (json.loads(load_image(tmp_path / n, n).geo) for n in ("u.tif", "c.tif"))
    assert utm["crs"] == "EPSG:32633" and utm["epsg"] == 32633
    assert custom["epsg"] is None and custom["crs"].startswith("PROJCRS") and "Transverse Mercator" in custom["crs"]


def test_pixel_is_point_origin_is_gdals_and_survives(tmp_path):
    src = tmp_path / "p.tif"
    scene(src, point=True)
    loaded = load_image(src, "p.tif")
    assert loaded.georef.raster_type == "point"
    with rasterio.open(src) as ds:
        assert json.loads(loaded.geo)["geotransform"] == list(ds.transform.to_gdal())
    got, _ = roundtrip(tmp_path, src)
    assert got == described(src) and got["tags"]["AREA_OR_POINT"] == "Point"


def test_region_decode_sits_at_the_originals_world_coordinates(tmp_path):
    src = tmp_path / "scene.tif"
    a = scene(src)
    x, y, w, h = 130, 70, 200, 150
    got, pixels = roundtrip(tmp_path, src, "--region", f"{x},{y},{w},{h}")
    assert np.array_equal(pixels, a[y : y + h, x : x + w])
    with rasterio.open(src) as s, rasterio.open(tmp_path / "out.tif") as o:
        assert o.xy(0, 0) == s.xy(y, x) and o.xy(h - 1, w - 1) == s.xy(y + h - 1, x + w - 1)
        assert o.crs == s.crs


def test_gcps_move_with_a_region(tmp_path):
    src = tmp_path / "g.tif"
    pts = [(0, 0, 10.0, 50.0), (0, W, 11.0, 50.0), (H, 0, 10.0, 49.0), (H, W, 11.0, 49.0)]
    scene(src, gcps=pts, bands=1)
    got, _ = roundtrip(tmp_path, src)
    assert got == described(src)
    got, _ = roundtrip(tmp_path, src, "--region", "100,40,64,64")
    assert got["gcps"] == [(r - 40, c - 100, gx, gy) for r, c, gx, gy in pts]
    assert got["gcp_crs"] == described(src)["gcp_crs"]


def test_plain_tiff_option_keeps_georeferencing_without_cog_layout(tmp_path):
    src = tmp_path / "scene.tif"
    scene(src)
    got, _ = roundtrip(tmp_path, src, "--plain-tiff")
    assert got == described(src)
    with rasterio.open(tmp_path / "out.tif") as ds:
        assert not ds.overviews(1)


def test_stream_without_georeferencing_keeps_its_version_and_bytes(tmp_path):
    a = np.random.default_rng(1).integers(0, 4000, (64, 64, 2)).astype(np.uint16)
    plain = codec.encode(a, lossless=True)
    empty = codec.encode(a, lossless=True, georef=GeoInfo(bands=(BandInfo(), BandInfo())))
    assert plain.data == empty.data and plain.header.version == container.RASTER_VERSION
    geo = GeoInfo(epsg=32633, transform=(0.0, 1.0, 0.0, 0.0, 0.0, -1.0), tags={"A": "1"})
    with_geo = codec.encode(a, lossless=True, georef=geo)
    assert with_geo.header.version == container.GEO_VERSION
    assert codec.read_header(with_geo.data).georef == geo
    assert np.array_equal(codec.decode(with_geo.data), a)
    again, header = container.with_georef(with_geo.data, None)  # the block taken off: the v2 bytes again
    assert again == plain.data and header.version == container.RASTER_VERSION


def test_corrupt_or_truncated_georeferencing_block_is_named(tmp_path):
    a = np.random.default_rng(2).integers(0, 255, (64, 64, 3)).astype(np.uint8)
    geo = GeoInfo(epsg=4326, transform=(10.0, 0.1, 0.0, 50.0, 0.0, -0.1),
                  gcps=(GCP(1.0, 2.0, 3.0, 4.0),), gcp_crs_wkt=None)
    data = codec.encode(a, lossless=True, georef=geo).data
    damaged = bytearray(data)
    damaged[-5] ^= 0xFF
    with pytest.raises(CorruptStreamError, match="georeferencing block checksum"):
        codec.read_header(bytes(damaged))
    with pytest.raises(CorruptStreamError, match="georeferencing block"):
        codec.read_header(data[:-3])
    h = codec.read_header(data)  # a block with a valid CRC that is not a GeoInfo
    bad = b'{"crs_wkt":1,"nope":2}'
    head = bytearray(data[: h.header_len])
    meta_at = h.header_len - 4 - len(h.tiles) * container._TILE3.size - container._META.size
    head[meta_at : meta_at + 8] = container._META.pack(len(bad), zlib.crc32(bad))
    head[-4:] = zlib.crc32(bytes(head[:-4])).to_bytes(4, "little")
    forged = bytes(head) + data[h.header_len : h.header_len + sum(t.length for t in h.tiles)] + bad
    with pytest.raises(CorruptStreamError, match="georeferencing block is not a valid GeoInfo"):
        codec.read_header(forged)


def test_geoinfo_bytes_are_deterministic_and_a_shift_moves_origin_and_gcps():
    g = GeoInfo(crs_wkt="X", transform=(100.0, 2.0, 0.0, 200.0, 0.0, -2.0), gcps=(GCP(5.0, 6.0, 1.0, 2.0),),
                nodata=float("nan"), tags={"b": "2", "a": "1"})
    assert GeoInfo.from_bytes(g.to_bytes()).to_bytes() == g.to_bytes()
    s = g.shifted(3, 4)
    assert s.transform == (106.0, 2.0, 0.0, 192.0, 0.0, -2.0) and s.gcps[0].pixel == 2.0 and s.gcps[0].line == 2.0


def test_small_outputs_are_cogs_too_and_photos_stay_rgb(tmp_path):
    rgb = np.random.default_rng(3).integers(0, 255, (40, 50, 3)).astype(np.uint8)
    path = tmp_path / "p.tif"
    path.write_bytes(write_tiff(rgb))
    with rasterio.open(path) as ds:
        assert [c.name for c in ds.colorinterp] == ["red", "green", "blue"]
        assert np.array_equal(np.moveaxis(ds.read(), 0, -1), rgb)
    assert is_valid_cog(path)[0]


def test_the_restore_job_writes_the_streams_georeferencing_as_a_cog(tmp_path):
    import fsspec

    from pipeline.stages.restore import restore_record

    src = tmp_path / "scene.tif"
    a = scene(src, point=True)
    loaded = load_image(src, "scene.tif")
    record = {"key": "s3://raw/scene.tif", "model_id": "default@2", "geo": loaded.geo, "dtype": "uint16", "bands": 3,
              "nodata": 0, "bitstream": codec.encode(loaded.pixels, lossless=True, nodata=0,
                                                     georef=loaded.georef).data}
    fs = fsspec.filesystem("file")
    row = restore_record(record, fs, str(tmp_path / "r.tif"))
    assert row["status"] == "ok", row
    assert described(tmp_path / "r.tif") == described(src) and is_valid_cog(tmp_path / "r.tif") == (True, [])
    row = restore_record(record, fs, str(tmp_path / "crop.tif"), region=(64, 32, 300, 200))
    assert row["status"] == "ok", row
    with rasterio.open(src) as s, rasterio.open(tmp_path / "crop.tif") as o:
        assert o.xy(0, 0) == s.xy(32, 64) and np.array_equal(np.moveaxis(o.read(), 0, -1), a[32:232, 64:364])


def test_a_record_from_before_the_block_restores_from_its_tags(tmp_path):
    import fsspec

    from pipeline.stages.restore import restore_record

    src = tmp_path / "scene.tif"
    scene(src)
    loaded = load_image(src, "scene.tif")
    record = {"key": "k.tif", "model_id": "default@2", "geo": loaded.geo, "dtype": "uint16", "bands": 3, "nodata": 0,
              "bitstream": codec.encode(loaded.pixels, lossless=True, nodata=0).data}  # no georef block
    row = restore_record(record, fsspec.filesystem("file"), str(tmp_path / "r.tif"), region=(10, 20, 100, 100),
                         cog=False)
    assert row["status"] == "ok", row
    with rasterio.open(src) as s, rasterio.open(tmp_path / "r.tif") as o:
        assert o.crs == s.crs and o.xy(0, 0) == s.xy(20, 10) and o.nodata == 0


def test_codec_info_describes_the_georeferencing(tmp_path, capsys):
    src = tmp_path / "scene.tif"
    scene(src)
    assert main(["encode", str(src), str(tmp_path / "x.tlic"), "--lossless"]) == 0
    capsys.readouterr()
    assert main(["info", str(tmp_path / "x.tlic"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format_version"] == 4 and info["georef"]["crs"] == "EPSG:32633" and info["georef_bytes"] > 0
    assert main(["info", str(tmp_path / "x.tlic")]) == 0
    assert "georeferencing: EPSG:32633, area, geotransform" in capsys.readouterr().out
