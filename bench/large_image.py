"""Encode (and region-decode) a 100-megapixel raster tile-batch by tile-batch; report peak RSS.

The raster is a memory-mapped file on disk, as a large GeoTIFF read lazily would be,
so resident memory shows what the codec itself holds.

    python bench/large_image.py --megapixels 100 --json out.json
    python bench/large_image.py --megapixels 100 --bands 10 --dtype uint16 [--lossless] [--full-decode]

Rasters (``--bands``/``--dtype``): 12-bit bands of different gains made from the same texture, with
zero (nodata) corners like a decimated scene's; ``--full-decode`` also decodes the whole raster
(its output array is the one allocation the size of the raster) and checks it against the source.
Encode: the peak of the process's own memory (RssAnon, sampled), since the memory-mapped source's
pages count in RSS once touched (an in-memory source would be the same bytes, held once); decode:
VmHWM of a fresh process that reads the stream and decodes the whole raster (its output included).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import codec  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def proc_status_mb(field: str) -> float:
    """A /proc/self/status figure in MB (VmHWM: this process image's peak RSS, reset by exec, unlike
    ru_maxrss, which a child inherits; RssAnon: memory of its own, not file pages such as a memmap's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


class AnonPeak:
    """Samples RssAnon every 50 ms in a thread: the peak of what the process itself allocated, the raster's
    memory-mapped file pages (which RSS also counts once touched) left out."""

    def __init__(self):
        import threading

        self.peak, self._stop = 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, proc_status_mb("RssAnon"))
            self._stop.wait(0.05)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, proc_status_mb("RssAnon"))


