"""The minnen2018 family: round trips through the API and the CLI, determinism, region and progressive
decoding, per-sub-tile stopping. A tiny random model where quality does not matter; the shipped one
(``minnen2018`` in the built-in registry) where it does."""

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import codec
from codec.errors import CorruptStreamError
from codec.metrics import psnr
from codec.families.minnen2018 import coding
from codec.families.minnen2018.model import (DC_STEP, GAIN_RMS, HEAD_BITS, TILE, ChannelwiseFC, Minnen2018Codec,
                                             Minnen2018Config, head_bits, head_values)
from codec.families.minnen2018.weights import weights_bytes
from codec.registry import LoadedModel, model_from_weights
from conftest import natural_image


@pytest.fixture(scope="module")
def tiny() -> LoadedModel:
    torch.manual_seed(0)
    net = Minnen2018Codec(Minnen2018Config(ctx_channels=8, enc_channels=(8, 8, 8, 8), dec_channels=(8, 8, 8, 8)))
    with torch.no_grad():
        net.bit_ones[:] = torch.linspace(1, 20, net.bits_per_iteration)  # a non-uniform entropy model
        net.bit_total[:] = 21
    blob = weights_bytes(net)
    return LoadedModel(model_from_weights(blob), "minnen2018@0", hashlib.sha256(blob).digest())


def _loaded(net) -> LoadedModel:
    blob = weights_bytes(net)
    return LoadedModel(model_from_weights(blob), "minnen2018@0", hashlib.sha256(blob).digest())


@pytest.fixture(scope="module")
def tiny_head() -> LoadedModel:
    """A tiny random @2-style model: every iteration codes its head (gain, mean colour) first."""
    torch.manual_seed(1)
    cfg = Minnen2018Config(ctx_channels=8, enc_channels=(8, 8, 8, 8), dec_channels=(8, 8, 8, 8), residual_gain=True)
    net = Minnen2018Codec(cfg)
    with torch.no_grad():
        net.bit_ones[:] = torch.linspace(1, 20, net.symbols_per_iteration)
        net.bit_total[:] = 21
    return _loaded(net)


@pytest.fixture(scope="module")
def image():
    return natural_image(70, 100, 1)  # not a multiple of 32 either way


def test_weights_round_trip_keeps_the_family_and_the_entropy_model(tiny):
    assert tiny.model.family == "minnen2018" and not tiny.model.training
    again = model_from_weights(weights_bytes(tiny.model))
    assert np.array_equal(again.bit_probabilities(3), tiny.model.bit_probabilities(3))
    assert tiny.model.bits_per_iteration == 128  # 32 code channels × 2 × 2 positions per 32×32 sub-tile


def test_encode_decode_round_trip_is_deterministic_and_matches_the_encoder(tiny, image):
    r = codec.encode(image, tiny, quality=0.25, tile_size=64)
    h = codec.read_header(r.data)
    assert h.model_id == "minnen2018@0" and h.tile_size == 64 and h.grid == (2, 2)
    assert all(t.quality == pytest.approx(4 / 16, abs=1e-4) for t in h.tiles)  # constant allocation: 4 iterations each
    out = codec.decode(r.data, tiny)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert psnr(image, out) == pytest.approx(r.psnr, abs=1e-9)  # the decoder reruns the encoder's reconstruction
    assert codec.encode(image, tiny, quality=0.25, tile_size=64).data == r.data  # same bits every time
    assert np.array_equal(codec.decode(r.data, tiny), out)


def test_grayscale_and_rgba_round_trip(tiny, image):
    gray = image[..., 0]
    assert codec.decode(codec.encode(gray, tiny, quality=0.125).data, tiny).shape == gray.shape
    rgba = np.concatenate([image, np.arange(70 * 100, dtype=np.uint32).reshape(70, 100, 1).astype(np.uint8)], axis=2)
    out = codec.decode(codec.encode(rgba, tiny, quality=0.125, tile_size=64).data, tiny)
    assert np.array_equal(out[..., 3], rgba[..., 3])


