"""Device throughput, end to end: the bare codec and the archival pipeline on ≥1 GB of imagery.

    python bench/gpu_throughput.py [--device cuda|cpu] [--gb 1.0] [--side 2048] [--batch-size N]
                                   [--entropy-workers N] [--target-psnr 38] [--quality 0.5] [--skip-pipeline]

Sources: ``--side``² uncompressed RGB TIFFs made by mirror-tiling the shared training images
(``../shared/data/train-natural`` and ``aerial/train``; never Kodak), each from another image
with its own offset and flips, written to a temporary folder until ``--gb`` of input. Defaults:
1 GB, batches of 32 default tiles, float16 and one entropy worker per CPU core on a GPU;
0.05 GB, batches of 8 and coding in process on a CPU (where this bench is only checked to work).

(a) bare codec, per source file, MP/s of each phase over all files:
        read+decode   reading the TIFF and decoding it (codec.images.imageio.load_image)
        encode        target PSNR (default 38 dB) and quality mode (default 0.5)
        decode        the target-PSNR stream
    and where the time goes, from a second pass over a few files with a stage timer that
    synchronises the device at every stage boundary (so kernels are charged to their stage):
        transfer      Engine.upload, host → device (pinned, asynchronous on a GPU)
        analysis, quantize, synthesis, hyper_decode    the transforms (as in bench/speed.py)
        entropy       range coding (on the coding thread when overlapped: *_overlapped)
        packing, other
(b) the same files through the pipeline (bench/pipeline_throughput.run_pipeline: local
    SeaweedFS, the job's default replica plan: one replica per GPU), vs the bare codec doing a
    replica's work (bench/pipeline_throughput.bare_codec) on a sample of the same files.
(c) cross-device: every stream encoded on one device decodes on the other to within 0.05 dB
    of the encoder's PSNR (cpu → cuda and cuda → cpu), per image; skipped without a GPU.

Writes ``gpu_throughput_<device>.json`` and ``.log`` under ``--out``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import codec  # noqa: E402
from codec.families.hyperprior import tiling
from codec.format import tiles  # noqa: E402
from codec.families.hyperprior.engine import Engine  # noqa: E402
from codec.images.imageio import load_image  # noqa: E402
from speed import STAGES, StageTimer, commit  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SOURCES = ("train-natural", "aerial/train")
CROSS_DEVICE_DB = 0.05


def base_images() -> list[Path]:
    files = []
    for folder in SOURCES:
        files += sorted(p for p in (SHARED / folder).rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".tif"))
    return files


def make_source(files: list[Path], k: int, side: int) -> bytes:
    """Source ``k``: a base image mirror-tiled to side×side, shifted and flipped by ``k``, as a TIFF."""
    import tifffile

    rng = np.random.default_rng(k)
    img = np.asarray(Image.open(files[k % len(files)]).convert("RGB"))
    reps = (-(-2 * side // img.shape[0]), -(-2 * side // img.shape[1]))
    tiled = np.pad(img, ((0, reps[0] * img.shape[0] - img.shape[0]), (0, reps[1] * img.shape[1] - img.shape[1]), (0, 0)),
                   mode="symmetric")
    y, x = (int(rng.integers(0, tiled.shape[i] - side + 1)) for i in (0, 1))
    out = tiled[y : y + side, x : x + side]
    out = out[::-1] if k & 1 else out
    out = out[:, ::-1] if k & 2 else out
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.ascontiguousarray(out), photometric="rgb")
    return buf.getvalue()


def write_sources(folder: Path, gb: float, side: int) -> list[Path]:
    files = base_images()
    if not files:
        raise SystemExit(f"no source images under {SHARED} ({', '.join(SOURCES)}): nothing to measure")
    paths, total = [], 0
    while total < gb * 1e9 or not paths:
        data = make_source(files, len(paths), side)
        path = folder / f"{len(paths):05d}.tif"
        path.write_bytes(data)
        paths.append(path)
        total += len(data)
    return paths


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class SyncedTimer(StageTimer):
    """bench/speed.py's stage timer, synchronising the device at every stage boundary (GPU work is
    asynchronous: without it, a kernel's time lands in whichever stage next waits for it)."""

    def __init__(self, device: str):
        super().__init__({**STAGES, "transfer": [(Engine, "upload")]})
        self.device = device

    def wrap(self, stage: str, fn):
        timed = super().wrap(stage, fn)

        def synced(*args, **kwargs):
            sync(self.device)
            try:
                return timed(*args, **kwargs)
            finally:
                sync(self.device)

        return synced


