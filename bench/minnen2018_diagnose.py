"""Why does the minnen2018 residual coder stall? Evidence for each candidate cause of issue 29.

    PYTHONPATH=$PWD python bench/minnen2018_diagnose.py [--model minnen2018@1] [--images kodim03.png ...]
                                                        [--quick] [--out bench/results]

Kodak (evaluation only) for the per-iteration curves; training crops (train-natural) for the checks
that need the training pass (binariser, LSTM state). Per cause:

  * residual scaling: one fresh iteration on the prediction's residual multiplied by s (1/16 … 2):
    the fraction of the residual left. A coder that only works at the scale of the first residual
    leaves ~100% of a small one, so later (smaller) residuals stop shrinking;
  * binariser: per-iteration RMS with stochastic (training) vs sign (coding) bits on the same crops;
  * LSTM state: the state carried vs reset after iteration 4 (a fresh coder on the remaining residual);
  * context predictor: prediction error with the original vs the decoded neighbours, and vs flat baselines;
  * borders: sub-tiles with missing neighbours (first row / column) vs interior ones;
  * stopping rule: adaptive allocation's iteration histogram and where its bits go.

Writes NAME.md, NAME.json and NAME.png under --out. The shipped results: minnen2018_diagnosis.* (@1, the
diagnosis: ``--model minnen2018@1 --name minnen2018_diagnosis``), minnen2018_diagnosis_v2.* (@2, after the fix:
``--model minnen2018@2 --name minnen2018_diagnosis_v2``); what they show: minnen2018_findings.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import codec  # noqa: E402
from codec.families.minnen2018 import coding  # noqa: E402
from codec.families.minnen2018.coding import MAX_ITERATIONS  # noqa: E402
from codec.families.minnen2018.model import BORDER_FILL, TILE, context_patch  # noqa: E402
from codec.families.minnen2018.train import load_pool, make_batch  # noqa: E402
from rd import KODAK  # noqa: E402

IMAGES = ["kodim03.png", "kodim05.png", "kodim23.png"]
TRAIN = [str(Path(__file__).resolve().parents[1] / "../shared/data/train-natural")]
SCALES = [1 / 16, 1 / 8, 1 / 4, 1 / 2, 1, 2]


def db(mse) -> np.ndarray:
    return 10 * np.log10(255.0**2 / np.maximum(np.asarray(mse, dtype=np.float64), 1e-12))


@dataclass
class Trajectory:
    """Every sub-tile's squared error after each iteration (0 = the prediction), 16 iterations for all,
    each sub-tile's own trajectory with its neighbours decoded at 16 iterations (what later sub-tiles see)."""

    sse: np.ndarray  # (T+1, rows, cols) over the sub-tile's 3·32·32 values
    recon: np.ndarray  # (T+1, H, W, 3) uint8 of the whole image after iteration t of every sub-tile
    final: np.ndarray  # (H, W, 3) the decoded image at 16 iterations


def trajectory(net, img: np.ndarray, use_context: bool) -> Trajectory:
    h, w = img.shape[:2]
    rows, cols = coding.subtile_grid(w, h)
    sse = np.zeros((MAX_ITERATIONS + 1, rows, cols))
    recon = np.zeros((MAX_ITERATIONS + 1, rows * TILE, cols * TILE, 3), np.uint8)
    ref = torch.from_numpy(coding._padded(img)).permute(2, 0, 1).float()

    def trace(r, c, t, q):
        tile = ref[:, r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE]
        sse[t, r, c] = float(((q[0] - tile).double() ** 2).sum())
        recon[t, r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE] = q[0].permute(1, 2, 0).to(torch.uint8).numpy()

    coded = coding.code_subtiles(net, img, iterations=MAX_ITERATIONS, use_context=use_context, trace=trace)
    return Trajectory(sse, recon[:, :h, :w], coded.recon[:h, :w])


