"""Restore: committed records back to images, against a real S3 server and local Ray."""

import io
import json
import uuid

import numpy as np
import pyarrow.parquet as pq
import pytest
import tifffile
from PIL import Image

import codec
from codec.metrics import psnr
from jobs import restore as restore_job
from pipeline.archive import Archive
from pipeline.compress import run_job
from pipeline.config import CompressJobConfig, RestoreJobConfig
from codec.images.imageio import load_image
from pipeline.restore import output_name, restore_one, run_restore
from pipeline.stages.restore import shifted_geo
from pipeline_fixtures import EPSG, good_objects, upload

pytestmark = pytest.mark.usefixtures("ray_local")


@pytest.fixture(scope="module")
def archived(s3_server, ray_local):
    """A bucket whose raw/ images are archived in several small segments (one module, one job run)."""
    with pytest.MonkeyPatch.context() as mp:
        for k, v in s3_server.env.items():
            mp.setenv(k, v)
        bucket = "restore-" + uuid.uuid4().hex[:8]
        s3_server.make_bucket(bucket)
        objects = good_objects(seed=7)
        upload(s3_server.filesystem(), bucket, "raw", objects)
        cfg = CompressJobConfig(input=f"s3://{bucket}/raw/", output=f"s3://{bucket}/archive/", quality=0.6,
                                segment_rows=2)
        summary = run_job(cfg, progress=False)
        assert summary.ok == len(objects)
        stats = {r["key"]: r for r in Archive(cfg.output).committed_table("stats").to_pylist()}
        yield {"bucket": bucket, "objects": objects, "archive": cfg.output, "stats": stats}


def key_of(archived, name):
    return f"s3://{archived['bucket']}/raw/{name}"


def read_back(fs, url):
    data = fs.cat_file(url.split("://", 1)[1])
    img = load_image(data, url)
    return img.pixels, img.geo


def test_restore_job_gives_back_every_image_as_recorded(s3_server, s3_env, archived):
    fs = s3_server.filesystem()
    out = f"s3://{archived['bucket']}/restored/"
    summary = run_restore(RestoreJobConfig(archive=archived["archive"], output=out), progress=False)
    assert (summary.selected, summary.ok, summary.errors) == (5, 5, 0)
    for name, data in archived["objects"].items():
        key = key_of(archived, name)
        original = load_image(data, name).pixels
        fmt = "tiff" if name.endswith(".tif") else "png"
        restored, geo = read_back(fs, out + output_name(key, fmt))
        assert restored.shape == original.shape
        # the PSNR the stats recorded is the PSNR of what comes back
        assert psnr(original[..., :3], restored[..., :3]) == pytest.approx(archived["stats"][key]["psnr"], abs=0.01)
        if fmt == "tiff":  # GeoTIFF in, GeoTIFF out, georeferencing intact
            info = json.loads(geo)
            assert info["crs"] == f"EPSG:{EPSG}" and info["geotransform"] == [500000.0, 10.0, 0.0, 4000000.0, 0.0, -10.0]
    log = pq.read_table(fs.open(f"{archived['bucket']}/restored/_restore_log/{summary.restore_id}.parquet"))
    assert sorted(log["status"].to_pylist()) == ["ok"] * 5


def test_region_restore_equals_the_crop_and_moves_the_geo_origin(s3_server, s3_env, archived):
    fs = s3_server.filesystem()
    out = f"s3://{archived['bucket']}/regions/"
    region = (17, 9, 40, 30)
    summary = run_restore(RestoreJobConfig(archive=archived["archive"], output=out, region=region,
                                           prefix=f"s3://{archived['bucket']}/raw/geo/"), progress=False)
    assert (summary.ok, summary.errors) == (1, 0)
    key = key_of(archived, "geo/d.tif")
    full = codec.decode(Archive(archived["archive"]).find_record(key)["bitstream"])
    crop, geo = read_back(fs, out + output_name(key, "tiff"))
    np.testing.assert_array_equal(crop, full[9:39, 17:57])
    assert json.loads(geo)["geotransform"] == [500000.0 + 17 * 10, 10.0, 0.0, 4000000.0 - 9 * 10, 0.0, -10.0]