def bare(paths: list[Path], model, options: dict, modes: dict[str, dict]) -> dict:
    """MP/s of each phase over every source file (no stage timer: the throughput as deployed)."""
    device = options["device"]
    first = load_image(paths[0].read_bytes(), "warmup").pixels[:1024, :1024]
    for mode in modes.values():  # first-call costs (cuDNN autotuning, pool start-up) out of the timings
        codec.decode(codec.encode(first, model, **mode, **options).data, model, **options)
    seconds = {"read+decode": 0.0, **{f"encode {m}": 0.0 for m in modes}, "decode": 0.0}
    px, streams = 0, []
    for path in paths:
        t = time.perf_counter()
        img = load_image(path.read_bytes(), path.name).pixels
        seconds["read+decode"] += time.perf_counter() - t
        px += img.shape[0] * img.shape[1]
        for name, mode in modes.items():
            sync(device)
            t = time.perf_counter()
            r = codec.encode(img, model, **mode, **options)
            sync(device)
            seconds[f"encode {name}"] += time.perf_counter() - t
            if name == next(iter(modes)):
                data = r.data
                streams.append((path, data, r.psnr))
        t = time.perf_counter()
        codec.decode(data, model, **options)
        sync(device)
        seconds["decode"] += time.perf_counter() - t
    return {"images": len(paths), "megapixels": px / 1e6, "seconds": seconds,
            "mp_s": {k: px / 1e6 / v for k, v in seconds.items()}, "streams": streams}


def breakdown(paths: list[Path], model, options: dict, modes: dict[str, dict]) -> dict:
    """Stage times (device-synchronised) of encoding and decoding a few files."""
    out = {}
    imgs = [load_image(p.read_bytes(), p.name).pixels for p in paths]
    px = sum(i.shape[0] * i.shape[1] for i in imgs) / 1e6
    runs = {f"encode {n}": (lambda m=m: [codec.encode(i, model, **m, **options) for i in imgs]) for n, m in modes.items()}
    first_mode = next(iter(modes.values()))
    datas = [codec.encode(i, model, **first_mode, **options).data for i in imgs]
    runs["decode"] = lambda: [codec.decode(d, model, **options) for d in datas]
    for name, fn in runs.items():
        timer = SyncedTimer(options["device"])
        with timer.active():
            t = time.perf_counter()
            fn()
            sync(options["device"])
            seconds = time.perf_counter() - t
        split = {k: round(v, 3) for k, v in sorted(timer.seconds.items())}
        split["other"] = round(seconds - sum(v for k, v in timer.seconds.items() if not k.endswith("_overlapped")), 3)
        out[name] = {"seconds": round(seconds, 3), "mp_s": round(px / seconds, 3), "stages_s": split}
    return out


def cross_device(streams: list, model, device: str, modes: dict) -> list[dict]:
    """Streams from this device decoded on the other one, and the other way round, per image."""
    if not torch.cuda.is_available():
        return []
    other = {"device": "cpu"} if device.startswith("cuda") else {"device": "cuda", "half": True}
    here = {"device": device, "half": device.startswith("cuda")}
    from codec.metrics import psnr

    rows = []
    mode = next(iter(modes.values()))
    for path, data, enc_psnr in streams[:4]:
        img = load_image(path.read_bytes(), path.name).pixels
        back = codec.encode(img, model, **mode, **other)
        for direction, stream, encoder_psnr, decoder in ((f"{here['device']}→{other['device']}", data, enc_psnr, other),
                                                         (f"{other['device']}→{here['device']}", back.data, back.psnr, here)):
            got = psnr(img, codec.decode(stream, model, **decoder))
            rows.append({"image": path.name, "direction": direction, "encoder_psnr": encoder_psnr, "decoded_psnr": got,
                         "ok": abs(got - encoder_psnr) <= CROSS_DEVICE_DB})
    return rows


