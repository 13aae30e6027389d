"""Satellite products through the pipeline: 16-bit multi-band rasters with nodata and georeferencing
archived beside 8-bit photos, restored as GeoTIFFs with dtype, band order, nodata and tags intact,
and bit-exactly in lossless mode (real S3 server, local Ray)."""

import io
import json
import uuid

import numpy as np
import pytest
import tifffile

from codec.images.imageio import load_image
from codec.metrics import band_max_error, raster_band_psnr, raster_psnr
from pipeline.archive import Archive
from pipeline.compress import run_job
from pipeline.config import CompressJobConfig, RestoreJobConfig
from pipeline.report import build_report, connect
from pipeline.restore import run_restore
from pipeline_fixtures import GEO_TAGS, png, upload
from conftest import natural_image

pytestmark = pytest.mark.usefixtures("ray_local")

BAND_NAMES = ["B02", "B03", "B04", "B08"]
GDAL_METADATA = "<GDALMetadata>" + "".join(
    f'<Item name="DESCRIPTION" sample="{i}" role="description">{n}</Item>' for i, n in enumerate(BAND_NAMES)
) + "</GDALMetadata>"


def raster(h: int, w: int, bands: int, seed: int, peak: int = 4095) -> np.ndarray:
    """Smooth, band-correlated uint16 content (12-bit values), like a decimated scene."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.sin(5 * xx + seed) * np.cos(3 * yy) + 0.3 * rng.standard_normal((h, w)).cumsum(1) / np.sqrt(w)
    base = (base - base.min()) / (np.ptp(base) + 1e-9)
    return np.stack([np.clip(200 + (peak - 400) * base * (0.6 + 0.1 * b), 1, peak) for b in range(bands)],
                    -1).astype(np.uint16).squeeze()


def geotiff(arr: np.ndarray, tags=(), photometric="minisblack") -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, arr, photometric=photometric, planarconfig="contig", extratags=list(tags))
    return buf.getvalue()


def scenes() -> dict[str, np.ndarray]:
    ms = raster(96, 128, 4, seed=1)
    ms[:20, :30] = 0  # a nodata corner (all bands)
    swir = raster(64, 72, 6, seed=3)
    swir[-10:, -12:] = 0  # untagged nodata: only a job's --nodata 0 makes it so
    return {"sat/ms4.tif": ms, "sat/pan.tif": raster(80, 100, 1, seed=2), "sat/swir6.tif": swir}


def objects() -> dict[str, bytes]:
    s = scenes()
    nodata_tags = [(42113, "s", 0, "0", False), (42112, "s", 0, GDAL_METADATA, False)]
    return {"sat/ms4.tif": geotiff(s["sat/ms4.tif"], GEO_TAGS + nodata_tags),
            "sat/pan.tif": geotiff(s["sat/pan.tif"]),
            "sat/swir6.tif": geotiff(s["sat/swir6.tif"]),
            "photos/a.png": png(natural_image(64, 96, 5))}


@pytest.fixture(scope="module")
def bucket(s3_server):
    name = "rasters-" + uuid.uuid4().hex[:8]
    s3_server.make_bucket(name)
    upload(s3_server.filesystem(), name, "raw", objects())
    return name


def archive_and_restore(s3_server, bucket: str, tag: str, **options):
    cfg = CompressJobConfig(input=f"s3://{bucket}/raw/", output=f"s3://{bucket}/{tag}/", **options)
    summary = run_job(cfg, progress=False)
    stats = {r["key"].rsplit("/raw/", 1)[1]: r for r in Archive(cfg.output).committed_table("stats").to_pylist()}
    out = f"s3://{bucket}/{tag}-restored/"
    restored = run_restore(RestoreJobConfig(archive=cfg.output, output=out), progress=False)
    fs = s3_server.filesystem()
    # every name already ends in its restore format's suffix, so the restored file has the same name
    files = {name: fs.cat_file(f"{bucket}/{tag}-restored/{bucket}/raw/{name}") for name in objects()}
    return summary, stats, restored, files, cfg


def test_rasters_archive_beside_photos_and_restore_as_geotiffs(s3_server, s3_env, bucket):
    summary, stats, restored, files, cfg = archive_and_restore(s3_server, bucket, "lossy", quality=0.8, nodata=0)
    assert summary.ok == 4 and summary.errors == 0, stats
    assert restored.ok == 4 and restored.errors == 0
    for name, source in scenes().items():
        row = stats[name]
        bands = 1 if source.ndim == 2 else source.shape[2]
        assert (row["dtype"], row["bands"]) == ("uint16", bands)
        assert row["model_id"].startswith("satellite@")  # chosen for 16-bit inputs
        assert row["bits_per_sample"] == pytest.approx(row["compressed_bytes"] * 8 / (source.shape[0] * source.shape[1] * bands))
        back = tifffile.imread(io.BytesIO(files[name]))
        assert back.dtype == np.uint16 and back.shape == source.shape
        valid = ~(source.reshape(source.shape[0], source.shape[1], -1) == 0).all(-1)
        assert raster_psnr(source, back, valid) == pytest.approx(row["psnr"], abs=0.05)
        assert raster_psnr(source, back, valid) > 30
        # per band, each against its own range, measured on the decoded record (issue 23)
        assert row["psnr_peak"] == "band_range"
        assert row["band_psnr"] == pytest.approx(list(raster_band_psnr(source, back, valid)), abs=0.05)
        assert row["band_max_error"] == list(band_max_error(source, back, valid))
        assert sum(n for _, n in row["tile_coders"]) == row["tiles"]
    photo = stats["photos/a.png"]
    assert photo["psnr_peak"] == "bit_depth" and len(photo["band_psnr"]) == len(photo["band_max_error"]) == 3
    assert (photo["dtype"], photo["bands"]) == ("uint8", 3) and not photo["model_id"].startswith("satellite")

    ms = stats["sat/ms4.tif"]
    assert ms["nodata_fraction"] == pytest.approx(20 * 30 / (96 * 128))
    back = load_image(files["sat/ms4.tif"], "restored ms4")
    assert (back.pixels[:20, :30] == 0).all()  # nodata exactly restored
    assert (back.pixels[20:, 30:] != 0).all()  # and nowhere else
    swir = load_image(files["sat/swir6.tif"], "restored swir6")  # the job's --nodata, now tagged
    assert swir.nodata == 0 and (swir.pixels[-10:, -12:] == 0).all()
    assert stats["sat/swir6.tif"]["nodata_fraction"] == pytest.approx(120 / (64 * 72))
    assert stats["photos/a.png"]["nodata_fraction"] == 0  # photos never get the job's nodata
    geo = json.loads(back.geo)
    assert geo["crs"] == "EPSG:32633" and geo["nodata"] == "0"
    assert BAND_NAMES[3] in geo["tags"]["GDAL_METADATA"]


def test_lossless_archive_restores_every_pixel_exactly(s3_server, s3_env, bucket):
    summary, stats, restored, files, cfg = archive_and_restore(s3_server, bucket, "lossless", lossless=True)
    assert summary.ok == 4 and restored.ok == 4
    for name, source in scenes().items():
        assert np.array_equal(tifffile.imread(io.BytesIO(files[name])), source), name
        assert stats[name]["lossless_tiles"] == stats[name]["tiles"]
        assert stats[name]["mode"] == "lossless"
    assert np.array_equal(load_image(files["photos/a.png"], "a").pixels, natural_image(64, 96, 5))
    # issue 26 item 6: a lossless run's summary says every record is exact (no "nan"), and each replica's
    # announcement lists the models its records were coded with, with counts
    assert summary.exact == 4 and "nan" not in summary.table() and "every record exact: 4 exact" in summary.table()
    fs = s3_server.filesystem()
    used: dict[str, int] = {}
    for path in fs.glob(f"{bucket}/lossless/_runs/{cfg.run_id}/replicas/*.json"):
        for model, n in json.loads(fs.cat(path))["models"].items():
            used[model] = used.get(model, 0) + n
    expect: dict[str, int] = {}
    for row in stats.values():
        expect[row["model_id"]] = expect.get(row["model_id"], 0) + 1
    assert used == expect and sum(m.startswith("satellite@") for m in used) == 1, used

    report = build_report(connect(f"s3://{bucket}/lossless/stats/"), "product")
    groups = dict(zip(report.summary["group"].to_pylist(), report.summary["images"].to_pylist()))
    assert groups == {"uint16 × 1 band(s)": 1, "uint16 × 4 band(s)": 1, "uint16 × 6 band(s)": 1, "uint8 × 3 band(s)": 1}


def test_a_raster_the_model_cannot_code_is_an_encode_error_row_and_the_rest_goes_on(s3_server, s3_env, bucket):
    """The minnen2018 family codes 8-bit images only: asked to code the rasters, each becomes an
    ``encode`` error row naming its key while the photo is archived (the replica survives the failures)."""
    cfg = CompressJobConfig(input=f"s3://{bucket}/raw/", output=f"s3://{bucket}/refused/", quality=0.8,
                            raster_model="minnen2018")
    summary = run_job(cfg, progress=False)
    stats = {r["key"].rsplit("/raw/", 1)[1]: r for r in Archive(cfg.output).committed_table("stats").to_pylist()}
    assert (summary.ok, summary.errors) == (1, 3)
    assert stats["photos/a.png"]["status"] == "ok"
    for name in scenes():
        assert (stats[name]["status"], stats[name]["error_kind"]) == ("error", "encode")
        assert name in stats[name]["error"] and "minnen2018" in stats[name]["error"]


def test_a_max_error_archive_keeps_every_sample_within_the_bound(s3_server, s3_env, bucket):
    summary, stats, restored, files, cfg = archive_and_restore(s3_server, bucket, "bounded", max_error=8, nodata=0)
    assert summary.ok == 4 and restored.ok == 4
    for name, source in scenes().items():
        back = tifffile.imread(io.BytesIO(files[name]))
        valid = (source != 0).any(-1) if source.ndim == 3 else source != 0
        assert np.abs(back.astype(np.int64) - source)[valid].max() <= 8, name
        assert (back[~valid] == 0).all(), name
        row = stats[name]
        assert (row["mode"], row["target"]) == ("max_error", 8.0) and row["max_abs_error"] <= 8
        assert dict(row["tile_coders"]) == {"nearlossless": row["tiles"]}
    photo = load_image(files["photos/a.png"], "a").pixels
    assert np.abs(photo.astype(np.int64) - natural_image(64, 96, 5)).max() <= 8
    report = build_report(connect(f"s3://{bucket}/bounded/stats/"))
    modes = report.modes.to_pylist()
    assert [(m["mode"], m["target"], m["images"]) for m in modes] == [("max_error", 8.0, 4)]
    assert modes[0]["max_abs_error"] <= 8 and "by rate mode" in report.text()


def test_sources_over_the_window_size_are_staged_and_coded_window_by_window(s3_server, s3_env, bucket, tmp_path):
    """issue 27 item 4: with --window-over-bytes 0 every source is copied to the replica's scratch folder and
    its raster read window by window, verified strip by strip: the records, stats and checksums are the ones
    an in-memory run writes, and no copy is left behind."""
    scratch = tmp_path / "scratch"
    runs = {}
    for tag, extra in (("inmemory", {}), ("windowed", {"window_over_bytes": 0, "scratch_dir": str(scratch)})):
        cfg = CompressJobConfig(input=f"s3://{bucket}/raw/", output=f"s3://{bucket}/{tag}/", quality=0.8, nodata=0, **extra)
        summary = run_job(cfg, progress=False)
        assert (summary.ok, summary.errors) == (4, 0)
        archive = Archive(cfg.output)
        runs[tag] = ({r["key"]: r for r in archive.committed_table("stats").to_pylist()},
                     {r["key"]: (r["bitstream"], r["source_sha256"], r["geo"]) for r in archive.committed_table("records").to_pylist()})
    (stats_a, records_a), (stats_b, records_b) = runs["inmemory"], runs["windowed"]
    assert records_a == records_b
    for key, row in stats_a.items():
        other = stats_b[key]
        for column in ("psnr", "band_psnr", "band_max_error", "nodata_fraction", "band_stats", "original_bytes", "tile_coders", "width", "height", "bands"):
            assert other[column] == row[column], (key, column)
    assert not list(scratch.iterdir())


def test_a_staged_scene_that_cannot_be_read_is_a_decode_error_row_naming_it(s3_server, s3_env, bucket, tmp_path):
    """A damaged block is found only once coding reaches it: the row says ``decode`` and names the object and
    the rows it could not read; the rest of the batch is archived."""
    fs = s3_server.filesystem()
    good = geotiff(raster(64, 64, 3, seed=4))
    whole = geotiff(raster(256, 256, 3, seed=5))
    bad = whole[: len(whole) // 2]  # truncated: tifffile and GDAL open it (the tags come first), reading fails
    upload(fs, bucket, "damaged", {"ok.tif": good, "bad.tif": bad})
    cfg = CompressJobConfig(input=f"s3://{bucket}/damaged/", output=f"s3://{bucket}/damaged-out/", lossless=True,
                            window_over_bytes=0, scratch_dir=str(tmp_path))
    summary = run_job(cfg, progress=False)
    stats = {r["key"].rsplit("/", 1)[1]: r for r in Archive(cfg.output).committed_table("stats").to_pylist()}
    assert (summary.ok, summary.errors) == (1, 1)
    assert (stats["bad.tif"]["status"], stats["bad.tif"]["error_kind"]) == ("error", "decode")
    assert "bad.tif" in stats["bad.tif"]["error"] and "cannot read rows" in stats["bad.tif"]["error"]
    assert stats["ok.tif"]["status"] == "ok" and not list(tmp_path.iterdir())
