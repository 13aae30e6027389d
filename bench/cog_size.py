"""What a restore's GeoTIFF costs on disk (issue 26 item 3): the source file, the COG a restore writes
(codec.images.gdalio.COG_OPTIONS: ZSTD 9 + predictor, 512² blocks, AVERAGE overviews), the same without
overviews (``--plain-tiff`` is tiled ZSTD without them) and the tifffile deflate writer restores used before.
The pixels are the source's (a lossless restore), so only the TIFF writer differs.

    python bench/cog_size.py ../shared/data/satellite/train/*.tif --largest 6
"""

from __future__ import annotations

import argparse
import os
import time

from codec.images import gdalio
from codec.images.imageio import load_image, write_geotiff


def sizes(path: str) -> dict:
    im = load_image(path, path)
    out = {"source": os.path.getsize(path)}
    t = time.perf_counter()
    out["cog"] = len(gdalio.write_tiff(im.pixels, im.georef, nodata=im.nodata))
    out["cog_s"] = time.perf_counter() - t
    out["plain"] = len(gdalio.write_tiff(im.pixels, im.georef, nodata=im.nodata, cog=False))
    out["tifffile"] = len(write_geotiff(im.pixels, im.geo, nodata=im.nodata))
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+")
    ap.add_argument("--largest", type=int, default=0, help="only the N largest files")
    a = ap.parse_args(argv)
    files = sorted(a.files, key=os.path.getsize)[-a.largest:] if a.largest else a.files
    total = dict.fromkeys(("source", "cog", "plain", "tifffile"), 0)
    for f in files:
        s = sizes(f)
        for k in total:
            total[k] += s[k]
        print(f"{os.path.basename(f)[:48]:48s} source {s['source']:>9,d}  COG {s['cog']:>9,d} ({s['cog_s']:.1f} s)  "
              f"plain tiled {s['plain']:>9,d}  tifffile deflate {s['tifffile']:>9,d}")
    print("total " + ", ".join(f"{k} {v:,d} ({v / total['source']:.2f}×)" for k, v in total.items()))


if __name__ == "__main__":
    main()
