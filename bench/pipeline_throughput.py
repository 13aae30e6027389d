"""Pipeline overhead and memory: the archival job vs the bare codec, on the same images, in one run.

    python bench/pipeline_throughput.py [--gb 2.0] [--side 1024] [--quality 0.5 | --target-psnr 38] [--out PATH]
    python bench/pipeline_throughput.py --scene 100 --bands 10 [--lossless | --max-error 16 | --target-psnr 38]

``--scene MP``: one MP-megapixel × ``--bands`` uint16 GeoTIFF (tiled, DEFLATE) through the job, as a whole
scene: the replica stages it and reads it window by window (``--window-over-bytes``), verifies strip by
strip, and its peak RSS is compared with the admission estimate (``working_set_bytes(..., windowed=True)``);
writes bench/results/pipeline_scene.json (and a .log).

Generates uncompressed TIFF scenes until --gb of input, uploads them to a local
SeaweedFS, times the bare codec (decode → encode → verify, as a replica does) on a
sample, runs the job over everything, and samples the RSS of the driver and of
every Ray worker. Prints a table and writes bench/results/pipeline.json (and a .log).

Two overhead figures:

    end to end     pipeline MP/s over the job's wall time (Ray start-up, listing, replica start,
                   the last segment's commit included) vs the bare codec
    steady state   MP/s between the driver receiving the first replica batch and the last one
                   (the first batch's rows excluded), vs the bare codec: what a long nightly run
                   converges to

It also reports the replica's own encode time per megapixel (the rows' ``encode_seconds``) next
to the bare codec's, which separates a slower codec inside the replica (CPU contention with the
fetch tasks) from time spent outside it. ``run_pipeline`` and ``bare_codec`` are what
``bench/gpu_throughput.py`` reuses.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402


_BASES: dict[int, list[np.ndarray]] = {}


def scene(side: int, seed: int) -> bytes:
    """A distinct side×side scene: a random crop of an upscaled sample with a brightness shift."""
    import tifffile
    from skimage import data
    from skimage.transform import rescale

    if side not in _BASES:
        _BASES[side] = [rescale(b, 1.6 * side / min(b.shape[:2]), channel_axis=2, preserve_range=True).astype(np.uint8)
                        for b in (data.astronaut(), data.coffee(), data.chelsea(), data.rocket())]
    big = _BASES[side][seed % 4]
    rng = np.random.default_rng(seed)
    y, x = rng.integers(0, big.shape[0] - side + 1), rng.integers(0, big.shape[1] - side + 1)
    img = np.clip(big[y : y + side, x : x + side].astype(np.int16) + int(rng.integers(-20, 21)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    tifffile.imwrite(buf, img, photometric="rgb")
    return buf.getvalue()


class RssSampler(threading.Thread):
    """Peak RSS of the Ray worker processes (sum and largest) and of this process (the driver) while it runs,
    sampled twice a second."""

    def __init__(self):
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.peak_sum = self.peak_one = self.peak_driver = 0

    def run(self):
        import psutil

        me = os.getpid()
        while not self.stop.is_set():
            rss = []
            for p in psutil.process_iter(["pid", "cmdline"]):
                try:
                    cmd = " ".join(p.info["cmdline"] or [])
                    if p.info["pid"] != me and ("ray::" in cmd or "default_worker" in cmd):
                        rss.append(p.memory_info().rss)
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            self.peak_driver = max(self.peak_driver, psutil.Process(me).memory_info().rss)
            if rss:
                self.peak_sum = max(self.peak_sum, sum(rss))
                self.peak_one = max(self.peak_one, max(rss))
            time.sleep(0.5)


def spilled_bytes() -> int:
    """Bytes Ray spilled from the object store to disk in this session (its spill folders)."""
    import glob

    session = ray_session_dir()
    files = glob.glob(f"{session}/**/ray_spilled_objects*/**/*", recursive=True) + glob.glob("/tmp/ray_spilled_objects*/**/*", recursive=True)
    return sum(os.path.getsize(f) for f in files if os.path.isfile(f))


def ray_session_dir() -> str:
    import ray

    return ray._private.worker._global_node.get_session_dir_path()


def bare_codec(sample: list[bytes], mode: dict, model, **device) -> dict:
    """Images/s and MP/s of the bare codec doing a replica's work: decode the source, encode, decode, measure.

    ``encode_s_per_mp`` is the encode alone (what a replica reports as ``encode_seconds``).
    """
    import codec
    from codec.images.imageio import load_image
    from codec.metrics import ms_ssim, psnr

    codec.encode(load_image(sample[0], "warmup").pixels, model, **mode, **device)
    t = time.perf_counter()
    px, encode_s = 0, 0.0
    for i, data in enumerate(sample):
        img = load_image(data, str(i)).pixels
        te = time.perf_counter()
        r = codec.encode(img, model, **mode, **device)
        encode_s += time.perf_counter() - te
        out = codec.decode(r.data, model, **device)
        psnr(img, out), ms_ssim(img, out)
        px += img.shape[0] * img.shape[1]
    seconds = time.perf_counter() - t
    return {"images": len(sample), "images_s": len(sample) / seconds, "mp_s": px / 1e6 / seconds,
            "encode_s_per_mp": encode_s / (px / 1e6)}


class ArrivalClock:
    """When each replica row reaches the driver's segment writer, and its pixels (bench instrumentation)."""

    def __init__(self):
        self.times: list[float] = []
        self.pixels: list[int] = []
        self.encode_s: list[float] = []

    def __enter__(self):
        from pipeline import compress

        self._owner, self._add = compress.SegmentWriter, compress.SegmentWriter.add
        clock = self

        def add(writer, row):
            clock.times.append(time.perf_counter())
            clock.pixels.append((row.get("width") or 0) * (row.get("height") or 0))
            clock.encode_s.append(row.get("encode_seconds") or 0.0)
            return clock._add(writer, row)

        self._owner.add = add
        return self

    def __exit__(self, *exc):
        self._owner.add = self._add

    def steady(self) -> dict:
        """MP/s from the first batch's arrival to the last one's, the first batch's rows excluded."""
        if len(self.times) < 2:
            return {"mp_s": float("nan"), "images_s": float("nan"), "seconds": 0.0, "images": 0}
        first = self.times[0]
        later = [i for i, t in enumerate(self.times) if t > first + 0.05]  # rows of the first batch arrive together
        span = self.times[-1] - first
        if not later:  # every row came in the first batch: no steady state to measure
            return {"mp_s": float("nan"), "images_s": float("nan"), "seconds": 0.0, "images": 0}
        px = sum(self.pixels[i] for i in later)
        return {"mp_s": px / 1e6 / span if span > 0 else float("nan"),
                "images_s": len(later) / span if span > 0 else float("nan"), "seconds": span, "images": len(later)}


