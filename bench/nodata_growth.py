"""Why declaring nodata made a raster's stream larger (issue 26 item 4), taken apart: the PSNR peak, the fill of
nodata pixels, the mask bytes, and the exact tiles.

Per band, a raster PSNR target is judged against the band's peak (codec.metrics.peak_of). Under the range rule
(max − min of the valid samples, issue 23) a scene's 0 border, declared nodata, leaves the valid samples, the
minimum rises to the darkest real value and the peak falls by ``20·log10(old / new)`` dB: the same dB target asks
for that much less error. Rows, at ``--target-psnr``: no nodata; nodata 0 by the pixel rule (the old default);
nodata 0 by the band rule (GDAL's, the default now); nodata 0 at the target lowered by the range rule's peak
change (the same absolute error as undeclared). Then at one fixed ``--quality`` (no target, so no peak): bytes
undeclared vs declared, which isolates what the fill and the masks cost; and the mask bytes alone.
Every row also reports what the stream gives the real data (the samples that are not the 0 fill, each band
against its peak there): an undeclared stream's raster PSNR averages in the border's exact zeros.

    python bench/nodata_growth.py ../shared/data/satellite/train/L8dec_riotoa__LC80100202015018LGN00_B1.tif
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import codec
from codec.format import raster
from codec.format.tiles import grid_boxes
from codec.images.imageio import load_image
from codec.metrics import band_peaks, band_sse, raster_psnr, worst_band_psnr

OUT = Path(__file__).resolve().parent / "results"


def range_peaks(bands: np.ndarray, valid) -> np.ndarray:
    """Each band's valid max − min (issue 23's rule), to show what the peak change was."""
    b = bands.reshape(-1, bands.shape[2]) if valid is None else bands[valid]
    return np.maximum(b.max(0).astype(np.int64) - b.min(0), 1).astype(float)


def mask_bytes(px: np.ndarray, tile: int = 256) -> int:
    """Bytes of the band-rule nodata masks of every tile with nodata (what a learned stream carries)."""
    img = px if px.ndim == 3 else px[..., None]
    rule = (0,) * img.shape[2]
    total = 0
    for x, y, w, h in grid_boxes(img.shape[1], img.shape[0], tile):
        v = raster.valid_mask(img[y : y + h, x : x + w], rule)
        total += 0 if v is None else len(raster.pack_mask(v, img.shape[2]))
    return total


def on_data(px: np.ndarray, data: bytes, target: float) -> tuple[float, int]:
    """(raster PSNR over the real data, i.e. the samples that are not the 0 fill, tiles whose worst band is under
    ``target`` there): what a stream gives the valid data, declared or not (each band against its peak there)."""
    ref = px if px.ndim == 3 else px[..., None]
    dec = codec.decode(data)
    dec = dec if dec.ndim == 3 else dec[..., None]
    valid = ref != 0
    peaks = band_peaks(ref, valid)
    under = 0
    for x, y, w, h in codec.read_header(data).boxes():
        sse, count = band_sse(ref[y : y + h, x : x + w], dec[y : y + h, x : x + w], valid[y : y + h, x : x + w])
        under += worst_band_psnr(sse, count, peaks) < target - 0.05
    return raster_psnr(ref, dec, valid, peaks), under


def encode_row(label: str, px: np.ndarray, target: float, **kw) -> dict:
    t0 = time.perf_counter()
    r = codec.encode(px, **kw)
    seconds = round(time.perf_counter() - t0, 1)
    data_psnr, under = on_data(px, r.data, target)
    row = {"label": label, "bytes": len(r.data), "exact_tiles": sum(e.lossless for e in r.header.tiles),
           "tiles": len(r.header.tiles), "psnr": None if r.psnr is None else round(float(r.psnr), 3),
           "psnr_on_data": round(float(data_psnr), 3), "tiles_under_target_on_data": int(under), "seconds": seconds}
    psnr = "" if r.psnr is None else f", raster PSNR {r.psnr:.2f} dB"
    print(f"  {label:34s} {row['bytes']:>10,d} B, exact tiles {row['exact_tiles']}/{row['tiles']}{psnr}; on the data "
          f"{data_psnr:.2f} dB, {under} tiles under {target:g} dB; {seconds} s", flush=True)
    return row


def run(path: str, target: float, quality: float) -> dict:
    px = load_image(path, path).pixels
    bands = px if px.ndim == 3 else px[..., None]
    valid = ~(bands == 0).all(-1)
    change = 20 * np.log10(range_peaks(bands, None) / range_peaks(bands, valid))
    now = 20 * np.log10(band_peaks(bands) / band_peaks(bands, valid))
    print(f"{path}: {bands.shape}, nodata pixels {1 - valid.mean():.1%}; declaring nodata 0 moves the peak per band "
          f"(dB): range rule {np.round(change, 2)}, codec.metrics.peak_of {np.round(now, 2)}", flush=True)
    rows = [encode_row("no nodata", px, target, target_psnr=target),
            encode_row("nodata 0, pixel rule", px, target, nodata=0, nodata_mode="pixel", target_psnr=target),
            encode_row("nodata 0, band rule", px, target, nodata=0, target_psnr=target),
            encode_row(f"nodata 0 at {target - change.max():.1f} dB", px, target, nodata=0,
                       target_psnr=target - float(change.max())),
            encode_row(f"no nodata, quality {quality}", px, target, quality=quality),
            encode_row(f"nodata 0, quality {quality}", px, target, nodata=0, quality=quality)]
    masks = mask_bytes(px)
    print(f"  mask bytes (band rule, 256² tiles): {masks:,d}", flush=True)
    return {"scene": path, "shape": list(bands.shape), "nodata_fraction": float(1 - valid.mean()),
            "range_peak_change_db": change.tolist(), "peak_change_db": now.tolist(), "rows": rows, "mask_bytes": masks}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenes", nargs="+")
    ap.add_argument("--target-psnr", type=float, default=38.0)
    ap.add_argument("--quality", type=float, default=0.6)
    ap.add_argument("--json", default=str(OUT / "nodata_growth.json"))
    a = ap.parse_args(argv)
    results = [run(s, a.target_psnr, a.quality) for s in a.scenes]
    Path(a.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
