"""How to code a raster's bands through a 3-channel model: measured, not assumed.

On held-out satellite scenes (codec.training.satellite.held_out; nodata 0), with one model
(default@2 unless --model) at a ladder of fixed qualities, bits per sample vs raster PSNR
(codec.metrics, valid pixels, peak = the image's largest valid value) of:

  (a) triplets   the codec's design: bands in consecutive groups of 3 (codec.encode as is)
  (b) per band   each band its own stream (a 1-band raster: the band repeated to 3 channels)
  (c) KLT        a KLT/PCA across the bands (normalised, valid pixels) first, the components
                 quantised to 16 bits and coded as triplets; the transform's side information
                 (B² + 3B float32) counted

and BD-rate (bits per sample at equal PSNR) of (b) and (c) against (a), per scene and over all.
Also (``--mask-only``, over all of satellite/train: masks are not learned): the nodata mask's
bytes per tile as the container stores it (rows XORed with the row above, packed bits,
deflate) vs plain packed bits, the uint8 plane deflated and JPEG XL lossless.

    PYTHONPATH=. python bench/band_coding.py [--json bench/results/band_coding.json]
    PYTHONPATH=. python bench/band_coding.py --mask-only --json bench/results/band_coding_mask.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import codec  # noqa: E402
from codec.families.hyperprior import bands as band_coding
from codec.format import raster as bands  # noqa: E402
from codec.metrics import bd_rate, bits_per_sample, raster_psnr  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "satellite" / "train"
FALLBACK_FILES = ["S2dec_riotilerpds__T29RKH_10m.tif", "S2dec_riotilerpds__T29RKH_20m.tif", "SpaceNet_solaris__ms1.tif",
                  "L8dec_riotiler__mosaic_cog3.tif"]
QUALITIES = (0.1, 0.3, 0.5, 0.7, 0.9)
NODATA = 0


def held_out_files(root: Path, limit: int) -> list[Path]:
    """Multi-band held-out scenes (the split's one home when present, else the brief's explicit list)."""
    try:
        from codec.training.satellite import held_out
    except ImportError:
        held_out = None
    files = sorted(root.glob("*.tif"))
    if held_out is not None:
        picked = [p for p in files if held_out(p.name)]
    else:
        picked = [root / f for f in FALLBACK_FILES]
    multi = []
    for p in picked:
        import tifffile

        with tifffile.TiffFile(p) as t:
            if len(t.pages[0].shape) == 3 and min(t.pages[0].shape[:2]) >= 128:
                multi.append(p)
    return multi[:limit]


def triplets(a, model, q):
    r = codec.encode(a, model, quality=q, nodata=NODATA)
    return len(r.data), codec.decode(r.data, model)


def per_band(a, model, q):
    n, out = 0, np.empty_like(a)
    for b in range(a.shape[2]):
        band = np.ascontiguousarray(a[..., b])
        r = codec.encode(band, model, quality=q, nodata=NODATA)
        n += len(r.data)
        out[..., b] = codec.decode(r.data, model)
    return n, out


def klt(a, model, q):
    """KLT of the normalised bands over valid pixels; components as a uint16 raster (0 kept for nodata)."""
    valid = ~np.all(a == NODATA, axis=2)
    x = a.astype(np.float64)
    v = x[valid]
    lo, hi = v.min(0), v.max(0)
    scale = np.maximum(hi - lo, 1)
    xn = (v - lo) / scale
    mu = xn.mean(0)
    cov = np.cov((xn - mu).T)
    w, vec = np.linalg.eigh(np.atleast_2d(cov))
    vec = vec[:, np.argsort(w)[::-1]]
    c = (xn - mu) @ vec
    cmin, cmax = c.min(0), c.max(0)
    crange = np.maximum(cmax - cmin, 1e-12)
    comp = np.zeros(a.shape, dtype=np.uint16)
    comp[valid] = np.round(1 + (c - cmin) / crange * 65534).astype(np.uint16)
    r = codec.encode(comp, model, quality=q, nodata=NODATA)
    dec = codec.decode(r.data, model)
    c2 = (dec[valid].astype(np.float64) - 1) / 65534 * crange + cmin
    x2 = (c2 @ vec.T + mu) * scale + lo
    out = np.zeros_like(a)
    out[valid] = np.clip(np.round(x2), lo, hi).astype(a.dtype)
    side = 4 * (a.shape[2] ** 2 + 3 * a.shape[2])  # vectors, mean, component ranges
    return len(r.data) + side, out


def mask_coders() -> dict:
    import zlib

    import imagecodecs

    def jxl(effort):
        return lambda v: imagecodecs.jpegxl_encode(v.astype(np.uint8), lossless=True, effort=effort, bitspersample=1)

    return {"container (rows xor, packed bits, deflate)": bands.pack_mask,
            "packed bits, deflate": lambda v: zlib.compress(np.packbits(v, axis=None).tobytes(), 9),
            "uint8 plane, deflate": lambda v: zlib.compress(v.astype(np.uint8).tobytes(), 9),
            "jpegxl lossless effort 3": jxl(3), "jpegxl lossless effort 7": jxl(7)}


def mask_sizes(a, tile: int = 256) -> dict:
    """Bytes and ms per nodata tile of each mask coder over ``a``'s tiles that hold nodata."""
    coders = mask_coders()
    size = {k: 0 for k in coders}
    secs = {k: 0.0 for k in coders}
    tiles = 0
    for y in range(0, a.shape[0], tile):
        for x in range(0, a.shape[1], tile):
            valid = ~np.all(bands.as_bands(a[y:y + tile, x:x + tile]) == NODATA, axis=2)
            if valid.all():
                continue
            tiles += 1
            for k, f in coders.items():
                t = time.perf_counter()
                size[k] += len(f(valid))
                secs[k] += time.perf_counter() - t
    return {"nodata_tiles": tiles, "bytes": size, "seconds": secs}