def test_bits_are_entropy_coded_and_decode_exactly(tiny, image):
    coded = coding.code_subtiles(tiny.model, image, iterations=3)
    cells = [(r, c) for r in range(3) for c in range(4)]
    blob = coding.pack_symbols(tiny.model, cells, coded.codes)
    back = coding.SubtileCodes(np.zeros((3, 4), dtype=np.int64), {})
    coding.unpack_symbols(tiny.model, cells, blob, back)
    assert np.array_equal(back.iterations, coded.codes.iterations)
    assert all(np.array_equal(back.bits[rc], coded.codes.bits[rc]) for rc in cells)
    assert coded.codes.bits[0, 0].shape == (3, 128)


def test_region_decode_equals_the_crop_of_the_full_decode(tiny, image):
    data = codec.encode(image, tiny, quality=0.125, tile_size=64).data
    full = codec.decode(data, tiny)
    for box in [(33, 20, 40, 30), (0, 0, 100, 70), (64, 64, 36, 6), (5, 40, 2, 2)]:
        x, y, w, h = box
        assert np.array_equal(codec.decode_region(data, box, tiny), full[y : y + h, x : x + w]), box


def test_region_decode_needs_only_the_causal_rectangle(tiny, image):
    data = codec.encode(image, tiny, quality=0.125, tile_size=64).data
    # within one 64² container tile's budget: a region in the top-left corner decodes; one in the far
    # corner (a 36×6 container tile) needs every sub-tile above and left of it, 100×70 pixels
    codec.decode_region(data, (0, 0, 10, 10), tiny, max_pixels=64 * 64)
    with pytest.raises(codec.CodecError, match="causal rectangle of 100×70"):
        codec.decode_region(data, (90, 60, 10, 10), tiny, max_pixels=64 * 64)


def test_prefix_decode_equals_the_decode_of_the_truncated_stream(tiny, image):
    data = codec.encode(image, tiny, quality=0.25, tile_size=64).data
    n_sub = 3 * 4
    for max_bits, k in [(n_sub * 128 * 2, 2), (0.5, 2), (n_sub * 128 * 2 - 1, 1), (1, 0), (1e9, 4)]:
        preview = codec.decode(data, tiny, max_bits=max_bits)
        assert np.array_equal(preview, codec.decode(coding.truncate(data, tiny, k), tiny)), max_bits
    assert len(coding.truncate(data, tiny, 1)) < len(data)
    assert all(t.missed_target for t in codec.read_header(coding.truncate(data, tiny, 1)).tiles)
    with pytest.raises(ValueError, match="max_bits"):
        codec.decode(data, tiny, max_bits=0)


def test_stopping_rule_adaptive_allocation(tiny, image):
    zero = coding.code_subtiles(tiny.model, image, target_psnr=0.0)  # the prediction alone reaches 0 dB
    assert zero.codes.iterations.max() == 0 and not zero.missed.any()
    never = coding.code_subtiles(tiny.model, image, target_psnr=99.0)
    assert (never.codes.iterations == coding.MAX_ITERATIONS).all() and never.missed.all()
    r = codec.encode(image, tiny, target_psnr=99.0, tile_size=64)
    assert r.missed_tiles == 4 and all(t.missed_target for t in codec.read_header(r.data).tiles)


def test_target_bpp_fits_the_budget(tiny, image):
    r = codec.encode(image, tiny, target_bpp=0.5, tile_size=64)
    assert r.bpp <= 0.5 and r.header.mode == "target_bpp"
    assert np.array_equal(codec.decode(r.data, tiny).shape, image.shape)


def test_damaged_tile_is_named(tiny, image):
    data = bytearray(codec.encode(image, tiny, quality=0.125, tile_size=64).data)
    data[-3] ^= 0xFF
    with pytest.raises(CorruptStreamError, match="tile 3"):
        codec.decode(bytes(data), tiny)


def test_channelwise_fc_is_per_channel():
    fc = ChannelwiseFC(4, 8)
    x = torch.randn(2, 4, 8, 8)
    y = fc(x)
    x2 = x.clone()
    x2[:, 1] += 1  # changing channel 1 changes only channel 1's output
    d = (fc(x2) - y).abs().amax(dim=(0, 2, 3))
    assert d[1] > 0 and d[[0, 2, 3]].max() == 0
    assert sum(p.numel() for p in fc.parameters()) == 4 * 64 * 64 + 4 * 64
    assert ChannelwiseFC.full_fc_parameters(4, 8) == 256 * 256 + 256


def test_hyperprior_streams_refuse_max_bits():
    data = codec.encode(natural_image(64, 64), quality=0.3, tile_size=64).data
    with pytest.raises(ValueError, match="minnen2018"):
        codec.decode(data, max_bits=0.5)


