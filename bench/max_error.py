"""Max-error bytes (issue 23 items 4 and 7): ``codec.encode(max_error=E)`` against JPEG-LS near-lossless (CharLS),
LERC (``level=E``) and SZ3 (absolute bound E) at the same E, every file verified by decoding; our encode/decode MP/s.

    python bench/max_error.py [--quick] [--out bench/results]

Sets (tile_tools.py's): Kodak (24, evaluation only) and the aerial evaluation tiles at E = 1, 2, 4, 8; the
satellite rasters (centre 512² crops of ../shared/data/satellite/train; nodata as the file says) at E = 4, 16, 64.
The bound is checked over valid pixels for every codec; ours also keeps nodata exact, the others code nodata
pixels as data. JPEG-LS codes a photo's RGB interleaved and a raster band by band; SZ3 codes float32 samples
(its output rounded and clipped back to the dtype, which keeps the bound); LERC takes the array as it is.
"vs best" is our bytes over the sum of each image's smallest baseline file. Timings are wall time on whatever
machine runs this (here: 2 shared CPU cores); results ``max_error.json`` / ``max_error.log`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import codec  # noqa: E402
import tile_tools  # noqa: E402  (the evaluation sets)
from codec import tilecoders, toolchoice  # noqa: E402
from codec.format.raster import valid_mask  # noqa: E402

PHOTO_BOUNDS, RASTER_BOUNDS = (1, 2, 4, 8), (4, 16, 64)
BASELINES = ("jpegls", "lerc", "sz3")
LINES: list[str] = []


def say(line: str) -> None:
    print(line, flush=True)
    LINES.append(line)


def max_err(ref: np.ndarray, dec: np.ndarray, valid: np.ndarray | None) -> int:
    d = np.abs(ref.astype(np.int64) - dec.reshape(ref.shape).astype(np.int64))
    return int((d if valid is None else d[valid]).max(initial=0))


def jpegls(img: np.ndarray, e: int) -> tuple[int, np.ndarray]:
    import imagecodecs

    parts = [img] if img.dtype == np.uint8 and img.shape[2] == 3 else [img[..., b] for b in range(img.shape[2])]
    blobs = [imagecodecs.jpegls_encode(np.ascontiguousarray(p), level=min(e, 255)) for p in parts]
    dec = [imagecodecs.jpegls_decode(b) for b in blobs]
    return sum(map(len, blobs)), (dec[0] if len(dec) == 1 else np.stack(dec, -1)).reshape(img.shape)


def lerc(img: np.ndarray, e: int) -> tuple[int, np.ndarray]:
    import imagecodecs

    data = imagecodecs.lerc_encode(np.ascontiguousarray(img), level=e)
    return len(data), imagecodecs.lerc_decode(data).reshape(img.shape)


def sz3(img: np.ndarray, e: int) -> tuple[int, np.ndarray]:
    import imagecodecs

    data = imagecodecs.sz3_encode(np.ascontiguousarray(img, dtype=np.float32), abs=float(e))
    out = imagecodecs.sz3_decode(data, shape=img.shape, dtype=np.float32)
    return len(data), np.clip(np.rint(out), 0, np.iinfo(img.dtype).max).astype(img.dtype)


def ours(img: np.ndarray, e: int, nodata: int | None) -> dict:
    kw = {"nodata": nodata} if nodata is not None else {}
    t0 = time.perf_counter()
    r = codec.encode(img if img.shape[2] > 1 or img.dtype != np.uint8 else img[..., 0], None, max_error=e, **kw)
    t1 = time.perf_counter()
    dec = codec.decode(r.data)
    t2 = time.perf_counter()
    valid = valid_mask(img, nodata)
    nodata_ok = valid is None or bool((dec.reshape(img.shape)[~valid] == nodata).all())
    names = [tilecoders.coder(t.coder).name for t in r.header.tiles]
    return {"bytes": len(r.data), "max_err": max_err(img, dec, valid), "nodata_exact": nodata_ok,
            "coders": toolchoice.counts(names), "encode_s": t1 - t0, "decode_s": t2 - t1}


def evaluate(name: str, images: list[tuple[str, np.ndarray, int | None]], bounds) -> dict:
    out = {}
    for e in bounds:
        row = {"images": len(images), "bytes": 0, "samples": 0, "megapixels": 0.0, "encode_s": 0.0, "decode_s": 0.0,
               "over_bound": 0, "nodata_moved": 0, "coders": {}, "best_baseline": 0,
               "baseline": dict.fromkeys(BASELINES, 0), "baseline_over_bound": dict.fromkeys(BASELINES, 0)}
        for _, img, nodata in images:
            m = ours(img, e, nodata)
            for k in ("bytes", "encode_s", "decode_s"):
                row[k] += m[k]
            row["over_bound"] += int(m["max_err"] > e)
            row["nodata_moved"] += int(not m["nodata_exact"])
            for c, n in m["coders"].items():
                row["coders"][c] = row["coders"].get(c, 0) + n
            row["samples"] += img.size
            row["megapixels"] += img.shape[0] * img.shape[1] / 1e6
            valid, sizes = valid_mask(img, nodata), {}
            for b in BASELINES:
                n, dec = globals()[b](img, e)
                if max_err(img, dec, valid) > e:
                    row["baseline_over_bound"][b] += 1
                    continue  # a file that breaks the bound does not count as a guarantee
                sizes[b] = n
                row["baseline"][b] += n
            row["best_baseline"] += min(sizes.values())
        row["vs_best"] = row["bytes"] / row["best_baseline"]
        row["bits_per_sample"] = row["bytes"] * 8 / row["samples"]
        row["baseline_bits_per_sample"] = {b: n * 8 / row["samples"] for b, n in row["baseline"].items()}
        row["encode_mp_s"] = row["megapixels"] / row["encode_s"]
        row["decode_mp_s"] = row["megapixels"] / row["decode_s"]
        out[str(e)] = row
        bps = "  ".join(f"{b} {v:.3f}" for b, v in row["baseline_bits_per_sample"].items())
        say(f"{name:9} E={e:<3d} ours {row['bits_per_sample']:.3f} b/sample  vs best {row['vs_best']:.3f}  | {bps}"
            f"  | over bound {row['over_bound']}/{len(images)} nodata moved {row['nodata_moved']}"
            f"  coders {row['coders']}  enc {row['encode_mp_s']:.2f} MP/s  dec {row['decode_mp_s']:.2f} MP/s"
            + (f"  baselines over bound {row['baseline_over_bound']}" if any(row["baseline_over_bound"].values()) else ""))
    return out


def photos(paths: list[Path]) -> list[tuple[str, np.ndarray, None]]:
    from codec.images.imageio import read_image

    out = []
    for p in paths:
        px = read_image(p)
        out.append((p.name, np.ascontiguousarray(px[..., None] if px.ndim == 2 else px[..., :3]), None))
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 images per set")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    a = ap.parse_args(argv)
    result = {"quick": a.quick, "sets": {}}
    say(f"max_error bench{' (--quick)' if a.quick else ''}: bits per sample (bytes·8 / samples), ours vs the best of "
        f"{', '.join(BASELINES)} per image")
    for name, paths in tile_tools.photo_sets(a.quick).items():
        result["sets"][name] = evaluate(name, photos(paths), PHOTO_BOUNDS)
    sat = tile_tools.satellite_files(a.quick)
    if sat:
        rasters = [(p.name, *tile_tools.load_raster(p)) for p in sat]
        result["sets"]["satellite"] = evaluate("satellite", rasters, RASTER_BOUNDS)
    else:
        say("satellite: no rasters under ../shared/data/satellite/train, skipped")
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "max_error.json").write_text(json.dumps(result, indent=1))
    (a.out / "max_error.log").write_text("\n".join(LINES) + "\n")


if __name__ == "__main__":
    main()
