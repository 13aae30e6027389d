"""Rate targets, the one quality representation, and the tile grid."""

import numpy as np
import pytest

import codec
from codec import quality
from codec.families.hyperprior import tiling
from codec.format import tiles
from codec.families.hyperprior.ratecontrol import DEFAULT_TARGET_PSNR, MODES, RateTarget
from conftest import natural_image, psnr


def test_one_mode_rule_and_default():
    assert RateTarget.from_options() == RateTarget("target_psnr", DEFAULT_TARGET_PSNR) == RateTarget("target_psnr", 38)
    assert RateTarget.from_options(quality=0.5) == RateTarget("quality", 0.5)
    assert RateTarget.from_options(target_bpp=0.3).mode == "target_bpp"
    with pytest.raises(ValueError, match=r"only one of .*\(got target_psnr, target_bpp\)"):
        RateTarget.from_options(target_psnr=30, target_bpp=0.3)


@pytest.mark.parametrize("mode,value,match", [
    ("quality", 1.5, r"quality must be in \[0, 1\]"), ("quality", -0.1, r"\[0, 1\]"),
    ("target_bpp", 0, "positive"), ("target_psnr", float("nan"), "finite"), ("target_bpp", float("inf"), "finite"),
    ("target_psnr", "x", "must be a number"), ("psnr", 30, "unknown rate-control mode"),
])
def test_invalid_targets(mode, value, match):
    with pytest.raises(ValueError, match=match):
        RateTarget(mode, value)


def test_modes_order_is_the_stream_byte():
    assert MODES == ("quality", "target_psnr", "target_bpp", "max_error")  # append only: index = mode byte


def test_quality_codes():
    levels = np.arange(quality.LEVELS)
    codes = quality.code_of_level(levels)
    assert codes[0] == 0 and codes[-1] == quality.QUALITY_STEPS and (np.diff(codes) > 0).all()
    # a user quality on the grid gets the grid's code, so quality mode and the search agree
    assert [quality.code_of(lv / (quality.LEVELS - 1)) for lv in levels] == codes.tolist()
    assert quality.code_of(-1) == 0 and quality.code_of(2) == quality.QUALITY_STEPS
    assert quality.q_tensor([codes[5]]).item() == np.float32(codes[5] / quality.QUALITY_STEPS)


def test_encoder_measures_what_the_decoder_reconstructs(model):
    """Every tile's PSNR as the encoder measured it is the decoded tile's PSNR (same q on both sides)."""
    img = natural_image(130, 200, seed=1)
    r = codec.encode(img, model, target_psnr=31.0, tile_size=64)
    out = codec.decode(r.data, model)
    for i in range(len(r.header.tiles)):
        x, y, w, h = r.header.tile_box(i)
        assert psnr(img[y : y + h, x : x + w], out[y : y + h, x : x + w]) == pytest.approx(r.tile_psnr[i], abs=1e-9)


def test_one_tile_grid():
    for w, h, t in [(1, 1, 64), (330, 200, 64), (512, 512, 256), (300, 451, 128)]:
        header = codec.Header("m", bytes(32), w, h, 3, t, "quality", 0.5)
        boxes = tiles.grid_boxes(w, h, t)
        rows, cols = header.grid
        assert len(boxes) == rows * cols and header.boxes() == boxes
        assert [header.tile_box(i) for i in range(len(boxes))] == boxes
        assert sum(bw * bh for _, _, bw, bh in boxes) == w * h
    with pytest.raises(ValueError, match="multiple of 64"):
        tiles.check_tile_size(96)


def test_batches_group_by_shape_and_cap_pixels():
    boxes = tiles.grid_boxes(330, 200, 64)
    got = list(tiling.batches(boxes, range(len(boxes)), 8, max_pixels=3 * 64 * 64))
    assert sorted(i for _, ids in got for i in ids) == list(range(len(boxes)))
    for (pw, ph), ids in got:
        assert len(ids) <= 3 and all(tiling.padded_size(*boxes[i][2:]) == (pw, ph) for i in ids)


# --- target PSNR: predicted, verified, corrected ------------------------------------------------


@pytest.mark.parametrize("target", [29.0, 33.0])
def test_every_unflagged_tile_decodes_at_the_target(model, target):
    """Decoded on its own (a region of one tile: another batch shape) and with the whole image, every
    tile not flagged as missed reaches the target."""
    img = natural_image(300, 400, seed=target == 33.0)
    r = codec.encode(img, model, target_psnr=target, tile_size=64)
    whole = codec.decode(r.data, model)
    assert sum(not t.missed_target for t in r.header.tiles) >= 10
    for i, entry in enumerate(r.header.tiles):
        box = r.header.tile_box(i)
        x, y, w, h = box
        alone = codec.decode_region(r.data, box, model)
        for out in (whole[y : y + h, x : x + w], alone):
            got = psnr(img[y : y + h, x : x + w], out)
            assert entry.missed_target or got >= target, (i, got)


def exhaustive_levels(model, img, tile, target):
    """The lowest level whose measured reconstruction reaches ``target`` (+ margin), per tile: every level measured."""
    from codec.images.prep import prepare
    from codec.families.hyperprior.ratecontrol import TARGET_MARGIN_DB

    _, engine = codec.get_coder(model)
    boxes = tiles.grid_boxes(img.shape[1], img.shape[0], tile)
    lowest = np.full(len(boxes), quality.LEVELS - 1)
    for batch in engine.batches(prepare(img, "x"), boxes, 8):
        for level in range(quality.LEVELS - 1, -1, -1):
            m = engine.measure(batch.y, np.full(len(batch.ids), quality.code_of_level(level)), batch.originals, batch.masks)
            lowest[np.array(batch.ids)[m.psnr >= target + TARGET_MARGIN_DB]] = level
    return lowest


@pytest.mark.parametrize("target", [30.0, 34.0])
def test_chosen_levels_are_the_lowest_passing_levels(model, target):
    img = natural_image(128, 256, seed=0)
    r = codec.encode(img, model, target_psnr=target, tile_size=64, tools=("learned",))  # the learned levels alone
    chosen = np.array([t.quality_code for t in r.header.tiles])
    assert chosen.tolist() == quality.code_of_level(exhaustive_levels(model, img, 64, target)).tolist()


def test_target_psnr_needs_about_two_syntheses_per_tile(model, monkeypatch):
    """The secant search before the predictor took 4.5–4.8 syntheses per tile (Kodak mosaic, bench/speed.py)."""
    from codec.families.hyperprior import ratecontrol
    from codec.families.hyperprior.engine import Engine

    _, engine = codec.get_coder(model)
    ratecontrol._kappa(engine)  # once per engine: not the encode's work
    rows = []
    synthesize = Engine.synthesize
    monkeypatch.setattr(Engine, "synthesize", lambda self, y_hat, codes: rows.append(len(y_hat)) or synthesize(self, y_hat, codes))
    img = natural_image(384, 512, seed=1)
    for target in (31.0, 35.0):
        rows.clear()
        r = codec.encode(img, model, target_psnr=target, tile_size=64)
        assert sum(rows) / len(r.header.tiles) < 3.0, sum(rows) / len(r.header.tiles)
