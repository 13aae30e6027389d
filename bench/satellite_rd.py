"""Satellite benchmark: 16-bit multi-band rasters, our learned codec against JPEG 2000 and JPEG XL.

    python bench/satellite_rd.py [--models default@2 satellite@1] [--quick] [--out bench/results]

On the held-out scenes of ../shared/data/satellite/train only (:func:`codec.training.satellite.held_out`;
training never reads them), per file:

* lossy curves, bits per sample vs raster PSNR: our codec at several qualities for each model,
  JPEG 2000 (OpenJPEG through imagecodecs, 9/7 irreversible, per band, several quality levels) and
  JPEG XL (libjxl through imagecodecs, per band, several distances); both anchors are told the
  image's effective bit depth (``bitspersample``: 11 for WorldView, 16 for Landsat L1 scaled to 16);
* BD-rate of each model against each anchor (per file, then the mean over files);
* lossless bits per sample: JPEG XL lossless, reversible JPEG 2000 (5/3), deflate as GeoTIFFs store
  it (tifffile zlib + horizontal predictor) and ours (``lossless=True``, the
  codec's exact mode inside the TLIC container);
* GDAL's own options beside them (issue 27), as ``gdal_translate -of COG`` writes them with rasterio's
  bundled GDAL (in memory, NODATA=0, no overviews): ``COMPRESS=LERC_ZSTD`` at several ``MAX_Z_ERROR``,
  ``COMPRESS=DEFLATE PREDICTOR=2`` (lossless), and ``COMPRESS=JXL`` — that GDAL lacks the JXL codec, so
  "gdal-jxl" is libjxl through imagecodecs per band in 512² blocks, as a COG would tile it;
* archival targets on WHOLE scenes (no crop): the bytes each codec needs to keep 38, 45 and 50 dB in every
  band (each against its own valid range) and the bounds ±4, ±16, ±64. Ours is ``codec.encode(target_psnr=T)``
  (kept per 256² tile and band: stricter) or ``max_error=E``; JPEG 2000 and gdal-jxl are searched per band
  to reach T over the whole band (the most a per-band anchor can be tuned); LERC's one MAX_Z_ERROR is
  searched for the worst band, or set to E for a bound;
* speed in MP·bands/s (encode and decode) for every codec, with the load average (2 shared cores).

    python bench/satellite_rd.py --no-curves   # only the archival targets (satellite_rd_targets.json)

Metrics (the issue's definition): bits per sample = bits / (pixels × bands); PSNR = mean over bands
of 10·log10(peak² / MSE_b) over valid pixels (a pixel is nodata when all its bands are 0), peak =
the image's largest valid value. Anchors code nodata pixels as they are (zeros); ours codes a mask.

Our codec is driven through one function, :func:`ours`: ``codec.encode(raster, model, quality=…,
nodata=0)`` (or ``lossless=True``) and ``codec.decode``, the raster API of issue 17 (stream version 2:
band triplets, masks, side information all counted in the stream's bytes).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

SAT = ROOT.parent / "shared" / "data" / "satellite" / "train"
NODATA = 0
QUALITIES = (0.0, 0.25, 0.5, 0.75, 1.0)
MAX_SIDE = 512  # larger files are measured on their centre crop (a shared 2-core machine's time budget)
J2K_LEVELS = (30, 35, 40, 45, 50, 55, 60, 65)  # OpenJPEG's fixed-quality PSNR (dB) per band, on its own peak
JXL_DISTANCES = (0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.5, 4.0)
ANCHORS = ("jpeg2000", "jpegxl", "gdal-jxl", "gdal-lerc")  # the lossy anchors BD-rates are taken against
BD_RANGE = (0.02, 6.0)  # bits per sample: 16-bit samples span a far wider rate range than 8-bit RGB


# ---- codecs: raster (H, W, B) uint16 → (bytes, decoded, encode s, decode s) ------------------


@dataclass
class Point:
    setting: float
    bytes: int
    bps: float
    psnr: float
    encode_s: float
    decode_s: float


@dataclass
class Curve:
    codec: str
    points: list[Point] = field(default_factory=list)
    note: str = ""


def effective_bits(raster: np.ndarray) -> int:
    """Bits the samples really use (≤ 16): what the anchors are told as ``bitspersample``."""
    return max(1, int(raster.max()).bit_length())


def per_band(raster: np.ndarray, enc, dec, size=len) -> tuple[int, np.ndarray, float, float]:
    """Code each band on its own with ``enc(band) -> stream`` / ``dec(stream) -> band``; ``size(stream)``: bytes."""
    total, out, te, td = 0, np.empty_like(raster), 0.0, 0.0
    for b in range(raster.shape[2]):
        band = np.ascontiguousarray(raster[:, :, b])
        t = time.perf_counter()
        blob = enc(band)
        te += time.perf_counter() - t
        t = time.perf_counter()
        out[:, :, b] = np.asarray(dec(blob)).reshape(band.shape)
        td += time.perf_counter() - t
        total += size(blob)
    return total, out, te, td


def jpeg2k(raster, level, bits):
    import imagecodecs as ic

    return per_band(raster, lambda b: ic.jpeg2k_encode(b, level=level, bitspersample=bits, numthreads=1),
                    lambda s: ic.jpeg2k_decode(s, numthreads=1))


def jpeg2k_lossless(raster, bits):
    import imagecodecs as ic

    return per_band(raster, lambda b: ic.jpeg2k_encode(b, level=0, reversible=True, bitspersample=bits, numthreads=1),
                    lambda s: ic.jpeg2k_decode(s, numthreads=1))


def jpegxl(raster, distance, bits):
    import imagecodecs as ic

    return per_band(raster, lambda b: ic.jpegxl_encode(b, distance=distance, bitspersample=bits, numthreads=1),
                    lambda s: ic.jpegxl_decode(s, numthreads=1))


def jpegxl_lossless(raster, bits):
    import imagecodecs as ic

    return per_band(raster, lambda b: ic.jpegxl_encode(b, lossless=True, bitspersample=bits, numthreads=1),
                    lambda s: ic.jpegxl_decode(s, numthreads=1))


def deflate_tiff(raster):
    """The whole raster as a GeoTIFF would store it: zlib with the horizontal predictor."""
    import io

    import tifffile

    t = time.perf_counter()
    buf = io.BytesIO()
    tifffile.imwrite(buf, raster if raster.shape[2] > 1 else raster[:, :, 0], compression="zlib",
                     predictor=True, photometric="minisblack", planarconfig="contig")
    blob = buf.getvalue()
    te = time.perf_counter() - t
    t = time.perf_counter()
    out = tifffile.imread(io.BytesIO(blob)).reshape(raster.shape)
    return len(blob), out, te, time.perf_counter() - t


def ours(raster: np.ndarray, nodata, model, quality: float | None, lossless: bool = False):
    """Our codec on a raster: (bytes, decoded uint16 raster, encode s, decode s)."""
    import codec

    kw = {"lossless": True} if lossless else {"quality": quality}
    t = time.perf_counter()
    res = codec.encode(raster, model=model, nodata=nodata, **kw)
    te = time.perf_counter() - t
    t = time.perf_counter()
    out = np.asarray(codec.decode(res.data, model=model)).reshape(raster.shape)
    return len(res.data), out, te, time.perf_counter() - t


# ---- GDAL's own options: what a GDAL user picks (rasterio's bundled GDAL, the COG driver) ---------

LERC_ERRORS = (1, 2, 4, 8, 16, 32, 64, 128, 256)  # MAX_Z_ERROR, in sample units
COG_BLOCK = 512  # the COG driver's default block size; the JPEG XL stand-in codes the same blocks


def gdal_cog(raster: np.ndarray, compress: str, **creation) -> tuple[int, np.ndarray, float, float]:
    """The raster as ``gdal_translate -of COG -co COMPRESS=<compress> [-co KEY=VALUE…]`` writes it (in
    memory, every band, ``NODATA=0`` as the file declares, no overviews: only full resolution is counted,
    as in our stream)."""
    import warnings

    from rasterio.errors import NotGeoreferencedWarning
    from rasterio.io import MemoryFile

    h, w, b = raster.shape
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        t = time.perf_counter()
        with MemoryFile() as mf:
            with mf.open(driver="COG", width=w, height=h, count=b, dtype=raster.dtype.name, nodata=NODATA,
                         compress=compress, overviews="NONE", blocksize=COG_BLOCK, **creation) as ds:
                ds.write(np.moveaxis(raster, 2, 0))
            blob = mf.read()
        te = time.perf_counter() - t
        t = time.perf_counter()
        with MemoryFile(blob) as mf, mf.open() as ds:
            out = np.ascontiguousarray(np.moveaxis(ds.read(), 0, 2))
    return len(blob), out, te, time.perf_counter() - t


def gdal_lerc(raster, max_z_error: float):
    """``COMPRESS=LERC_ZSTD -co MAX_Z_ERROR=E``: LERC's bound, then zstd (GDAL's recommended LERC form)."""
    return gdal_cog(raster, "LERC_ZSTD", max_z_error=max_z_error)


def jpegxl_blocks(raster: np.ndarray, distance: float | None, bits: int, block: int = COG_BLOCK):
    """``COMPRESS=JXL`` as a COG would store it: libjxl (imagecodecs) per band in ``block``² tiles (``distance``
    None: lossless). rasterio's bundled GDAL has no JXL codec, so this stands in for it (the TIFF's own
    tile index is not counted)."""
    import imagecodecs as ic

    h, w, _ = raster.shape
    boxes = [(y, x) for y in range(0, h, block) for x in range(0, w, block)]

    def enc(band):
        kw = {"lossless": True} if distance is None else {"distance": distance}
        return [ic.jpegxl_encode(np.ascontiguousarray(band[y : y + block, x : x + block]), bitspersample=bits,
                                 numthreads=1, **kw) for y, x in boxes]

    def dec(blobs):
        out = np.empty((h, w), raster.dtype)
        for (y, x), s in zip(boxes, blobs):
            t = ic.jpegxl_decode(s, numthreads=1)
            out[y : y + t.shape[0], x : x + t.shape[1]] = t
        return out

    return per_band(raster, enc, dec, size=lambda blobs: sum(map(len, blobs)))


# ---- archival targets on whole scenes: bytes each codec needs to keep a promise -------------------

ARCHIVAL_TARGETS = (38.0, 45.0, 50.0)  # dB, every band against its own valid range
ARCHIVAL_BOUNDS = (4, 16, 64)  # ± sample units, every valid sample
SEARCH_STEPS = 8


@dataclass
class Kept:
    """One codec keeping one promise on one scene: its bytes, and what it achieved."""

    codec: str
    promise: str
    bytes: int
    bps: float
    worst_band_psnr: float
    max_error: int
    kept: bool
    note: str = ""


def _judge(raster, decoded, valid, peaks) -> tuple[float, int]:
    from codec.metrics import band_max_error, raster_band_psnr

    return (float(raster_band_psnr(raster, decoded, valid, peaks).min()),
            int(band_max_error(raster, decoded, valid).max()))


def _bisect(code, ok, lo: float, hi: float, log: bool = False):
    """The cheapest setting in [lo, hi] whose coding passes ``ok`` (quality rises with the setting; ``code``
    returns (bytes, decoded)); None when even ``hi`` fails. ``SEARCH_STEPS`` halvings (in log space if ``log``)."""
    best = code(hi)
    if not ok(best[1]):
        return None
    f = (lambda v: np.log(v)) if log else (lambda v: v)
    g = (lambda v: float(np.exp(v))) if log else (lambda v: v)
    a, b = f(lo), f(hi)
    for _ in range(SEARCH_STEPS):
        mid = (a + b) / 2
        got = code(g(mid))
        if ok(got[1]):
            b, best = mid, got
        else:
            a = mid
    return best


def per_band_to_target(raster, valid, peaks, target, code_band, lo, hi, log=False):
    """Each band on its own, its setting searched so that the band's PSNR (whole band, own peak) reaches
    ``target``: the most a per-band anchor can be tuned. A band no setting reaches is coded losslessly by
    ``code_band(band, None)``. Returns (bytes, decoded, bands that needed lossless)."""
    from codec.metrics import band_psnr, band_sse

    out, total, exact = np.empty_like(raster), 0, 0
    for b in range(raster.shape[2]):
        band = np.ascontiguousarray(raster[:, :, b])

        def ok(dec, b=b, band=band):
            sse, n = band_sse(band[:, :, None], dec[:, :, None], valid)
            return band_psnr(sse, n, peaks[b])[0] >= target

        got = _bisect(lambda s, band=band: code_band(band, s), ok, lo, hi, log)
        if got is None:
            got, exact = code_band(band, None), exact + 1
        total += got[0]
        out[:, :, b] = got[1]
    return total, out, exact


def archival_targets(raster: np.ndarray, model, bits: int) -> list[Kept]:
    """Every codec at every archival promise on one whole scene. Ours keeps the PSNR target per 256² tile and
    per band (the codec's guarantee); the anchors are searched only to reach it over each whole band, which
    favours them. LERC's MAX_Z_ERROR is one value for every band (GDAL has no per-band one)."""
    import imagecodecs as ic

    import codec
    from codec.metrics import band_peaks, bits_per_sample
    from codec.training.satellite import valid_mask

    valid = valid_mask(raster, NODATA)
    peaks = band_peaks(raster, valid)
    h, w, b = raster.shape
    rows: list[Kept] = []

    def coder_note(header):
        from pipeline.schema import tile_coder_counts

        return ", ".join(f"{k} {v}" for k, v in tile_coder_counts(header))

    def add(name, promise, n, dec, kept_fn, note=""):
        worst, err = _judge(raster, dec, valid, peaks)
        rows.append(Kept(name, promise, n, bits_per_sample(n, h, w, b), worst, err, kept_fn(worst, err), note))

    def j2k_band(band, level):
        s = (ic.jpeg2k_encode(band, level=0, reversible=True, bitspersample=bits, numthreads=1) if level is None
             else ic.jpeg2k_encode(band, level=level, bitspersample=bits, numthreads=1))
        return len(s), ic.jpeg2k_decode(s, numthreads=1)

    def jxl_band(band, quality):  # quality = −distance, so that quality rises with the setting
        if quality is None:
            n, dec, _, _ = jpegxl_blocks(band[:, :, None], None, bits)
            return n, dec[:, :, 0]
        n, dec, _, _ = jpegxl_blocks(band[:, :, None], -quality, bits)
        return n, dec[:, :, 0]

    def lerc_all(neg_log_e):
        n, dec, _, _ = gdal_lerc(raster, float(np.exp(-neg_log_e)))
        return n, dec

    for t in ARCHIVAL_TARGETS:
        promise = f"{t:g} dB"
        psnr_ok = lambda worst, err, t=t: worst >= t - 1e-9
        res = codec.encode(raster, model=model, nodata=NODATA, target_psnr=t)
        add("ours", promise, len(res.data), np.asarray(codec.decode(res.data, model=model)).reshape(raster.shape),
            psnr_ok, coder_note(res.header))
        n, dec, ex = per_band_to_target(raster, valid, peaks, t, j2k_band, 20.0, 110.0)
        add("jpeg2000", promise, n, dec, psnr_ok, f"{ex} band(s) lossless" if ex else "")
        n, dec, ex = per_band_to_target(raster, valid, peaks, t, jxl_band, -15.0, -0.05)
        add("gdal-jxl", promise, n, dec, psnr_ok, f"{ex} band(s) lossless" if ex else "")
        whole_ok = lambda dec, t=t: _judge(raster, dec, valid, peaks)[0] >= t
        got = _bisect(lerc_all, whole_ok, -np.log(2.0 ** bits), -np.log(0.5))
        if got is None:
            n, dec, _, _ = gdal_lerc(raster, 0.0)
            add("gdal-lerc", promise, n, dec, psnr_ok, "MAX_Z_ERROR=0")
        else:
            add("gdal-lerc", promise, got[0], got[1], psnr_ok)
    for e in ARCHIVAL_BOUNDS:
        promise = f"±{e}"
        bound_ok = lambda worst, err, e=e: err <= e
        res = codec.encode(raster, model=model, nodata=NODATA, max_error=e)
        add("ours", promise, len(res.data), np.asarray(codec.decode(res.data, model=model)).reshape(raster.shape),
            bound_ok)
        n, dec, _, _ = gdal_lerc(raster, float(e))
        add("gdal-lerc", promise, n, dec, bound_ok, f"MAX_Z_ERROR={e}")
    n, dec, _, _ = gdal_cog(raster, "DEFLATE", predictor=2)
    for promise in [f"{t:g} dB" for t in ARCHIVAL_TARGETS] + [f"±{e}" for e in ARCHIVAL_BOUNDS]:
        add("gdal-deflate", promise, n, dec, lambda worst, err: err == 0, "lossless, PREDICTOR=2")
    return rows


# ---- the run -------------------------------------------------------------------------------


def held_out_files(limit: int | None = None) -> list[Path]:
    from codec.training.satellite import split

    _, held = split(SAT)
    return held[:limit] if limit else held


def measure(raster, fn, settings, label) -> Curve:
    from codec.metrics import bits_per_sample, raster_psnr
    from codec.training.satellite import valid_mask

    valid = valid_mask(raster, NODATA)
    peak = float(raster[valid].max())
    h, w, b = raster.shape
    curve = Curve(label)
    for s in settings:
        n, dec, te, td = fn(s)
        curve.points.append(Point(s, n, bits_per_sample(n, h, w, b), raster_psnr(raster, dec, valid, peak), te, td))
    return curve


def load_models(specs: list[str], store: str = str(ROOT / "models")) -> dict:
    """Each spec as a loaded model: built-in ones, then the repo's seed registry (models/, where
    ``satellite`` and ``aerial`` live in the object-store layout)."""
    from pipeline.model_store import model_resolver

    resolver = model_resolver(store)
    return {s: resolver.load(s) for s in specs}


def centre_crop(raster: np.ndarray, side: int | None) -> np.ndarray:
    """The centre ``side``×``side`` window of a larger raster (itself when it fits)."""
    if not side:
        return raster
    h, w = raster.shape[:2]
    y, x = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return np.ascontiguousarray(raster[y : y + side, x : x + side])


def run_file(path: Path, models: dict, quick: bool, reuse: list[dict] = (), anchors: bool = True,
             max_side: int | None = MAX_SIDE) -> dict:
    """One held-out file: every codec's curve and the lossless sizes; a curve or lossless row already
    measured on the same file in a ``reuse`` result (a previous run's JSON) is taken from it, marked
    with that run's ``measured`` label, instead of being measured again."""
    from codec.metrics import bits_per_sample
    from codec.training.satellite import read_raster

    full = read_raster(path).shape
    raster = centre_crop(read_raster(path), max_side)
    bits = effective_bits(raster)
    h, w, b = raster.shape
    old = [{**f, "_from": r.get("_from", "an earlier run")} for r in reuse for f in r["files"]
           if f["file"] == path.name and f["shape"] == [h, w, b]]
    label = f"this run (load average {os.getloadavg()[0]:.1f})"
    curves, lossless = {}, {}

    def curve(name, fn, settings):
        got = next(({"measured": f["_from"], **f["curves"][name]} for f in old if name in f["curves"]), None)
        curves[name] = got or {**asdict(measure(raster, fn, settings, name)), "measured": label}

    qs = QUALITIES[::2] if quick else QUALITIES
    for m, lm in models.items():
        curve(m, lambda q, lm=lm: ours(raster, NODATA, lm, q), qs)
    if not anchors:  # our models' curves only
        return {"file": path.name, "shape": [h, w, b], "bits": bits, "mp_bands": h * w * b / 1e6, "curves": curves,
                "lossless": {}}
    curve("jpeg2000", lambda lv: jpeg2k(raster, lv, bits), J2K_LEVELS[::2] if quick else J2K_LEVELS)
    curve("jpegxl", lambda d: jpegxl(raster, d, bits), JXL_DISTANCES[::2] if quick else JXL_DISTANCES)
    curve("gdal-jxl", lambda d: jpegxl_blocks(raster, d, bits), JXL_DISTANCES[::2] if quick else JXL_DISTANCES)
    curve("gdal-lerc", lambda e: gdal_lerc(raster, e), LERC_ERRORS[::2] if quick else LERC_ERRORS)
    for name, fn in (("jpegxl", lambda: jpegxl_lossless(raster, bits)), ("jpeg2000", lambda: jpeg2k_lossless(raster, bits)),
                     ("deflate", lambda: deflate_tiff(raster)), ("gdal-deflate", lambda: gdal_cog(raster, "DEFLATE", predictor=2)),
                     ("gdal-lerc", lambda: gdal_lerc(raster, 0.0)), ("ours", lambda: ours(raster, NODATA, (list(models.values()) or [None])[-1], None, True))):
        got = next(({"measured": f["_from"], **f["lossless"][name]} for f in old if name in f["lossless"]), None)
        if got is None:
            n, dec, te, td = fn()
            got = {"bytes": n, "bps": bits_per_sample(n, h, w, b), "exact": bool(np.array_equal(dec, raster)),
                   "encode_s": te, "decode_s": td, "measured": label}
        lossless[name] = got
    return {"file": path.name, "shape": [h, w, b], "full_shape": list(full), "bits": bits,
            "nodata_pct": float(100 * (raster == 0).all(2).mean()), "mp_bands": h * w * b / 1e6, "curves": curves,
            "lossless": lossless}


def bd_table(files: list[dict], models: list[str]) -> dict:
    from codec.metrics import bd_rate

    out = {}
    for m in models:
        for ref in ANCHORS + tuple(x for x in models if x != m):
            per = {}
            for f in files:
                c, r = f["curves"][m]["points"], f["curves"][ref]["points"]
                per[f["file"]] = bd_rate([p["bps"] for p in r], [p["psnr"] for p in r],
                                         [p["bps"] for p in c], [p["psnr"] for p in c], bpp_range=BD_RANGE)
            finite = [v for v in per.values() if v is not None]
            out[f"{m} vs {ref}"] = {"mean_pct": float(np.mean(finite)) if finite else None, "per_file": per,
                                    "files": len(finite)}
    return out


def speed_table(files: list[dict]) -> dict:
    """MP·bands/s over all files and settings, encode and decode, per codec."""
    sums: dict = {}
    for f in files:
        for name, c in f["curves"].items():
            s = sums.setdefault(name, [0.0, 0.0, 0.0])
            for p in c["points"]:
                s[0] += f["mp_bands"]
                s[1] += p["encode_s"]
                s[2] += p["decode_s"]
        for name, r in f["lossless"].items():
            if "bytes" in r:
                s = sums.setdefault(f"{name} lossless", [0.0, 0.0, 0.0])
                s[0] += f["mp_bands"]
                s[1] += r["encode_s"]
                s[2] += r["decode_s"]
    return {k: {"encode_mp_bands_s": v[0] / v[1], "decode_mp_bands_s": v[0] / v[2]} for k, v in sums.items()}


def lossless_table(files: list[dict]) -> dict:
    """Total bits per sample over all held-out files (bytes / samples), per codec."""
    samples = sum(f["mp_bands"] * 1e6 for f in files)
    names = {n for f in files for n, r in f["lossless"].items() if "bytes" in r}
    out = {}
    for n in sorted(names):
        if all("bytes" in f["lossless"].get(n, {}) for f in files):
            out[n] = {"bps": sum(f["lossless"][n]["bytes"] for f in files) * 8 / samples,
                      "exact": all(f["lossless"][n]["exact"] for f in files)}
    return out


def mean_curves(files: list[dict]) -> dict:
    """Per codec, bits per sample and PSNR averaged over files at each setting (for the plot)."""
    out = {}
    for name in files[0]["curves"]:
        pts = [f["curves"][name]["points"] for f in files]
        if len({len(p) for p in pts}) != 1:  # settings differ between files (a quick run reused in a full one)
            continue
        out[name] = {"bps": [float(np.mean([p[i]["bps"] for p in pts])) for i in range(len(pts[0]))],
                     "psnr": [float(np.mean([p[i]["psnr"] for p in pts])) for i in range(len(pts[0]))]}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=["default@2", "satellite@1"])
    ap.add_argument("--max-side", type=int, default=MAX_SIDE, help="measure larger files on their centre crop (0: whole)")
    ap.add_argument("--quick", action="store_true", help="every other setting, 2 files (a smoke run)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--name", default="satellite_rd")
    ap.add_argument("--store", default=str(ROOT / "models"), help="model registry (object-store layout) beside the built-in models")
    ap.add_argument("--reuse", nargs="*", type=Path, default=[],
                    help="earlier results (JSON) whose curves of the same codec on the same file are taken, not re-measured")
    ap.add_argument("--no-curves", action="store_true", help="only the archival targets on whole scenes")
    ap.add_argument("--no-targets", action="store_true", help="only the curves (centre crops)")
    ap.add_argument("--target-model", default=None,
                    help="the model of the archival-target rows (default: the codec's choice for rasters)")
    a = ap.parse_args(argv)
    if not SAT.exists():
        print(f"skipped: {SAT} not found (the satellite set lives in ../shared/data)")
        return 0
    import torch

    torch.set_num_threads(1)
    files_in = held_out_files(2 if a.quick else None)
    models = load_models(a.models, a.store)
    reuse = []
    for p in a.reuse:
        r = json.loads(p.read_text())
        reuse.append({**r, "_from": f"{p.name} (load average {r['loadavg'][0]:.1f})"})
    print(f"held-out files: {', '.join(p.name for p in files_in)}")
    print(f"models: {', '.join(f'{k} ({m.model_id})' for k, m in models.items())}; load average {os.getloadavg()}")
    t0 = time.time()
    files = []
    for p in ([] if a.no_curves else files_in):
        t = time.time()
        files.append(run_file(p, models, a.quick, reuse, max_side=a.max_side))
        f = files[-1]
        print(f"{p.name} {tuple(f['shape'])} {f['bits']}-bit, nodata {f['nodata_pct']:.0f}%: {time.time() - t:.0f} s")
        for name, c in f["curves"].items():
            print(f"  {name:12s} " + "  ".join(f"{q['bps']:.3f}/{q['psnr']:.1f}" for q in c["points"])
                  + f"   [{c.get('measured', '?')}]")
        print("  lossless bps " + "  ".join(f"{n} {r['bps']:.3f}" + ("" if r["exact"] else " (NOT exact)")
                                            for n, r in f["lossless"].items() if "bytes" in r), flush=True)
        (a.out / "tmp").mkdir(parents=True, exist_ok=True)  # what is measured so far survives an interrupted run (--reuse takes it)
        (a.out / "tmp" / f"{a.name}.partial.json").write_text(json.dumps({"files": files, "loadavg": os.getloadavg()}, default=float))
    targets = None if a.no_targets else run_targets(files_in, a.target_model, a.store)
    if a.no_curves:
        result = {"targets": targets, "held_out": [p.name for p in files_in], "loadavg": os.getloadavg(),
                  "seconds": time.time() - t0}
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / f"{a.name}_targets.json").write_text(json.dumps(result, indent=1, default=float))
        print(f"wrote {a.out / (a.name + '_targets.json')}")
        return 0
    result = {"models": a.models, "targets": targets, "reused": [str(p) for p in a.reuse], "bd_range_bps": BD_RANGE,
              "held_out": [p.name for p in files_in], "files": files, "bd_rate": bd_table(files, a.models),
              "lossless": lossless_table(files), "speed": speed_table(files), "mean_curves": mean_curves(files),
              "loadavg": os.getloadavg(), "seconds": time.time() - t0}
    report(result)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / f"{a.name}.json").write_text(json.dumps(result, indent=1, default=float))
    plot(result, a.out / f"{a.name}.png")
    print(f"wrote {a.out / (a.name + '.json')} and .png")
    return 0


