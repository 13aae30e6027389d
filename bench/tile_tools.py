"""Guaranteed-tile bytes (issue 23, item 7): every 256² tile at or above a PSNR target, ours against the best
classical file that guarantees the same per image; tiles missed before/after per-tile tools; tiles per tool;
encode/decode MP/s.

    python bench/tile_tools.py [--quick] [--targets 30 34 38 42 46 50] [--sets kodak aerial satellite]
    python bench/tile_tools.py --calibrate [--quick]     # what codec.toolchoice.LOSSY_TRY_BPS rests on
    python bench/tile_tools.py --per-tile [--quick]      # each lossy tool alone per tile: what tools_to_try rests on
    python bench/tile_tools.py --j2k-tolerance [--quick] # JPEG 2000's search stopped closer to the target
    python bench/tile_tools.py --avif-speed [--quick]    # AVIF 4:4:4 at slower libavif speeds

Per image and target: our file (``codec.encode(target_psnr=T)``, the default model for its kind) checked by
decoding that its worst tile reaches T; the same with the learned tool alone (the "missed before" figure);
and, per classical codec, the smallest file whose WORST tile reaches T (its quality bisected per image):
photos AVIF 4:2:0 and 4:4:4 (Pillow/libavif, speed 6), JPEG XL (libjxl, effort 7) and JPEG 2000
(OpenJPEG 9/7); 16-bit rasters JPEG XL and JPEG 2000 per band, told the effective bit depth. For rasters a
tile's PSNR is its worst band's, each band against its own valid range (codec.metrics.worst_band_psnr), the
rule the codec's target holds to. "vs best" is our bytes over the sum of each image's smallest classical file.

Sets: Kodak (24, evaluation only), the aerial evaluation tiles (odd CIL tiles, every fifth, plus usc_sipi
2.1.*: never used by ``--calibrate``) and the satellite rasters (../shared/data/satellite/train, centre 512²
crops: there is no held-out satellite set here). Results: ``tile_tools.json`` and ``tile_tools.log`` under
``--out``. Missing sets are skipped with a note.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import codec  # noqa: E402
import rd  # noqa: E402
from codec import tilecoders, toolchoice  # noqa: E402
from codec.format.raster import valid_mask  # noqa: E402
from codec.metrics import band_peaks, band_sse, worst_band_psnr  # noqa: E402
from codec.tilecoders import TileContext, avif444, j2k, jxl_lossy  # noqa: E402

DATA = rd.SHARED / "data"
TARGETS = (30.0, 34.0, 38.0, 42.0, 46.0, 50.0)
TILE = 256
CROP = 512  # satellite rasters: centre crop
PHOTO_CODECS = ("avif420", "avif444", "jxl", "j2k")
RASTER_CODECS = ("jxl", "j2k")


# --- data ----------------------------------------------------------------------------------------
def photo_sets(quick: bool) -> dict[str, list[Path]]:
    kodak = sorted((DATA / "kodak").glob("kodim*.png"))
    aerial = sorted((DATA / "aerial" / "train" / "cil_roads").glob("*.png"))[1::2][::5] + sorted(
        (DATA / "aerial" / "train" / "usc_sipi").glob("2.1.*.png"))
    return {k: (v[:3] if quick else v) for k, v in {"kodak": kodak, "aerial": aerial}.items() if v}


def satellite_files(quick: bool) -> list[Path]:
    files = sorted((DATA / "satellite" / "train").glob("*.tif"))
    return files[::6][:3] if quick else files[::2]


def load_raster(path: Path) -> tuple[np.ndarray, int | None]:
    from codec.images.imageio import load_image

    img = load_image(path.read_bytes(), path.name)
    px = img.pixels if img.pixels.ndim == 3 else img.pixels[..., None]
    h, w = px.shape[:2]
    y0, x0 = max((h - CROP) // 2, 0), max((w - CROP) // 2, 0)
    return np.ascontiguousarray(px[y0 : y0 + CROP, x0 : x0 + CROP]), img.nodata


# --- the guarantee, measured the codec's way -----------------------------------------------------
def worst_tile_db(ref: np.ndarray, dec: np.ndarray, nodata: int | None = None) -> float:
    """Worst tile PSNR: photos 8-bit over every colour sample; rasters the worst band of the worst tile."""
    if ref.dtype == np.uint8 and nodata is None and ref.ndim == 3 and ref.shape[2] in (1, 3):
        return float(rd.tile_psnrs(ref, dec, TILE).min())
    valid = valid_mask(ref, nodata)
    peaks = band_peaks(ref, valid)
    worst = np.inf
    h, w = ref.shape[:2]
    for y in range(0, h, TILE):
        for x in range(0, w, TILE):
            v = None if valid is None else valid[y : y + TILE, x : x + TILE]
            sse, n = band_sse(ref[y : y + TILE, x : x + TILE], dec[y : y + TILE, x : x + TILE], v)
            worst = min(worst, worst_band_psnr(sse, n, peaks))
    return float(worst)


def classical_file(name: str, img: np.ndarray, k: int) -> tuple[int, np.ndarray]:
    """(bytes, decoded) of classical codec ``name`` at step ``k`` of its quality ladder (higher k: better)."""
    import satellite_rd  # the per-band raster helpers

    if img.dtype != np.uint8 or img.shape[2] not in (1, 3):
        bits = satellite_rd.effective_bits(img)
        n, out, _, _ = (satellite_rd.jpegxl(img, 12 * 0.88**k, bits) if name == "jxl"
                        else satellite_rd.jpeg2k(img, 20 + 0.5 * k, bits))
        return n, out
    photo = img if img.shape[2] == 3 else np.repeat(img, 3, axis=2)
    if name.startswith("avif"):
        n, out, _, _ = rd.classical("AVIF", photo, k, subsampling="4:2:0" if name == "avif420" else "4:4:4")
    elif name == "jxl":
        n, out, _, _ = rd.classical("JXL", photo, 12 * 0.88**k)
    else:
        n, out, _, _ = rd.classical("J2K", photo, 20 + 0.5 * k)
    return n, out[..., : img.shape[2]]


LOG: list[Path] = []  # the run's .log file, appended line by line (a long run interrupted keeps its lines)


def say(line: str) -> None:
    print(line, flush=True)
    for log in LOG:
        with open(log, "a") as f:
            f.write(line + "\n")


LADDER = {"avif420": 100, "avif444": 100, "jxl": 60, "j2k": 100}  # the top step of each ladder


def guaranteed_classical(name: str, img: np.ndarray, target: float, nodata: int | None) -> int | None:
    """Bytes of the smallest ``name`` file whose worst tile reaches ``target`` (None: not even the top step)."""
    sizes: dict[int, int] = {}

    def passes(k: int) -> bool:
        n, dec = classical_file(name, img, k)
        sizes[k] = n
        return worst_tile_db(img, dec, nodata) >= target

    k = rd.lowest_passing(passes, 0, LADDER[name])
    return None if k is None else sizes[k]


# --- ours ---------------------------------------------------------------------------------------
def ours(img: np.ndarray, target: float, nodata: int | None) -> dict:
    kw = {"nodata": nodata} if nodata is not None else {}
    t0 = time.perf_counter()
    learned = codec.encode(img, None, target_psnr=target, tools=("learned",), **kw)
    t1 = time.perf_counter()
    r = codec.encode(img, None, target_psnr=target, **kw)
    t2 = time.perf_counter()
    dec = codec.decode(r.data)
    t3 = time.perf_counter()
    names = [tilecoders.coder(t.coder).name for t in r.header.tiles]
    return {"bytes": len(r.data), "bytes_learned_only": len(learned.data), "tiles": len(names),
            "missed_before": learned.missed_tiles, "missed_after": r.missed_tiles,
            "worst_tile_db": worst_tile_db(img, dec.reshape(img.shape), nodata), "coders": toolchoice.counts(names),
            "encode_s": t2 - t1, "encode_s_learned_only": t1 - t0, "decode_s": t3 - t2}


def evaluate_set(name: str, images: list[tuple[str, np.ndarray, int | None]], targets, codecs,
                 save: Callable[[dict], None] = lambda _: None) -> dict:
    """Per target, the set's totals; ``save`` gets the rows so far after each target (a long run keeps them)."""
    out = {}
    for target in targets:
        row = {"images": len(images), "bytes": 0, "bytes_learned_only": 0, "tiles": 0, "missed_before": 0,
               "missed_after": 0, "below_target": 0, "coders": {}, "best_classical": 0, "classical_missing": 0,
               "classical": dict.fromkeys(codecs, 0), "megapixels": 0.0, "encode_s": 0.0, "decode_s": 0.0}
        for fname, img, nodata in images:
            m = ours(img, target, nodata)
            for k in ("bytes", "bytes_learned_only", "tiles", "missed_before", "missed_after", "encode_s", "decode_s"):
                row[k] += m[k]
            row["below_target"] += int(m["worst_tile_db"] < target - 0.05)
            for c, n in m["coders"].items():
                row["coders"][c] = row["coders"].get(c, 0) + n
            row["megapixels"] += img.shape[0] * img.shape[1] / 1e6
            sizes = {c: guaranteed_classical(c, img, target, nodata) for c in codecs}
            for c, n in sizes.items():
                row["classical"][c] += n or 0
            found = [n for n in sizes.values() if n is not None]
            row["best_classical"] += min(found) if found else 0
            row["classical_missing"] += int(not found)
        row["vs_best_classical"] = row["bytes"] / max(row["best_classical"], 1)
        row["learned_share"] = row["coders"].get("learned", 0) / max(row["tiles"], 1)
        row["encode_mp_s"] = row["megapixels"] / max(row["encode_s"], 1e-9)
        row["decode_mp_s"] = row["megapixels"] / max(row["decode_s"], 1e-9)
        out[f"{target:g}"] = row
        save(out)
        say(f"{name:9} {target:4g} dB  ours/best {row['vs_best_classical']:.3f}  missed {row['missed_before']}"
              f"→{row['missed_after']}/{row['tiles']}  below {row['below_target']}  learned {row['learned_share']:.0%}"
              f"  coders {row['coders']}  enc {row['encode_mp_s']:.2f} MP/s  dec {row['decode_mp_s']:.2f} MP/s"
              f"  classical {row['classical']}")
    return out


