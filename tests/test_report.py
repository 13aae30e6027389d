"""Reports: DuckDB numbers equal a direct computation from the Parquet; the HTML renders with its plots."""

import re
import shutil
import subprocess
import uuid
from datetime import date

import numpy as np
import pytest
from PIL import Image

from jobs import report as report_job
from pipeline.archive import Archive
from pipeline.compress import run_job
from pipeline.config import CompressJobConfig
from pipeline.report import build_report, connect
from pipeline.report_html import PLOT_IDS, tile_bpp_map, tile_coder_map
from pipeline_fixtures import bad_objects, good_objects, png, upload
from conftest import natural_image

pytestmark = pytest.mark.usefixtures("ray_local")


@pytest.fixture(scope="module")
def archived(s3_server, ray_local):
    """Two runs over a bucket with good and bad images in two folders."""
    with pytest.MonkeyPatch.context() as mp:
        for k, v in s3_server.env.items():
            mp.setenv(k, v)
        bucket = "report-" + uuid.uuid4().hex[:8]
        s3_server.make_bucket(bucket)
        fs = s3_server.filesystem()
        upload(fs, bucket, "raw", {**good_objects(seed=3), **bad_objects()})
        cfg = dict(input=f"s3://{bucket}/raw/", output=f"s3://{bucket}/archive/", target_psnr=30, max_pixels=50_000)
        first = run_job(CompressJobConfig(**cfg), progress=False)
        upload(fs, bucket, "raw", {"late/f.png": png(natural_image(300, 140, 5))})  # 2 tiles at tile_size 256
        second = run_job(CompressJobConfig(**cfg), progress=False)
        assert (first.processed, second.processed) == (10, 1)
        yield {"bucket": bucket, "stats_url": f"s3://{bucket}/archive/stats/", "archive": cfg["output"]}


def test_report_numbers_equal_a_direct_computation(s3_env, archived):
    stats = Archive(archived["archive"]).committed_table("stats").to_pylist()
    con = connect(archived["stats_url"])
    rep = build_report(con, "prefix")
    rows = {r["group"]: r for r in rep.summary.to_pylist()}
    for prefix in {s["key"].rsplit("/", 1)[0] + "/" for s in stats}:
        mine = [s for s in stats if s["key"].rsplit("/", 1)[0] + "/" == prefix]
        ok = [s for s in mine if s["status"] == "ok"]
        r = rows[prefix]
        assert r["images"] == len(mine) and r["errors"] == len(mine) - len(ok)
        assert r["bytes_in"] == sum(s["original_bytes"] for s in ok)
        assert r["bytes_out"] == sum(s["compressed_bytes"] for s in ok)
        if ok:
            assert r["ratio"] == pytest.approx(r["bytes_in"] / r["bytes_out"])
            assert r["mean_bpp"] == pytest.approx(np.mean([s["bpp"] for s in ok]))
            assert r["p50_bpp"] == pytest.approx(np.median([s["bpp"] for s in ok]))
            assert r["mean_psnr"] == pytest.approx(np.mean([s["psnr"] for s in ok]))
            assert r["missed_tile_share"] == pytest.approx(sum(s["tiles_missed"] for s in ok) / sum(s["tiles"] for s in ok))
    errors = {r["cause"]: r["images"] for r in rep.errors.to_pylist()}
    expected = {}
    for s in stats:
        if s["status"] == "error":
            expected[s["error_kind"]] = expected.get(s["error_kind"], 0) + 1
    assert errors == expected and sum(errors.values()) == 5
    assert rep.runs.num_rows == 2 and sorted(rep.runs["images"].to_pylist()) == [1, 10]
    total = build_report(con).summary.to_pylist()[0]
    assert total["images"] == 11 and total["bytes_in"] == sum(s["original_bytes"] for s in stats if s["status"] == "ok")
    assert "archive by prefix" in rep.text() and "errors by cause" in rep.text()
    direct: dict[str, int] = {}
    for s in stats:
        for coder, n in s["tile_coders"] or []:
            direct[coder] = direct.get(coder, 0) + n
    assert {r["coder"]: r["tiles"] for r in rep.coders.to_pylist()} == direct
    assert sum(direct.values()) == sum(s["tiles"] for s in stats if s["status"] == "ok")
    assert "tiles by coder" in rep.text()


def test_since_and_grouping_by_model_and_day(s3_env, archived):
    assert build_report(connect(archived["stats_url"], since=date(2999, 1, 1))).summary["images"].to_pylist() in ([], [0])
    con = connect(archived["stats_url"])
    (model_row,) = build_report(con, "model").summary.to_pylist()[:1]
    assert model_row["images"] == 6  # the error rows carry no model: they group apart
    assert sum(build_report(con, "day").summary["images"].to_pylist()) == 11
    with pytest.raises(ValueError, match="group_by"):
        build_report(con, "colour")


def test_tile_bpp_map_adds_up_to_the_stream(s3_env, archived):
    rec = Archive(archived["archive"]).find_record(f"s3://{archived['bucket']}/raw/late/f.png")
    bpp, quality = tile_bpp_map(rec["bitstream"])
    assert bpp.shape == quality.shape == (2, 1)
    tile_bits = bpp[0, 0] * 256 * 140 + bpp[1, 0] * 44 * 140
    assert tile_bits < len(rec["bitstream"]) * 8 < tile_bits + 8 * 400  # the rest is the header and index


def test_html_report_renders_with_its_plots(s3_env, archived, tmp_path, capsys):
    out = tmp_path / "report.html"
    assert report_job.main(["--stats", archived["stats_url"], "--group-by", "prefix", "--html", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "archive by prefix" in printed and "HTML report" in printed
    page = out.read_text()
    for plot_id in PLOT_IDS:
        assert re.search(rf'<figure id="{plot_id}"><img [^>]*src="data:image/png;base64,', page), plot_id
    assert "http://" not in page and "https://" not in page  # self-contained: nothing to fetch

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        pytest.skip("chromium not installed (make setup installs it with apt-get where it can)")
    shot = tmp_path / "report.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1400,3200", f"--screenshot={shot}", out.as_uri()],
                   check=True, capture_output=True, timeout=120)
    img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert img.shape[:2] == (3200, 1400)
    # matplotlib's first colour (the bpp histogram, the per-prefix bars) is on the page as drawn pixels
    c0 = np.all(np.abs(img - [31, 119, 180]) < 12, axis=-1).sum()
    c2 = np.all(np.abs(img - [44, 160, 44]) < 12, axis=-1).sum()
    assert c0 > 2000 and c2 > 1000, (c0, c2)


def test_tile_coder_map_names_each_tiles_coder(model):
    import codec
    from codec import tilecoders

    img = natural_image(192, 256, 2)
    img[:64, :64] = np.random.default_rng(0).integers(0, 256, (64, 64, 3))  # noise: the model cannot reach 40 dB
    data = codec.encode(img, model, target_psnr=40, tile_size=64).data
    grid, names = tile_coder_map(data)
    header = codec.read_header(data)
    assert grid.shape == (3, 4) and len(names) >= 2
    assert [names[k] for k in grid.ravel()] == [tilecoders.coder(t.coder).name for t in header.tiles]


def test_bit_allocation_without_the_records_model_keeps_the_maps(image, model):
    import codec
    from codec.registry import ModelResolver
    from pipeline.report_html import bit_allocation_plot

    record = {"bitstream": codec.encode(image, model, quality=0.3).data}
    html_part = bit_allocation_plot("s3://raw/x.png", record, ModelResolver([]))  # no source knows the model
    assert "bit-allocation" in html_part and "<img" in html_part