def run_targets(files_in: list[Path], model_name: str | None, store: str) -> dict:
    """:func:`archival_targets` on every held-out file, whole (no crop); printed as it goes."""
    from codec.registry import default_model_name
    from codec.training.satellite import read_raster

    name = model_name or default_model_name(True)
    model = load_models([name], store)[name]
    print(f"\narchival targets on whole scenes, model {name} ({model.model_id}); bits per sample "
          f"(worst band PSNR dB / max error), ✗ = promise not kept:")
    per_file = []
    for p in files_in:
        raster = read_raster(p)
        t = time.time()
        rows = archival_targets(raster, model, effective_bits(raster))
        per_file.append({"file": p.name, "shape": list(raster.shape), "rows": [asdict(r) for r in rows]})
        print(f"{p.name} {raster.shape}: {time.time() - t:.0f} s")
        for promise in dict.fromkeys(r.promise for r in rows):
            cells = [f"{r.codec} {r.bps:.3f} ({r.worst_band_psnr:.1f}/{r.max_error})" + ("" if r.kept else " ✗")
                     for r in rows if r.promise == promise]
            print(f"  {promise:>6s}  " + "   ".join(cells), flush=True)
    summary = {}
    for promise in dict.fromkeys(r["promise"] for f in per_file for r in f["rows"]):
        tot: dict[str, int] = {}
        for f in per_file:
            for r in f["rows"]:
                if r["promise"] == promise:
                    tot[r["codec"]] = tot.get(r["codec"], 0) + r["bytes"]
        best = min((v, k) for k, v in tot.items() if k != "ours")
        summary[promise] = {"bytes": tot, "best_other": best[1], "ours_vs_best": tot["ours"] / best[0]}
    print("total bytes over the scenes, ours / the smallest other file:")
    for promise, v in summary.items():
        print(f"  {promise:>6s}  {v['ours_vs_best']:.2f}× {v['best_other']}   ("
              + ", ".join(f"{k} {n / 1e3:.0f} kB" for k, n in v["bytes"].items()) + ")")
    return {"model": name, "model_id": model.model_id, "files": per_file, "summary": summary}


