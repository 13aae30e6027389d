import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import psnr


def run(*args):
    return subprocess.run([sys.executable, "-m", "codec", *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def png(tmp_path_factory, image):
    p = tmp_path_factory.mktemp("cli") / "in.png"
    Image.fromarray(image).save(p)
    return p


def test_encode_info_decode_region(png, tmp_path, image):
    out = tmp_path / "a.tlic"
    r = run("encode", png, out, "--target-psnr", "28", "--tile-size", "128")
    assert r.returncode == 0, r.stderr
    assert "bpp" in r.stdout and out.stat().st_size > 0

    info = run("info", out, "--json")
    assert info.returncode == 0
    meta = json.loads(info.stdout)
    assert meta["width"] == 330 and meta["grid"] == [2, 3] and meta["mode"] == "target_psnr"
    assert sum(t["bytes"] for t in meta["tiles"]) + meta["header_bytes"] == out.stat().st_size
    assert "quality per tile" in run("info", out).stdout

    dec = tmp_path / "a.png"
    assert run("decode", out, dec).returncode == 0
    full = np.asarray(Image.open(dec))
    assert full.shape == image.shape and psnr(image, full) > 20

    reg = tmp_path / "r.png"
    assert run("decode", out, reg, "--region", "100,50,64,40").returncode == 0
    assert np.array_equal(np.asarray(Image.open(reg)), full[50:90, 100:164])


def test_exit_codes(png, tmp_path):
    out = tmp_path / "a.tlic"
    assert run("encode", png, out, "--quality", "0.4").returncode == 0
    # bad arguments
    assert run("encode", png, out, "--quality", "0.4", "--target-psnr", "30").returncode == 2
    assert run("encode", png, out, "--quality", "7").returncode == 2
    bad_effort = run("encode", png, out, "--effort", "9")
    assert bad_effort.returncode == 2 and "effort must be an integer in [0, 3]" in bad_effort.stderr
    assert run("decode", out, tmp_path / "x.png", "--region", "1,2,3").returncode == 2
    # unreadable or unsupported input
    missing = run("encode", tmp_path / "nope.png", out)
    assert missing.returncode == 3 and "nope.png" in missing.stderr
    (tmp_path / "text.png").write_text("not an image")
    assert run("encode", tmp_path / "text.png", out).returncode == 3
    import tifffile  # 16-bit rasters are coded now (tests/test_rasters.py); float samples are not

    tifffile.imwrite(tmp_path / "deep.tif", np.zeros((8, 8), dtype=np.float32))
    deep = run("encode", tmp_path / "deep.tif", out)
    assert deep.returncode == 3 and "float" in deep.stderr
    # corrupt stream
    data = bytearray(out.read_bytes())
    data[-5] ^= 0xFF
    (tmp_path / "bad.tlic").write_bytes(bytes(data))
    bad = run("decode", tmp_path / "bad.tlic", tmp_path / "x.png")
    assert bad.returncode == 4 and "checksum" in bad.stderr
    assert run("info", tmp_path / "text.png").returncode == 4
    # unknown model
    unknown = run("encode", png, out, "--model", "nosuch@3")
    assert unknown.returncode == 5 and "nosuch" in unknown.stderr


@pytest.fixture(scope="module")
def stream(model, image):
    import codec

    return codec.encode(image, model, quality=0.5, tile_size=128).data


@pytest.mark.parametrize("name", ["mode_9", "model_id_not_utf8", "n_tiles_huge", "escape_bits_28", "garbage_payload"])
def test_crafted_stream_exits_4_without_traceback(stream, model, tmp_path, name):
    from test_stream_fuzz import crafted

    bad = tmp_path / "crafted.tlic"
    bad.write_bytes(crafted(stream, name, model))
    r = run("decode", bad, tmp_path / "x.png")
    assert r.returncode == 4, r.stderr
    assert r.stderr.startswith("codec: error:") and "Traceback" not in r.stderr


def test_decode_max_pixels(stream, tmp_path):
    p = tmp_path / "a.tlic"
    p.write_bytes(stream)
    r = run("decode", p, tmp_path / "x.png", "--max-pixels", "1000")
    assert r.returncode == 4 and "limit of 1000" in r.stderr and "Traceback" not in r.stderr
    assert run("decode", p, tmp_path / "x.png", "--max-pixels", str(330 * 200)).returncode == 0
    assert run("decode", p, tmp_path / "x.png", "--max-pixels", "0").returncode == 2
