"""Codec speed on a 2-core CPU: encode (quality and target-PSNR modes) and decode, with where the time goes.

    python bench/speed.py [--model default] [--threads 2] [--repeat 1] [--baseline] [--out bench/results]

Images: a 3072×2048 mosaic of the 24 Kodak images (512×512 centre crops, portraits rotated,
4 rows × 6 columns) and, so the numbers do not rest on Kodak alone, the same mosaic of 24
aerial images (``../shared/data/aerial/train/usc_sipi``, centre crops). A missing data set
is skipped with a note. For each mosaic: encode at quality 0.5, at target PSNR 35 and 38 dB,
and decode (the 38 dB stream). Every run reports MP/s and a breakdown by stage, timed
exclusively (a stage's time excludes the timed stages it calls):

    analysis      Engine.analyse (g_a)
    quantize      Engine.quantize: gain, h_a, integer h_s, rounding
    synthesis     Engine.synthesize (g_s), with the number of tile syntheses (passes per tile)
    entropy       range coding (rangecoder / entropy pool encode_each, decode_each)
    hyper_decode  Engine.decode_latents besides its range decoding (integer h_s)
    packing       bitstream tile blobs, pack, checksums, tile parts
    other         the rest (tile preparation, error measurement, rate-control bookkeeping)

Target-PSNR runs also record the level each tile got; with ``--agreement`` the rate control
is compared with the exhaustive search (every level measured) on the Kodak mosaic.

Writes ``speed.json`` and ``speed.log`` under ``--out``. ``--baseline`` stores this run as the
json's ``baseline`` (with the commit); otherwise a baseline already in the file is kept.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image



def codec_root() -> Path:
    """The checkout whose codec is measured: ``--codec-root`` (e.g. an exported baseline), else this one."""
    if "--codec-root" in sys.argv[:-1]:
        return Path(sys.argv[sys.argv.index("--codec-root") + 1]).resolve()
    return Path(__file__).resolve().parents[1]


sys.path.insert(0, str(codec_root()))

import codec  # noqa: E402
from codec.format import container as bitstream  # noqa: E402
from codec import parallel  # noqa: E402
from codec import rangecoder  # noqa: E402
from codec.families.hyperprior.engine import Engine  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
ROWS, COLS, CROP = 4, 6, 512  # 3072×2048
TARGETS = (35.0, 38.0)
QUALITY = 0.5

STAGES = {  # stage → [(owner, attribute)]
    "analysis": [(Engine, "analyse")],
    "quantize": [(Engine, "quantize")],
    "synthesis": [(Engine, "synthesize")],
    "entropy": [(rangecoder, "encode_each"), (rangecoder, "decode_each"),
                (parallel.EntropyPool, "encode_each"), (parallel.EntropyPool, "decode_each")],
    "hyper_decode": [(Engine, "decode_latents")],
    "packing": [(bitstream, "tile_blob"), (bitstream, "pack"), (bitstream, "tile_payload"),
                (bitstream, "tile_parts")],
}


class StageTimer:
    """Exclusive wall time per stage, by wrapping functions in place while active.

    A stage timed on another thread than the main one (entropy coding overlapped with the
    transforms) is recorded as ``<stage>_overlapped``: it ran alongside the main thread's
    stages, so it is not subtracted when ``other`` is computed from the wall time.
    """

    def __init__(self, stages: dict | None = None):
        self.stages = STAGES if stages is None else stages
        self.seconds: dict[str, float] = defaultdict(float)
        self.tile_syntheses = 0
        self._local = threading.local()  # per thread: time spent in timed children of each open frame

    @property
    def _stack(self) -> list[float]:
        if not hasattr(self._local, "stack"):
            self._local.stack = []
        return self._local.stack

    def wrap(self, stage: str, fn):
        timer = self

        def timed(*args, **kwargs):
            if stage == "synthesis":
                timer.tile_syntheses += len(args[1])  # (self, y_hat, codes)
            timer._stack.append(0.0)
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                total = time.perf_counter() - t
                children = timer._stack.pop()
                key = stage if threading.current_thread() is threading.main_thread() else f"{stage}_overlapped"
                timer.seconds[key] += total - children
                if timer._stack:
                    timer._stack[-1] += total

        return timed

    @contextmanager
    def active(self):
        saved = []
        for stage, targets in self.stages.items():
            for owner, name in targets:
                fn = getattr(owner, name)
                saved.append((owner, name, fn))
                setattr(owner, name, self.wrap(stage, fn))
        try:
            yield self
        finally:
            for owner, name, fn in reversed(saved):
                setattr(owner, name, fn)


def centre_crop(img: np.ndarray, size: int) -> np.ndarray:
    if img.shape[0] > img.shape[1]:
        img = np.rot90(img)
    h, w = img.shape[:2]
    y, x = (h - size) // 2, (w - size) // 2
    return img[y : y + size, x : x + size]


def mosaic(files: list[Path]) -> np.ndarray:
    crops = [centre_crop(np.asarray(Image.open(p).convert("RGB")), CROP) for p in files[: ROWS * COLS]]
    grid = [np.concatenate(crops[r * COLS : (r + 1) * COLS], axis=1) for r in range(ROWS)]
    return np.ascontiguousarray(np.concatenate(grid, axis=0))


def mosaics() -> dict[str, np.ndarray]:
    sources = {"kodak": SHARED / "kodak", "aerial": SHARED / "aerial" / "train" / "usc_sipi"}
    out = {}
    for name, folder in sources.items():
        files = sorted(p for p in folder.glob("*.png")) if folder.is_dir() else []
        files = [p for p in files if min(Image.open(p).size) >= CROP]
        if len(files) < ROWS * COLS:
            print(f"skipping the {name} mosaic: {len(files)} images of ≥{CROP} px in {folder}, need {ROWS * COLS}")
            continue
        out[name] = mosaic(files)
    return out


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (user + system)."""
    return sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
               for f in ("ru_utime", "ru_stime"))