def run_pipeline(input_url: str, output_url: str, mode: dict, **job) -> dict:
    """Run the archival job (Ray started here, shut down after) and time it: end to end and steady state."""
    import ray

    from pipeline.compress import run_job
    from pipeline.config import CompressJobConfig

    ray.init(include_dashboard=False, log_to_driver=False)
    sampler = RssSampler()
    sampler.start()
    if "raster_model" in CompressJobConfig.model_fields:  # 8-bit RGB benches: no raster model needed
        job.setdefault("raster_model", job.get("model", "default"))
    cfg = CompressJobConfig(input=input_url, output=output_url, **mode, **job)
    try:
        with ArrivalClock() as clock:
            t = time.perf_counter()
            summary = run_job(cfg)
            wall = time.perf_counter() - t
        first_row_s = clock.times[0] - t if clock.times else float("nan")
    finally:
        sampler.stop.set()
        sampler.join()
        spilled = spilled_bytes()
        ray.shutdown()
    mp = sum(clock.pixels) / 1e6
    return {"images": summary.processed, "errors": summary.errors, "images_s": summary.processed / wall,
            "mp_s": summary.pixels / 1e6 / wall, "wall_s": wall, "first_row_s": first_row_s,
            "steady": clock.steady(), "encode_s_per_mp": sum(clock.encode_s) / mp if mp else float("nan"),
            "workers_peak_rss_mb_sum": sampler.peak_sum / 2**20, "worker_peak_rss_mb_max": sampler.peak_one / 2**20,
            "driver_peak_rss_mb_during_run": sampler.peak_driver / 2**20,
            "object_store_spilled_bytes": spilled, "window_over_bytes": cfg.window_over_bytes}


def overheads(bare: dict, pipe: dict) -> dict:
    return {"overhead_pct": (1 - pipe["mp_s"] / bare["mp_s"]) * 100,
            "steady_overhead_pct": (1 - pipe["steady"]["mp_s"] / bare["mp_s"]) * 100}