def make_raster(path: Path, side: int) -> np.memmap:
    """A textured raster: a natural image tiled with per-block brightness changes."""
    from skimage import data

    base = data.astronaut()
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(side, side, 3))
    bh, bw = base.shape[:2]
    for y in range(0, side, bh):
        for x in range(0, side, bw):
            h, w = min(bh, side - y), min(bw, side - x)
            arr[y : y + h, x : x + w] = (base[:h, :w].astype(np.int16) + ((x + y) // bw) % 40 - 20).clip(0, 255)
    arr.flush()
    del arr
    return np.load(path, mmap_mode="r")


def make_multiband(path: Path, side: int, bands: int, dtype: str) -> np.memmap:
    """A (side, side, bands) raster: the textured image's luminance at per-band gains and offsets (12-bit for
    uint16), zero (nodata) in two opposite corners. Written strip by strip (never whole in memory)."""
    from skimage import data

    base = data.astronaut().astype(np.float32).mean(2)
    bh, bw = base.shape
    top = 4000.0 if dtype == "uint16" else 250.0
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(side, side, bands))
    xs = np.arange(side)
    for y in range(0, side, bh):
        h = min(bh, side - y)
        reps = -(-side // bw)
        strip = np.tile(base[:h], (1, reps))[:, :side] + ((xs // bw + y // bh) % 40 - 20)[None]
        rows = np.arange(y, y + h)[:, None]
        nodata = (rows + xs[None] < side // 4) | (rows + xs[None] > 2 * side - side // 4)
        for b in range(bands):
            v = np.clip((strip / 255.0) * top * (0.5 + 0.05 * b) + 20 + 10 * b, 1, top).astype(dtype)
            v[nodata] = 0
            arr[y : y + h, :, b] = v
    arr.flush()
    del arr
    return np.load(path, mmap_mode="r")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--megapixels", type=float, default=100)
    ap.add_argument("--quality", type=float, default=0.5)
    ap.add_argument("--bands", type=int, default=None, help="a multi-band raster of this many bands (codec v2)")
    ap.add_argument("--dtype", default="uint8", choices=["uint8", "uint16"])
    ap.add_argument("--lossless", action="store_true")
    ap.add_argument("--full-decode", action="store_true")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    side = int(round((a.megapixels * 1e6) ** 0.5))
    if a.bands is not None or a.dtype != "uint8" or a.lossless:
        return raster_case(a, side)
    with tempfile.TemporaryDirectory() as tmp:
        raster = make_raster(Path(tmp) / "raster.npy", side)
        model = codec.load_model("default")
        rss_before = peak_rss_mb()
        t = time.perf_counter()
        result = codec.encode(raster, model, quality=a.quality, batch_size=8)
        enc_s = time.perf_counter() - t
        rss_encode = peak_rss_mb()
        t = time.perf_counter()
        region = codec.decode_region(result.data, (side // 2, side // 2, 1000, 1000), model)
        region_s = time.perf_counter() - t
        ok = region.shape == (1000, 1000, 3)
    out = {
        "megapixels": side * side / 1e6, "width": side, "height": side, "quality": a.quality,
        "bytes": len(result.data), "bpp": result.bpp, "encode_s": enc_s, "encode_mp_s": side * side / 1e6 / enc_s,
        "peak_rss_mb_before_encode": rss_before, "peak_rss_mb_after_encode": rss_encode,
        "region_1mp_decode_s": region_s, "region_ok": ok,
    }
    print(json.dumps(out, indent=1))
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))


def raster_case(a, side: int) -> None:
    import os

    import torch

    torch.set_num_threads(1)
    bands = a.bands or 3
    with tempfile.TemporaryDirectory(dir=os.environ.get("TLIC_BENCH_TMP")) as tmp:
        t = time.perf_counter()
        raster = make_multiband(Path(tmp) / "raster.npy", side, bands, a.dtype)
        make_s = time.perf_counter() - t
        model = codec.load_model("default")
        anon_before = proc_status_mb("RssAnon")
        t = time.perf_counter()
        opts = {"lossless": True} if a.lossless else {"quality": a.quality}
        with AnonPeak() as anon:
            result = codec.encode(raster, model, nodata=0, batch_size=8, **opts)
        enc_s = time.perf_counter() - t
        print(f"encoded {side}² × {bands} {a.dtype} in {enc_s:.1f} s, {result.bits_per_sample:.3f} bits/sample, "
              f"peak RssAnon {anon.peak:.0f} MB (VmHWM {proc_status_mb('VmHWM'):.0f} MB with the memory-mapped source)",
              flush=True)
        t = time.perf_counter()
        x0 = y0 = side // 2
        rs = min(1000, side - x0)
        region = codec.decode_region(result.data, (x0, y0, rs, rs), model)
        region_s = time.perf_counter() - t
        ok = region.shape == (rs, rs, bands) and (not a.lossless or np.array_equal(region, raster[y0:y0 + rs, x0:x0 + rs]))
        out = {
            "megapixels": side * side / 1e6, "width": side, "height": side, "bands": bands, "dtype": a.dtype,
            "mode": "lossless" if a.lossless else f"quality {a.quality}", "raster_bytes": side * side * bands * np.dtype(a.dtype).itemsize,
            "bytes": len(result.data), "bits_per_sample": result.bits_per_sample, "make_s": make_s, "encode_s": enc_s,
            "encode_mp_bands_s": side * side * bands / 1e6 / enc_s,
            "rss_anon_mb_before_encode": anon_before, "peak_rss_anon_mb_encode": anon.peak,
            "vm_hwm_mb_after_encode_incl_mapped_source": proc_status_mb("VmHWM"),
            "region_1mp_decode_s": region_s, "region_ok": bool(ok), "load_avg": os.getloadavg(),
        }
        if a.full_decode:  # in a fresh process, so its peak RSS is the decoder's alone (not the source's pages)
            import subprocess

            stream = Path(tmp) / "raster.tlic"
            stream.write_bytes(result.data)
            del result
            code = (f"import sys, json, time, resource, numpy as np; sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r}); "
                    "import codec; data = open(sys.argv[1], 'rb').read(); t = time.perf_counter(); "
                    "full = codec.decode(data); s = time.perf_counter() - t; "
                    "rss = [int(l.split()[1]) / 1024 for l in open('/proc/self/status') if l.startswith('VmHWM:')][0]; "
                    "src = np.load(sys.argv[2], mmap_mode='r'); "
                    "exact = all(np.array_equal(full[y:y + 256], src[y:y + 256]) for y in range(0, full.shape[0], 2048)); "
                    "print(json.dumps({'full_decode_s': s, 'peak_rss_mb_full_decode_process': rss, 'sampled_rows_exact': exact}))")
            proc = subprocess.run([sys.executable, "-c", code, str(stream), str(Path(tmp) / "raster.npy")],
                                  capture_output=True, text=True, check=True)
            dec = json.loads(proc.stdout.strip().splitlines()[-1])
            out.update(dec, decode_mp_bands_s=side * side * bands / 1e6 / dec["full_decode_s"])
            if not a.lossless:
                out.pop("sampled_rows_exact")
    print(json.dumps(out, indent=1))
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