@torch.no_grad()
def step_residual(net, r: torch.Tensor, enc_s=None, dec_s=None, stochastic: bool = False):
    """One coding iteration on residuals ``r`` (B, 3, 32, 32) as the coder runs it (head included for @2);
    sign bits, or the training pass's stochastic ones."""
    head = net.head_of(r)
    feat, enc_s = net.encoder(net.step_input(r, head), enc_s)
    net.binarizer.train(stochastic)
    b = net.binarizer(feat)
    net.binarizer.train(False)
    d, dec_s = net.decoder(b, dec_s)
    return r - net.step_output(d, head), enc_s, dec_s


def rms(r: torch.Tensor) -> float:
    return float(r.pow(2).mean().sqrt()) * 255


@torch.no_grad()
def training_crop_checks(net, batches: int, seed: int = 7) -> dict:
    """Binariser and LSTM-state checks on training-style crops (context always on)."""
    pool = load_pool(TRAIN, max_side=512, seed=seed)
    rng = np.random.default_rng(seed)
    out = {"stochastic": np.zeros(MAX_ITERATIONS), "sign": np.zeros(MAX_ITERATIONS),
           "reset_after_4": np.zeros(MAX_ITERATIONS), "prediction": 0.0}
    for _ in range(batches):
        patch, target, use = make_batch(pool, 32, rng)
        use[:] = True
        net.eval()
        net.binarizer.train(True)
        torch.manual_seed(0)  # the stochastic bits below
        net.binarizer.train(False)
        pred = net.predictor(patch)
        out["prediction"] += rms(target - pred) / batches
        for mode in ("stochastic", "sign", "reset_after_4"):
            r, es, ds = target - pred, None, None
            for t in range(MAX_ITERATIONS):
                if mode == "reset_after_4" and t == 4:
                    es = ds = None
                r, es, ds = step_residual(net, r, es, ds, stochastic=mode == "stochastic")
                out[mode][t] += rms(r) / batches
    net.eval()
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in out.items()}


@torch.no_grad()
def scale_check(net, img: np.ndarray, final: np.ndarray) -> dict:
    """Fraction of the prediction residual left by one fresh iteration when the residual is scaled by s."""
    h, w = img.shape[:2]
    rows, cols = h // TILE, w // TILE
    x = torch.from_numpy(img.copy()).permute(2, 0, 1).float()[None] / 255
    dec = torch.from_numpy(final.copy()).permute(2, 0, 1).float()[None] / 255
    tiles, patches = [], []
    for r in range(1, rows):
        for c in range(1, cols):
            sl = lambda rr, cc: dec[..., rr * TILE : (rr + 1) * TILE, cc * TILE : (cc + 1) * TILE]  # noqa: E731
            tiles.append(x[..., r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE])
            patches.append(context_patch(sl(r, c - 1), sl(r - 1, c), sl(r - 1, c - 1), tiles[-1]))
    t, p = torch.cat(tiles), torch.cat(patches)
    res = t - net.predictor(p)
    left = {}
    for s in SCALES:
        after, _, _ = step_residual(net, res * s)
        left[str(s)] = float(after.pow(2).sum() / (res * s).pow(2).sum())
    return left


@torch.no_grad()
def predictor_check(net, img: np.ndarray, final: np.ndarray) -> dict:
    """Prediction MSE per sub-tile from original vs decoded neighbours, interior vs first row/column, and
    two flat baselines (mid-grey; the mean colour of the neighbours)."""
    h, w = img.shape[:2]
    rows, cols = h // TILE, w // TILE
    x = torch.from_numpy(img.copy()).permute(2, 0, 1).float()[None] / 255
    dec = torch.from_numpy(final.copy()).permute(2, 0, 1).float()[None] / 255
    res = {k: np.zeros((rows, cols)) for k in ("original", "decoded", "grey", "neighbour_mean")}

    def sub(src, r, c):
        return src[..., r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE] if r >= 0 and c >= 0 else None

    for r in range(rows):
        for c in range(cols):
            t = sub(x, r, c)
            for key, src in (("original", x), ("decoded", dec)):
                patch = context_patch(sub(src, r, c - 1), sub(src, r - 1, c), sub(src, r - 1, c - 1), t)
                res[key][r, c] = float(((net.predictor(patch) - t) * 255).pow(2).mean())
            res["grey"][r, c] = float(((t - BORDER_FILL) * 255).pow(2).mean())
            nb = [n for n in (sub(dec, r, c - 1), sub(dec, r - 1, c)) if n is not None]
            mean = torch.cat(nb).mean(dim=(0, 2, 3), keepdim=True) if nb else torch.full((1, 3, 1, 1), BORDER_FILL)
            res["neighbour_mean"][r, c] = float(((t - mean) * 255).pow(2).mean())
    border = np.zeros((rows, cols), bool)
    border[0, :] = border[:, 0] = True
    return {k: {"all_db": float(db(v.mean())), "interior_db": float(db(v[~border].mean())),
                "border_db": float(db(v[border].mean()))} for k, v in res.items()}