def report(res: dict) -> str:
    bare, pipe = res["bare"], res["pipeline"]
    return "\n".join([
        f"{res['images']} scenes of {res['side']}² ({res['input_gb']:.2f} GB), mode {res['mode']}, {res['cpu_count']} CPUs, "
        f"load average {res['load_avg_start'][0]:.2f} → {res['load_avg_end'][0]:.2f}",
        f"{'':24s} {'images/s':>9s} {'MP/s':>7s}",
        f"{'bare codec':24s} {bare['images_s']:>9.2f} {bare['mp_s']:>7.2f}",
        f"{'pipeline, end to end':24s} {pipe['images_s']:>9.2f} {pipe['mp_s']:>7.2f}",
        f"{'pipeline, steady state':24s} {pipe['steady']['images_s']:>9.2f} {pipe['steady']['mp_s']:>7.2f}",
        f"pipeline overhead: end to end {res['overhead_pct']:.1f}% (Ray start-up, listing, first batch: first row after "
        f"{pipe['first_row_s']:.0f} s of {pipe['wall_s']:.0f} s wall); steady state {res['steady_overhead_pct']:.1f}% "
        f"({pipe['steady']['images']} images over {pipe['steady']['seconds']:.0f} s)",
        f"encode time per MP: bare {bare['encode_s_per_mp']:.2f} s, inside the replica {pipe['encode_s_per_mp']:.2f} s",
        f"peak RSS: driver {res['driver_peak_rss_mb']:.0f} MB, workers {pipe['workers_peak_rss_mb_sum']:.0f} MB in all "
        f"(largest {pipe['worker_peak_rss_mb_max']:.0f} MB); object store spilled {pipe['object_store_spilled_bytes'] / 1e6:.1f} MB",
    ]) + "\n"


