"""Why declaring nodata can make a raster's stream larger (issue 26 item 4): a measurement.

Per band, a raster PSNR target is judged against the band's own valid range (codec.metrics.band_peaks,
issue 23). Without nodata the border's zeros are valid samples, so a band's range starts at 0; declared
nodata, they leave the range, its minimum rises to the scene's darkest real value, the peak falls by
``20·log10(old / new)`` dB and the same dB target asks for that much less error. This script encodes a
scene at ``--target-psnr`` without nodata, with nodata 0, and with nodata 0 at the target lowered by the peak
change (the same absolute error as undeclared): if the third is back near the first, the peak is the cause.

    python bench/nodata_growth.py ../shared/data/satellite/train/L8dec_riotoa__LC80100202015018LGN00_B1.tif
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import codec
from codec.images.imageio import load_image
from codec.metrics import band_peaks


def run(path: str, target: float) -> None:
    px = load_image(path, path).pixels
    bands = px if px.ndim == 3 else px[..., None]
    valid = ~(bands == 0).all(-1)
    change = 20 * np.log10(band_peaks(bands) / band_peaks(bands, valid))
    print(f"{path}: {bands.shape}, nodata pixels {1 - valid.mean():.1%}, peak change per band (dB) {np.round(change, 2)}")
    for label, nodata, t in (("no nodata", None, target), ("nodata 0", 0, target),
                             (f"nodata 0 at {target - change.max():.1f} dB", 0, target - float(change.max()))):
        t0 = time.perf_counter()
        r = codec.encode(px, nodata=nodata, target_psnr=t)
        exact = sum(e.lossless for e in r.header.tiles)
        print(f"  {label:24s} {len(r.data):>10,d} B, exact tiles {exact}/{len(r.header.tiles)}, "
              f"raster PSNR {r.psnr:.2f} dB, {time.perf_counter() - t0:.1f} s")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenes", nargs="+")
    ap.add_argument("--target-psnr", type=float, default=38.0)
    a = ap.parse_args(argv)
    for s in a.scenes:
        run(s, a.target_psnr)


if __name__ == "__main__":
    main()
