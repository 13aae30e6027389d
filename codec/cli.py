"""``codec``: encode, decode and inspect TLIC streams from the shell.

    codec encode IN.png OUT.tlic --target-psnr 38     (or --quality 0.6, --target-bpp 0.3, --max-error 2)
    codec encode IN.png OUT.tlic --effort 1           fewer bytes, slower encode, same decoder
    codec encode SCENE.tif OUT.tlic --nodata 0         16-bit / multi-band rasters (--lossless: exact)
    codec decode IN.tlic OUT.png [--region x,y,w,h] [--max-pixels N]   (rasters: OUT.tif, nodata and band names kept)
    codec decode IN.tlic OUT.tif [--plain-tiff]        a Cloud Optimized GeoTIFF with the stream's georeferencing
    codec decode IN.tlic OUT.png --max-bits N|0.25     a progressive preview (minnen2018 streams)
    codec info IN.tlic [--json]

Exit codes: 0 ok, 2 bad arguments, 3 unreadable or unsupported input image,
4 corrupt or truncated stream (or one over --max-pixels), 5 model not found or wrong model, 1 anything else.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from codec import api
from codec.families.minnen2018 import chosen_warning
from codec.registry import load_model
from codec.errors import (CodecError, CorruptStreamError, ModelMismatchError, ModelNotFoundError, StreamTooLargeError,
                     UnsupportedImageError)
from codec.images.imageio import DEFAULT_MAX_PIXELS, load_image, write_image
from codec.options import DEFAULT_TARGET_PSNR, EFFORT_ITERATIONS, EncodeOptions, check_effort
from codec.format.tiles import DEFAULT_TILE

EXIT_USAGE, EXIT_INPUT, EXIT_CORRUPT, EXIT_MODEL, EXIT_OTHER = 2, 3, 4, 5, 1


def _region(text: str) -> tuple[int, int, int, int]:
    try:
        x, y, w, h = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"region must be x,y,w,h integers, got {text!r}") from None
    return x, y, w, h


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return int(text)


def _effort(text: str) -> int:
    try:
        return check_effort(int(text) if text.isdigit() else text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _bits(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of bits or a fraction below 1, got {text!r}")
    return v


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="codec", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    enc = sub.add_parser("encode", help="image file → stream")
    enc.add_argument("input", type=Path)
    enc.add_argument("output", type=Path)
    mode = enc.add_mutually_exclusive_group()
    mode.add_argument("--target-psnr", type=float, help=f"dB each tile must reach (default {DEFAULT_TARGET_PSNR:g})")
    mode.add_argument("--quality", type=float, help="one quality in [0, 1] for all tiles")
    mode.add_argument("--target-bpp", type=float, help="byte budget in bits per pixel (rasters: per sample)")
    mode.add_argument("--max-error", type=int, help="every sample within ±E of the source (0: lossless)")
    mode.add_argument("--lossless", action="store_true", help="every tile exact (JPEG XL lossless in the container)")
    enc.add_argument("--model", default=None,
                     help="NAME or NAME@VERSION (default: 'default'; for rasters 'satellite' where installed)")
    enc.add_argument("--nodata", type=int, default=None,
                     help="nodata sample value (default: the file's GDAL_NODATA)")
    enc.add_argument("--nodata-mode", choices=("band", "pixel"), default=None,
                     help="band (GDAL's meaning, the default for GDAL_NODATA): a sample equal to the value is "
                          "nodata in its band; pixel (a file's NODATA_VALUES): a pixel is nodata only when every "
                          "band equals it")
    enc.add_argument("--no-lossless-fallback", action="store_true",
                     help="rasters: code tiles a --target-psnr cannot reach at the top quality (flagged) "
                          "instead of exactly")
    enc.add_argument("--tile-size", type=int, default=DEFAULT_TILE)
    enc.add_argument("--effort", type=_effort, default=0,
                     help=f"0..{len(EFFORT_ITERATIONS) - 1}: refine each tile's latents for fewer bytes at the same "
                          "decoder (0, the default: none; each level is slower, see bench/results/effort.log)")
    enc.add_argument("--device", default="cpu")
    dec = sub.add_parser("decode", help="stream → image file (format from the extension)")
    dec.add_argument("input", type=Path)
    dec.add_argument("output", type=Path)
    dec.add_argument("--region", type=_region, help="x,y,w,h: decode only this box")
    dec.add_argument("--max-pixels", type=_positive, default=DEFAULT_MAX_PIXELS,
                     help=f"refuse streams (or regions' tiles) of more pixels than this (default {DEFAULT_MAX_PIXELS})")
    dec.add_argument("--device", default="cpu")
    dec.add_argument("--plain-tiff", action="store_true",
                     help=".tif output: a plain tiled GeoTIFF instead of a Cloud Optimized GeoTIFF")
    dec.add_argument("--max-bits", type=_bits, help="minnen2018 streams: a progressive preview from a prefix of every "
                     "tile's bits: N bits, or a fraction of them below 1 (e.g. 0.25)")
    info = sub.add_parser("info", help="print header, tile grid, per-tile quality and bytes")
    info.add_argument("input", type=Path)
    info.add_argument("--json", action="store_true")
    return ap


def _read_stream(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UnsupportedImageError(f"{path}: cannot read ({exc.strerror or exc})") from exc


def _cmd_encode(a) -> None:
    loaded = load_image(a.input, str(a.input))
    image = loaded.pixels
    nodata = a.nodata if a.nodata is not None else loaded.nodata
    options = EncodeOptions.from_keywords(
        target_psnr=a.target_psnr, quality=a.quality, target_bpp=a.target_bpp, max_error=a.max_error,
        tile_size=a.tile_size,
        device=a.device, name=str(a.input), nodata=nodata, nodata_mode=a.nodata_mode or loaded.nodata_mode,
        band_names=loaded.band_names, bit_depth=loaded.bit_depth,
        lossless=a.lossless, lossless_fallback=not a.no_lossless_fallback,
        effort=a.effort, georef=loaded.georef)
    note = chosen_warning(load_model(a.model)) if a.model else None  # the default is never such a model
    if note:
        print(f"codec: {note}", file=sys.stderr)
    t = time.perf_counter()
    r = api.encode(image, a.model, options)
    dt = time.perf_counter() - t
    a.output.write_bytes(r.data)
    psnr = f"{r.psnr:.2f} dB" if r.psnr is not None else "not measured"
    h = r.header
    rate = (f"{r.bits_per_sample:.4f} bits/sample ({h.bands} {h.dtype} bands)" if h.raster is not None
            else f"{r.bpp:.4f} bpp")
    exact = sum(t.lossless for t in h.tiles)
    print(f"{a.input} → {a.output}: {len(r.data)} bytes, {rate}, PSNR {psnr}, {len(h.tiles)} tiles "
          f"({r.missed_tiles} missed the target{f', {exact} exact' if exact else ''}), "
          f"{image.shape[0] * image.shape[1] * h.bands / dt / 1e6:.2f} MP·bands/s")


def _cmd_decode(a) -> None:
    data = _read_stream(a.input)
    if a.region:
        out = api.decode_region(data, a.region, device=a.device, max_pixels=a.max_pixels, max_bits=a.max_bits)
    else:
        out = api.decode(data, device=a.device, max_pixels=a.max_pixels, max_bits=a.max_bits)
    header = api.read_header(data)
    r = header.raster
    tiff = a.output.suffix.lower() in (".tif", ".tiff")  # only a GeoTIFF keeps georeferencing, nodata and band names
    extra = {} if r is None or not tiff else {k: v for k, v in (("nodata", r.real_band_nodata),
                                                                ("band_names", r.band_names),
                                                     ("bit_depth", r.bit_depth if r.bit_depth % 8 else None)) if v is not None}
    georef = header.georef
    if georef is not None and tiff:
        extra["georef"] = georef.shifted(*a.region[:2]) if a.region else georef
    write_image(a.output, out, **({"cog": not a.plain_tiff} if tiff else {}), **extra)
    print(f"{a.input} → {a.output}: {out.shape[1]}×{out.shape[0]}"
          + (f"×{r.bands} {r.sample_dtype}" if r is not None else ""))


def header_summary(h) -> dict:
    return {
        "format_version": h.version, "model_id": h.model_id, "model_sha256": h.model_hash.hex(),
        "width": h.width, "height": h.height, "channels": h.channels, "tile_size": h.tile_size,
        "grid": list(h.grid), "mode": h.mode, "target": h.target, "header_bytes": h.header_len,
        "bands": h.bands, "dtype": h.dtype,
        **({} if h.raster is None else {"bit_depth": h.raster.bit_depth, "nodata": h.raster.real_nodata,
                                         "nodata_mode": h.raster.nodata_mode,
                                         "band_nodata": h.raster.real_band_nodata,
                                         "band_names": list(h.raster.band_names) if h.raster.band_names else None,
                                         "band_ranges": [[h.raster.real(lo), h.raster.real(hi)]
                                                         for lo, hi in zip(h.raster.lo, h.raster.hi)],
                                         "lossless": h.lossless}),
        **({} if h.georef is None else {"georef": h.georef.record(), "georef_bytes": h.georef_len}),
        "tiles": [{"index": i, "box": list(h.tile_box(i)), "quality": round(t.quality, 4), "bytes": t.length,
                   "missed_target": t.missed_target, "lossless": t.lossless, "crc32": f"{t.crc:08x}"}
                  for i, t in enumerate(h.tiles)],
    }


def _cmd_info(a) -> None:
    data = _read_stream(a.input)
    h = api.read_header(data)
    s = header_summary(h)
    if a.json:
        print(json.dumps(s, indent=1))
        return
    total = len(data)
    print(f"{a.input}: TLIC v{h.version}, {h.width}×{h.height}×{h.channels}, {total} bytes, {total * 8 / (h.width * h.height):.4f} bpp")
    if h.raster is not None:
        r = h.raster
        values = r.real_nodata if r.real_nodata is not None else r.real_band_nodata
        nodata = f"{values} (per {r.nodata_mode})" if r.has_nodata else "none"
        print(f"raster: {r.bands} bands of {r.sample_dtype} ({r.bit_depth}-bit), "
              f"{total * 8 / (h.width * h.height * r.bands):.4f} bits/sample, nodata {nodata}"
              + (f", bands {', '.join(r.band_names)}" if r.band_names else "") + (", lossless" if h.lossless else ""))
    if h.georef is not None:
        g = h.georef.record()
        print(f"georeferencing: {g.get('crs', 'no CRS')}, {g['raster_type']}, "
              + (f"geotransform {g['geotransform']}" if "geotransform" in g else f"{g.get('gcps', 0)} GCPs")
              + f" ({h.georef_len} bytes)")
    print(f"model {h.model_id} (sha256 {h.model_hash.hex()[:16]}…), mode {h.mode} {h.target:g}")
    rows, cols = h.grid
    print(f"tiles {rows}×{cols} of {h.tile_size}px, header {h.header_len} bytes")
    q = np.array([t.quality for t in h.tiles]).reshape(rows, cols)
    b = np.array([t.length for t in h.tiles]).reshape(rows, cols)
    print("quality per tile:")
    for r in range(rows):
        print("  " + " ".join(" =  " if h.tiles[r * cols + c].lossless else
                              f"{v:.2f}{'*' if h.tiles[r * cols + c].missed_target else ' '}" for c, v in enumerate(q[r])))
    print("bytes per tile:")
    for r in range(rows):
        print("  " + " ".join(f"{v:6d}" for v in b[r]))
    if any(t.missed_target for t in h.tiles):
        print("* tile could not reach the target at the highest quality")
    if any(t.lossless for t in h.tiles):
        print("= tile coded exactly (lossless)")


def main(argv=None) -> int:
    a = _parser().parse_args(argv)
    try:
        {"encode": _cmd_encode, "decode": _cmd_decode, "info": _cmd_info}[a.command](a)
    except UnsupportedImageError as exc:
        print(f"codec: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except StreamTooLargeError as exc:  # not damage: the stream is larger than this reader accepts
        print(f"codec: error: {a.input}: {exc}", file=sys.stderr)
        return EXIT_CORRUPT
    except CorruptStreamError as exc:
        print(f"codec: error: corrupt stream {a.input}: {exc}", file=sys.stderr)
        return EXIT_CORRUPT
    except (ModelNotFoundError, ModelMismatchError) as exc:
        print(f"codec: error: {exc}", file=sys.stderr)
        return EXIT_MODEL
    except ValueError as exc:  # arguments out of range: region outside the image, quality > 1, ...
        print(f"codec: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (CodecError, OSError) as exc:
        print(f"codec: error: {exc}", file=sys.stderr)
        return EXIT_OTHER
    return 0


if __name__ == "__main__":
    sys.exit(main())