def run_scene(a) -> None:
    """One whole scene through the job (see the module docstring): replica peak RSS vs the admission estimate."""
    from bench.scene_source import write_scene
    from codec.images.imageio import working_set_bytes
    from devtools.localstack import LocalS3

    side = int(round((a.scene * 1e6) ** 0.5))
    mode = {"lossless": True} if a.lossless else {"max_error": a.max_error} if a.max_error is not None else \
        {"quality": a.quality} if a.quality is not None else {"target_psnr": a.target_psnr or 38.0}
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp, LocalS3(Path(tmp) / "s3", buckets=["raw", "archive"]) as s3:
        os.environ.update(s3.env)
        src = Path(tmp) / "scene.tif"
        t = time.perf_counter()
        write_scene(src, side, side, a.bands)
        make_s = time.perf_counter() - t
        fs = s3.filesystem()
        fs.put_file(str(src), "raw/scene/scene.tif")
        source_bytes = src.stat().st_size
        src.unlink()
        print(f"scene {side}×{side}×{a.bands} uint16 ({side * side * a.bands * 2 / 1e9:.2f} GB of samples, "
              f"{source_bytes / 1e9:.2f} GB as DEFLATE GeoTIFF) written in {make_s:.0f} s and uploaded", flush=True)
        pipe = run_pipeline("s3://raw/scene/", "s3://archive/scene/", mode, raster_model="satellite",
                            scratch_dir=str(Path(tmp) / "scratch"), batch_size=1,
                            **({} if a.window_over_mb is None else {"window_over_bytes": int(a.window_over_mb * 2**20)}))
        stats = archived_stats("s3://archive/scene/")
    estimate = working_set_bytes(side, side, a.bands, 2, raster=True, windowed=True)
    res = {"window_over_bytes": pipe.get("window_over_bytes"), "scene_mp": side * side / 1e6, "side": side, "bands": a.bands, "mode": mode, "source_bytes": source_bytes,
           "pipeline": pipe, "stats": stats, "admission_estimate_mb": estimate / 2**20,
           "in_memory_estimate_mb": working_set_bytes(side, side, a.bands, 2, raster=True) / 2**20,
           "mp_bands_s": side * side * a.bands / 1e6 / pipe["wall_s"],
           "driver_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "cpu_count": os.cpu_count(), "load_avg_start": load_start, "load_avg_end": os.getloadavg()}
    out = a.out if a.out != DEFAULT_OUT else ROOT / "bench" / "results" / f"pipeline_scene_{_mode_tag(mode)}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1, default=str))
    text = scene_report(res)
    out.with_suffix(".log").write_text(text)
    print(text + f"wrote {out}")


def _mode_tag(mode: dict) -> str:
    (name, value), = mode.items()
    return "lossless" if name == "lossless" else f"{name}{value:g}"


def archived_stats(output: str) -> dict:
    """The scene's stats row (what the archive says it measured)."""
    from pipeline.archive import Archive

    (row,) = Archive(output).committed_table("stats").to_pylist()
    return {k: row.get(k) for k in ("status", "error", "error_kind", "compressed_bytes", "bits_per_sample", "psnr",
                                    "band_psnr", "band_max_error", "max_abs_error", "encode_seconds", "tiles",
                                    "tile_coders", "nodata_fraction")}


def scene_report(res: dict) -> str:
    pipe, st = res["pipeline"], res["stats"]
    lines = [
        f"whole scene through the job: {res['side']}×{res['side']} ({res['scene_mp']:.0f} MP) × {res['bands']} bands uint16, "
        f"mode {res['mode']}, window reads over {res['window_over_bytes'] / 2**20:.0f} MiB, {res['cpu_count']} CPUs, load average {res['load_avg_start'][0]:.2f} → {res['load_avg_end'][0]:.2f}",
        f"  record: {st['status']} {st.get('error') or ''} {st['compressed_bytes'] or 0:,} bytes, "
        f"{st['bits_per_sample'] or float('nan'):.3f} bits/sample, max |error| {st['max_abs_error']}, "
        f"coders {dict(st['tile_coders'] or [])}",
        f"  wall {pipe['wall_s']:.0f} s (encode inside the replica {st['encode_seconds'] or float('nan'):.0f} s): "
        f"{res['mp_bands_s']:.2f} MP·bands/s end to end",
        f"  peak RSS: replica (largest Ray worker) {pipe['worker_peak_rss_mb_max']:.0f} MB; admission estimate "
        f"{res['admission_estimate_mb']:.0f} MB (in memory it would be {res['in_memory_estimate_mb']:.0f} MB); "
        f"driver {pipe['driver_peak_rss_mb_during_run']:.0f} MB during the run; object store spilled {pipe['object_store_spilled_bytes'] / 1e6:.1f} MB",
    ]
    return "\n".join(lines) + "\n"


DEFAULT_OUT = ROOT / "bench" / "results" / "pipeline.json"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gb", type=float, default=2.0)
    ap.add_argument("--side", type=int, default=1024)
    ap.add_argument("--quality", type=float)
    ap.add_argument("--target-psnr", type=float)
    ap.add_argument("--bare-sample", type=int, default=12)
    ap.add_argument("--scene", type=float, help="one scene of this many megapixels through the job instead")
    ap.add_argument("--bands", type=int, default=10)
    ap.add_argument("--lossless", action="store_true")
    ap.add_argument("--max-error", type=int)
    ap.add_argument("--window-over-mb", type=float, help="the job's --window-over-bytes, in MiB (default: the job's)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    a = ap.parse_args()
    if a.scene:
        return run_scene(a)
    mode = {"quality": a.quality} if a.quality is not None else {"target_psnr": a.target_psnr or 38.0}

    import codec
    from devtools.localstack import LocalS3

    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp, LocalS3(Path(tmp) / "s3", buckets=["raw", "archive"]) as s3:
        os.environ.update(s3.env)
        fs = s3.filesystem()
        total, n = 0, 0
        sample = []
        while total < a.gb * 1e9:
            data = scene(a.side, n)
            fs.pipe(f"raw/bench/{n:05d}.tif", data)
            if len(sample) < a.bare_sample:
                sample.append(data)
            total += len(data)
            n += 1
        print(f"uploaded {n} scenes of {a.side}² ({total / 1e9:.2f} GB) to a local S3", flush=True)
        model = codec.load_model("default")
        bare = bare_codec(sample, mode, model)
        print(f"bare codec: {bare['images_s']:.2f} images/s, {bare['mp_s']:.2f} MP/s", flush=True)
        pipe = run_pipeline("s3://raw/bench/", "s3://archive/bench/", mode)

    res = {"input_gb": total / 1e9, "images": n, "side": a.side, "mode": mode, "model": model.model_id,
           "bare": bare, "pipeline": pipe, **overheads(bare, pipe),
           "driver_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "cpu_count": os.cpu_count(), "load_avg_start": load_start, "load_avg_end": os.getloadavg()}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=1))
    text = report(res)
    a.out.with_suffix(".log").write_text(text)
    print(text + f"wrote {a.out}")


if __name__ == "__main__":
    main()