# --- calibration (training data only) -------------------------------------------------------------
def calibration_sources(quick: bool) -> dict[str, list[Path]]:
    """Training images by kind: train-natural photos, the even CIL road tiles and the USC-SIPI 2.2.* aerial
    scenes (centre 512² crops), none of them ever evaluated here."""
    nat = sorted((DATA / "train-natural").rglob("*.png")) + sorted((DATA / "train-natural").rglob("*.jpg"))
    cil = sorted((DATA / "aerial" / "train" / "cil_roads").glob("*.png"))[0::2]  # even: never evaluated
    usc = sorted((DATA / "aerial" / "train" / "usc_sipi").glob("2.2.*.png"))
    out = {"natural": nat[::25], "cil": cil[::8], "usc_2.2": usc[::6]}
    return {k: v[:2] if quick else v for k, v in out.items() if v}


def per_tile_sources(quick: bool) -> dict[str, list[Path]]:
    """Training images by kind for ``--per-tile``, denser than :func:`calibration_sources` (whole tiles, no
    learned pass): every 6th train-natural photo, every 3rd even CIL tile, every USC-SIPI 2.2.* scene."""
    nat = sorted((DATA / "train-natural").rglob("*.png")) + sorted((DATA / "train-natural").rglob("*.jpg"))
    cil = sorted((DATA / "aerial" / "train" / "cil_roads").glob("*.png"))[0::2]  # even: never evaluated
    usc = sorted((DATA / "aerial" / "train" / "usc_sipi").glob("2.2.*.png"))
    out = {"natural": nat[::6], "cil": cil[::3], "usc_2.2": usc}
    return {k: v[:1] if quick else v for k, v in out.items() if v}


