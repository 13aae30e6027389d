"""Choose minnen2018@2's stall threshold (``coding.STOP_MIN_GAIN``) on training crops, never on Kodak.

    PYTHONPATH=$PWD nice -n 10 python bench/minnen2018_stop_gain.py [--quick] [--crops 16] [--seed 29]

Under adaptive allocation (``target_psnr``) a sub-tile stops at its target, or, with the stall rule, once
an iteration took less than ``min_gain`` off its squared error. The rule trades a sub-tile's last dB for its
bits, so its value is a rate-distortion choice: this sweeps it over random 256² crops (one container tile
each) of train-natural (fixed seed; the crop sampler of codec.training.data) at several target PSNRs,
through ``codec.encode`` (bytes = the whole TLIC stream), and reports for every value the mean bpp and PSNR
at each target and the BD-rate against min_gain = 0 (no stall rule) over the crops' mean curve. The chosen
value is the one with the lowest BD-rate over one PSNR span for all: from constant allocation's 2- to
4-iteration PSNR on the crops (~0.3-0.55 bpp, around the Kodak figure's 0.5 bpp). A value whose curve never
reaches the span's top is out: it caps quality below what 4 iterations give, whatever the target (a large
threshold stops every sub-tile early, so it wins on its own low-rate span only). Constant allocation
(2/4/8 iterations) is the span's reference and is compared with too (informative, not the criterion). Writes bench/results/minnen2018_stop_gain.{json,log}
(``--quick``: fewer crops and targets, nothing written).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import codec  # noqa: E402
from codec.families.minnen2018 import coding  # noqa: E402
from codec.metrics import bd_rate  # noqa: E402
from codec.training.data import list_images, load_rgb, random_crop  # noqa: E402

TRAIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "train-natural"
GAINS = [0.0, 0.01, 0.02, 0.03, 0.05, 0.08, 0.12, 0.16, 0.24, 0.35]
TARGETS = [22.0, 25.0, 28.0, 31.0]  # dB: ~0.2-1.4 bpp on these crops, around the Kodak figure's ~0.5 bpp
CONSTANT = [2, 4, 8]  # iterations per sub-tile: constant allocation, the reference the Kodak figure compares with
CROP = 256  # the family's default container tile

LOG: list[str] = []


def say(*parts) -> None:
    line = " ".join(str(p) for p in parts)
    print(line, flush=True)
    LOG.append(line)


@dataclass
class Point:
    """One (min_gain, target) cell, over all crops."""

    min_gain: float
    target: float
    bytes: int  # total stream bytes over the crops
    bpp: float  # mean over crops
    psnr: float  # mean over crops
    missed_tiles: int  # crops whose tile has a sub-tile short of the target
    seconds: float


@dataclass
class Sweep:
    model: str
    crops: list[str]  # the source file of each crop (positions: the seed)
    seed: int
    points: list[Point] = field(default_factory=list)
    constant: list[Point] = field(default_factory=list)  # min_gain = nan, target = iterations
    span_db: tuple[float, float] = (0.0, 0.0)  # the PSNR span every BD-rate is taken over
    bd_rate_vs_constant: dict[str, float | None] = field(default_factory=dict)  # informative only
    bd_rate_vs_0: dict[str, float | None] = field(default_factory=dict)  # min_gain → % (negative = fewer bytes)
    bd_rate_vs_0_own_span: dict[str, float | None] = field(default_factory=dict)  # each pair's common span
    chosen: float | None = None


@contextlib.contextmanager
def stop_gain(value: float):
    """``codec.encode`` with the stall threshold set to ``value`` (the one constant swept here)."""
    saved = coding.STOP_MIN_GAIN
    coding.STOP_MIN_GAIN = value
    try:
        yield
    finally:
        coding.STOP_MIN_GAIN = saved


def training_crops(n: int, seed: int) -> tuple[list[np.ndarray], list[str]]:
    """``n`` random ``CROP``² crops of train-natural (no flips: the codec's raster order is kept)."""
    files = list_images([TRAIN])
    rng = np.random.default_rng(seed)
    crops, names = [], []
    while len(crops) < n:
        path = files[rng.integers(len(files))]
        im = load_rgb(path)
        if min(im.shape[:2]) < CROP:
            continue
        crops.append(np.ascontiguousarray(random_crop(im, CROP, rng, flip=False)))
        names.append(f"{path.relative_to(TRAIN)}")
    return crops, names


def sweep(model, crops: list[np.ndarray], gains: list[float], targets: list[float],
          done: dict[tuple[float, float], Point]) -> list[Point]:
    """Every (gain, target) cell over the crops; cells in ``done`` (an earlier run's, same crops) are reused."""
    points = []
    for g in gains:
        for t in targets:
            if (g, t) in done:
                p = done[g, t]
                points.append(p)
                say(f"min_gain {g:.3f} target {t:4.1f} dB: {p.bytes:7d} B, {p.bpp:.3f} bpp, {p.psnr:.2f} dB, "
                    f"{p.missed_tiles}/{len(crops)} crops missed (from the earlier run)")
                continue
            start = time.perf_counter()
            with stop_gain(g):
                results = [codec.encode(c, model, target_psnr=t) for c in crops]
            p = Point(g, t, sum(len(r.data) for r in results), float(np.mean([r.bpp for r in results])),
                      float(np.mean([r.psnr for r in results])), sum(r.missed_tiles > 0 for r in results),
                      time.perf_counter() - start)
            points.append(p)
            say(f"min_gain {g:.3f} target {t:4.1f} dB: {p.bytes:7d} B, {p.bpp:.3f} bpp, {p.psnr:.2f} dB, "
                f"{p.missed_tiles}/{len(crops)} crops missed ({p.seconds:.0f} s, load {os.getloadavg()[0]:.1f})")
    return points


def constant_curve(model, crops: list[np.ndarray], iterations: list[int]) -> list[Point]:
    points = []
    for k in iterations:
        start = time.perf_counter()
        results = [codec.encode(c, model, quality=k / coding.MAX_ITERATIONS) for c in crops]
        p = Point(float("nan"), float(k), sum(len(r.data) for r in results), float(np.mean([r.bpp for r in results])),
                  float(np.mean([r.psnr for r in results])), 0, time.perf_counter() - start)
        points.append(p)
        say(f"constant {k:2d} iterations: {p.bytes:7d} B, {p.bpp:.3f} bpp, {p.psnr:.2f} dB ({p.seconds:.0f} s)")
    return points


def bd_rates(points: list[Point], gains: list[float], ref=None, span=None) -> dict[str, float | None]:
    """BD-rate (%) of every min_gain's mean curve against ``ref`` ((bpp, psnr) lists; default min_gain = 0),
    over ``span`` (dB; None: each pair's common span). None where a curve does not cover the span."""
    curve = {g: ([p.bpp for p in points if p.min_gain == g], [p.psnr for p in points if p.min_gain == g])
             for g in gains}
    ref = ref or curve[0.0]
    return {f"{g:g}": bd_rate(*ref, *curve[g], bpp_range=(0.0, 16.0), psnr_range=span) for g in gains}


def table(sweep_: Sweep, gains: list[float], targets: list[float]) -> None:
    lo, hi = sweep_.span_db
    say(f"\n== mean bpp / PSNR (dB) per target; BD-rate over {lo:.2f}-{hi:.2f} dB (constant 2-4 it) vs min_gain = 0 "
        f"and vs constant, then vs 0 over each pair's own common span (training crops; n/a: never reaches {hi:.2f} dB) ==")
    say("min_gain | " + " | ".join(f"{t:.0f} dB target" for t in targets) + " | vs 0 | vs constant | vs 0, own span")
    for g in gains:
        cells = [next(p for p in sweep_.points if p.min_gain == g and p.target == t) for t in targets]
        bds = [sweep_.bd_rate_vs_0[f"{g:g}"], sweep_.bd_rate_vs_constant[f"{g:g}"], sweep_.bd_rate_vs_0_own_span[f"{g:g}"]]
        say(f"{g:8.3f} | " + " | ".join(f"{c.bpp:.3f} / {c.psnr:.2f}" for c in cells) + " | " +
            " | ".join("n/a" if bd is None else f"{bd:+.2f}%" for bd in bds))
    say("constant | " + " | ".join(f"{int(c.target)} it {c.bpp:.3f} / {c.psnr:.2f}" for c in sweep_.constant))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--crops", type=int, default=16)
    ap.add_argument("--seed", type=int, default=29)
    ap.add_argument("--gains", type=float, nargs="+", default=GAINS)
    ap.add_argument("--targets", type=float, nargs="+", default=TARGETS)
    ap.add_argument("--model", default="minnen2018@2")
    ap.add_argument("--quick", action="store_true", help="4 crops, 2 targets (22, 31 dB), results not written")
    ap.add_argument("--resume", action="store_true",
                    help="reuse the cells of the written json (same crops, seed and model), compute only new ones")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    if not TRAIN.exists():
        print(f"{TRAIN} missing: nothing to measure")
        return
    if a.quick:
        a.crops, a.targets = 4, [22.0, 31.0]
    gains = sorted(set([0.0] + a.gains))
    model = codec.load_model(a.model)
    if not model.model.config.residual_gain:
        raise SystemExit(f"{model.model_id} has no stall rule (only @2's adaptive allocation uses STOP_MIN_GAIN)")
    crops, names = training_crops(a.crops, a.seed)
    say(f"stall threshold sweep: {model.model_id}, {len(crops)} random {CROP}² crops of {TRAIN.name} (seed {a.seed}), "
        f"targets {a.targets} dB, min_gain {gains}; shipped value {coding.STOP_MIN_GAIN}")
    result = Sweep(model.model_id, names, a.seed)
    start = time.perf_counter()
    done = {}
    path = a.out / "minnen2018_stop_gain.json"
    if a.resume and path.exists():
        old = json.loads(path.read_text())
        if (old["model"], old["seed"], old["crops"]) != (model.model_id, a.seed, names):
            raise SystemExit(f"{path}: another model, seed or crop set; cannot resume from it")
        done = {(p["min_gain"], p["target"]): Point(**p) for p in old["points"]}
    result.points = sweep(model, crops, gains, a.targets, done)
    result.constant = constant_curve(model, crops, CONSTANT)
    # one span for every candidate: constant 2 to 4 iterations' PSNR on the crops (~0.3-0.55 bpp, around the
    # Kodak figure's 0.5 bpp); a value whose curve never reaches it caps quality below 4 iterations': out
    result.span_db = (result.constant[0].psnr, result.constant[1].psnr)
    result.bd_rate_vs_0 = bd_rates(result.points, gains, span=result.span_db)
    result.bd_rate_vs_0_own_span = bd_rates(result.points, gains)
    result.bd_rate_vs_constant = bd_rates(result.points, gains, ([p.bpp for p in result.constant],
                                                                 [p.psnr for p in result.constant]), result.span_db)
    scored = {g: result.bd_rate_vs_0[f"{g:g}"] for g in gains}
    covering = [g for g in gains if scored[g] is not None]
    table(result, gains, a.targets)
    if not covering:
        say(f"no value's curve covers {result.span_db[0]:.2f}-{result.span_db[1]:.2f} dB: add a higher target")
        return
    result.chosen = min(covering, key=lambda g: scored[g])
    say(f"chosen min_gain (lowest BD-rate over {result.span_db[0]:.2f}-{result.span_db[1]:.2f} dB on the training crops): "
        f"{result.chosen:g} "
        f"({scored[result.chosen]:+.2f}% vs no stall rule); total {time.perf_counter() - start:.0f} s")
    if a.quick:
        return
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "minnen2018_stop_gain.json").write_text(json.dumps(asdict(result), indent=1))
    (a.out / "minnen2018_stop_gain.log").write_text("\n".join(LOG) + "\n")


if __name__ == "__main__":
    main()