# --- the shipped model ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped():
    return codec.load_model("minnen2018")


def test_shipped_model_reaches_the_target_where_it_can_and_adapts_the_allocation(shipped):
    img = natural_image(64, 128, 0)
    const = coding.code_subtiles(shipped.model, img, iterations=8)
    target = float(np.percentile(10 * np.log10(3 * TILE * TILE * 255.0**2 / const.sse), 25))  # reachable for most
    rule = coding.STOP_MIN_GAIN if shipped.model.config.residual_gain else 0.0  # what codec.encode uses
    coded = coding.code_subtiles(shipped.model, img, target_psnr=target, min_gain=rule)
    max_sse = 3 * TILE * TILE * 255.0**2 / 10 ** (target / 10)
    assert ((coded.sse <= max_sse) | coded.missed).all()
    assert not coded.missed.all() and len(np.unique(coded.codes.iterations)) > 1  # spatially adaptive
    r = codec.encode(img, shipped, target_psnr=target, tile_size=64)
    out = codec.decode(r.data)  # the header names the model
    for rr in range(2):
        for cc in range(4):
            sl = np.s_[rr * 32 : rr * 32 + 32, cc * 32 : cc * 32 + 32]
            assert coded.missed[rr, cc] or psnr(img[sl], out[sl]) >= target


def test_shipped_model_previews_improve_with_more_bits(shipped):
    img = natural_image(64, 96, 1)
    data = codec.encode(img, shipped, quality=0.5).data  # 8 iterations per sub-tile
    scores = [psnr(img, codec.decode(data, max_bits=k * 6 * 128)) for k in (1, 2, 4, 8)]
    assert scores == sorted(scores) and scores[-1] > scores[0] + 1, scores


def test_cli_encode_info_decode_and_preview(tmp_path):
    img = natural_image(50, 80, 0)
    src, out, dec, prev = tmp_path / "in.png", tmp_path / "a.tlic", tmp_path / "a.png", tmp_path / "p.png"
    Image.fromarray(img).save(src)

    def run(*args):
        return subprocess.run([sys.executable, "-m", "codec", *map(str, args)], capture_output=True, text=True)

    r = run("encode", src, out, "--model", "minnen2018", "--quality", "0.25")
    assert r.returncode == 0, r.stderr
    meta = json.loads(run("info", out, "--json").stdout)
    assert meta["model_id"].startswith("minnen2018@") and meta["mode"] == "quality"
    assert run("decode", out, dec).returncode == 0
    assert np.array_equal(np.asarray(Image.open(dec)), codec.decode(out.read_bytes()))
    assert run("decode", out, prev, "--max-bits", "0.25").returncode == 0
    assert np.array_equal(np.asarray(Image.open(prev)), codec.decode(out.read_bytes(), max_bits=0.25))
    bad = run("decode", out, prev, "--max-bits", "-1")
    assert bad.returncode == 2 and "max-bits" in bad.stderr


# --- @2: the iteration head ----------------------------------------------------------------------------


def test_head_round_trips_gain_and_mean_colour():
    r = torch.randn(5, 3, TILE, TILE) * torch.tensor([0.3, 0.05, 0.01, 0.002, 0.1])[:, None, None, None]
    r[4] += torch.tensor([0.15, -0.1, 0.0])[:, None, None]  # a colour offset
    bits = head_bits(r)
    assert bits.shape == (5, HEAD_BITS) and set(bits.unique().tolist()) <= {0, 1}
    g, dc = head_values(bits)
    scaled_rms = (r * g).pow(2).mean(dim=(1, 2, 3)).sqrt()
    assert ((scaled_rms > GAIN_RMS / 2**0.5 * 0.99) & (scaled_rms < GAIN_RMS * 2**0.5 * 1.01))[:4].all()  # 3 dB steps
    mean = (r * g).mean(dim=(2, 3))
    assert ((mean - dc[:, :, 0, 0]).abs() <= DC_STEP / 2 + 1e-6).all()  # the mean colour to half a step
    assert np.array_equal(head_bits(r), bits)