def timed_run(fn, repeat: int):
    """(result, best seconds, timer of the best run); the timer also holds that run's CPU seconds."""
    best = None
    for _ in range(repeat):
        timer = StageTimer()
        with timer.active():
            c, t = cpu_seconds(), time.perf_counter()
            result = fn()
            seconds = time.perf_counter() - t
            timer.cpu = cpu_seconds() - c
        if best is None or seconds < best[1]:
            best = (result, seconds, timer)
    return best


def row(mp: float, seconds: float, timer: StageTimer, n_tiles: int) -> dict:
    stages = {k: round(v, 3) for k, v in sorted(timer.seconds.items())}
    stages["other"] = round(seconds - sum(v for k, v in timer.seconds.items() if not k.endswith("_overlapped")), 3)
    return {"seconds": round(seconds, 3), "mp_s": round(mp / seconds, 3), "cpu_s": round(timer.cpu, 3), "stages_s": stages,
            "synthesis_passes_per_tile": round(timer.tile_syntheses / n_tiles, 3)}


def bench_image(img: np.ndarray, model, repeat: int, options: dict | None = None) -> dict:
    mp = img.shape[0] * img.shape[1] / 1e6
    out = {}
    runs = [("encode_quality_0.5", {"quality": QUALITY})] + [(f"encode_target_{t:g}", {"target_psnr": t}) for t in TARGETS]
    data = None
    for name, kwargs in runs:
        r, seconds, timer = timed_run(lambda: codec.encode(img, model, **kwargs, **(options or {})), repeat)
        n = len(r.header.tiles)
        out[name] = {**row(mp, seconds, timer, n), "bpp": round(r.bpp, 4), "bytes": len(r.data),
                     "missed_tiles": r.missed_tiles}
        if "target_psnr" in kwargs:
            out[name]["levels"] = [int(round(t.quality * 63)) for t in r.header.tiles]
            out[name]["min_tile_psnr"] = round(float(np.nanmin(r.tile_psnr)), 3)
            data = r.data if kwargs["target_psnr"] == TARGETS[-1] else data
        print(f"  {name:20s} {out[name]['mp_s']:6.3f} MP/s  {seconds:6.2f} s  {out[name]['bpp']:.3f} bpp  "
              f"passes/tile {out[name]['synthesis_passes_per_tile']:.2f}  {out[name]['stages_s']}", flush=True)
    _, seconds, timer = timed_run(lambda: codec.decode(data, model, **(options or {})), repeat)
    out["decode"] = row(mp, seconds, timer, len(codec.read_header(data).tiles))
    print(f"  {'decode':20s} {out['decode']['mp_s']:6.3f} MP/s  {seconds:6.2f} s  {out['decode']['stages_s']}", flush=True)
    return out


def agreement(img: np.ndarray, model, target: float) -> dict:
    """The shipped target-PSNR choice against the exhaustive lowest passing level, per tile."""
    from codec.families.hyperprior.ratecontrol import TARGET_MARGIN_DB
    from codec.quality import LEVELS, code_of_level

    loaded, engine = codec.get_coder(model)
    r = codec.encode(img, model, target_psnr=target)
    chosen = np.array([t.quality_code for t in r.header.tiles])
    header = r.header
    exhaustive = np.zeros(len(chosen), dtype=np.int64)
    for batch in engine.batches(codec.images.prep.prepare(img, "x"), header.boxes(), 8):
        psnrs = np.stack([engine.measure(batch.y, np.full(len(batch.ids), c), batch.originals, batch.masks).psnr
                          for c in code_of_level(np.arange(LEVELS))], axis=1)  # (tiles, levels)
        ok = psnrs >= target + TARGET_MARGIN_DB
        exhaustive[batch.ids] = code_of_level(np.where(ok.any(1), ok.argmax(1), LEVELS - 1))
    same = chosen == exhaustive
    return {"target": target, "tiles": len(chosen), "same_level": int(same.sum()),
            "higher": int((chosen > exhaustive).sum()), "lower": int((chosen < exhaustive).sum())}


