"""The pure helpers of bench/rd.py: the tile grid of tile_psnrs and the bisection of lowest_passing."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from rd import lowest_passing, tile_psnrs  # noqa: E402


def test_tile_psnrs_follows_the_codec_grid_with_partial_edge_tiles():
    ref = np.zeros((300, 600, 3), np.uint8)
    rec = ref.copy()
    rec[256:, 512:] = 10  # only the last (partial, 44×88) tile differs
    p = tile_psnrs(ref, rec, tile=256)
    assert p.shape == (2 * 3,)
    assert np.isinf(p[:-1]).all()
    assert p[-1] == pytest.approx(10 * np.log10(255**2 / 100))


@pytest.mark.parametrize("threshold", [0, 1, 37, 99, 100])
def test_lowest_passing_finds_the_threshold_with_few_calls(threshold):
    calls = []

    def passes(k):
        calls.append(k)
        return k >= threshold

    assert lowest_passing(passes, 0, 100) == threshold
    assert len(calls) <= 8


def test_lowest_passing_none_when_even_the_top_fails():
    assert lowest_passing(lambda k: False, 0, 100) is None
    assert lowest_passing(lambda k: k >= 5, 5, 5) == 5


def test_pipeline_steady_state_excludes_the_first_batch_and_start_up():
    """bench/pipeline_throughput: steady-state MP/s runs from the first batch's arrival to the last row's."""
    from pipeline_throughput import ArrivalClock, overheads

    clock = ArrivalClock()
    clock.times = [100.0, 100.001, 110.0, 110.001, 120.0, 120.001]  # three batches of two rows, 10 s apart
    clock.pixels = [1_000_000] * 6
    steady = clock.steady()
    assert steady["images"] == 4 and steady["seconds"] == pytest.approx(20.001)
    assert steady["mp_s"] == pytest.approx(4 / 20.001)
    assert np.isnan(ArrivalClock().steady()["mp_s"])
    clock.times = [5.0, 5.001]  # one batch only
    assert np.isnan(clock.steady()["mp_s"])
    o = overheads({"mp_s": 0.25}, {"mp_s": 0.15, "steady": {"mp_s": 0.2}})
    assert o["overhead_pct"] == pytest.approx(40) and o["steady_overhead_pct"] == pytest.approx(20)


def _raster(h=300, w=600, b=2, seed=3):
    rng = np.random.default_rng(seed)
    base = np.cumsum(rng.integers(-20, 21, (h, w, b)), axis=1) + 2000
    r = np.clip(base, 1, 4000).astype(np.uint16)
    r[:40, :60] = 0  # a nodata corner
    return r


def test_gdal_columns_keep_their_promises():
    import satellite_rd as s

    r = _raster()
    n, dec, _, _ = s.gdal_lerc(r, 16.0)
    assert n > 0 and np.abs(dec.astype(int) - r).max() <= 16
    n_exact, dec, _, _ = s.gdal_cog(r, "DEFLATE", predictor=2)
    assert np.array_equal(dec, r)
    n, dec, _, _ = s.jpegxl_blocks(r, None, 12, block=256)  # 2×3 blocks, the last ones partial
    assert np.array_equal(dec, r)
    n_lossy, dec, _, _ = s.jpegxl_blocks(r, 2.0, 12, block=256)
    assert n_lossy < n and dec.shape == r.shape


def test_per_band_search_reaches_the_target_with_the_cheapest_setting():
    import imagecodecs as ic
    import satellite_rd as s
    from codec.metrics import band_peaks, raster_band_psnr

    r = _raster()
    valid = ~(r == 0).all(2)
    peaks = band_peaks(r, valid)

    def j2k(band, level):
        blob = (ic.jpeg2k_encode(band, level=0, reversible=True) if level is None
                else ic.jpeg2k_encode(band, level=level))
        return len(blob), ic.jpeg2k_decode(blob)

    n, dec, exact = s.per_band_to_target(r, valid, peaks, 45.0, j2k, 20.0, 110.0)
    got = raster_band_psnr(r, dec, valid, peaks)
    assert exact == 0 and (got >= 45.0).all() and got.min() < 47.0  # reached, and not far beyond it
    n_hi, _, _ = s.per_band_to_target(r, valid, peaks, 55.0, j2k, 20.0, 110.0)
    assert n_hi > n
