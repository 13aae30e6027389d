"""Per-tile tools under a PSNR target (issue 23): JPEG XL lossy tiles, the pure choice of what to try, and
streams where every tile meets the target (v3 where a tile is not learned, v1/v2 bytes otherwise)."""

from __future__ import annotations

import numpy as np
import pytest

import codec
from codec import toolchoice
from codec.errors import CorruptStreamError
from codec.format import container
from codec.metrics import band_peaks, raster_band_psnr, raster_psnr
from codec.tilecoders import TileContext, avif444, j2k, jxl_lossy


def texture(h, w, bands, top, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    planes = [0.5 + 0.3 * np.sin(0.05 * (b + 1) * xx + b) * np.cos(0.07 * yy) + rng.normal(0, 0.04, (h, w))
              for b in range(bands)]
    return np.rint(np.clip(np.stack(planes, -1), 0, 1) * top).astype(np.uint8 if top <= 255 else np.uint16)


def tile_psnrs(header, ref, dec, peaks=None):
    """Per tile: its worst band's PSNR against the image's band ``peaks`` (rasters), or the 8-bit PSNR."""
    out = []
    for x, y, w, h in header.boxes():
        a, b = ref[y : y + h, x : x + w], dec[y : y + h, x : x + w]
        out.append(raster_band_psnr(a, b, peaks=peaks).min() if peaks is not None else
                   10 * np.log10(255**2 / max(np.mean((a.astype(float) - b) ** 2), 1e-12)))
    return np.array(out)


@pytest.mark.parametrize("bands,top,nodata", [(3, 255, None), (1, 255, None), (5, 4000, 0), (2, 60000, None)])
def test_jxl_lossy_tiles_decode_to_their_shape_with_nodata_exact(bands, top, nodata):
    block = texture(40, 70, bands, top)
    if nodata is not None:
        block[:8, :9] = nodata
    ctx = TileContext(40, 70, bands, block.dtype.name, nodata)
    out = jxl_lossy.decode(jxl_lossy.encode_at(block, ctx, 0.5), ctx)
    assert out.shape == block.shape and out.dtype == block.dtype
    assert raster_psnr(block, out, peaks=top) > 30
    if nodata is not None:
        assert (out[:8, :9] == nodata).all() and not np.all(out[8:] == nodata, axis=2).any()


def test_a_damaged_jxl_lossy_payload_is_corrupt():
    block = texture(32, 32, 3, 255)
    ctx = TileContext(32, 32, 3, "uint8")
    payload = jxl_lossy.encode_at(block, ctx, 1.0)
    for bad in (payload[:5], b"\x09" + payload[1:], payload[:-40]):
        with pytest.raises(CorruptStreamError):
            jxl_lossy.decode(bad, ctx)


@pytest.mark.parametrize("target", [30.0, 36.0, 42.0])
def test_the_distance_search_meets_the_target_or_says_it_cannot(target):
    block = texture(64, 64, 3, 255, seed=3)
    ctx = TileContext(64, 64, 3, "uint8")
    psnr_of = toolchoice.photo_psnr(block)
    trial = jxl_lossy.encode_to_psnr(block, ctx, target, psnr_of)
    assert trial is not None and trial.psnr >= target
    assert psnr_of(jxl_lossy.decode(trial.payload, ctx)) == pytest.approx(trial.psnr)
    assert jxl_lossy.encode_to_psnr(block, ctx, 60.0, psnr_of) is None  # beyond JPEG XL lossy on this noise


@pytest.mark.parametrize("bands,nodata", [(3, None), (1, None), (4, 0), (3, 0)])
def test_avif_tiles_reach_a_target_and_keep_their_shape_and_nodata(bands, nodata):
    block = texture(48, 72, bands, 255, seed=bands)
    if nodata is not None:
        block[:6, :9] = nodata
    ctx = TileContext(48, 72, bands, "uint8", nodata)
    valid = None if nodata is None else ~(block == nodata).all(-1)
    psnr_of = toolchoice.raster_psnr(block, valid, band_peaks(block, valid))
    trial = avif444.encode_to_psnr(block, ctx, 38.0, psnr_of)
    assert trial is not None and trial.psnr >= 38.0
    out = avif444.decode(trial.payload, ctx)
    assert out.shape == block.shape and out.dtype == np.uint8 and psnr_of(out) == pytest.approx(trial.psnr)
    if nodata is not None:
        assert (out[:6, :9] == nodata).all() and not (out[valid] == nodata).all(-1).any()
    assert avif444.encode_to_psnr(block, ctx, 38.0, psnr_of, max_bytes=50) is None  # nothing that small passes


@pytest.mark.parametrize("bands,top,nodata", [(3, 255, None), (1, 255, None), (4, 4000, 0), (2, 60000, None)])
def test_j2k_tiles_reach_a_target_for_any_samples_with_nodata_exact(bands, top, nodata):
    block = texture(40, 70, bands, top, seed=bands)
    if nodata is not None:
        block[:8, :9] = nodata
    ctx = TileContext(40, 70, bands, block.dtype.name, nodata)
    valid = None if nodata is None else ~(block == nodata).all(-1)
    psnr_of = toolchoice.raster_psnr(block, valid, band_peaks(block, valid))
    trial = j2k.encode_to_psnr(block, ctx, 44.0, psnr_of)
    assert trial is not None and trial.psnr >= 44.0
    out = j2k.decode(trial.payload, ctx)
    assert out.shape == block.shape and out.dtype == block.dtype and psnr_of(out) == pytest.approx(trial.psnr)
    if nodata is not None:
        assert (out[:8, :9] == nodata).all() and not (out[valid] == nodata).all(-1).any()
    for bad in (trial.payload[:10], b"\x03" + trial.payload[1:]):
        with pytest.raises(CorruptStreamError):
            j2k.decode(bad, ctx)


def test_j2k_parts_are_bare_codestreams_and_older_jp2_parts_still_decode(monkeypatch):
    block = texture(48, 64, 4, 4000, seed=3)
    ctx = TileContext(48, 64, 4, "uint16")
    bare = j2k.encode_at(block, ctx, 50.0)
    monkeypatch.setattr(j2k, "CODESTREAM", "JP2")  # how streams before the bare codestream wrote a part
    boxed = j2k.encode_at(block, ctx, 50.0)
    assert b"jP  " not in bare and b"jP  " in boxed and len(bare) < len(boxed)
    assert np.array_equal(j2k.decode(bare, ctx), j2k.decode(boxed, ctx))


@pytest.mark.parametrize("h,w,bands", [(256, 256, 3), (200, 56, 4), (64, 64, 1)])
def test_avif_parts_leave_out_a_known_header_and_decode_the_same(monkeypatch, h, w, bands):
    from codec.tilecoders import avif_headers

    block = texture(h, w, bands, 255, seed=h)
    ctx = TileContext(h, w, bands, "uint8")
    short = avif444.encode_at(block, ctx, 70)
    # a libavif whose headers match no template (strip() reads its module's table): files kept whole
    monkeypatch.setattr(avif_headers, "TEMPLATES", ())
    whole = avif444.encode_at(block, ctx, 70)
    monkeypatch.undo()
    parts = len(codec.tilecoders.parts.parts_of(bands))
    assert len(whole) - len(short) >= 260 * parts  # each part's ~270-byte header left out
    assert b"ftyp" in whole and b"ftyp" not in short
    assert np.array_equal(avif444.decode(short, ctx), avif444.decode(whole, ctx))  # old whole-file parts decode too


def test_a_damaged_avif_payload_is_corrupt():
    block = texture(32, 32, 3, 255)
    ctx = TileContext(32, 32, 3, "uint8")
    payload = avif444.encode_at(block, ctx, 80)
    for bad in (payload[:20], b"\x02" + payload[1:], payload[:10] + bytes(len(payload) - 10)):
        with pytest.raises(CorruptStreamError):
            avif444.decode(bad, ctx)
    with pytest.raises(CorruptStreamError):
        avif444.decode(payload, TileContext(32, 32, 3, "uint16"))


def test_avif_is_searched_at_mid_targets_only_on_dense_tiles(monkeypatch):
    samples = 64 * 64 * 3
    dense_bytes = int(toolchoice.AVIF_DENSE_BPS * samples / 8) + 1
    assert toolchoice.avif_worth_trying(38.0, False, dense_bytes, samples)
    assert not toolchoice.avif_worth_trying(38.0, False, dense_bytes - 2, samples)
    assert toolchoice.avif_worth_trying(38.0, False, None, samples)  # nothing reached the target yet
    assert toolchoice.avif_worth_trying(34.0, False, 10, samples)  # below AVIF_FAST_MAX_DB: always
    assert toolchoice.avif_worth_trying(40.0, True, 10, samples)  # a thorough effort: always

    rng = np.random.default_rng(3)
    smooth = np.repeat(np.linspace(40, 200, 64, dtype=np.uint8)[None, :, None], 64, 0).repeat(3, 2)
    busy = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    ctx, tried = TileContext(64, 64, 3, "uint8"), []
    real = avif444.encode_to_psnr
    monkeypatch.setattr(avif444, "encode_to_psnr", lambda *a, **k: tried.append(a[0]) or real(*a, **k))
    missed = toolchoice.LearnedTile(bytes=20000, psnr=30.0, missed=True, samples=samples)
    for block in (smooth, busy):
        choice = toolchoice.choose_tile(block, ctx, missed, 38.0, toolchoice.photo_psnr(block), toolchoice.TOOLS)
        assert choice.psnr >= 38.0 and not choice.missed
    assert len(tried) == 1 and tried[0] is busy  # JPEG 2000 codes the smooth tile in few bits: AVIF not searched


def test_other_tools_are_tried_only_where_they_can_win():
    allowed = toolchoice.TOOLS
    cheap = toolchoice.LearnedTile(bytes=100, psnr=40.0, missed=False, samples=64 * 64 * 3)
    dear = toolchoice.LearnedTile(bytes=20000, psnr=40.0, missed=False, samples=64 * 64 * 3)
    missed = toolchoice.LearnedTile(bytes=20000, psnr=35.0, missed=True, samples=64 * 64 * 3)
    u8, u16 = TileContext(64, 64, 3, "uint8"), TileContext(64, 64, 3, "uint16")
    assert toolchoice.tools_to_try(cheap, allowed, u8) == []
    assert toolchoice.tools_to_try(cheap, allowed, u8, 34.0) == ["j2k", "avif444"]  # below 37 dB AVIF wins cheap tiles
    assert toolchoice.tools_to_try(cheap, allowed, u16, 34.0) == []  # ... where it can code them
    assert toolchoice.tools_to_try(dear, allowed, u8) == ["j2k", "avif444"]  # at 38 dB: on dense tiles only
    assert toolchoice.tools_to_try(dear, allowed, u8, 42.0) == ["j2k", "nearlossless"]
    assert toolchoice.tools_to_try(dear, allowed, u8, 38.0, thorough=True) == ["j2k", "avif444", "jxl_lossy",
                                                                               "nearlossless"]
    assert toolchoice.tools_to_try(dear, allowed, u8, 46.0, thorough=True) == ["j2k", "jxl_lossy", "nearlossless"]
    assert toolchoice.tools_to_try(dear, allowed, u8, 46.0) == ["j2k", "nearlossless"]  # from NEAR_MIN_DB at effort 0
    assert toolchoice.tools_to_try(dear, allowed, u8, 30.0) == ["j2k", "avif444"]  # AVIF at effort 0 at low targets
    assert toolchoice.tools_to_try(dear, allowed, u16, 30.0) == ["j2k"]  # ... for 8-bit tiles
    assert toolchoice.tools_to_try(missed, allowed, u8) == ["j2k", "avif444", "jxl_exact"]
    assert toolchoice.tools_to_try(missed, allowed, u16, thorough=True) == ["j2k", "jxl_lossy", "nearlossless",
                                                                            "jxl_exact"]
    assert toolchoice.tools_to_try(missed, ("jxl_exact",), u8) == ["jxl_exact"]
    assert toolchoice.allowed_tools(None, lossless_fallback=False) == ()
    with pytest.raises(ValueError, match="unknown per-tile tool"):
        toolchoice.allowed_tools(("webp",))


@pytest.mark.parametrize("shape", [(100, 150, 3), (100, 150), (100, 150, 4)])
def test_every_photo_tile_meets_a_target_beyond_the_model(shape):
    img = texture(100, 150, 3, 255, seed=5)
    img = img[..., 0] if len(shape) == 2 else img
    if len(shape) == 3 and shape[2] == 4:
        img = np.concatenate([img, texture(100, 150, 1, 255, seed=6)], axis=2)
    r = codec.encode(img, None, target_psnr=44.0, tile_size=64)
    header = codec.read_header(r.data)
    assert r.missed_tiles == 0 and header.version == container.CODER_VERSION
    dec = codec.decode(r.data)
    assert dec.shape == img.shape
    colour = (slice(None), slice(None), slice(0, 3)) if img.ndim == 3 else (slice(None), slice(None))
    assert (tile_psnrs(header, img[colour], dec[colour]) >= 44.0 - 0.05).all()
    if img.ndim == 3 and img.shape[2] == 4:
        assert np.array_equal(dec[..., 3], img[..., 3])
    assert np.array_equal(codec.decode_region(r.data, (30, 20, 70, 60)), dec[20:80, 30:100])


def test_all_learned_photos_keep_version_1():
    r = codec.encode(texture(70, 90, 3, 255), None, quality=0.5, tile_size=64)
    assert codec.read_header(r.data).version == container.FORMAT_VERSION


def test_every_raster_tile_meets_the_target_and_the_flag_stays_when_tools_are_excluded():
    img = texture(90, 130, 4, 3000, seed=7)
    r = codec.encode(img, None, target_psnr=50.0, tile_size=64)
    dec = codec.decode(r.data)
    assert r.missed_tiles == 0 and (tile_psnrs(r.header, img, dec, band_peaks(img)) >= 50.0 - 0.05).all()
    assert np.array_equal(codec.decode_region(r.data, (10, 50, 100, 40)), dec[50:90, 10:110])
    flagged = codec.encode(img, None, target_psnr=80.0, tile_size=64, tools=("jxl_lossy",))
    assert flagged.missed_tiles > 0


def test_a_raster_target_holds_for_every_band_against_its_own_range():
    """Issue 23's Sentinel-2 case: a band valued 0–97 beside bands up to ~4,500 must meet the target
    against its own range, not the image's largest value (which once let it flatten)."""
    img = texture(70, 90, 3, 4500, seed=3)
    img[..., 2] = np.rint(img[..., 2] / 4500 * 97).astype(np.uint16)  # the cirrus-like band
    r = codec.encode(img, None, target_psnr=45.0, tile_size=64)
    dec = codec.decode(r.data)
    peaks = band_peaks(img)
    assert peaks[2] <= 97 < peaks[0]
    assert r.missed_tiles == 0
    assert (tile_psnrs(r.header, img, dec, peaks) >= 45.0 - 0.05).all()
    assert r.band_psnr is not None and r.band_psnr.min() >= 45.0 - 0.05
    assert r.band_psnr == pytest.approx(raster_band_psnr(img, dec), abs=0.02)


@pytest.mark.parametrize("dtype,target", [("uint8", 44.0), ("uint16", 50.0)])
def test_near_lossless_aimed_at_a_psnr_takes_the_largest_bound_that_meets_it(dtype, target):
    from codec.metrics import band_peaks
    from codec.tilecoders import nearlossless

    top = 255 if dtype == "uint8" else 4000
    block = texture(64, 64, 3, top, seed=11).astype(dtype)
    ctx = TileContext(64, 64, 3, dtype)
    psnr_of = toolchoice.raster_psnr(block, None, band_peaks(block))
    trial = toolchoice.near_to_psnr(block, ctx, target, psnr_of)
    assert trial is not None and trial.psnr >= target
    assert np.abs(nearlossless.decode(trial.payload, ctx).astype(int) - block).max() <= trial.max_error
    looser = nearlossless.encode_within(block, ctx, trial.max_error + 2)  # a bound two steps wider misses it
    assert psnr_of(looser.decoded) < target
    assert toolchoice.near_to_psnr(block, ctx, target, psnr_of, max_bytes=len(trial.payload)) is None
    assert toolchoice.near_to_psnr(block, ctx, 200.0, psnr_of) is None  # beyond any bound ≥ 1: lossless's job


def test_tile_searches_on_threads_keep_order_and_bytes(monkeypatch):
    """map_tiles returns results in input order, and an encode's bytes do not depend on the search threads."""
    import threading
    import time

    seen = set()

    def slow_first(k):
        seen.add(threading.current_thread().name)
        time.sleep(0.02 if k == 0 else 0.0)
        return k * k

    assert list(toolchoice.map_tiles(slow_first, range(9), workers=3)) == [k * k for k in range(9)]
    assert len(seen) > 1
    img = texture(160, 200, 3, 255, seed=7)
    raster = texture(96, 130, 4, 4000, seed=8)
    out = {}
    for threads in ("1", "2"):
        monkeypatch.setenv("OMP_NUM_THREADS", threads)
        assert toolchoice.tool_workers() == int(threads)
        out[threads] = (codec.encode(img, None, target_psnr=44, tile_size=64).data,
                        codec.encode(raster, None, target_psnr=44, tile_size=64).data,
                        codec.encode(raster, None, max_error=3, tile_size=64).data)
    assert out["1"] == out["2"]
    from codec import tilecoders

    coders = {tilecoders.coder(t.coder).name for t in container.read_header(out["2"][0]).tiles}
    assert coders - {"learned"}  # tiles another tool coded went through the threads


def test_j2k_reaches_high_targets_on_8bit_tiles_past_where_the_9_7_levels_off():
    """OpenJPEG's 9/7 levels off near 50 dB on 8-bit tiles; the search goes on with the reversible 5/3."""
    block = texture(64, 64, 3, 255, seed=11)
    ctx, psnr_of = TileContext(64, 64, 3, "uint8"), toolchoice.photo_psnr(block)
    for target in (50.0, 53.0):
        trial = j2k.encode_to_psnr(block, ctx, target, psnr_of)
        assert trial is not None and psnr_of(j2k.decode(trial.payload, ctx)) >= target


def test_a_thorough_effort_stops_the_j2k_search_closer_to_the_target():
    """Effort ≥ 1 searches JPEG 2000 to within THOROUGH_J2K_TOLERANCE_DB of the target: on these tiles no more
    bytes than effort 0's search, still at or above the target, and closer to it where effort 0 stopped off."""
    closer = 0
    for seed in range(6):
        block = texture(96, 96, 3, 255, seed=20 + seed)
        ctx, psnr_of = TileContext(96, 96, 3, "uint8"), toolchoice.photo_psnr(block)
        learned = toolchoice.LearnedTile(bytes=10**6, psnr=0.0, missed=True, samples=block.size)
        fast = toolchoice.choose_tile(block, ctx, learned, 38.0, psnr_of, ("j2k", "jxl_exact"))
        slow = toolchoice.choose_tile(block, ctx, learned, 38.0, psnr_of, ("j2k", "jxl_exact"), thorough=True)
        assert fast.coder == slow.coder == "j2k" and slow.psnr >= 38.0
        assert len(slow.payload) <= len(fast.payload)
        if fast.psnr - 38.0 >= toolchoice.THOROUGH_J2K_TOLERANCE_DB:
            closer += slow.psnr < fast.psnr
    assert closer >= 2


def test_a_thorough_effort_searches_avif_at_the_slower_speed(monkeypatch):
    """Effort 0 codes AVIF at avif444.SPEED below 37 dB, a thorough effort at THOROUGH_AVIF_SPEED; both decode."""
    speeds = []
    search = avif444.encode_to_psnr

    def spy(*args, speed=avif444.SPEED, **kw):
        speeds.append(speed)
        return search(*args, speed=speed, **kw)

    monkeypatch.setattr(avif444, "encode_to_psnr", spy)
    block = texture(64, 64, 3, 255, seed=5)
    ctx, psnr_of = TileContext(64, 64, 3, "uint8"), toolchoice.photo_psnr(block)
    learned = toolchoice.LearnedTile(bytes=10**6, psnr=0.0, missed=True, samples=block.size)
    for thorough in (False, True):
        choice = toolchoice.choose_tile(block, ctx, learned, 34.0, psnr_of, ("avif444", "jxl_exact"), thorough)
        assert choice.coder == "avif444" and psnr_of(avif444.decode(choice.payload, ctx)) >= 34.0
    assert speeds == [avif444.SPEED, toolchoice.THOROUGH_AVIF_SPEED] and avif444.SPEED != toolchoice.THOROUGH_AVIF_SPEED
    # at effort 0 from 37 dB (dense tiles only) the faster speed: the slower one cost 25% of the encode for 1.4%
    assert toolchoice.avif_speed(38.0, False) == toolchoice.AVIF_DENSE_SPEED > avif444.SPEED
    assert toolchoice.avif_speed(38.0, True) == toolchoice.THOROUGH_AVIF_SPEED
