"""A quick end-to-end look at the codec on sample images that ship with scikit-image.

    python -m codec.demo [--target-psnr 38] [--out demo-out]

Encodes each sample at the target, decodes it back, decodes a region, and
prints what it cost.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from codec import api
from codec.images.imageio import write_image
from codec.families.hyperprior.ratecontrol import DEFAULT_TARGET_PSNR
from codec.registry import load_model

SAMPLES = ["astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "camera"]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target-psnr", type=float, default=DEFAULT_TARGET_PSNR)
    ap.add_argument("--out", type=Path, default=Path("demo-out"))
    a = ap.parse_args(argv)
    from skimage import data

    model = load_model("default")
    a.out.mkdir(parents=True, exist_ok=True)
    print(f"model {model.model_id}, target {a.target_psnr} dB per tile, output in {a.out}/")
    print(f"{'image':22s} {'size':>11s} {'PNG bytes':>10s} {'TLIC bytes':>10s} {'bpp':>6s} {'PSNR':>6s} {'missed':>6s} {'enc MP/s':>8s} {'dec MP/s':>8s}")
    for name in SAMPLES:
        img = getattr(data, name)()
        t = time.perf_counter()
        r = api.encode(img, model, target_psnr=a.target_psnr, name=name)
        te = time.perf_counter() - t
        t = time.perf_counter()
        out = api.decode(r.data)
        td = time.perf_counter() - t
        (a.out / f"{name}.tlic").write_bytes(r.data)
        write_image(a.out / f"{name}.png", img)
        write_image(a.out / f"{name}.decoded.png", out)
        mp = img.shape[0] * img.shape[1] / 1e6
        mse = np.mean((img.astype(float) - out) ** 2)
        p = 10 * np.log10(255**2 / mse) if mse else float("inf")
        size = f"{img.shape[1]}×{img.shape[0]}"
        png = (a.out / f"{name}.png").stat().st_size
        print(f"{name:22s} {size:>11s} {png:>10d} {len(r.data):>10d} {r.bpp:>6.3f} {p:>6.2f} {r.missed_tiles:>6d} {mp / te:>8.2f} {mp / td:>8.2f}")
    h, w = img.shape[:2]
    box = (w // 4, h // 4, w // 2, h // 2)
    region = api.decode_region(r.data, box)
    write_image(a.out / f"{name}.region.png", region)
    print(f"region {box} of {name}: decoded only the tiles that cover it → {a.out / (name + '.region.png')}")


if __name__ == "__main__":
    main()
