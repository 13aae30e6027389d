"""Which lossless coder for exact tiles (codec.tilecoders.jxl_exact): bits per sample and speed on 256² tiles.

On the held-out satellite scenes (as bench/band_coding.py picks them), each 256² tile of every
band coded by: JPEG XL lossless per band at efforts 1, 2, 3 and 7; reversible JPEG 2000 (OpenJPEG)
per band and as one multi-component image; deflate (zlib level 6) of the raw samples. Bits per
sample (over all samples, nodata included: an exact tile keeps them) and MP·bands/s of encoding,
one thread.

    PYTHONPATH=. python bench/lossless_coders.py [--json bench/results/lossless_coders.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from band_coding import DATA, held_out_files  # noqa: E402

TILE = 256


def coders():
    import imagecodecs

    def jxl(effort):
        def enc(t):
            n = 0
            for b in range(t.shape[2]):
                band = np.ascontiguousarray(t[..., b])
                bits = max(int(band.max()).bit_length(), 1)
                if bits <= 8:
                    band = band.astype(np.uint8)
                n += len(imagecodecs.jpegxl_encode(band, lossless=True, effort=effort, bitspersample=bits))
            return n
        return enc

    def j2k_band(t):
        return sum(len(imagecodecs.jpeg2k_encode(np.ascontiguousarray(t[..., b]), level=0, reversible=True))
                   for b in range(t.shape[2]))

    def j2k_multi(t):
        return len(imagecodecs.jpeg2k_encode(np.ascontiguousarray(t), level=0, reversible=True))

    return {"jpegxl_e1_per_band": jxl(1), "jpegxl_e2_per_band": jxl(2), "jpegxl_e3_per_band": jxl(3),
            "jpegxl_e7_per_band": jxl(7), "jpeg2k_reversible_per_band": j2k_band,
            "jpeg2k_reversible_multi": j2k_multi, "deflate": lambda t: len(zlib.compress(t.tobytes(), 6))}


def main() -> None:
    import tifffile

    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    funcs = coders()
    size = {k: 0 for k in funcs}
    secs = {k: 0.0 for k in funcs}
    samples = 0
    files = held_out_files(DATA, a.files)
    for path in files:
        img = tifffile.imread(path)
        for y in range(0, img.shape[0], TILE):
            for x in range(0, img.shape[1], TILE):
                t = np.ascontiguousarray(img[y:y + TILE, x:x + TILE])
                samples += t.size
                for k, f in funcs.items():
                    s = time.perf_counter()
                    size[k] += f(t)
                    secs[k] += time.perf_counter() - s
    out = {"files": [p.name for p in files], "samples": samples, "load_avg": os.getloadavg(),
           "bits_per_sample": {k: size[k] * 8 / samples for k in funcs},
           "encode_mp_bands_s": {k: samples / 1e6 / secs[k] for k in funcs}}
    for k in funcs:
        print(f"{k:28s} {out['bits_per_sample'][k]:7.3f} bits/sample  {out['encode_mp_bands_s'][k]:7.2f} MP·bands/s")
    print(f"load average {out['load_avg']}")
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
