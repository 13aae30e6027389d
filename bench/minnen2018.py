"""The minnen2018 family against the paper's comparisons (Minnen et al., ICIP 2018), on a Kodak subset.

    PYTHONPATH=$PWD python bench/minnen2018.py [--images kodim03.png kodim05.png ...] [--out bench/results]

Measured, all through the TLIC container (bytes include header and tile index):
  * RD: minnen2018 constant allocation (k iterations for every 32×32 sub-tile, quality k/16),
    adaptive allocation (every sub-tile stops at a target PSNR), our default@2 (quality sweep), JPEG (Pillow);
  * 0.5 bpp: adaptive vs constant (4 iterations = 0.5 bpp of bits) at equal bytes: the adaptive target
    is bisected to the largest whose stream is no larger than the constant one; JPEG at ≤ that size;
  * seams: mean absolute error in 2-pixel bands along the 32-px sub-tile borders vs the interior, with
    and without the context predictor (4 iterations each, so equal bits), and default@2 as a control;
  * parameters (the channel-wise FC vs a full FC), the entropy coder's saving over raw bits, progressive
    previews, and encode/decode speed (with the load average: the machine is shared).

Writes minnen2018.json, minnen2018.log and minnen2018.png. Kodak is evaluation only.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import codec  # noqa: E402
from codec.families.minnen2018 import coding  # noqa: E402
from codec.families.minnen2018.model import TILE, ChannelwiseFC  # noqa: E402
from codec.registry import BUILTIN, parse_spec  # noqa: E402
from rd import KODAK, psnr  # noqa: E402

IMAGES = ["kodim03.png", "kodim05.png", "kodim23.png"]
CONSTANT = [1, 2, 4, 8, 16]  # iterations per sub-tile (128 bits each = 0.125 bpp of bits per iteration)
DEFAULT_QUALITIES = [0.1, 0.3, 0.5, 0.7]
JPEG_QUALITIES = [5, 10, 20, 30, 50, 70, 90]
PAPER = {"adaptive_0.5bpp_db": 30.418, "constant_0.5bpp_db": 28.890, "jpeg_0.5bpp_db": 29.552,
         "channelwise_fc_params": 384_000, "full_fc_params": 64_000_000}

LOG: list[str] = []


def say(*parts) -> None:
    line = " ".join(str(p) for p in parts)
    print(line, flush=True)
    LOG.append(line)


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def subtile_psnrs(ref: np.ndarray, rec: np.ndarray) -> np.ndarray:
    h, w = ref.shape[:2]
    out = []
    for y in range(0, h, TILE):
        for x in range(0, w, TILE):
            out.append(psnr(ref[y : y + TILE, x : x + TILE], rec[y : y + TILE, x : x + TILE]))
    return np.array(out)


def seam_ratio(ref: np.ndarray, rec: np.ndarray, band: int = 2) -> dict:
    """Mean |error| within ``band`` px of a 32-px sub-tile border (image edges excluded) vs elsewhere."""
    h, w = ref.shape[:2]
    err = np.abs(ref.astype(np.float64) - rec.astype(np.float64)).mean(axis=2)
    ys, xs = np.arange(h) % TILE, np.arange(w) % TILE
    near_y = ((ys < band) & (np.arange(h) >= TILE)) | ((ys >= TILE - band) & (np.arange(h) < (h // TILE) * TILE))
    near_x = ((xs < band) & (np.arange(w) >= TILE)) | ((xs >= TILE - band) & (np.arange(w) < (w // TILE) * TILE))
    mask = near_y[:, None] | near_x[None, :]
    b, i = float(err[mask].mean()), float(err[~mask].mean())
    return {"band_mae": b, "interior_mae": i, "ratio": b / i}


def jpeg(img: np.ndarray, q: int) -> tuple[int, np.ndarray]:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=q, subsampling="4:2:0")
    return len(buf.getvalue()), np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def jpeg_at_most(img: np.ndarray, max_bytes: int) -> tuple[int, float, int]:
    best = None
    for q in range(1, 96):
        n, rec = jpeg(img, q)
        if n > max_bytes:
            break
        best = (n, psnr(img, rec), q)
    return best or (0, float("nan"), 0)


def adaptive_at_most(img: np.ndarray, model, max_bytes: int, lo: float, hi: float, passes: int):
    """The adaptive encode with the highest target PSNR whose stream fits ``max_bytes`` (bisection)."""
    best = None
    for _ in range(passes):
        mid = (lo + hi) / 2
        r = codec.encode(img, model, target_psnr=mid)
        if len(r.data) <= max_bytes:
            best, lo = (mid, r), mid
        else:
            hi = mid
    return best


def parameters(net, model_id: str) -> dict:
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    fc = net.predictor.fc
    c, n, _ = fc.weight.shape
    side = int(round(n**0.5))
    return {"predictor": count(net.predictor), "encoder": count(net.encoder) + count(net.binarizer),
            "decoder": count(net.decoder), "total": count(net), "channelwise_fc": count(fc),
            "full_fc_equivalent": ChannelwiseFC.full_fc_parameters(c, side), "fc_shape": [c, side, side],
            "weights_file_bytes": len(BUILTIN.weights(*parse_spec(model_id))[0])}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", nargs="+", default=IMAGES)
    ap.add_argument("--model", default="minnen2018")
    ap.add_argument("--bisection-passes", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="a smoke run: fewer rate points (results not written)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument("--half-only", action="store_true",
                    help="only the ~0.5 bpp comparisons (constant 4 it, adaptive at equal bytes, JPEG, seams): all of Kodak")
    ap.add_argument("--name", default="minnen2018", help="results file stem (minnen2018_v1.* hold @1's)")
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    global CONSTANT, DEFAULT_QUALITIES
    if a.quick:
        CONSTANT, DEFAULT_QUALITIES, a.bisection_passes = [1, 4], [0.3], 1
    if a.half_only:
        CONSTANT, DEFAULT_QUALITIES = [4], []
    if not KODAK.exists():
        print(f"{KODAK} missing: nothing to measure")
        return
    model = codec.load_model(a.model)
    net = model.model
    say(f"minnen2018 bench: model {model.model_id}, images {', '.join(a.images)}, load average {load()}")
    results: dict = {"model": model.model_id, "images": a.images, "paper": PAPER, "per_image": {}}
    params = parameters(net, model.model_id)
    results["parameters"] = params
    say(f"parameters: predictor {params['predictor']}, encoder+binariser {params['encoder']}, decoder "
        f"{params['decoder']}, total {params['total']} ({params['weights_file_bytes'] / 1e6:.1f} MB weights file)")
    say(f"channel-wise FC over {params['fc_shape']}: {params['channelwise_fc']} parameters; a full FC layer would need "
        f"{params['full_fc_equivalent']} ({params['full_fc_equivalent'] / params['channelwise_fc']:.0f}×); paper: "
        f"~384 K vs ~64 M")
    speed = {"minnen_encode_s": 0.0, "minnen_decode_s": 0.0, "minnen_pixels": 0, "default_encode_s": 0.0,
             "default_decode_s": 0.0, "default_pixels": 0}
    for name in a.images:
        img = np.asarray(Image.open(KODAK / name).convert("RGB"))
        npx = img.shape[0] * img.shape[1]
        res: dict = {"constant": [], "adaptive": [], "default2": [], "jpeg": []}
        for k in CONSTANT:
            t = time.perf_counter()
            r = codec.encode(img, model, quality=k / 16)
            te = time.perf_counter() - t
            res["constant"].append({"iterations": k, "bpp": r.bpp, "psnr": r.psnr})
            if k == 4:
                t = time.perf_counter()
                rec = codec.decode(r.data)
                td = time.perf_counter() - t
                assert abs(psnr(img, rec) - r.psnr) < 1e-6, "decode differs from the encoder's reconstruction"
                speed["minnen_encode_s"] += te
                speed["minnen_decode_s"] += td
                speed["minnen_pixels"] += npx
                const4, rec4 = r, rec
                codes = coding.read_codes(r.data, r.header, net, list(range(len(r.header.tiles))))
                raw = int(codes.iterations.sum()) * net.symbols_per_iteration / 8
                payload = sum(tt.length for tt in r.header.tiles)
                res["entropy"] = {"raw_bit_bytes": raw, "coded_payload_bytes": payload,
                                  "container_bytes": len(r.data), "saving": 1 - payload / raw}
            say(f"{name} constant {k:2d} it: {r.bpp:.3f} bpp {r.psnr:.2f} dB ({te:.1f} s)")
        for q in DEFAULT_QUALITIES:
            t = time.perf_counter()
            r = codec.encode(img, "default@2", quality=q)
            te = time.perf_counter() - t
            t = time.perf_counter()
            rec = codec.decode(r.data)
            td = time.perf_counter() - t
            speed["default_encode_s"] += te
            speed["default_decode_s"] += td
            speed["default_pixels"] += npx
            res["default2"].append({"quality": q, "bpp": r.bpp, "psnr": psnr(img, rec)})
        for q in JPEG_QUALITIES:
            n, rec = jpeg(img, q)
            res["jpeg"].append({"quality": q, "bpp": n * 8 / npx, "psnr": psnr(img, rec)})
        # adaptive allocation: targets spread over the constant curve's range
        const_db = [c["psnr"] for c in res["constant"]]
        for target in np.linspace(min(const_db), max(const_db) + 1, 0 if a.half_only else 2 if a.quick else 3):
            t = time.perf_counter()
            r = codec.encode(img, model, target_psnr=float(target))
            res["adaptive"].append({"target": float(target), "bpp": r.bpp, "psnr": r.psnr, "missed": r.missed_tiles,
                                    "iterations_hist": np.bincount(
                                        coding.read_codes(r.data, r.header, net, list(range(len(r.header.tiles))))
                                        .iterations.ravel(), minlength=17).tolist()})
            say(f"{name} adaptive {target:.2f} dB: {r.bpp:.3f} bpp {r.psnr:.2f} dB ({time.perf_counter() - t:.1f} s)")
        # 0.5 bpp: adaptive vs constant at equal bytes
        found = adaptive_at_most(img, model, len(const4.data), const4.psnr - 3, const4.psnr + 6, a.bisection_passes)
        jn, jdb, jq = jpeg_at_most(img, len(const4.data))
        half = {"constant": {"bpp": const4.bpp, "psnr": const4.psnr,
                             "mean_subtile_psnr": float(np.mean(subtile_psnrs(img, rec4)))},
                "jpeg": {"bpp": jn * 8 / npx, "psnr": jdb, "quality": jq}}
        if found:
            target, r = found
            rec = codec.decode(r.data)
            half["adaptive"] = {"bpp": r.bpp, "psnr": r.psnr, "target": target,
                                "mean_subtile_psnr": float(np.mean(subtile_psnrs(img, rec)))}
        res["half_bpp"] = half
        ad = half.get("adaptive", {"bpp": float("nan"), "psnr": float("nan"), "mean_subtile_psnr": float("nan")})
        say(f"{name} ~0.5 bpp: constant {const4.bpp:.3f} bpp {const4.psnr:.2f} dB (mean sub-tile "
            f"{half['constant']['mean_subtile_psnr']:.2f}) | adaptive {ad['bpp']:.3f} bpp {ad['psnr']:.2f} dB "
            f"(mean sub-tile {ad['mean_subtile_psnr']:.2f}) | JPEG {half['jpeg']['bpp']:.3f} bpp {jdb:.2f} dB")
        # seams: the same 4 iterations with and without the context predictor
        without = coding.code_subtiles(net, img, iterations=4, use_context=False)
        rec_nc = without.recon[: img.shape[0], : img.shape[1]]
        d2 = codec.decode(codec.encode(img, "default@2", quality=0.3).data)
        res["seams"] = {"context": seam_ratio(img, rec4), "no_context": seam_ratio(img, rec_nc),
                        "default2_control": seam_ratio(img, d2),
                        "no_context_psnr": psnr(img, rec_nc), "context_psnr": const4.psnr}
        s = res["seams"]
        say(f"{name} seams (band/interior MAE): with context {s['context']['ratio']:.3f} "
            f"({s['context']['band_mae']:.2f}/{s['context']['interior_mae']:.2f}, {const4.psnr:.2f} dB), without "
            f"{s['no_context']['ratio']:.3f} ({s['no_context']['band_mae']:.2f}/{s['no_context']['interior_mae']:.2f}, "
            f"{s['no_context_psnr']:.2f} dB), default@2 control {s['default2_control']['ratio']:.3f}")
        results["per_image"][name] = res
        say(f"  load average {load()}")
        if not a.quick:  # partial results survive an interrupted run
            a.out.mkdir(parents=True, exist_ok=True)
            (a.out / f"{a.name}.json").write_text(json.dumps(results, indent=1, default=float))
            (a.out / f"{a.name}.log").write_text("\n".join(LOG) + "\n")
    if a.half_only:
        summarise(results)
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / f"{a.name}.json").write_text(json.dumps(results, indent=1, default=float))
        (a.out / f"{a.name}.log").write_text("\n".join(LOG) + "\n")
        return
    # progressive previews of the first image's 8-iteration stream
    img = np.asarray(Image.open(KODAK / a.images[0]).convert("RGB"))
    data = codec.encode(img, model, quality=0.5).data
    prog = []
    for frac in (0.125, 0.25, 0.5, 0.99):
        prog.append({"fraction": frac, "psnr": psnr(img, codec.decode(data, max_bits=frac))})
    results["progressive"] = prog
    say("progressive previews of " + a.images[0] + " (8 it stream): " +
        ", ".join(f"{p['fraction']:.3g} of the bits → {p['psnr']:.2f} dB" for p in prog))
    speed["load_average"] = load()
    results["speed"] = speed
    say(f"speed: minnen2018 (4 it) encode {speed['minnen_pixels'] / speed['minnen_encode_s'] / 1e6:.3f} MP/s, decode "
        f"{speed['minnen_pixels'] / speed['minnen_decode_s'] / 1e6:.3f} MP/s; default@2 encode "
        f"{speed['default_pixels'] / speed['default_encode_s'] / 1e6:.3f} MP/s, decode "
        f"{speed['default_pixels'] / speed['default_decode_s'] / 1e6:.3f} MP/s (1 thread, load {load()})")
    summarise(results)
    if a.quick:
        return
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / f"{a.name}.json").write_text(json.dumps(results, indent=1, default=float))
    (a.out / f"{a.name}.log").write_text("\n".join(LOG) + "\n")
    plot(results, a.out / f"{a.name}.png")


def mean_curve(per_image: dict, key: str) -> tuple[np.ndarray, np.ndarray]:
    rows = [per_image[n][key] for n in per_image]
    return (np.mean([[p["bpp"] for p in r] for r in rows], 0), np.mean([[p["psnr"] for p in r] for r in rows], 0))


def summarise(results: dict) -> None:
    per = results["per_image"]
    say("\n== summary (mean over images) ==")
    mono = {n: all(b["psnr"] >= a["psnr"] for a, b in zip(per[n]["constant"], per[n]["constant"][1:])) for n in per}
    if len(CONSTANT) > 1:  # (one rate point: nothing to check)
        results["constant_monotone"] = mono
        say("PSNR rises with the iterations (constant " + "/".join(map(str, CONSTANT)) + "): " +
            ", ".join(f"{n} {'yes' if ok else 'NO'}" for n, ok in mono.items()))
    for key in ("constant", "adaptive", "default2", "jpeg"):
        if not all(per[n][key] for n in per):
            continue
        b, p = mean_curve(per, key)
        say(f"{key:9s} " + "  ".join(f"{x:.3f} bpp/{y:.2f} dB" for x, y in zip(b, p)))
    halves = [per[n]["half_bpp"] for n in per if "adaptive" in per[n]["half_bpp"]]
    m = lambda k, f: float(np.mean([h[k][f] for h in halves]))  # noqa: E731
    if halves:
        summary = {k: {"bpp": m(k, "bpp"), "psnr": m(k, "psnr")} for k in ("constant", "adaptive", "jpeg")}
        for k in ("constant", "adaptive"):
            summary[k]["mean_subtile_psnr"] = m(k, "mean_subtile_psnr")
        results["half_bpp_summary"] = summary
        gain = summary["adaptive"]["psnr"] - summary["constant"]["psnr"]
        jpeg_gap = summary["constant"]["psnr"] - summary["jpeg"]["psnr"]
        say(f"adaptive − constant at equal bytes: {gain:+.2f} dB; constant − JPEG at ≤ those bytes: {jpeg_gap:+.2f} dB "
            f"({'at or above' if jpeg_gap >= 0 else 'below'} JPEG parity)")
        say(f"~0.5 bpp, equal bytes: adaptive {summary['adaptive']['psnr']:.2f} dB "
            f"(mean sub-tile {summary['adaptive']['mean_subtile_psnr']:.2f}) at {summary['adaptive']['bpp']:.3f} bpp vs "
            f"constant {summary['constant']['psnr']:.2f} dB (mean sub-tile {summary['constant']['mean_subtile_psnr']:.2f}) "
            f"at {summary['constant']['bpp']:.3f} bpp; JPEG {summary['jpeg']['psnr']:.2f} dB at "
            f"{summary['jpeg']['bpp']:.3f} bpp | paper (one image, 0.5 bpp): adaptive 30.418, constant 28.890, JPEG 29.552")
    seams = {k: float(np.mean([per[n]["seams"][k]["ratio"] for n in per])) for k in ("context", "no_context",
                                                                                   "default2_control")}
    results["seams_summary"] = seams
    say(f"seams, band/interior MAE ratio (1 = no seam): with context {seams['context']:.3f}, without "
        f"{seams['no_context']:.3f}, default@2 control {seams['default2_control']:.3f}")
    ent = [per[n]["entropy"]["saving"] for n in per]
    say(f"entropy coding of the bits (4 it streams): payload {100 * np.mean(ent):.1f}% smaller than the raw bits")


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    labels = {"constant": "minnen2018, constant allocation", "adaptive": "minnen2018, adaptive allocation",
              "default2": "default@2 (hyperprior, 256² tiles)", "jpeg": "JPEG (Pillow, 4:2:0)"}
    for key, label in labels.items():
        b, p = mean_curve(results["per_image"], key)
        order = np.argsort(b)
        ax.plot(b[order], p[order], "o-", label=label)
    s = results.get("half_bpp_summary")
    if s:
        ax.plot([0.5], [PAPER["adaptive_0.5bpp_db"]], "k*", label="paper: adaptive @0.5 bpp (one image)")
        ax.plot([0.5], [PAPER["constant_0.5bpp_db"]], "kx", label="paper: constant @0.5 bpp")
    ax.set_xlabel("bits per pixel (whole stream)")
    ax.set_ylabel("PSNR (dB, RGB)")
    ax.set_xlim(0, 2.2)
    ax.set_title(f"Kodak subset ({len(results['per_image'])} images), {results['model']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
