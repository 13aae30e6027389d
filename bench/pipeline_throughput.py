"""Pipeline overhead and memory: the archival job vs the bare codec, on the same images, in one run.

    python bench/pipeline_throughput.py [--gb 2.0] [--side 1024] [--quality 0.5 | --target-psnr 38]

Generates uncompressed TIFF scenes until --gb of input, uploads them to a local
SeaweedFS, times the bare codec (decode → encode → verify, as a replica does) on a
sample, runs the job over everything, and samples the RSS of the driver and of
every Ray worker. Prints a table and writes bench/results/pipeline.json.
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
    """Peak RSS of the Ray worker processes (sum and largest), sampled twice a second."""

    def __init__(self):
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.peak_sum = self.peak_one = 0

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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gb", type=float, default=2.0)
    ap.add_argument("--side", type=int, default=1024)
    ap.add_argument("--quality", type=float)
    ap.add_argument("--target-psnr", type=float)
    ap.add_argument("--bare-sample", type=int, default=12)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "pipeline.json")
    a = ap.parse_args()
    mode = {"quality": a.quality} if a.quality is not None else {"target_psnr": a.target_psnr or 38.0}

    import ray

    import codec
    from codec.metrics import ms_ssim, psnr
    from pipeline.config import CompressJobConfig
    from codec.imageio import load_image
    from devtools.localstack import LocalS3
    from pipeline.compress import run_job

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

        # the bare codec, same work per image as a replica: decode, encode, verify, metrics
        model = codec.load_model("default")
        codec.encode(load_image(sample[0], "warmup").pixels, model, **mode)
        t = time.perf_counter()
        px = 0
        for i, data in enumerate(sample):
            img = load_image(data, str(i)).pixels
            r = codec.encode(img, model, **mode)
            out = codec.decode(r.data, model)
            psnr(img, out), ms_ssim(img, out)
            px += img.shape[0] * img.shape[1]
        bare_s = time.perf_counter() - t
        bare = {"images": len(sample), "images_s": len(sample) / bare_s, "mp_s": px / 1e6 / bare_s}
        print(f"bare codec: {bare['images_s']:.2f} images/s, {bare['mp_s']:.2f} MP/s", flush=True)

        ray.init(include_dashboard=False, log_to_driver=False)
        sampler = RssSampler()
        sampler.start()
        cfg = CompressJobConfig(input="s3://raw/bench/", output="s3://archive/bench/", **mode)
        t = time.perf_counter()
        summary = run_job(cfg)
        wall = time.perf_counter() - t
        sampler.stop.set()
        sampler.join()
        spilled = spilled_bytes()
        ray.shutdown()

    pipe = {"images": summary.processed, "errors": summary.errors, "images_s": summary.processed / wall,
            "mp_s": summary.pixels / 1e6 / wall, "wall_s": wall}
    res = {
        "input_gb": total / 1e9, "images": n, "side": a.side, "mode": mode, "bare": bare, "pipeline": pipe,
        "overhead_pct": (1 - pipe["mp_s"] / bare["mp_s"]) * 100,
        "driver_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "workers_peak_rss_mb_sum": sampler.peak_sum / 2**20, "worker_peak_rss_mb_max": sampler.peak_one / 2**20,
        "object_store_spilled_bytes": spilled, "cpu_count": os.cpu_count(),
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=1))
    print(f"\n{'':22s} {'images/s':>9s} {'MP/s':>7s}")
    print(f"{'bare codec':22s} {bare['images_s']:>9.2f} {bare['mp_s']:>7.2f}")
    print(f"{'pipeline (end to end)':22s} {pipe['images_s']:>9.2f} {pipe['mp_s']:>7.2f}")
    print(f"pipeline overhead {res['overhead_pct']:.1f}% (includes Ray start-up and listing: {wall:.0f} s wall)")
    print(f"peak RSS: driver {res['driver_peak_rss_mb']:.0f} MB, workers {res['workers_peak_rss_mb_sum']:.0f} MB in all "
          f"(largest {res['worker_peak_rss_mb_max']:.0f} MB); object store spilled {spilled / 1e6:.1f} MB")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