def test_head_model_round_trip_region_and_prefix(tiny_head, image):
    r = codec.encode(image, tiny_head, quality=0.25, tile_size=64)
    out = codec.decode(r.data, tiny_head)
    assert psnr(image, out) == pytest.approx(r.psnr, abs=1e-9)
    coded = coding.code_subtiles(tiny_head.model, image, iterations=2)
    assert coded.codes.bits[0, 0].shape == (2, HEAD_BITS + 128)
    assert np.array_equal(codec.decode_region(r.data, (33, 20, 40, 30), tiny_head), out[20:50, 33:73])
    preview = codec.decode(r.data, tiny_head, max_bits=0.5)
    assert np.array_equal(preview, codec.decode(coding.truncate(r.data, tiny_head, 2), tiny_head))


def test_head_keeps_the_error_falling_whatever_the_network_adds():
    """The worst case for a residual coder: a decoder that adds nothing. @1 then stalls at the
    prediction forever; with the head every iteration still takes the mean colour to half a step of
    1/g, so a flat-coloured image's error falls with every iteration until it is coded to the 8-bit level."""
    torch.manual_seed(0)
    cfg = Minnen2018Config(ctx_channels=8, enc_channels=(8, 8, 8, 8), dec_channels=(8, 8, 8, 8))
    img = np.zeros((64, 64, 3), np.uint8)
    img[:32] = (250, 240, 10)  # saturated colours (what @1 never corrected)
    img[32:] = (30, 200, 90)
    img[:, 32:] //= 2
    for gain, expect_falls in ((False, False), (True, True)):
        net = Minnen2018Codec(Minnen2018Config(**{**cfg.to_dict(), "residual_gain": gain})).eval()
        with torch.no_grad():
            net.decoder.out.weight.zero_()
            net.decoder.out.bias.zero_()
        scores = [psnr(img, coding.code_subtiles(net, img, iterations=k, use_context=False).recon) for k in (0, 2, 4, 8)]
        if expect_falls:
            assert scores == sorted(scores) and scores[-1] > 45, scores
        else:
            assert max(scores) - min(scores) < 1e-9, scores  # a stall: iterations change nothing


def test_cli_warns_when_a_minnen2018_model_is_chosen(tmp_path):
    src = tmp_path / "in.png"
    Image.fromarray(natural_image(40, 64, 0)).save(src)

    def run(*args):
        return subprocess.run([sys.executable, "-m", "codec", *map(str, args)], capture_output=True, text=True)

    r = run("encode", src, tmp_path / "a.tlic", "--model", "minnen2018", "--quality", "0.125")
    assert r.returncode == 0 and "warning" in r.stderr and "below JPEG" in r.stderr and "minnen2018@" in r.stderr
    r = run("encode", src, tmp_path / "b.tlic", "--quality", "0.3")
    assert r.returncode == 0 and "warning" not in r.stderr


def test_shipped_model_error_keeps_falling_with_the_iterations(shipped):
    """Issue 29: @1's error stopped shrinking after 2-4 iterations; the shipped model's keeps falling."""
    img = natural_image(64, 128, 2)
    scores = [psnr(img, coding.code_subtiles(shipped.model, img, iterations=k).recon[:64, :128]) for k in (1, 2, 4, 8, 16)]
    assert scores == sorted(scores), scores
    assert scores[-1] - scores[2] > 1.0, scores  # 4 → 16 iterations still buys more than a dB


def test_stalled_subtiles_stop_and_are_marked_missed(shipped):
    img = natural_image(64, 128, 0)
    coded = coding.code_subtiles(shipped.model, img, target_psnr=60.0, min_gain=0.5)  # unreachable; stalls at once
    assert coded.missed.all() and coded.codes.iterations.max() < coding.MAX_ITERATIONS


def test_training_pass_codes_the_head_it_will_code_with(tiny_head):
    """The trainer's forward and the coder agree on the head: the symbols of iteration 1 start with the head
    of the prediction's residual, and every iteration's loss is measured at its own gain."""
    net = tiny_head.model
    torch.manual_seed(0)
    patch, target = torch.rand(3, 3, 2 * TILE, 2 * TILE), torch.rand(3, 3, TILE, TILE)
    use = torch.tensor([True, True, False])
    with torch.no_grad():
        ctx, losses, codes = net(patch, target, 3, use)
        pred = torch.where(use[:, None, None, None], net.predictor(patch), torch.full_like(target, 0.5))
    assert losses.shape == (3,) and codes.shape == (3, 3, HEAD_BITS + 128)
    assert torch.equal(codes[0, :, :HEAD_BITS].long(), head_bits(target - pred))