@dataclass
class ImageReport:
    name: str
    image_db: list[float]  # per iteration 0..16, the whole image
    mean_subtile_db: list[float]
    p10_subtile_db: list[float]  # the 10th percentile sub-tile
    rms: list[float]  # residual RMS (8-bit levels) per iteration
    shrink: list[float]  # RMS ratio iteration t / t-1
    no_context_db: list[float]
    border_db: list[float]  # first row + first column sub-tiles, per iteration
    interior_db: list[float]
    worst: list[list[int]]  # (r, c) of the worst sub-tiles at 16 iterations
    worst_db: list[float]
    predictor: dict
    scale: dict
    increments: list[float]  # the worst 6 sub-tiles: RMS of what iteration t added (8-bit levels)
    worst_rms: list[float]  # … and of the residual they still have after iteration t
    adaptive: dict = field(default_factory=dict)


def stopping_check(model, net, img: np.ndarray, target: float) -> dict:
    coded = coding.code_subtiles(net, img, target_psnr=target)
    it = coded.codes.iterations
    bits = it.sum()
    subdb = db(coded.sse / (3 * TILE * TILE))
    return {"target_db": target, "histogram": np.bincount(it.ravel(), minlength=MAX_ITERATIONS + 1).tolist(),
            "missed": int(coded.missed.sum()), "subtiles": int(it.size),
            "bits_share_on_missed": float(it[coded.missed].sum() / max(bits, 1)),
            "missed_mean_db": float(subdb[coded.missed].mean()) if coded.missed.any() else float("nan"),
            "image_db": float(db(coded.sse.sum() / (3 * img.shape[0] * img.shape[1]))),
            "iterations_mean": float(it.mean())}


def analyse(model, name: str) -> tuple[ImageReport, Trajectory]:
    net = model.model
    img = np.asarray(Image.open(KODAK / name).convert("RGB"))
    tr = trajectory(net, img, True)
    nc = trajectory(net, img, False)
    npx = 3 * TILE * TILE
    sub = db(tr.sse / npx)  # (T+1, rows, cols)
    border = np.zeros(tr.sse.shape[1:], bool)
    border[0, :] = border[:, 0] = True
    total = tr.sse.reshape(len(tr.sse), -1).sum(1) / (npx * border.size)
    r = np.sqrt(total)
    worst_idx = np.argsort(sub[-1].ravel())[:6]
    worst = [list(map(int, np.unravel_index(i, border.shape))) for i in worst_idx]
    # the adaptive target that the constant 4-iteration image reaches
    rep = ImageReport(
        name, db(total).tolist(), sub.reshape(len(sub), -1).mean(1).tolist(),
        np.percentile(sub.reshape(len(sub), -1), 10, axis=1).tolist(), r.tolist(), (r[1:] / r[:-1]).tolist(),
        db(nc.sse.reshape(len(nc.sse), -1).sum(1) / (npx * border.size)).tolist(),
        db(tr.sse[:, border].mean(1) / npx).tolist(), db(tr.sse[:, ~border].mean(1) / npx).tolist(),
        worst, [float(sub[-1][tuple(w)]) for w in worst],
        predictor_check(net, img, tr.final), scale_check(net, img, tr.final), *worst_steps(tr, img, worst))
    return rep, tr