def pipeline_part(paths: list[Path], model, mode: dict, sample: int) -> dict:
    """The files through the archival job on a local S3, vs the bare codec doing a replica's work."""
    from devtools.localstack import LocalS3
    from pipeline_throughput import bare_codec, overheads, run_pipeline

    with tempfile.TemporaryDirectory() as tmp, LocalS3(Path(tmp) / "s3", buckets=["raw", "archive"]) as s3:
        os.environ.update(s3.env)
        fs = s3.filesystem()
        for p in paths:
            fs.pipe(f"raw/gpu/{p.name}", p.read_bytes())
        # a replica on a GPU runs fp16 there (CodecReplica picks its device); the bare codec does the same
        device = {"device": "cuda", "half": True} if torch.cuda.is_available() else {}
        ref = bare_codec([p.read_bytes() for p in paths[:sample]], mode, model, **device)
        pipe = run_pipeline("s3://raw/gpu/", "s3://archive/gpu/", mode)
    return {"bare": ref, "pipeline": pipe, **overheads(ref, pipe)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--gb", type=float, help="input size (default 1.0 on a GPU, 0.05 on a CPU)")
    ap.add_argument("--side", type=int, default=2048)
    ap.add_argument("--batch-size", type=int, help="default tiles per forward pass (default 32 on a GPU, 8 on a CPU); "
                    "raises the codec's pixel cap per pass (codec.format.tiling.PIXELS_PER_BATCH) to match, in this process")
    ap.add_argument("--entropy-workers", type=int, help="default: one per CPU core on a GPU, 0 (in process) on a CPU")
    ap.add_argument("--target-psnr", type=float, default=38.0)
    ap.add_argument("--quality", type=float, default=0.5)
    ap.add_argument("--breakdown-files", type=int, default=2)
    ap.add_argument("--bare-sample", type=int, default=8, help="files the pipeline's bare reference codes")
    ap.add_argument("--skip-pipeline", action="store_true")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch CPU threads")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    a = ap.parse_args()
    gpu = a.device.startswith("cuda")
    if gpu and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    torch.set_num_threads(a.threads)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    options = {"device": a.device, "half": gpu, "batch_size": a.batch_size or (32 if gpu else 8),
               "entropy_workers": cores if a.entropy_workers is None and gpu else (a.entropy_workers or 0)}
    # the pixel cap per pass is a memory bound sized for a CPU (8 default tiles): a GPU takes more
    tiling.PIXELS_PER_BATCH = max(tiling.PIXELS_PER_BATCH, options["batch_size"] * tiles.DEFAULT_TILE**2)
    modes = {f"target {a.target_psnr:g} dB": {"target_psnr": a.target_psnr}, f"quality {a.quality:g}": {"quality": a.quality}}
    gb = a.gb if a.gb is not None else (1.0 if gpu else 0.05)
    model = codec.load_model("default")
    run = {"commit": commit(), "model": model.model_id, "device": a.device,
           "device_name": torch.cuda.get_device_name() if gpu else "cpu", "cpu_cores": cores, "options": options,
           "torch_threads": a.threads, "time": time.strftime("%Y-%m-%d %H:%M:%S"), "load_avg_start": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_sources(Path(tmp), gb, a.side)
        run["input"] = {"files": len(paths), "side": a.side, "gb": sum(p.stat().st_size for p in paths) / 1e9}
        print(f"{len(paths)} sources of {a.side}² ({run['input']['gb']:.2f} GB) on {run['device_name']}, {options} "
              f"(load average {os.getloadavg()[0]:.2f})", flush=True)
        b = bare(paths, model, options, modes)
        streams = b.pop("streams")
        run["bare"] = b
        print("bare codec MP/s: " + ", ".join(f"{k} {v:.2f}" for k, v in b["mp_s"].items()), flush=True)
        run["breakdown"] = breakdown(paths[: a.breakdown_files], model, options, modes)
        for name, r in run["breakdown"].items():
            print(f"  {name:22s} {r['mp_s']:7.2f} MP/s (synchronised)  {r['stages_s']}", flush=True)
        run["cross_device"] = cross_device(streams, model, a.device, modes)
        if not run["cross_device"]:
            print("cross-device check skipped: no CUDA device here", flush=True)
        if not a.skip_pipeline:
            run["pipeline"] = pipeline_part(paths, model, next(iter(modes.values())), a.bare_sample)
    run["load_avg_end"] = os.getloadavg()
    a.out.mkdir(parents=True, exist_ok=True)
    stem = a.out / f"gpu_throughput_{a.device.split(':')[0]}"
    stem.with_suffix(".json").write_text(json.dumps(run, indent=1, default=str))
    text = summary(run)
    stem.with_suffix(".log").write_text(text)
    print(text + f"wrote {stem}.json/.log")


def summary(run: dict) -> str:
    b = run["bare"]
    lines = [f"commit {run['commit']}, {run['model']} on {run['device_name']} ({run['cpu_cores']} CPU cores), "
             f"options {run['options']}, load average {run['load_avg_start'][0]:.2f} → {run['load_avg_end'][0]:.2f}",
             f"input: {run['input']['files']} TIFFs of {run['input']['side']}² ({run['input']['gb']:.2f} GB, "
             f"{b['megapixels']:.0f} MP)",
             "bare codec, MP/s over all files: " + ", ".join(f"{k} {v:.2f}" for k, v in b["mp_s"].items())]
    for name, r in run["breakdown"].items():
        lines.append(f"  time split, {name} ({r['mp_s']:.2f} MP/s synchronised): "
                     + ", ".join(f"{k} {v:.2f} s" for k, v in r["stages_s"].items()))
    if run["cross_device"]:
        for r in run["cross_device"]:
            lines.append(f"  cross-device {r['direction']} {r['image']}: encoder {r['encoder_psnr']:.3f} dB, "
                         f"decoded {r['decoded_psnr']:.3f} dB {'ok' if r['ok'] else 'FAIL'}")
    else:
        lines.append("cross-device check: skipped (no CUDA device)")
    if "pipeline" in run:
        p = run["pipeline"]
        lines.append(f"pipeline: {p['pipeline']['mp_s']:.2f} MP/s end to end ({p['pipeline']['wall_s']:.0f} s wall), "
                     f"{p['pipeline']['steady']['mp_s']:.2f} MP/s steady state; bare codec doing a replica's work "
                     f"{p['bare']['mp_s']:.2f} MP/s; overhead {p['overhead_pct']:.1f}% end to end, "
                     f"{p['steady_overhead_pct']:.1f}% steady state")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
