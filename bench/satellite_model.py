"""Export the satellite model: a training checkpoint → finalised → evaluated → models/satellite/vNNNN.

    python -m codec.train --dataset satellite --data ../shared/data/satellite/train --out runs/sat2 \\
        --init default@2 --shift-anchors 2 --crop 256 --batch-size 8 --steps 1000 --max-minutes 68 \\
        --checkpoint-every 50 --threads 1 --lr 2e-4 --lr-decay-at 0.8
    python bench/satellite_model.py runs/sat2/checkpoint.pt [--store models] [--base default@2]

Finalises the checkpoint's model on satellite training crops (never a held-out scene), measures it
against its base on real raster streams of the held-out files (bits per sample vs raster PSNR at six
qualities, BD-rate per file and mean, with codec.metrics) and registers it in the repo's seed registry
(``models/``, the object-store layout of :class:`pipeline.model_store.ModelStore`, like
``models/aerial/v0001``) with a card: base, config, training recipe and log, held-out keys, metrics.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--name", default="satellite")
    ap.add_argument("--store", default=str(ROOT / "models"))
    ap.add_argument("--base", default="default@2")
    ap.add_argument("--reuse", nargs="*", type=Path, default=[],
                    help="bench/satellite_rd.py results whose base-model and anchor curves are taken, not re-measured")
    ap.add_argument("--eval-out", type=Path, default=ROOT / "bench" / "results" / "satellite_model_eval.json",
                    help="the evaluation in satellite_rd's format (its --reuse takes it)")
    ap.add_argument("--limit", type=int, help="evaluate on the first N held-out files only (a smoke run)")
    ap.add_argument("--where", default="this 2-core CPU machine (shared), torch.set_num_threads(1)")
    a = ap.parse_args(argv)

    import torch

    import codec
    from codec.metrics import bd_rate
    from codec.registry import LoadedModel, model_from_weights, weights_bytes
    from codec.training import satellite as sat
    from codec.training.export import model_from_state
    from codec.training.train import init_config, load_checkpoint
    from pipeline.model_store import ModelStore
    from satellite_rd import BD_RANGE, SAT, run_file

    torch.set_num_threads(1)
    t0 = time.time()
    state = load_checkpoint(a.checkpoint)
    state["config"]["model"] = init_config(state["config"]).model_dump()  # see init_config
    model = model_from_state(state)
    model.finalize(sat.calibration_batch(SAT))
    blob = weights_bytes(model)
    store = ModelStore(a.store)
    provisional = f"{a.name}@{(store.versions(a.name) or [0])[-1] + 1}"
    new = LoadedModel(model_from_weights(blob), provisional, hashlib.sha256(blob).digest())
    models = {a.base: codec.load_model(a.base), provisional: new}
    train_files, held = sat.split(SAT)
    held = held[: a.limit] if a.limit else held
    reuse = []
    for p in a.reuse:
        r = json.loads(p.read_text())
        files_base = [{**f, "curves": {k: v for k, v in f["curves"].items() if k == a.base}} for f in r["files"]]
        reuse.append({"files": files_base, "_from": f"{p.name} (load average {r['loadavg'][0]:.1f})"})  # the base only
    files, per_image, finite = [], {}, []
    for p in held:
        f = run_file(p, models, False, reuse, anchors=False)  # the base's curves from --reuse when there
        files.append(f)
        pts = {k: {"bps": [pt["bps"] for pt in f["curves"][m]["points"]], "psnr": [pt["psnr"] for pt in f["curves"][m]["points"]]}
               for k, m in (("base", a.base), ("new", provisional))}
        bd = bd_rate(pts["base"]["bps"], pts["base"]["psnr"], pts["new"]["bps"], pts["new"]["psnr"], bpp_range=BD_RANGE)
        per_image[p.name] = {"bd_rate_pct": bd, **pts}
        if bd is not None:
            finite.append(bd)
        print(f"{p.name}: BD-rate vs {a.base} {'n/a' if bd is None else f'{bd:+.1f}%'}; new "
              + "  ".join(f"{b:.3f}/{s:.1f}" for b, s in zip(pts["new"]["bps"], pts["new"]["psnr"])), flush=True)
        a.eval_out.parent.mkdir(parents=True, exist_ok=True)
        a.eval_out.write_text(json.dumps({"models": list(models), "files": files, "loadavg": os.getloadavg()}, default=float))
    a.eval_out.parent.mkdir(parents=True, exist_ok=True)
    a.eval_out.write_text(json.dumps({"models": list(models), "files": files, "loadavg": os.getloadavg(),
                                      "checkpoint": str(a.checkpoint), "steps": state["step"]}, indent=1, default=float))
    mean = float(np.mean(finite)) if finite else None
    cfg = state["config"]
    card = {
        "base": a.base,
        "config": model.config.model_dump(),
        "training": {**cfg, "steps_done": state["step"], "ran_on": a.where,
                     "recipe": "python -m codec.train --dataset satellite (see bench/satellite_model.py)",
                     "minutes": (state["log"][-1]["time"] - state["log"][0]["time"]) / 60 if state["log"] else None},
        "data": {"train": "../shared/data/satellite/train", "train_files": [p.name for p in train_files],
                 "holdout": "scenes with sha1(scene_id) % 4 == 0 (codec.training.satellite.held_out)",
                 "holdout_keys": [p.name for p in held], "evaluated_keys": [p.name for p in held],
                 "crops": "256^2 band triplets (codec.format.raster normalisation), <= 50% nodata; files under 256 px skipped"},
        "metrics": {"definition": "bits per sample vs raster PSNR (codec.metrics), qualities of bench/satellite_rd.py",
                    "bd_range_bps": list(BD_RANGE), "bd_rate_vs_base_pct": mean, "per_image": per_image},
        "train_log": state["log"],
    }
    model_id = store.register(a.name, blob, **card)
    if model_id != provisional:
        print(f"warning: registered as {model_id}, evaluated as {provisional} (a concurrent registration)")
    print(f"registered {model_id} in {a.store}: BD-rate vs {a.base} {mean if mean is None else f'{mean:+.1f}%'} "
          f"({time.time() - t0:.0f} s, load average {os.getloadavg()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