def test_one_key_is_found_without_scanning_the_archive(s3_server, s3_env, archived, monkeypatch, tmp_path):
    archive = Archive(archived["archive"])
    assert len(archive.manifests()) >= 3  # several segments to choose from
    reads = []
    original = Archive.read_records
    monkeypatch.setattr(Archive, "read_records", lambda self, f, keys, columns=None: reads.append(f) or original(self, f, keys, columns))
    key = key_of(archived, "scenes/b.jpg")
    row = restore_one(archived["archive"], key, str(tmp_path / "b.png"))
    assert row["status"] == "ok" and len(reads) == 1  # the manifests' key ranges picked the one segment
    restored = np.asarray(Image.open(tmp_path / "b.png"))
    original_img = load_image(archived["objects"]["scenes/b.jpg"], "b.jpg").pixels
    assert psnr(original_img, restored) == pytest.approx(archived["stats"][key]["psnr"], abs=0.01)


def test_cli_one_key_and_missing_key(s3_server, s3_env, archived, tmp_path, capsys):
    key = key_of(archived, "scenes/a.png")
    assert restore_job.main(["--archive", archived["archive"], "--key", key, "--output", str(tmp_path / "a.tif"),
                             "--region", "0,0,32,16"]) == 0
    with tifffile.TiffFile(tmp_path / "a.tif") as tif:
        assert tif.pages[0].shape[:2] == (16, 32)
    assert restore_job.main(["--archive", archived["archive"], "--key", key + ".nope", "--output", str(tmp_path / "x.png")]) == 3
    assert "no committed record" in capsys.readouterr().err
    assert restore_job.main(["--archive", archived["archive"], "--output", "s3://x/", "--region", "1,2,3"]) == 2


def test_a_corrupt_record_is_an_error_row_never_a_wrong_image(s3_server, s3_env, archived):
    fs = s3_server.filesystem()
    bucket = archived["bucket"]
    # a copy of the archive in which one committed bitstream has one flipped byte
    src, dst = f"{bucket}/archive", f"{bucket}/archive-corrupt"
    for path in fs.find(src):
        fs.pipe_file(path.replace(src, dst, 1), fs.cat_file(path).replace(src.encode(), dst.encode()))
    victim = key_of(archived, "scenes/a.png")
    archive = Archive(f"s3://{dst}/")
    path = archive.find_record(victim)["file"]
    table = pq.read_table(io.BytesIO(fs.cat_file(path)))
    rows = table.to_pylist()
    for r in rows:
        if r["key"] == victim:
            b = bytearray(r["bitstream"])
            b[len(b) // 2] ^= 0x10
            r["bitstream"] = bytes(b)
    buf = io.BytesIO()
    pq.write_table(type(table).from_pylist(rows, schema=table.schema), buf)
    fs.pipe_file(path, buf.getvalue())

    out = f"s3://{bucket}/restored-corrupt/"
    summary = run_restore(RestoreJobConfig(archive=f"s3://{dst}/", output=out, keys=[victim, key_of(archived, "scenes/b.jpg"),
                                                                                    victim + ".missing"]), progress=False)
    assert (summary.selected, summary.ok, summary.errors) == (3, 1, 2)
    errors = {r["key"]: r["error"] for r in summary.error_rows}
    assert "checksum" in errors[victim].lower() and victim in errors[victim]
    assert "no committed record" in errors[victim + ".missing"]
    assert not fs.exists(f"{bucket}/restored-corrupt/{output_name(victim, 'png')}")


def test_output_names_and_geo_shift_are_pure():
    assert output_name("s3://raw/a/b.c/scene.tif", "png") == "raw/a/b.c/scene.tif.png"  # x.tif and x.png stay apart
    assert output_name("/data/x", "tiff") == "data/x.tif"
    tags = {"ModelTransformation": [2.0, 0, 0, 100.0, 0, -2.0, 0, 50.0, 0, 0, 0, 0, 0, 0, 0, 1]}
    moved = shifted_geo(json.dumps({"tags": tags}), (3, 4, 1, 1))["ModelTransformation"]
    assert moved[3] == 106.0 and moved[7] == 42.0