def report(r: dict) -> None:
    print(f"\nBD-rate (bits per sample at equal raster PSNR, range {r['bd_range_bps']} bps), mean over held-out files:")
    for k, v in r["bd_rate"].items():
        mean = "n/a" if v["mean_pct"] is None else f"{v['mean_pct']:+.1f}%"
        per = "  ".join(f"{n.split('__')[-1][:18]} {'n/a' if x is None else f'{x:+.1f}'}" for n, x in v["per_file"].items())
        print(f"  {k:28s} {mean:>8s}   ({per})")
    print("lossless bits per sample over all held-out files:")
    for k, v in r["lossless"].items():
        print(f"  {k:10s} {v['bps']:.3f}" + ("" if v["exact"] else "  NOT EXACT"))
    print(f"speed, MP·bands/s (1 thread, load average {tuple(round(x, 2) for x in r['loadavg'])}):")
    for k, v in r["speed"].items():
        print(f"  {k:20s} encode {v['encode_mp_bands_s']:7.2f}   decode {v['decode_mp_bands_s']:7.2f}")


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = r["files"]
    fig, axes = plt.subplots(2, (len(files) + 1) // 2, figsize=(4.5 * ((len(files) + 1) // 2), 8), squeeze=False)
    for ax, f in zip(axes.flat, files):
        for name, c in f["curves"].items():
            ax.plot([p["bps"] for p in c["points"]], [p["psnr"] for p in c["points"]], marker="o", ms=3, label=name)
        ax.set_title(f"{f['file'].split('__')[-1]} {tuple(f['shape'])}", fontsize=8)
        ax.set_xlabel("bits per sample")
        ax.set_ylabel("PSNR (dB, peak = max valid)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    sys.exit(main())
