"""The archival job and restore with ``--model minnen2018`` (a real S3 server and local Ray)."""

import numpy as np
import pytest
from PIL import Image

import codec
from codec.images.imageio import load_image
from codec.metrics import psnr
from pipeline.archive import Archive
from pipeline.compress import run_job
from pipeline.config import CompressJobConfig
from pipeline.restore import restore_one
from pipeline_fixtures import good_objects, upload

pytestmark = pytest.mark.usefixtures("ray_local")


def test_compress_bucket_and_restore_with_minnen2018(s3_server, s3_env, bucket, tmp_path):
    objects = {k: v for k, v in good_objects().items() if k in ("scenes/a.png", "scenes/e-rgba.png")}
    upload(s3_server.filesystem(), bucket, "raw", objects)
    cfg = CompressJobConfig(input=f"s3://{bucket}/raw/", output=f"s3://{bucket}/archive/", model="minnen2018",
                            quality=0.25, max_pixels=50_000)
    summary = run_job(cfg, progress=False)
    assert (summary.ok, summary.errors) == (2, 0)
    assert len(summary.warnings) == 1 and "below JPEG" in summary.warnings[0] and "below JPEG" in summary.table()
    archive = Archive(f"s3://{bucket}/archive/")
    stats = {r["key"]: r for r in archive.committed_table("stats").to_pylist()}
    for rec in archive.committed_table("records").to_pylist():
        assert rec["model_id"] == codec.load_model("minnen2018").model_id
        assert codec.read_header(rec["bitstream"]).model_id == rec["model_id"]
        name = rec["key"].split("/raw/")[1]
        out = tmp_path / (name.replace("/", "_") + ".png")
        row = restore_one(f"s3://{bucket}/archive/", rec["key"], str(out))
        assert row["status"] == "ok", row
        restored = np.asarray(Image.open(out))
        original = load_image(objects[name], name).pixels
        assert restored.shape == original.shape
        assert np.array_equal(restored, codec.decode(rec["bitstream"]))
        assert psnr(original[..., :3], restored[..., :3]) == pytest.approx(stats[rec["key"]]["psnr"], abs=0.01)
