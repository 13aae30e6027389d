"""Range-coding throughput on real latents, and how many CPU cores a GPU replica needs for it.

    python bench/entropy_throughput.py [--model default] [--target-psnr 38] [--max-workers N] [--repeat 3]

Latents: the Kodak and aerial 3072×2048 mosaics of ``bench/speed.py``, quantised at the levels
target-PSNR encoding gives each tile (the operating point of an archival run). For each mosaic:

    in process (1 core)   codec.rangecoder.encode_each / decode_each, batch by batch as codec.api does
    pool, 1..N workers    codec.parallel.EntropyPool (what ``entropy_workers`` starts): per batch of
                          8 tiles (as codec.api calls it) and all tiles in one call (the most a pool
                          can overlap)

Each is reported as M symbols/s (hyper-latent z and latent y together) and the MP/s of image
it corresponds to. From the 1-core rate and the symbols per pixel of the model at that target,
it derives the cores a GPU replica needs just for entropy coding at 200 and 400 MP/s. Timings
on a shared machine are noisy: the load average is printed with them.

Writes ``entropy_throughput.json`` and ``entropy_throughput.log`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import codec  # noqa: E402
from codec import rangecoder  # noqa: E402
from codec.format import tiles  # noqa: E402
from codec.parallel import EntropyPool  # noqa: E402
from speed import commit, mosaics  # noqa: E402

GOALS_MP_S = (200.0, 400.0)


def latents_of(img: np.ndarray, model, target_psnr: float, batch_size: int = 8) -> list[dict]:
    """Per batch: the arrays the coder gets (z, its table index, y symbols, their scale index)."""
    loaded, engine = codec.get_coder(model)
    r = codec.encode(img, model, target_psnr=target_psnr)
    codes = np.array([t.quality_code for t in r.header.tiles])
    boxes = r.header.boxes()
    net = loaded.model
    out = []
    for batch in engine.batches(codec.images.prep.prepare(img, "mosaic"), boxes, batch_size):
        lat = engine.quantize(batch.y, codes[batch.ids])
        z = lat.z_hat.numpy()
        out.append({"z": z, "z_index": [net.hyper._index(z.shape[2:])] * len(z),
                    "y": lat.symbols.numpy(), "y_index": lat.index.numpy()})
    return out


def code_all(coder, batches: list[dict], tables: tuple, one_call: bool) -> tuple[float, float, list]:
    """(encode seconds, decode seconds, streams) of every batch, batch by batch or all tiles in one call."""
    zt, yt = tables
    if one_call:
        batches = [{k: [a for b in batches for a in b[k]] for k in batches[0]}]
    t = time.perf_counter()
    streams = [(coder.encode_each(b["z"], b["z_index"], zt), coder.encode_each(b["y"], b["y_index"], yt))
               for b in batches]
    enc = time.perf_counter() - t
    t = time.perf_counter()
    for b, (zs, ys) in zip(batches, streams):
        coder.decode_each(zs, b["z_index"], zt)
        coder.decode_each(ys, b["y_index"], yt)
    return enc, time.perf_counter() - t, streams


def best_of(repeat: int, fn):
    runs = [fn() for _ in range(repeat)]
    return min(r[0] for r in runs), min(r[1] for r in runs), runs[0][2]


def rates(symbols: int, pixels: int, enc_s: float, dec_s: float) -> dict:
    return {"encode_s": round(enc_s, 4), "decode_s": round(dec_s, 4),
            "encode_msym_s": round(symbols / enc_s / 1e6, 2), "decode_msym_s": round(symbols / dec_s / 1e6, 2),
            "encode_mp_s": round(pixels / enc_s / 1e6, 2), "decode_mp_s": round(pixels / dec_s / 1e6, 2)}


def bench_mosaic(img: np.ndarray, model, target: float, max_workers: int, repeat: int) -> dict:
    net = codec.get_coder(model)[0].model
    tables = (net.hyper.tables, net.gaussian.tables)
    batches = latents_of(img, model, target)
    pixels = img.shape[0] * img.shape[1]
    z_sym = sum(b["z"].size for b in batches)
    y_sym = sum(b["y"].size for b in batches)
    symbols = z_sym + y_sym
    out = {"pixels": pixels, "tiles": sum(len(b["y"]) for b in batches), "z_symbols": z_sym, "y_symbols": y_sym,
           "symbols_per_pixel": round(symbols / pixels, 4)}
    enc, dec, streams = best_of(repeat, lambda: code_all(rangecoder, batches, tables, one_call=False))
    out["bytes"] = sum(len(s) for zs, ys in streams for s in zs + ys)
    out["in_process"] = rates(symbols, pixels, enc, dec)
    print(f"  {symbols / 1e6:.2f} M symbols ({symbols / pixels:.3f}/pixel, y {y_sym / symbols:.1%}), "
          f"{out['bytes'] / 1e6:.2f} MB of streams", flush=True)
    print(f"  {'in process (1 core)':26s} {_fmt(out['in_process'])}", flush=True)
    out["pool"] = {}
    for w in range(1, max_workers + 1):
        pool = EntropyPool(list(tables), w)
        try:
            code_all(pool, batches[:2], tables, one_call=False)  # start the workers, ship the tables
            for one_call in (False, True):
                e, d, s = best_of(repeat, lambda: code_all(pool, batches, tables, one_call))
                if _flat(s) != _flat(streams):
                    raise AssertionError(f"the pool ({label}) wrote other bytes than the in-process coder")
                label = f"{w} workers, " + ("one call" if one_call else "per batch")
                out["pool"][label] = rates(symbols, pixels, e, d)
                print(f"  {'pool ' + label:26s} {_fmt(out['pool'][label])}", flush=True)
        finally:
            pool.close()
    return out


def _flat(streams: list) -> tuple[list[bytes], list[bytes]]:
    """(every z stream, every y stream) in tile order, however the batches were cut."""
    return [x for zs, _ in streams for x in zs], [x for _, ys in streams for x in ys]


def _fmt(r: dict) -> str:
    return (f"encode {r['encode_msym_s']:6.1f} Msym/s = {r['encode_mp_s']:6.1f} MP/s   "
            f"decode {r['decode_msym_s']:6.1f} Msym/s = {r['decode_mp_s']:6.1f} MP/s")


def cores_needed(results: dict) -> dict:
    """Cores a replica needs for entropy coding at each goal, from the slower mosaic's 1-core rates."""
    enc = min(r["in_process"]["encode_mp_s"] for r in results.values())
    dec = min(r["in_process"]["decode_mp_s"] for r in results.values())
    return {f"{g:g}_mp_s": {"encode_cores": math.ceil(g / enc * 10) / 10, "decode_cores": math.ceil(g / dec * 10) / 10}
            for g in GOALS_MP_S}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--target-psnr", type=float, default=38.0)
    ap.add_argument("--max-workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeat", type=int, default=3, help="runs per measurement; the fastest counts")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    a = ap.parse_args()
    torch.set_num_threads(1)
    model = codec.load_model(a.model)
    images = mosaics()
    if not images:
        print("no benchmark images found: nothing measured")
        return
    run = {"commit": commit(), "model": model.model_id, "target_psnr": a.target_psnr, "cpu_count": os.cpu_count(),
           "load_avg_start": os.getloadavg(), "time": time.strftime("%Y-%m-%d %H:%M:%S"), "images": {}}
    for name, img in images.items():
        print(f"{name} mosaic {img.shape[1]}×{img.shape[0]}, {model.model_id} at {a.target_psnr:g} dB "
              f"(load average {os.getloadavg()[0]:.2f})", flush=True)
        run["images"][name] = bench_mosaic(img, model, a.target_psnr, a.max_workers, a.repeat)
    run["load_avg_end"] = os.getloadavg()
    run["cores_needed"] = cores_needed(run["images"])
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "entropy_throughput.json").write_text(json.dumps(run, indent=1))
    text = summary(run)
    (a.out / "entropy_throughput.log").write_text(text)
    print(text)


def summary(run: dict) -> str:
    spp = max(r["symbols_per_pixel"] for r in run["images"].values())
    lines = [f"commit {run['commit']}, {run['model']} at target {run['target_psnr']:g} dB, {run['cpu_count']} CPUs, "
             f"load average {run['load_avg_start'][0]:.2f} → {run['load_avg_end'][0]:.2f}, {run['time']}"]
    for name, r in run["images"].items():
        lines.append(f"  {name}: {r['symbols_per_pixel']:.3f} symbols/pixel; 1 core: {_fmt(r['in_process'])}")
        for label, p in r["pool"].items():
            lines.append(f"    pool {label:22s} {_fmt(p)}")
    lines.append(f"cores one GPU replica needs for entropy coding alone (assumes {spp:.3f} symbols/pixel: "
                 f"M=192 y at 1/16 and the hyper-latent at 1/64 of each side, and the 1-core rate scaling linearly):")
    for goal, c in run["cores_needed"].items():
        lines.append(f"  at {goal.replace('_mp_s', '')} MP/s: encode {c['encode_cores']} cores, decode {c['decode_cores']} cores")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