def centre_crop(img: np.ndarray, size: int = 512) -> np.ndarray:
    h, w = img.shape[:2]
    y0, x0 = max((h - size) // 2, 0), max((w - size) // 2, 0)
    return np.ascontiguousarray(img[y0 : y0 + size, x0 : x0 + size])


def calibrate(quick: bool, targets=(30.0, 34.0, 38.0)) -> dict:
    """Per passing learned tile of training images: its bits per sample and the bytes the effort-0 lossy tools
    (JPEG 2000, AVIF 4:4:4), each searched to the target, save on it; per kind of image and threshold the share
    of tiles tried and of the possible saving kept (what codec.toolchoice.LOSSY_TRY_BPS and AVIF_FAST_MAX_DB
    rest on)."""
    from PIL import Image

    out = {}
    for target in targets:
        for source, files in calibration_sources(quick).items():
            bps, saving, learned_bytes, wins = [], [], [], {"learned": 0, "j2k": 0, "avif444": 0}
            tool_bytes = {"j2k": 0, "avif444": 0}
            for path in files:
                img = centre_crop(np.asarray(Image.open(path).convert("RGB")))
                r = codec.encode(img, None, target_psnr=target, tile_size=TILE, tools=("learned",))
                for t, (x, y, w, h) in zip(r.header.tiles, r.header.boxes()):
                    if t.missed_target:
                        continue
                    block = np.ascontiguousarray(img[y : y + h, x : x + w])
                    ctx, psnr_of = TileContext(h, w, 3, "uint8"), toolchoice.photo_psnr(block)
                    trials = {"j2k": j2k.encode_to_psnr(block, ctx, target, psnr_of),
                              "avif444": avif444.encode_to_psnr(block, ctx, target, psnr_of)}
                    sizes = {k: len(v.payload) if v is not None else t.length for k, v in trials.items()}
                    for k, n in sizes.items():
                        tool_bytes[k] += min(n, t.length)
                    best = min(sizes, key=sizes.get)
                    wins[best if sizes[best] < t.length else "learned"] += 1
                    bps.append(8 * t.length / (w * h * 3))
                    learned_bytes.append(t.length)
                    saving.append(max(t.length - sizes[best], 0))
            bps_a, sav = np.array(bps), np.array(saving, dtype=float)
            total = max(sum(learned_bytes), 1)
            row = {"tiles": len(bps), "wins": wins, "saving_share_of_learned_bytes": float(sav.sum() / total),
                   "each_tool_with_learned": {k: v / total if bps else 1.0 for k, v in tool_bytes.items()},
                   "thresholds": {f"{th:.2f}": {"tried": float((bps_a > th).mean()) if len(bps_a) else 0.0,
                                                "saving_kept": float(sav[bps_a > th].sum() / max(sav.sum(), 1))}
                                  for th in (0.0, 0.25, 0.5, 0.75, 1.0)}}
            out[f"{target:g} {source}"] = row
            say(f"calibration {target:g} dB {source:8} {row['tiles']} passing learned tiles: best tool saves "
                f"{row['saving_share_of_learned_bytes']:.1%} of their bytes (alone with learned: "
                + ", ".join(f"{k} {1 - v:.1%}" for k, v in row["each_tool_with_learned"].items())
                + f"); wins {wins}; tried/kept by threshold "
                + " ".join(f"{k}:{v['tried']:.2f}/{v['saving_kept']:.2f}" for k, v in row["thresholds"].items()))
    return out


def per_tile_blocks(quick: bool, per_source: int = 120) -> list[tuple[str, np.ndarray]]:
    """(kind, whole 256² tile) of the :func:`per_tile_sources` images, at most ``per_source`` per kind."""
    from PIL import Image

    tiles: list[tuple[str, np.ndarray]] = []
    for source, files in per_tile_sources(quick).items():
        mine = []
        for path in files:
            img = np.asarray(Image.open(path).convert("RGB"))
            mine += [np.ascontiguousarray(img[y : y + TILE, x : x + TILE]) for y in range(0, img.shape[0] - TILE + 1, TILE)
                     for x in range(0, img.shape[1] - TILE + 1, TILE)]
        tiles += [(source, t) for t in mine[: 2 if quick else per_source]]
    return tiles


def search_totals(tiles: list[tuple[str, np.ndarray]], target: float, search) -> dict:
    """``search(block, ctx, target, psnr_of)`` on every 8-bit tile: the bytes of those that reach the target,
    how many do, their mean dB over it, and CPU ms per tile."""
    total, over, t0 = 0, [], time.process_time()
    for _, block in tiles:
        trial = search(block, TileContext(TILE, TILE, 3, "uint8"), target, toolchoice.photo_psnr(block))
        if trial is not None:
            total += len(trial.payload)
            over.append(trial.psnr - target)
    return {"bytes": total, "reached": len(over), "mean_db_over": float(np.mean(over)) if over else None,
            "ms_per_tile": (time.process_time() - t0) * 1000 / len(tiles)}


def j2k_tolerance(quick: bool, targets=(38.0, 42.0, 46.0), tolerances=(0.3, 0.15, 0.05),
                  max_tries: int = toolchoice.THOROUGH_J2K_TRIES, per_source: int = 40) -> dict:
    """JPEG 2000 alone on whole 256² training tiles, its search stopped at each tolerance above the target
    (codec.tilecoders.j2k.TOLERANCE_DB is the first): total bytes against the first, mean PSNR over the target,
    CPU ms per tile (what the thorough effort's tighter search rests on)."""
    tiles = per_tile_blocks(quick, per_source)
    out = {}
    for target in targets:
        rows = {f"{tol:g}": search_totals(tiles, target, lambda b, c, t, p, tol=tol: j2k.encode_to_psnr(
            b, c, t, p, None, tol, max_tries if tol < j2k.TOLERANCE_DB else j2k.MAX_TRIES)) for tol in tolerances}
        base = rows[f"{tolerances[0]:g}"]["bytes"]
        out[f"{target:g}"] = {"tiles": len(tiles), **rows}
        say(f"JPEG 2000 tolerance at {target:g} dB over {len(tiles)} tiles: " + "  ".join(
            f"{k} dB: {r['bytes']} B ({r['bytes'] / base - 1:+.2%}), +{r['mean_db_over']:.3f} dB, {r['ms_per_tile']:.0f} ms"
            for k, r in rows.items()))
    return out


def avif_speed(quick: bool, targets=(34.0, 38.0, 42.0), speeds=(8, 6, 4), per_source: int = 40) -> dict:
    """AVIF 4:4:4 alone on whole 256² training tiles at each libavif speed, each searched to the target: total
    bytes against the first speed's, CPU ms per tile (what codec.tilecoders.avif444.SPEED and the thorough
    effort's slower AVIF rest on)."""
    tiles = per_tile_blocks(quick, per_source)
    out = {}
    for target in targets:
        rows = {str(speed): search_totals(tiles, target, lambda b, c, t, p, speed=speed: avif444.encode_to_psnr(
            b, c, t, p, speed=speed)) for speed in speeds}
        base = rows[str(speeds[0])]["bytes"]
        out[f"{target:g}"] = {"tiles": len(tiles), **rows}
        say(f"AVIF 4:4:4 speed at {target:g} dB over {len(tiles)} tiles: " + "  ".join(
            f"speed {k}: {r['bytes']} B ({r['bytes'] / base - 1:+.2%}), reached {r['reached']}, {r['ms_per_tile']:.0f} ms"
            for k, r in rows.items()))
    return out


def per_tile_tools(quick: bool, targets=(34.0, 36.0, 38.0, 40.0, 42.0, 46.0), per_source: int = 120) -> dict:
    """On whole 256² tiles of TRAINING photos and aerial scenes (at most ``per_source`` per kind): each lossy
    tool searched to the target alone; its bytes, the tiles it wins, its CPU ms per tile; and AVIF 4:4:4 on
    top of JPEG 2000: the share of JPEG 2000's bytes it saves, and how much of that the tiles JPEG 2000 codes
    over codec.toolchoice.AVIF_DENSE_BPS bits per sample hold (what tools_to_try and avif_worth_trying rest on)."""
    tools = {"avif444": lambda b, c, t, p: avif444.encode_to_psnr(b, c, t, p),
             "j2k": lambda b, c, t, p: j2k.encode_to_psnr(b, c, t, p),
             "jxl_lossy": lambda b, c, t, p: jxl_lossy.encode_to_psnr(b, c, t, p, None, 10 ** ((36 - t) / 10))}
    tiles = per_tile_blocks(quick, per_source)
    dense = toolchoice.AVIF_DENSE_BPS
    out = {}
    for target in targets:
        row = {n: {"bytes": 0, "wins": 0, "unreached": 0, "ms_per_tile": 0.0} for n in tools}
        pairs = []  # (source, j2k bytes, avif bytes) where both reach the target
        for source, block in tiles:
            ctx, psnr_of = TileContext(TILE, TILE, 3, "uint8"), toolchoice.photo_psnr(block)
            sizes = {}
            for name, search in tools.items():
                t0 = time.process_time()
                trial = search(block, ctx, target, psnr_of)
                row[name]["ms_per_tile"] += (time.process_time() - t0) * 1000 / len(tiles)
                sizes[name] = len(trial.payload) if trial is not None else None
                row[name]["unreached"] += trial is None
            reached = {n: v for n, v in sizes.items() if v is not None}
            if reached:
                row[min(reached, key=reached.get)]["wins"] += 1
            for name, v in reached.items():
                row[name]["bytes"] += v
            if sizes["j2k"] is not None and sizes["avif444"] is not None:
                pairs.append((source, sizes["j2k"], sizes["avif444"]))
        avif = {}
        for source in ["all"] + sorted({s for s, _, _ in pairs}):
            sel = [(j, a) for s, j, a in pairs if source in ("all", s)]
            j2k_bytes = max(sum(j for j, _ in sel), 1)
            is_dense = [toolchoice.is_dense(j, TILE * TILE * 3) for j, _ in sel]
            avif[source] = {"tiles": len(sel), "saving": sum(max(j - a, 0) for j, a in sel) / j2k_bytes,
                            "dense_share": float(np.mean(is_dense)) if sel else 0.0,
                            "dense_saving": sum(max(j - a, 0) for (j, a), d in zip(sel, is_dense) if d) / j2k_bytes}
        out[f"{target:g}"] = {"tiles": len(tiles), **row, "avif_over_j2k": avif}
        say(f"per-tile tools {target:g} dB over {len(tiles)} tiles: " + "  ".join(
            f"{n} {r['bytes']} B, wins {r['wins']}, unreached {r['unreached']}, {r['ms_per_tile']:.0f} ms"
            for n, r in row.items()))
        say(f"  AVIF on top of JPEG 2000 at {target:g} dB: " + "  ".join(
            f"{k} ({v['tiles']} tiles) saves {v['saving']:.1%}, the {v['dense_share']:.0%} over {dense:g} bits/sample "
            f"{v['dense_saving']:.1%}" for k, v in avif.items()))
    return out


def store(path: Path, update: Callable[[dict], None]) -> None:
    """``update`` applied to the results file as it is now: runs of other modes or sets, side by side, keep
    each other's rows (the file is re-read before each write)."""
    result = json.loads(path.read_text()) if path.exists() else {}
    update(result)
    path.write_text(json.dumps(result, indent=1) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calibrate", action="store_true")
    ap.add_argument("--per-tile", action="store_true", help="each lossy tool alone on training tiles")
    ap.add_argument("--j2k-tolerance", action="store_true", help="JPEG 2000's search tolerance on training tiles")
    ap.add_argument("--avif-speed", action="store_true", help="AVIF 4:4:4 at slower libavif speeds on training tiles")
    ap.add_argument("--quick", action="store_true", help="3 images per set")
    ap.add_argument("--targets", type=float, nargs="+", default=list(TARGETS))
    ap.add_argument("--sets", nargs="+", default=["kodak", "aerial", "satellite"])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    a = ap.parse_args()
    if not DATA.exists():
        print(f"skipping: no {DATA}")
        return
    a.out.mkdir(parents=True, exist_ok=True)
    path = a.out / "tile_tools.json"
    LOG.append(a.out / "tile_tools.log")
    with open(LOG[0], "a") as log:  # one block per run
        log.write(f"# {time.strftime('%Y-%m-%d %H:%M')} {' '.join(sys.argv[1:])}\n")
    if a.avif_speed:
        store(path, lambda r: r.update(avif_speed=avif_speed(a.quick)))
    elif a.j2k_tolerance:
        store(path, lambda r: r.update(j2k_tolerance=j2k_tolerance(a.quick)))
    elif a.per_tile:
        store(path, lambda r: r.update(per_tile_tools=per_tile_tools(a.quick)))
    elif a.calibrate:
        store(path, lambda r: r.update(calibration=calibrate(a.quick)))
    else:
        from PIL import Image

        def saver(name: str) -> Callable[[dict], None]:
            def save(rows: dict) -> None:  # this set's targets, dated; other sets' and targets' rows are kept
                def put(result: dict) -> None:
                    earlier = result.get("evaluation", {})
                    sets = earlier.get("sets", {}) if earlier.get("quick") == a.quick else {}
                    dated = {t: {**r, "date": time.strftime("%Y-%m-%d %H:%M")} for t, r in rows.items()}
                    sets[name] = {**sets.get(name, {}), **dated}
                    result["evaluation"] = {"quick": a.quick, "sets": sets}
                store(path, put)
            return save

        for name, files in photo_sets(a.quick).items():
            if name in a.sets:
                images = [(p.name, np.asarray(Image.open(p).convert("RGB")), None) for p in files]
                evaluate_set(name, images, a.targets, PHOTO_CODECS, saver(name))
        sat = satellite_files(a.quick) if "satellite" in a.sets else []
        if sat:
            images = [(p.name, *load_raster(p)) for p in sat]
            evaluate_set("satellite", images, a.targets, RASTER_CODECS, saver("satellite"))
        elif "satellite" in a.sets:
            say("satellite: no rasters under ../shared/data/satellite/train, skipped")


if __name__ == "__main__":
    main()
