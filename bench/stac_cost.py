"""What the STAC catalogue costs the archive's writer: item build time, per-commit write time, collection size.

    python bench/stac_cost.py [--quick] [--rows 256] [--segments 8] [--out bench/results/stac_cost.json]

On a local disk (no Ray, no S3): one georeferenced 4-band uint16 raster and one photo are encoded once
(codec.encode), then --segments segments of --rows records (those streams under distinct keys) go through
pipeline.stac.Catalogue.add_segment as the compress job's SegmentWriter calls it. Prints and writes: ms per
item built, s per commit (items + collection), collection bytes per item. Not measured: S3 round trips (one
PUT per item, 8 in flight) and Catalogue.open's catch-up (it reads the missed segments).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402


class _Lease:
    def check(self) -> None:  # the benchmark is the only writer
        pass


def streams() -> list[dict]:
    """(record, stats) pairs of one raster and one photo as the replica makes them (codec.encode + schema)."""
    import codec
    from codec.images.imageio import load_image
    from conftest import natural_image
    from pipeline_fixtures import GEO_TAGS, png
    from test_pipeline_rasters import geotiff, raster

    out = []
    for name, data in {"scene.tif": geotiff(raster(512, 512, 4, seed=1), GEO_TAGS),
                       "photo.png": png(natural_image(512, 512, 3))}.items():
        im = load_image(data, name)
        opts = codec.EncodeOptions.from_keywords(quality=0.6, name=name, georef=im.georef, bit_depth=im.bit_depth)
        r = codec.encode(im.pixels, None, opts)
        out.append({"bitstream": r.data, "geo": im.geo, "exif": im.exif, "mtime": "2026-11-22T10:00:00+00:00",
                    "source_size": len(data), "source_sha256": "00" * 32, "band_names": None, "nodata": None,
                    "run_id": "bench", "version": "v", "status": "ok", "mode": "quality", "target": 0.6,
                    "timestamp": datetime.now(timezone.utc), "tile_coders": [("learned", 4)]})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2 segments of 64 rows")
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--segments", type=int, default=8)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "stac_cost.json")
    a = ap.parse_args(argv)
    rows, segments = (64, 2) if a.quick else (a.rows, a.segments)
    import torch

    torch.set_num_threads(1)
    from pipeline.archive import Archive, Manifest
    from pipeline.stac import Catalogue, build_item

    base = streams()
    t = time.perf_counter()
    n_build = 50
    for i in range(n_build):
        build_item({**base[i % 2], "key": f"s3://raw/k{i}"}, base[i % 2], "x#key=y", "c")
    build_ms = (time.perf_counter() - t) / n_build * 1e3
    with tempfile.TemporaryDirectory() as tmp:
        archive = Archive(tmp)
        cat = Catalogue(archive, _Lease())
        commit_s = []
        for s in range(segments):
            recs = [{**base[i % 2], "key": f"s3://raw/seg{s}/img{i:05d}.tif"} for i in range(rows)]
            m = Manifest(f"{s:012d}.json", "bench", s, s, "", rows, rows, archive.segment_files("bench", s), None, None)
            t = time.perf_counter()
            cat.add_segment(m, recs, recs)
            commit_s.append(time.perf_counter() - t)
        col_bytes = Path(archive.stac_collection()).stat().st_size
        item_bytes = np.mean([p.stat().st_size for p in Path(tmp, "stac", "items").iterdir()])
    result = {"rows_per_segment": rows, "segments": segments, "items": rows * segments,
              "build_item_ms": round(build_ms, 2), "commit_s_first": round(commit_s[0], 3),
              "commit_s_last": round(commit_s[-1], 3), "collection_bytes": col_bytes,
              "collection_bytes_per_item": round(col_bytes / (rows * segments), 1), "item_bytes_mean": int(item_bytes)}
    log = (f"stac_cost: {rows * segments} items in {segments} commits of {rows}: build {build_ms:.1f} ms/item, "
           f"commit (items + collection) {commit_s[0]:.2f} s first → {commit_s[-1]:.2f} s last, collection "
           f"{col_bytes / 1e3:.0f} kB ({col_bytes / (rows * segments):.0f} B/item), item {item_bytes / 1e3:.1f} kB")
    print(log)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1))
    a.out.with_suffix(".log").write_text(log + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
