"""Kodak benchmark: RD curves, BD-rates, seams, speed and 100 MP memory, in one run.

    python bench/kodak_rd.py [--images N] [--skip-large] [--out bench/results]

Writes ``kodak_rd.json`` and ``kodak_rd.png`` and prints summary tables. Kodak is
the evaluation set only: nothing here feeds back into training.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import codec  # noqa: E402
from rd import KODAK, bd_rate, classical, load_anchor, load_folder, psnr  # noqa: E402

QUALITIES = [0.0, 0.12, 0.25, 0.37, 0.5, 0.62, 0.75, 0.87, 1.0]
TARGETS = [29.0, 32.0, 35.0, 38.0]
CLASSICAL = {
    "JPEG": [5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95],
    "WEBP": [5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95],
    "AVIF": [5, 15, 25, 35, 45, 55, 65, 75, 85, 92],
}
ANCHOR_NAMES = ["jpeg", "webp", "bpg_444_x265_ycbcr", "av1", "vtm", "paper-bmshj2018-hyperprior",
                "compressai-mbt2018-mean_mse_cpu", "compressai-cheng2020-anchor_mse_cpu"]


def mean_point(rows: list[dict]) -> dict:
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if isinstance(rows[0][k], (int, float))}


def run_ours(images, model) -> dict:
    sweep, speed = [], {"enc_s": 0.0, "dec_s": 0.0, "px": 0}
    for q in QUALITIES:
        rows = []
        for name, img in images:
            t = time.perf_counter()
            r = codec.encode(img, model, quality=q)
            te = time.perf_counter() - t
            t = time.perf_counter()
            out = codec.decode(r.data, model)
            td = time.perf_counter() - t
            rows.append({"bpp": r.bpp, "psnr": psnr(img, out)})
            speed["enc_s"] += te
            speed["dec_s"] += td
            speed["px"] += img.shape[0] * img.shape[1]
        sweep.append({"quality": q, **mean_point(rows)})
        print(f"  ours q={q:.2f}: {sweep[-1]['bpp']:.3f} bpp, {sweep[-1]['psnr']:.2f} dB", flush=True)
    return {"sweep": sweep, "encode_mp_s": speed["px"] / speed["enc_s"] / 1e6, "decode_mp_s": speed["px"] / speed["dec_s"] / 1e6}


def run_targets(images, model) -> dict:
    points, px, enc_s = [], 0, 0.0
    for target in TARGETS:
        rows = []
        for name, img in images:
            t = time.perf_counter()
            r = codec.encode(img, model, target_psnr=target)
            enc_s += time.perf_counter() - t
            px += img.shape[0] * img.shape[1]
            out = codec.decode(r.data, model)
            tiles_ok = tiles = 0
            for i, tile in enumerate(r.header.tiles):
                x, y, w, h = r.header.tile_box(i)
                tiles += 1
                tiles_ok += psnr(img[y : y + h, x : x + w], out[y : y + h, x : x + w]) >= target
            # one global quality that makes the worst tile reach the target (the non-tiled alternative)
            worst = max(t.quality for t in r.header.tiles)
            g = codec.encode(img, model, quality=worst)
            rows.append({"bpp": r.bpp, "psnr": psnr(img, out), "tiles": tiles, "tiles_reached": tiles_ok,
                         "missed_flagged": r.missed_tiles, "global_bpp": g.bpp})
        p = mean_point(rows)
        p["tiles"] = int(sum(r["tiles"] for r in rows))
        p["tiles_reached"] = int(sum(r["tiles_reached"] for r in rows))
        p["missed_flagged"] = int(sum(r["missed_flagged"] for r in rows))
        p["saving_vs_global_pct"] = float((1 - p["bpp"] / p["global_bpp"]) * 100)
        points.append({"target": target, **p})
        print(f"  ours target {target:.0f} dB: {p['bpp']:.3f} bpp, {p['psnr']:.2f} dB, "
              f"{p['tiles_reached']}/{p['tiles']} tiles reach it ({p['missed_flagged']} flagged), "
              f"{p['saving_vs_global_pct']:.1f}% smaller than one global quality", flush=True)
    return {"points": points, "encode_mp_s": px / enc_s / 1e6}


def run_classical(images) -> dict:
    out = {}
    for fmt, qualities in CLASSICAL.items():
        pts, te_all, td_all, px = [], 0.0, 0.0, 0
        for q in qualities:
            rows = []
            for name, img in images:
                n, rec, te, td = classical(fmt, img, q)
                rows.append({"bpp": n * 8 / (img.shape[0] * img.shape[1]), "psnr": psnr(img, rec)})
                te_all += te
                td_all += td
                px += img.shape[0] * img.shape[1]
            pts.append({"quality": q, **mean_point(rows)})
        out[fmt] = {"sweep": pts, "encode_mp_s": px / te_all / 1e6, "decode_mp_s": px / td_all / 1e6}
        print(f"  {fmt}: {len(pts)} points, encode {out[fmt]['encode_mp_s']:.1f} MP/s", flush=True)
    return out


def seam_check(images, model, ours_sweep, band: int = 4) -> dict:
    """PSNR within ``band`` px of internal tile borders vs the tiles' interior, at ≈0.25 bpp.

    Also encodes each image as one single tile and measures the same band: the
    difference is what tiling itself costs there, free of what the image content
    in that band happens to be.
    """
    q = min(ours_sweep, key=lambda p: abs(p["bpp"] - 0.25))["quality"]
    acc = {k: [0.0, 0] for k in ("band", "interior", "band_untiled")}
    bpps = []
    for name, img in images:
        h, w = img.shape[:2]
        r = codec.encode(img, model, quality=q)
        bpps.append(r.bpp)
        ts = r.header.tile_size
        near = np.zeros((h, w), dtype=bool)
        for x in range(ts, w, ts):
            near[:, max(0, x - band) : x + band] = True
        for y in range(ts, h, ts):
            near[max(0, y - band) : y + band, :] = True
        whole = codec.encode(img, model, quality=q, tile_size=-(-max(h, w) // 64) * 64)
        for key, data, mask in [("band", r.data, near), ("interior", r.data, ~near), ("band_untiled", whole.data, near)]:
            err = ((img.astype(np.float64) - codec.decode(data, model)) ** 2).sum(axis=2)
            acc[key][0] += err[mask].sum()
            acc[key][1] += mask.sum() * 3
    p = {k: float(10 * np.log10(255**2 / (se / n))) for k, (se, n) in acc.items()}
    return {"quality": q, "bpp": float(np.mean(bpps)), "band_px": band, "psnr_border_band": p["band"],
            "psnr_interior": p["interior"], "gap_db": p["interior"] - p["band"],
            "psnr_border_band_untiled": p["band_untiled"], "tiling_cost_in_band_db": p["band_untiled"] - p["band"]}


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 6.5))
    for name, a in results["anchors"].items():
        ax.plot(a["bpp"], a["psnr"], "--", lw=1, alpha=0.7, label=f"{a['name']} (published)")
    for fmt, r in results["classical"].items():
        s = r["sweep"]
        ax.plot([p["bpp"] for p in s], [p["psnr"] for p in s], "-s", ms=3, label=f"{fmt} (Pillow, this run)")
    s = results["ours"]["sweep"]
    ax.plot([p["bpp"] for p in s], [p["psnr"] for p in s], "-o", lw=2.5, color="black", label=f"ours {results['model']} (quality sweep)")
    t = results["targets"]["points"]
    ax.plot([p["bpp"] for p in t], [p["psnr"] for p in t], "D", ms=8, color="crimson", label="ours, target-PSNR mode")
    ax.set_xlim(0, 1.6)
    ax.set_ylim(22, 42)
    ax.set_xlabel("bits per pixel (bytes on disk)")
    ax.set_ylabel("PSNR RGB (dB)")
    ax.set_title(f"Kodak ({results['images']} images)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7.5, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, help="use only the first N Kodak images")
    ap.add_argument("--model", default="default")
    ap.add_argument("--skip-large", action="store_true", help="skip the 100 MP memory run")
    ap.add_argument("--megapixels", type=float, default=100)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    a = ap.parse_args()
    if not KODAK.exists():
        print(f"skipped: Kodak not found at {KODAK}")
        return
    a.out.mkdir(parents=True, exist_ok=True)
    images = load_folder(KODAK)[: a.images]
    model = codec.load_model(a.model)
    print(f"Kodak: {len(images)} images, model {model.model_id}, torch threads {__import__('torch').get_num_threads()}")
    res = {"model": model.model_id, "images": len(images), "cpu_count": os.cpu_count()}
    print("our codec, quality sweep:")
    res["ours"] = run_ours(images, model)
    print("our codec, target-PSNR mode:")
    res["targets"] = run_targets(images, model)
    print("classical codecs:")
    res["classical"] = run_classical(images)
    res["anchors"] = {n: a_ for n in ANCHOR_NAMES if (a_ := load_anchor(n))}
    res["seams"] = seam_check(images, model, res["ours"]["sweep"])

    ours = res["ours"]["sweep"]
    ob, op = [p["bpp"] for p in ours], [p["psnr"] for p in ours]
    bd = {}
    for fmt, r in res["classical"].items():
        bd[f"{fmt} (this run)"] = bd_rate([p["bpp"] for p in r["sweep"]], [p["psnr"] for p in r["sweep"]], ob, op)
    for n, an in res["anchors"].items():
        bd[f"{an['name']} (published)"] = bd_rate(an["bpp"], an["psnr"], ob, op)
    res["bd_rate_pct"] = bd

    if not a.skip_large:
        print(f"{a.megapixels:.0f} MP raster (subprocess, for a clean peak RSS):", flush=True)
        tmp = a.out / "large_image.json"
        subprocess.run([sys.executable, str(Path(__file__).parent / "large_image.py"), "--megapixels",
                        str(a.megapixels), "--json", str(tmp)], check=True, stdout=subprocess.DEVNULL)
        res["large_image"] = json.loads(tmp.read_text())
        tmp.unlink()

    (a.out / "kodak_rd.json").write_text(json.dumps(res, indent=1))
    plot(res, a.out / "kodak_rd.png")

    print("\nBD-rate of ours vs each (PSNR, 0.1–1.5 bpp; negative = ours smaller):")
    for k, v in bd.items():
        print(f"  {k:45s} {'n/a' if v is None else f'{v:+.1f}%'}")
    s = res["seams"]
    print(f"\nseams at {s['bpp']:.3f} bpp: border band ({s['band_px']} px) {s['psnr_border_band']:.2f} dB, "
          f"interior {s['psnr_interior']:.2f} dB, gap {s['gap_db']:.2f} dB; the same band coded without tiles "
          f"{s['psnr_border_band_untiled']:.2f} dB (tiling costs {s['tiling_cost_in_band_db']:.2f} dB there)")
    print("\nspeed on this machine (MP/s):")
    print(f"  {'ours, quality mode':28s} encode {res['ours']['encode_mp_s']:.2f}  decode {res['ours']['decode_mp_s']:.2f}")
    print(f"  {'ours, target-PSNR mode':28s} encode {res['targets']['encode_mp_s']:.2f}")
    for fmt, r in res["classical"].items():
        print(f"  {fmt:28s} encode {r['encode_mp_s']:.2f}  decode {r['decode_mp_s']:.2f}")
    if "large_image" in res:
        L = res["large_image"]
        print(f"\n{L['megapixels']:.0f} MP encode: {L['encode_s']:.0f} s ({L['encode_mp_s']:.2f} MP/s), "
              f"peak RSS {L['peak_rss_mb_after_encode']:.0f} MB (before encode {L['peak_rss_mb_before_encode']:.0f} MB), "
              f"1 MP region decode {L['region_1mp_decode_s']:.2f} s")
    print(f"\nwrote {a.out / 'kodak_rd.json'} and {a.out / 'kodak_rd.png'}")


if __name__ == "__main__":
    main()
