"""Encode effort (issue 24): BD-rate against effort 0, encode speed, and bytes at a 38 dB guarantee.

    python bench/effort.py [--quick] [--levels 1 2] [--psnr-levels 1] [--device cpu] [--out bench/results]

Per set (Kodak: evaluation only, never tuned on; aerial: the evaluation tiles bench/target_bpp.py uses) and
effort level: the BD-rate of the quality sweep against effort 0 (mean bpp and mean PSNR per quality, decoded
with the unchanged decoder), encode MP/s, and under ``target_psnr`` 38 the stream bytes against effort 0 with
every tile that is not flagged checked on the decoded image. ``--quick``: 2 images per set, each cut to its
central 128×256 (two 128² tiles): the CPU figures of a 2-core machine in minutes, not hours.
Results: ``effort.json`` / ``effort.log`` under ``--out``; missing sets are skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import codec  # noqa: E402
from codec.metrics import bd_rate, psnr  # noqa: E402
from codec.options import EFFORT_ITERATIONS  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
QUALITIES = (0.25, 0.5, 0.75, 1.0)
TARGET_PSNR = 38.0


def image_sets(quick: bool) -> dict[str, list[Path]]:
    kodak = sorted((DATA / "kodak").glob("kodim*.png"))
    aerial = sorted((DATA / "aerial" / "train" / "cil_roads").glob("*.png"))[1::2][::5] + sorted(
        (DATA / "aerial" / "train" / "usc_sipi").glob("2.1.*.png"))
    sets = {"kodak": kodak, "aerial": aerial}
    return {k: (v[:: len(v) // 2][:2] if quick else v) for k, v in sets.items() if v}


def load(path: Path, quick: bool) -> np.ndarray:
    from PIL import Image

    img = np.asarray(Image.open(path).convert("RGB"))
    if not quick:
        return img
    h, w = img.shape[:2]
    return np.ascontiguousarray(img[h // 2 - 64 : h // 2 + 64, w // 2 - 128 : w // 2 + 128])


def encode(img: np.ndarray, model, effort: int, tile: int, device: str, **target) -> dict:
    t0 = time.perf_counter()
    r = codec.encode(img, model, effort=effort, tile_size=tile, device=device, **target)
    seconds = time.perf_counter() - t0
    out = codec.decode(r.data, model)
    row = {"bytes": len(r.data), "bpp": r.bpp, "psnr": psnr(img, out), "encode_s": seconds,
           "mp_s": img.shape[0] * img.shape[1] / seconds / 1e6, "missed": r.missed_tiles}
    if "target_psnr" in target:  # the guarantee, checked on the decoded image
        row["unmet_tiles"] = sum(
            psnr(img[y : y + h, x : x + w], out[y : y + h, x : x + w]) < target["target_psnr"]
            for i, (x, y, w, h) in enumerate(r.header.boxes()) if not r.header.tiles[i].missed_target)
    return row


def sweep(images: dict, model, effort: int, base: dict | None, tile: int, device: str, log) -> dict:
    """The quality sweep at ``effort``: per-image rows, the set's mean curve, and (``base``: effort 0's sweep)
    its BD-rate and speed against effort 0. Logged as soon as it is done."""
    rows = {q: [encode(img, model, effort, tile, device, quality=q) for img in images.values()] for q in QUALITIES}
    bpp = [float(np.mean([r["bpp"] for r in rows[q]])) for q in QUALITIES]
    db = [float(np.mean([r["psnr"] for r in rows[q]])) for q in QUALITIES]
    speed = float(np.mean([r["mp_s"] for q in QUALITIES for r in rows[q]]))
    bd = None if base is None else bd_rate(base["bpp"], base["psnr"], bpp, db, bpp_range=(0.0, 10.0))
    slowdown = 1.0 if base is None else base["encode_mp_s"] / speed
    log(f"  effort {effort} ({EFFORT_ITERATIONS[effort]:4d} steps): BD-rate {'—' if bd is None else f'{bd:+.2f}%':>8}  "
        f"{speed:.4f} MP/s ({slowdown:.0f}× effort 0)  bpp {np.round(bpp, 3).tolist()}  PSNR {np.round(db, 2).tolist()}")
    return {"bpp": bpp, "psnr": db, "bd_rate_pct": bd, "encode_mp_s": speed, "slowdown": slowdown, "images": rows}


def at_target(images: dict, model, efforts: list[int], tile: int, device: str, log) -> dict:
    """``target_psnr`` 38 per effort: bytes against effort 0 at the same guarantee."""
    rows = {e: [encode(img, model, e, tile, device, target_psnr=TARGET_PSNR) for img in images.values()]
            for e in [0] + efforts}
    total0 = sum(r["bytes"] for r in rows[0])
    out = {}
    for e, rs in rows.items():
        total = sum(r["bytes"] for r in rs)
        out[e] = {"bytes": total, "vs_effort0_pct": 100 * (total / total0 - 1), "missed": sum(r["missed"] for r in rs),
                  "unmet_tiles": sum(r["unmet_tiles"] for r in rs), "images": rs}
        log(f"  target_psnr {TARGET_PSNR:g}, effort {e}: {total} bytes ({out[e]['vs_effort0_pct']:+.2f}%), "
            f"{out[e]['missed']} tiles flagged, {out[e]['unmet_tiles']} unflagged tiles under target")
    return out


def save(out: Path, result: dict) -> None:
    (out / "effort.json").write_text(json.dumps(result, indent=1, default=float) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 images per set, central 128×256 crops")
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 2], help="effort levels of the quality sweep")
    ap.add_argument("--psnr-levels", type=int, nargs="*", default=[1], help="effort levels at target_psnr 38")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    a = ap.parse_args()
    sets = image_sets(a.quick)
    if not sets:
        print(f"skipping: no image sets under {DATA}")
        return
    a.out.mkdir(parents=True, exist_ok=True)
    model, tile = codec.load_model("default"), 128 if a.quick else 256
    lines: list[str] = []

    def log(line: str) -> None:
        print(line, flush=True)
        lines.append(line)
        (a.out / "effort.log").write_text("\n".join(lines) + "\n")  # partial results survive an interrupted run

    log(f"# bench/effort.py {'--quick ' if a.quick else ''}levels {a.levels} psnr-levels {a.psnr_levels}, "
        f"device {a.device}, tile {tile}, qualities {list(QUALITIES)}; load average at start "
        f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    result = {"quick": a.quick, "device": a.device, "tile": tile, "qualities": QUALITIES, "sets": {}}
    images = {name: {p.name: load(p, a.quick) for p in files} for name, files in sets.items()}
    for name, imgs in images.items():  # effort 0 and the first level of every set, then the guarantee, then the rest
        codec.encode(next(iter(imgs.values())), model, quality=0.5, tile_size=tile, device=a.device)  # warm-up
        log(f"{name}: {', '.join(imgs)} ({sum(i.shape[0] * i.shape[1] for i in imgs.values()) / 1e6:.3f} MP)")
        res = result["sets"][name] = {"sweep": {}}
        res["sweep"][0] = sweep(imgs, model, 0, None, tile, a.device, log)
        res["sweep"][a.levels[0]] = sweep(imgs, model, a.levels[0], res["sweep"][0], tile, a.device, log)
        save(a.out, result)
    for name, imgs in images.items():
        log(f"{name}:")
        result["sets"][name]["target_psnr"] = at_target(imgs, model, a.psnr_levels, tile, a.device, log)
        save(a.out, result)
    for level in a.levels[1:]:
        for name, imgs in images.items():
            log(f"{name}:")
            result["sets"][name]["sweep"][level] = sweep(imgs, model, level, result["sets"][name]["sweep"][0], tile,
                                                         a.device, log)
            save(a.out, result)
    log(f"# load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