def commit() -> str:
    root = Path(__file__).resolve().parents[1]
    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/results"],
                           cwd=root, capture_output=True, text=True).stdout.strip()  # results: this script's output
    return sha + ("-dirty" if dirty else "")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="default")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1, help="runs per measurement; the fastest counts")
    ap.add_argument("--baseline", action="store_true", help="store this run as the baseline")
    ap.add_argument("--agreement", action="store_true", help="compare target-PSNR levels with the exhaustive search")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    ap.add_argument("--commit", default=None, help="label the run with this commit (default: git HEAD here)")
    ap.add_argument("--codec-root", type=Path, help="measure the codec package of another checkout (a baseline)")
    ap.add_argument("--no-overlap", action="store_true",
                    help="range-code on the main thread (overlap_coding=False), to measure what the overlap buys")
    ap.add_argument("--entropy-workers", type=int, default=0, help="entropy_workers for encode and decode")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    assert Path(codec.__file__).resolve().is_relative_to(codec_root()), codec.__file__
    model = codec.load_model(a.model)
    images = mosaics()
    if not images:
        print("no benchmark images found: nothing measured")
        return
    warm = next(iter(images.values()))[:512, :512]
    codec.decode(codec.encode(warm, model, target_psnr=35.0).data, model)  # first-call costs out of the timings
    options = {**({"overlap_coding": False} if a.no_overlap else {}),
               **({"entropy_workers": a.entropy_workers} if a.entropy_workers else {})}
    run = {"commit": a.commit or commit(), "model": model.model_id, "threads": a.threads, "torch": torch.__version__,
           "options": options, "load_avg": os.getloadavg(),
           "time": time.strftime("%Y-%m-%d %H:%M:%S"), "images": {}}
    for name, img in images.items():
        print(f"{name} mosaic {img.shape[1]}×{img.shape[0]} ({model.model_id}, {a.threads} threads, commit {run['commit']})")
        run["images"][name] = bench_image(img, model, a.repeat, options)
    if a.agreement and "kodak" in images:
        run["agreement"] = [agreement(images["kodak"], model, t) for t in TARGETS]
        print("agreement with the exhaustive search:", run["agreement"])

    a.out.mkdir(parents=True, exist_ok=True)
    path = a.out / "speed.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    result = {"baseline": run if a.baseline else previous.get("baseline"), "current": run,
              "earlier_baselines": previous.get("earlier_baselines", [])}
    if a.baseline and previous.get("baseline"):
        result["earlier_baselines"].append(previous["baseline"])
    path.write_text(json.dumps(result, indent=1))
    (a.out / "speed.log").write_text(summary(result))
    print(summary(result))


def summary(result: dict) -> str:
    lines = []
    for label in ("baseline", "current"):
        run = result.get(label)
        if not run:
            continue
        lines.append(f"{label}: commit {run['commit']}, {run['model']}, {run['threads']} threads, {run['time']}"
                     + (f", options {run['options']}" if run.get("options") else "")
                     + (f", load average {run['load_avg'][0]:.2f}" if run.get("load_avg") else ""))
        for name, modes in run["images"].items():
            cells = [f"{m} {v['mp_s']:.3f} MP/s" + (f" ({v['synthesis_passes_per_tile']:.2f} passes/tile)"
                                                    if m.startswith("encode_target") else "")
                     for m, v in modes.items()]
            lines.append(f"  {name}: " + "; ".join(cells))
        if run.get("agreement"):
            lines.append(f"  agreement with the exhaustive search: {run['agreement']}")
    base, cur = result.get("baseline"), result.get("current")
    if base and cur and base is not cur:
        for name in set(base["images"]) & set(cur["images"]):
            cells = []
            for mode, v in cur["images"][name].items():
                b = base["images"][name].get(mode)
                if b:
                    cells.append(f"{mode} ×{v['mp_s'] / b['mp_s']:.2f}" + (
                        f" ({v['bytes'] - b['bytes']:+d} bytes)" if "bytes" in v and "bytes" in b else ""))
            lines.append(f"current vs baseline, {name}: " + "; ".join(cells))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
