import numpy as np
import pytest

import codec
from conftest import natural_image, psnr


@pytest.mark.parametrize("h,w", [(1, 1), (1, 300), (65, 130), (64, 64), (257, 300)])
def test_odd_sizes_round_trip(model, h, w):
    img = natural_image(h, w)
    r = codec.encode(img, model, quality=0.6, tile_size=128)
    out = codec.decode(r.data)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert psnr(img, out) > 20
    rows, cols = r.header.grid
    assert (rows, cols) == (-(-h // 128), -(-w // 128))


def test_bpp_is_measured_from_bytes(model, image):
    r = codec.encode(image, model, quality=0.5)
    assert r.bpp == pytest.approx(len(r.data) * 8 / (image.shape[0] * image.shape[1]))


def test_higher_quality_costs_more_and_looks_better(model, image):
    lo = codec.encode(image, model, quality=0.1)
    hi = codec.encode(image, model, quality=0.9)
    assert len(hi.data) > 1.5 * len(lo.data)
    assert psnr(image, codec.decode(hi.data)) > psnr(image, codec.decode(lo.data)) + 2


def test_target_psnr_every_tile_reaches_target_with_lowest_level(model, image):
    target = 30.0
    r = codec.encode(image, model, target_psnr=target, tile_size=128)
    out = codec.decode(r.data)
    for i, t in enumerate(r.header.tiles):
        x, y, w, h = r.header.tile_box(i)
        p = psnr(image[y : y + h, x : x + w], out[y : y + h, x : x + w])
        assert p == pytest.approx(r.tile_psnr[i], abs=0.005)  # what the encoder measured is what decodes
        if not t.missed_target:
            assert p >= target
    # lowest level: one grid step below fails for every tile above level 0
    from codec.quality import LEVELS

    for i, t in enumerate(r.header.tiles):
        level = round(t.quality * (LEVELS - 1))
        if level == 0 or t.missed_target:
            continue
        x, y, w, h = r.header.tile_box(i)
        tile = np.ascontiguousarray(image[y : y + h, x : x + w])
        below = codec.encode(tile, model, quality=(level - 1) / (LEVELS - 1), tile_size=128)
        assert psnr(tile, codec.decode(below.data)) < target


def test_unreachable_target_is_flagged_when_the_tools_are_excluded(model, image):
    r = codec.encode(image, model, target_psnr=80.0, tile_size=128, tools=("learned",))
    assert all(t.missed_target and t.quality == 1.0 for t in r.header.tiles)
    assert r.missed_tiles == len(r.header.tiles)


def test_a_target_beyond_the_model_is_met_by_the_exact_tool(model, image):
    r = codec.encode(image, model, target_psnr=80.0, tile_size=128)
    assert r.missed_tiles == 0 and all(t.lossless for t in r.header.tiles)
    assert np.array_equal(codec.decode(r.data), image)


def test_target_bpp_stays_within_budget_and_beats_one_uniform_quality(model, image):
    lo = codec.encode(image, model, quality=0.0, tile_size=128).bpp
    hi = codec.encode(image, model, quality=1.0, tile_size=128).bpp
    uniform = [codec.encode(image, model, quality=q, tile_size=128) for q in np.linspace(0, 1, 21)]
    for budget in (lo * 1.3, (lo + hi) / 2):
        r = codec.encode(image, model, target_bpp=budget, tile_size=128)
        assert r.bpp <= budget and r.bpp > 0.7 * budget and r.missed_tiles == 0
        # the best single quality within the same budget does no better
        best = max((u for u in uniform if u.bpp <= budget), key=lambda u: psnr(image, codec.decode(u.data)))
        assert r.psnr >= psnr(image, codec.decode(best.data)) - 0.05
    tiny = codec.encode(image, model, target_bpp=lo * 0.5, tile_size=128)
    assert tiny.missed_tiles == len(tiny.header.tiles)  # cannot fit: lowest quality, flagged


def test_region_decode_equals_crop_of_full_decode(model, image):
    r = codec.encode(image, model, quality=0.5, tile_size=64)
    full = codec.decode(r.data)
    for box in [(0, 0, 1, 1), (10, 20, 100, 70), (63, 63, 2, 2), (0, 0, 330, 200), (329, 199, 1, 1)]:
        x, y, w, h = box
        assert np.array_equal(codec.decode_region(r.data, box), full[y : y + h, x : x + w])


def test_region_outside_image_is_rejected(model, image):
    r = codec.encode(image, model, quality=0.5)
    with pytest.raises(ValueError, match="not inside"):
        codec.decode_region(r.data, (300, 0, 100, 10))


def test_grayscale_comes_back_grayscale(model, image):
    gray = np.round(image.mean(axis=2)).astype(np.uint8)
    r = codec.encode(gray, model, quality=0.7)
    out = codec.decode(r.data)
    assert out.shape == gray.shape and r.header.channels == 1
    assert psnr(gray, out) > 25


def test_alpha_is_kept_losslessly(model, image):
    alpha = (np.arange(image.shape[1])[None, :] * np.ones((image.shape[0], 1)) % 256).astype(np.uint8)
    rgba = np.concatenate([image, alpha[..., None]], axis=2)
    r = codec.encode(rgba, model, quality=0.5, tile_size=128)
    out = codec.decode(r.data)
    assert out.shape == rgba.shape
    assert np.array_equal(out[..., 3], alpha)
    assert np.array_equal(codec.decode_region(r.data, (5, 5, 200, 100))[..., 3], alpha[5:105, 5:205])


@pytest.mark.parametrize(
    "bad,match",
    [
        (np.zeros((10, 10, 3), dtype=np.int32), "int32"),  # uint16, int16 and any band count are rasters (test_rasters.py, test_int16.py)
        (np.zeros((10, 10, 3), dtype=np.float32), "float32"),
        (np.zeros((10, 10, 2, 2), dtype=np.uint8), "shape"),
        (np.zeros((0, 10, 3), dtype=np.uint8), "empty"),
    ],
)
def test_unsupported_inputs_raise_clear_errors(model, bad, match):
    with pytest.raises(codec.UnsupportedImageError, match=match):
        codec.encode(bad, model, quality=0.5, name="scene.tif")


def test_invalid_options(model, image):
    with pytest.raises(ValueError, match="only one"):
        codec.encode(image, model, quality=0.5, target_psnr=30)
    with pytest.raises(ValueError, match="multiple of 64"):
        codec.encode(image, model, quality=0.5, tile_size=100)


def test_entropy_workers_give_identical_bytes(model, image):
    serial = codec.encode(image, model, quality=0.4, tile_size=128)
    pooled = codec.encode(image, model, quality=0.4, tile_size=128, entropy_workers=2)
    assert pooled.data == serial.data
    assert np.array_equal(codec.decode(serial.data, model, entropy_workers=2), codec.decode(serial.data, model))


def test_a_validated_rate_target_codes_like_its_keywords(image, model):
    from codec.families.hyperprior.ratecontrol import RateTarget

    assert codec.encode(image[:64, :96], model, target=RateTarget("quality", 0.5)).data == \
        codec.encode(image[:64, :96], model, quality=0.5).data
    with pytest.raises(ValueError, match="not both"):
        codec.encode(image[:64, :96], model, target=RateTarget("quality", 0.5), quality=0.5)