def worst_steps(tr: Trajectory, img: np.ndarray, worst) -> tuple[list[float], list[float]]:
    """For the worst sub-tiles: RMS of each iteration's increment and of the residual left after it."""
    sl = [np.s_[:, r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE] for r, c in worst]
    rec = np.stack([tr.recon[s].astype(np.float64) for s in sl])  # (n, T+1, 32, 32, 3)
    ref = np.stack([img[s[1:]].astype(np.float64) for s in sl])[:, None]
    inc = np.sqrt(((rec[:, 1:] - rec[:, :-1]) ** 2).mean(axis=(0, 2, 3, 4)))
    left = np.sqrt(((rec - ref) ** 2).mean(axis=(0, 2, 3, 4)))
    return inc.tolist(), left.tolist()


def _label(ax, xlabel: str, ylabel: str, title: str, legend: int = 6, grid: bool = True) -> None:
    """Axis labels, title, a legend in ``legend``-point type and (``grid``) a light grid: every line panel's finish."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=legend)
    if grid:
        ax.grid(alpha=0.3)


def plot(reports: list[ImageReport], trs: list[Trajectory], images: list[np.ndarray], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(13, 9))
    its = np.arange(MAX_ITERATIONS + 1)
    ax = fig.add_subplot(2, 3, 1)
    for rep in reports:
        ax.plot(its, rep.image_db, "o-", ms=3, label=f"{rep.name} image")
        ax.plot(its, rep.mean_subtile_db, "--", lw=1, label=f"{rep.name} mean sub-tile")
        ax.plot(its, rep.p10_subtile_db, ":", lw=1, label=f"{rep.name} 10th pct sub-tile")
    _label(ax, "iterations (128 bits each)", "PSNR dB", "PSNR per iteration", legend=5)
    ax = fig.add_subplot(2, 3, 2)
    for rep in reports:
        ax.semilogy(its, rep.rms, "o-", ms=3, label=rep.name)
    _label(ax, "iterations", "residual RMS (8-bit levels)", "residual energy per iteration")
    ax = fig.add_subplot(2, 3, 3)
    for rep in reports:
        s = sorted(rep.scale, key=float)
        ax.semilogx([float(k) for k in s], [rep.scale[k] for k in s], "o-", label=rep.name)
    ax.axhline(1, color="k", lw=0.5)
    _label(ax, "residual scaled by s", "energy left after one fresh iteration", "does the coder work at every scale?")
    # worst sub-tiles of the first image: original, 4 and 16 iterations, |error| at 16
    rep, tr, img = reports[0], trs[0], images[0]
    for j, (r, c) in enumerate(rep.worst[:3]):
        sl = np.s_[r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE]
        err = np.abs(img[sl].astype(float) - tr.recon[-1][sl].astype(float)).mean(2)
        strip = np.concatenate([img[sl], tr.recon[0][sl], tr.recon[4][sl], tr.recon[-1][sl],
                                np.repeat(np.clip(err * 4, 0, 255).astype(np.uint8)[..., None], 3, 2)], axis=1)
        ax = fig.add_subplot(6, 3, 10 + 3 * j)  # the lower-left cell, one strip a row
        ax.imshow(strip, interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(f"{rep.name} sub-tile ({r},{c}) {rep.worst_db[j]:.1f} dB: original | prediction | 4 it | 16 it | "
                     "|error|×4", fontsize=6)
    ax = fig.add_subplot(2, 3, 5)
    for rep in reports:
        ax.plot(its, rep.border_db, "-", label=f"{rep.name} border")
        ax.plot(its, rep.interior_db, "--", label=f"{rep.name} interior")
    _label(ax, "iterations", "PSNR dB", "sub-tiles with missing neighbours vs interior", legend=5)
    ax = fig.add_subplot(2, 3, 6)
    for rep in reports:
        if rep.adaptive:
            ax.bar(its + 0.25 * reports.index(rep), rep.adaptive["histogram"], width=0.25, label=rep.name)
    _label(ax, "iterations a sub-tile got (adaptive)", "sub-tiles", "stopping rule: where the bits go", grid=False)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def write_md(path: Path, model_id: str, reports: list[ImageReport], crops: dict) -> None:
    L = [f"# minnen2018 diagnosis: {model_id}", "",
         f"Written by `bench/minnen2018_diagnose.py --model {model_id}`; Kodak {', '.join(r.name for r in reports)} "
         "(evaluation only), training-style crops of train-natural for the training-pass checks. "
         "Per-iteration numbers: every sub-tile coded for 16 iterations (constant allocation), each sub-tile's own "
         "trajectory with its neighbours decoded at 16 iterations.", "",
         "## Per iteration (image PSNR dB; mean / 10th-percentile sub-tile PSNR; residual RMS in 8-bit levels)", "",
         "| image | " + " | ".join(f"it {t}" for t in (0, 1, 2, 4, 8, 12, 16)) + " |",
         "|---|" + "---|" * 7]
    for r in reports:
        row = [f"{r.image_db[t]:.2f} / {r.mean_subtile_db[t]:.1f} / {r.p10_subtile_db[t]:.1f} / rms {r.rms[t]:.1f}"
               for t in (0, 1, 2, 4, 8, 12, 16)]
        L.append(f"| {r.name} | " + " | ".join(row) + " |")
    L += ["", "RMS shrink factor per iteration (t / t−1), mean over images: " +
          " ".join(f"{v:.3f}" for v in np.mean([r.shrink for r in reports], 0)), "",
          "Monotone (image PSNR never falls with an iteration): " +
          ", ".join(f"{r.name} {all(np.diff(r.image_db) >= -1e-9)}" for r in reports), "",
          "Worst 6 sub-tiles (mean over images), RMS of what iteration t adds / of the residual left after it: " +
          "; ".join(f"it {t}: +{np.mean([r.increments[t - 1] for r in reports]):.1f} / "
                    f"{np.mean([r.worst_rms[t] for r in reports]):.1f}" for t in (1, 2, 4, 8, 16)), "",
          "## Residual scaling: energy left after one fresh iteration on the prediction residual × s", "",
          "| image | " + " | ".join(f"s = {s:g}" for s in SCALES) + " |", "|---|" + "---|" * len(SCALES)]
    for r in reports:
        L.append(f"| {r.name} | " + " | ".join(f"{r.scale[str(s)]:.3f}" for s in SCALES) + " |")
    L += ["", "## Training crops (RMS in 8-bit levels after iterations 1, 2, 4, 8, 16)", "",
          f"prediction alone: {crops['prediction']:.1f}", "",
          "| coder | it 1 | it 2 | it 4 | it 8 | it 16 |", "|---|---|---|---|---|---|"]
    for k in ("stochastic", "sign", "reset_after_4"):
        L.append(f"| {k} | " + " | ".join(f"{crops[k][t - 1]:.2f}" for t in (1, 2, 4, 8, 16)) + " |")
    L += ["", "## Context predictor (prediction PSNR dB: all / interior / first row+column sub-tiles)", "",
          "| image | original neighbours | decoded (16 it) | mid-grey | mean colour of neighbours |", "|---|---|---|---|---|"]
    for r in reports:
        p = r.predictor
        L.append(f"| {r.name} | " + " | ".join(f"{p[k]['all_db']:.2f} / {p[k]['interior_db']:.2f} / {p[k]['border_db']:.2f}"
                                            for k in ("original", "decoded", "grey", "neighbour_mean")) + " |")
    L += ["", "## Borders and context (PSNR dB at iterations 0 / 4 / 16)", "",
          "| image | first row+column sub-tiles | interior | no context (whole image) | worst sub-tiles at 16 it |",
          "|---|---|---|---|---|"]
    for r in reports:
        L.append(f"| {r.name} | {r.border_db[0]:.1f} / {r.border_db[4]:.1f} / {r.border_db[16]:.1f} | "
                 f"{r.interior_db[0]:.1f} / {r.interior_db[4]:.1f} / {r.interior_db[16]:.1f} | "
                 f"{r.no_context_db[0]:.1f} / {r.no_context_db[4]:.1f} / {r.no_context_db[16]:.1f} | "
                 + ", ".join(f"{tuple(w)} {d:.1f}" for w, d in zip(r.worst[:3], r.worst_db)) + " |")
    L += ["", "## Stopping rule (adaptive, target = the constant 4-iteration image PSNR)", "",
          "| image | target | image PSNR | mean iterations | missed | share of bits on missed sub-tiles | "
          "missed sub-tiles' mean PSNR | histogram 0..16 |", "|---|---|---|---|---|---|---|---|"]
    for r in reports:
        a = r.adaptive
        if a:
            L.append(f"| {r.name} | {a['target_db']:.2f} | {a['image_db']:.2f} | {a['iterations_mean']:.2f} | "
                     f"{a['missed']}/{a['subtiles']} | {100 * a['bits_share_on_missed']:.0f}% | {a['missed_mean_db']:.1f} | "
                     f"{a['histogram']} |")
    path.write_text("\n".join(L) + "\n")


def checkpoint_model(path: Path):
    """A trainer's checkpoint as a loaded model named after the file (the config is read off its shapes)."""
    import hashlib

    from codec.families.minnen2018.model import Minnen2018Codec, Minnen2018Config
    from codec.families.minnen2018.weights import weights_bytes
    from codec.registry import LoadedModel, model_from_weights

    sd = torch.load(path, weights_only=False)["model"]
    net = Minnen2018Codec(Minnen2018Config(residual_gain=sd["bit_ones"].shape[1] > 128))
    net.load_state_dict(sd)
    blob = weights_bytes(net)
    return LoadedModel(model_from_weights(blob), f"checkpoint:{path}", hashlib.sha256(blob).digest())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="minnen2018")
    ap.add_argument("--checkpoint", type=Path, help="a training checkpoint.pt instead of --model (no entropy model needed)")
    ap.add_argument("--images", nargs="+", default=IMAGES)
    ap.add_argument("--crop-batches", type=int, default=4)
    ap.add_argument("--quick", action="store_true", help="one image, one crop batch")
    ap.add_argument("--name", default="minnen2018_diagnosis")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    if a.quick:
        a.images, a.crop_batches = a.images[:1], 1
    if not KODAK.exists():
        print(f"{KODAK} missing: nothing to diagnose")
        return
    model = checkpoint_model(a.checkpoint) if a.checkpoint else codec.load_model(a.model)
    net = model.model
    reports, trs, images = [], [], []
    for name in a.images:
        rep, tr = analyse(model, name)
        img = np.asarray(Image.open(KODAK / name).convert("RGB"))
        rep.adaptive = stopping_check(model, net, img, rep.image_db[4])
        reports.append(rep)
        trs.append(tr)
        images.append(img)
        print(f"{name}: image dB per iteration " + " ".join(f"{v:.2f}" for v in rep.image_db), flush=True)
        print(f"  scale check {rep.scale}; adaptive {rep.adaptive}", flush=True)
    crops = training_crop_checks(net, a.crop_batches)
    print("training crops", json.dumps(crops), flush=True)
    a.out.mkdir(parents=True, exist_ok=True)
    write_md(a.out / f"{a.name}.md", model.model_id, reports, crops)
    (a.out / f"{a.name}.json").write_text(json.dumps({"model": model.model_id, "images": [asdict(r) for r in reports],
                                                      "training_crops": crops}, indent=1, default=float))
    plot(reports, trs, images, a.out / f"{a.name}.png", f"minnen2018 diagnosis: {model.model_id}")
    print((a.out / f"{a.name}.md").read_text())


if __name__ == "__main__":
    main()