def mask_only(root: Path) -> dict:
    """Mask coders over every satellite/train file with nodata (masks are not what the model learns)."""
    import tifffile

    total = {"nodata_tiles": 0, "bytes": {}, "seconds": {}}
    for path in sorted(root.glob("*.tif")):
        m = mask_sizes(tifffile.imread(path))
        total["nodata_tiles"] += m["nodata_tiles"]
        for k in m["bytes"]:
            total["bytes"][k] = total["bytes"].get(k, 0) + m["bytes"][k]
            total["seconds"][k] = total["seconds"].get(k, 0.0) + m["seconds"][k]
    n = max(total["nodata_tiles"], 1)
    for k in total["bytes"]:
        print(f"{k:45s} {total['bytes'][k] / n:7.1f} bytes/tile  {1000 * total['seconds'][k] / n:6.2f} ms/tile")
    print(f"over {total['nodata_tiles']} nodata tiles of 256², load {os.getloadavg()}")
    return total


METHODS = {"triplets": triplets, "per_band": per_band, "klt": klt}


def main() -> None:
    import tifffile
    import torch

    torch.set_num_threads(1)
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="default@2")
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--mask-only", action="store_true", help="only the nodata-mask coders, over all of satellite/train")
    a = ap.parse_args()
    if a.mask_only:
        out = mask_only(DATA)
        if a.json:
            a.json.write_text(json.dumps(out, indent=1))
        return
    model = codec.load_model(a.model)
    files = held_out_files(DATA, a.files)
    results = {"model": model.model_id, "qualities": QUALITIES, "load_avg_start": os.getloadavg(), "scenes": {}}
    totals = {m: {"bits": np.zeros(len(QUALITIES)), "samples": 0} for m in METHODS}
    for path in files:
        img = tifffile.imread(path)
        valid = ~np.all(img == NODATA, axis=2)
        h, w, nb = img.shape
        scene = {"shape": list(img.shape), "nodata_fraction": float(1 - valid.mean()), "mask": mask_sizes(img)}
        for name, fn in METHODS.items():
            rates, psnrs = [], []
            t = time.perf_counter()
            for q in QUALITIES:
                n, dec = fn(img, model, q)
                rates.append(bits_per_sample(n, h, w, nb))
                psnrs.append(raster_psnr(img, dec, valid))
            scene[name] = {"bits_per_sample": rates, "psnr": psnrs, "seconds": time.perf_counter() - t}
            print(f"{path.name} {name:9s} " + "  ".join(f"{r:.3f}/{p:.2f}" for r, p in zip(rates, psnrs)), flush=True)
        for name in ("per_band", "klt"):
            scene[name]["bd_rate_vs_triplets_pct"] = bd_rate(scene["triplets"]["bits_per_sample"], scene["triplets"]["psnr"],
                                                             scene[name]["bits_per_sample"], scene[name]["psnr"],
                                                             bpp_range=(1e-3, 16))
            print(f"  {name} vs triplets: BD-rate {scene[name]['bd_rate_vs_triplets_pct']}")
        print(f"  nodata mask: {scene['mask']}")
        results["scenes"][path.name] = scene
    means = {name: np.mean([s[name]["bd_rate_vs_triplets_pct"] for s in results["scenes"].values()
                             if s[name]["bd_rate_vs_triplets_pct"] is not None])
             for name in ("per_band", "klt")}
    results["mean_bd_rate_vs_triplets_pct"] = {k: float(v) for k, v in means.items()}
    results["load_avg_end"] = os.getloadavg()
    print(f"mean BD-rate vs triplets: {results['mean_bd_rate_vs_triplets_pct']}  (load {results['load_avg_end']})")
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
