import numpy as np
import pytest
from skimage import data

from codec.metrics import ms_ssim, psnr


@pytest.fixture(scope="module")
def pair():
    rng = np.random.default_rng(0)
    a = data.astronaut()
    b = np.clip(a.astype(int) + rng.integers(-6, 7, a.shape), 0, 255).astype(np.uint8)
    return a, b


def test_psnr_matches_mse_formula(pair):
    a, b = pair
    mse = np.mean((a.astype(float) - b) ** 2)
    assert psnr(a, b, rows_per_chunk=37) == pytest.approx(10 * np.log10(255**2 / mse), abs=1e-9)
    assert psnr(a, a) == float("inf")


def test_ms_ssim_identity_order_and_symmetry(pair):
    a, b = pair
    worse = np.clip(a.astype(int) + np.random.default_rng(1).integers(-40, 41, a.shape), 0, 255).astype(np.uint8)
    assert ms_ssim(a, a) == pytest.approx(1.0, abs=1e-6)
    assert 1.0 > ms_ssim(a, b) > ms_ssim(a, worse) > 0
    assert ms_ssim(a, b) == pytest.approx(ms_ssim(b, a), abs=1e-7)


def test_ms_ssim_gray_small_and_shape_errors(pair):
    a, b = pair
    assert 0 < ms_ssim(a[..., 0], b[..., 0]) < 1
    assert 0 < ms_ssim(a[:40, :40], b[:40, :40]) < 1  # fewer scales, weights renormalised
    assert np.isnan(ms_ssim(a[:10], b[:10]))
    with pytest.raises(ValueError, match="shapes differ"):
        ms_ssim(a, b[:100])


def test_ms_ssim_insensitive_to_offset_precision():
    # float32 on centred values: a flat bright image against itself plus a small step stays exact enough
    a = np.full((64, 64), 250, np.uint8)
    b = a.copy()
    b[:, 32:] = 251
    assert 0.99 < ms_ssim(a, b) < 1.0


def test_bd_rate_over_a_fixed_psnr_span():
    from codec.metrics import bd_rate

    ref_bpp, ref_psnr = [0.25, 0.5, 1.0, 2.0], [24.0, 27.0, 30.0, 33.0]
    half = [b / 2 for b in ref_bpp]  # the same PSNR at half the bits everywhere
    assert bd_rate(ref_bpp, ref_psnr, half, ref_psnr, bpp_range=(0, 10)) == pytest.approx(-50, abs=1e-6)
    assert bd_rate(ref_bpp, ref_psnr, half, ref_psnr, bpp_range=(0, 10), psnr_range=(25, 28)) == pytest.approx(-50)
    short = ([0.1, 0.2, 0.3], [22.0, 24.0, 26.0])  # never reaches 28 dB
    assert bd_rate(ref_bpp, ref_psnr, *short, bpp_range=(0, 10)) is not None  # its own common span: 24-26 dB
    assert bd_rate(ref_bpp, ref_psnr, *short, bpp_range=(0, 10), psnr_range=(25, 28)) is None
