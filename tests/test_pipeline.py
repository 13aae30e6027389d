"""The archival job against a real S3 server (SeaweedFS) and local Ray."""

import io
import json

import duckdb
import pytest
from PIL import Image, ImageCms

import codec
from codec.metrics import psnr
from pipeline.archive import Archive
from pipeline.compress import run_job
from pipeline.config import CompressJobConfig
from codec.images.imageio import load_image
from pipeline.storage import StorageAccessError
from conftest import natural_image
from pipeline_fixtures import EPSG, bad_objects, good_objects, upload

pytestmark = pytest.mark.usefixtures("ray_local")

ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def jpeg_with_icc_and_orientation() -> bytes:
    exif = Image.Exif()
    exif[274] = 6  # rotate 90° clockwise to display
    buf = io.BytesIO()
    Image.fromarray(natural_image(96, 160, 3)).save(buf, format="JPEG", quality=92, icc_profile=ICC, exif=exif.tobytes())
    return buf.getvalue()


def config(bucket, **kw) -> CompressJobConfig:
    return CompressJobConfig(input=f"s3://{bucket}/raw/", output=f"s3://{bucket}/archive/", quality=0.5,
                             max_pixels=50_000, **kw)


def test_bucket_to_parquet_with_every_input_accounted_for(s3_server, s3_env, bucket):
    fs = s3_server.filesystem()
    good, bad = {**good_objects(), "scenes/f-icc-exif.jpg": jpeg_with_icc_and_orientation()}, bad_objects()
    upload(fs, bucket, "raw", {**good, **bad})
    summary = run_job(config(bucket), progress=False)
    assert (summary.listed, summary.processed, summary.ok, summary.errors) == (11, 11, 6, 5)

    archive = Archive(f"s3://{bucket}/archive/")
    stats = archive.committed_table("stats").to_pylist()
    by_key = {r["key"].split("/raw/")[1]: r for r in stats}
    assert sorted(by_key) == sorted([*good, *bad])
    kinds = {k: r["error_kind"] for k, r in by_key.items() if r["status"] == "error"}
    assert kinds == {"bad/zero.png": "decode", "bad/truncated.png": "decode", "bad/not-an-image.png": "decode",
                     "bad/float32.tif": "unsupported", "bad/huge.png": "too_large"}
    assert all(r["error"] and k.split("/")[-1] in r["error"] for k, r in by_key.items() if r["status"] == "error")

    records = archive.committed_table("records").to_pylist()
    assert len(records) == 6
    for rec in records:
        name = rec["key"].split("/raw/")[1]
        st = by_key[name]
        original = load_image(good[name], name).pixels
        restored = codec.decode(rec["bitstream"])
        assert restored.shape == original.shape
        assert psnr(original[..., :3], restored[..., :3]) == pytest.approx(st["psnr"], abs=0.01)  # colour channels
        assert st["compressed_bytes"] == len(rec["bitstream"]) and st["bpp"] > 0 and 0 < st["ms_ssim"] <= 1
        # a GeoTIFF's stream carries its georeferencing (v4, issue 26); the other photos keep v1
        assert rec["model_id"] == codec.load_model("default").model_id
        assert rec["format_version"] == (4 if name.endswith("d.tif") else 1), name
    georef = codec.read_header(next(r for r in records if r["key"].endswith("d.tif"))["bitstream"]).georef
    assert georef.epsg == EPSG and georef.transform == (500000.0, 10.0, 0.0, 4000000.0, 0.0, -10.0)
    geo = json.loads(next(r for r in records if r["key"].endswith("d.tif"))["geo"])
    assert geo["crs"] == f"EPSG:{EPSG}" and geo["geotransform"] == [500000.0, 10.0, 0.0, 4000000.0, 0.0, -10.0]
    tagged = next(r for r in records if r["key"].endswith("f-icc-exif.jpg"))
    assert tagged["icc_profile"] == ICC
    exif = Image.Exif()
    exif.load(tagged["exif"])
    assert exif[274] == 6, "EXIF orientation is carried (the pixels are not rotated)"
    assert codec.decode(tagged["bitstream"]).shape == (96, 160, 3)
    rgba = next(r for r in records if r["key"].endswith("e-rgba.png"))
    assert rgba["channels"] == 4 and codec.decode(rgba["bitstream"])[..., 3].min() == 200

    # the layout reads directly with DuckDB (through the s3fs filesystem) and pyarrow.dataset
    con = duckdb.connect()
    con.register_filesystem(fs)
    n_ok, = con.execute(f"select count(*) from read_parquet('s3://{bucket}/archive/stats/*/*.parquet') where status='ok'").fetchone()
    assert n_ok == 6


def test_rerun_processes_only_new_and_changed_objects(s3_server, s3_env, bucket):
    fs = s3_server.filesystem()
    good = good_objects()
    upload(fs, bucket, "raw", good)
    first = run_job(config(bucket), progress=False)
    assert first.processed == 5
    again = run_job(config(bucket), progress=False)
    assert (again.listed, again.skipped_committed, again.processed) == (5, 5, 0)

    upload(fs, bucket, "raw", {"scenes/new.png": good["scenes/a.png"], "scenes/b.jpg": good_objects(7)["scenes/b.jpg"]})
    third = run_job(config(bucket), progress=False)
    assert (third.listed, third.skipped_committed, third.processed) == (6, 4, 2)

    stats = Archive(f"s3://{bucket}/archive/").committed_table("stats").to_pylist()
    versions = [(r["key"], r["version"]) for r in stats]
    assert len(versions) == len(set(versions)) == 7  # every (key, version) exactly once


def test_wrong_credentials_and_missing_bucket_fail_fast_without_secrets(s3_server, s3_env, bucket, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "definitely-wrong-secret")
    with pytest.raises(StorageAccessError) as exc:
        run_job(config(bucket), progress=False)
    assert "definitely-wrong-secret" not in str(exc.value) and "access denied" in str(exc.value)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    with pytest.raises(StorageAccessError, match="does not exist"):
        run_job(config("no-such-bucket-xyz"), progress=False)


def test_job_entrypoint_exit_codes_and_config_file(s3_server, s3_env, bucket, tmp_path, capsys):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "jobs"))
    import compress_bucket

    fs = s3_server.filesystem()
    upload(fs, bucket, "raw", {**dict(list(good_objects().items())[:2]), **dict(list(bad_objects().items())[:2])})
    cfg = tmp_path / "job.yaml"
    cfg.write_text(f"input: s3://{bucket}/raw/\noutput: s3://{bucket}/archive/\nquality: 0.5\nmax_error_fraction: 0.25\n")
    assert compress_bucket.main(["--config", str(cfg)]) == 3  # 2 of 4 failed > 25%
    out = capsys.readouterr()
    assert "4 processed (2 ok, 2 errors)" in out.out and "exceeds --max-error-fraction" in out.err
    # options are validated with messages naming the field
    assert compress_bucket.main(["--input", "s3://x/", "--output", "s3://y/", "--tile-size", "100"]) == 2
    assert "tile_size" in capsys.readouterr().err
    assert compress_bucket.main(["--input", "s3://x/", "--output", "s3://y/", "--quality", "0.3", "--target-psnr", "30"]) == 2
    # missing bucket: fails fast with exit 4
    assert compress_bucket.main(["--input", "s3://no-such-bucket-abc/", "--output", f"s3://{bucket}/a/"]) == 4
