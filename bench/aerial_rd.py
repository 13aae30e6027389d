"""Domain retraining benchmark: train an aerial codec with the real job, then measure what it buys.

    python bench/aerial_rd.py [--steps 600] [--batch-size 8] [--crop 256] [--workers 1] [--kodak 24]

Uploads ../shared/data/aerial/train to a local SeaweedFS bucket (as a user's bucket
would be), runs the Ray Train job (pipeline.retrain.run_training) fine-tuning `default`,
registers the result there, then compares it with the generic default on real streams:
on the held-out aerial split the job chose (files kept apart by name hash) and on Kodak
(what the specialisation costs elsewhere). Prints BD-rates and file-size savings at equal
PSNR; writes bench/results/aerial_rd.{json,png}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402

AERIAL = ROOT.parent / "shared" / "data" / "aerial" / "train"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--kodak", type=int, default=24, help="Kodak images to evaluate on (0: skip)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--export", type=Path, help="copy the registered model (weights + card) into this registry folder")
    a = ap.parse_args(argv)
    if not AERIAL.exists():
        print(f"skipped: {AERIAL} not found (the aerial set lives in ../shared/data)")
        return 0

    import ray

    import codec
    from codec.training.evaluate import compare
    from pipeline.config import TrainJobConfig
    from devtools.localstack import LocalS3
    from pipeline.model_store import ModelStore, model_resolver
    from pipeline.retrain import read_rgb, run_training
    from rd import KODAK, load_folder

    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp, LocalS3(Path(tmp) / "s3", buckets=["imagery", "models"]) as s3:
        os.environ.update(s3.env)
        fs = s3.filesystem()
        files = sorted(AERIAL.rglob("*.png"))
        for p in files:
            fs.pipe(f"imagery/aerial/train/{p.parent.name}/{p.name}", p.read_bytes())
        print(f"uploaded {len(files)} aerial images to s3://imagery/aerial/train/")
        cpus = os.cpu_count() or 2
        ray.init(num_cpus=cpus + 1, include_dashboard=False, log_to_driver=False)  # one spare slot for the crop loader
        cfg = TrainJobConfig(data="s3://imagery/aerial/train/", name="aerial", base="default", registry="s3://models/",
                             storage_path="s3://models/_runs/", num_workers=a.workers, cpus_per_worker=max(1, cpus // a.workers),
                             steps=a.steps, batch_size=a.batch_size, crop=a.crop, lr=a.lr, checkpoint_every=50,
                             holdout_fraction=0.2)
        outcome = run_training(cfg)
        print(outcome.table)
        store = ModelStore(cfg.registry)
        card = store.card(outcome.model_id)
        if a.export:  # keep the model: the bucket above is temporary
            name, version = store.resolve(outcome.model_id)
            dest = a.export / name / f"v{version:04d}"
            dest.mkdir(parents=True, exist_ok=True)
            for f in ("weights.pt", "card.json"):
                (dest / f).write_bytes(fs.cat_file(f"models/{name}/v{version:04d}/{f}"))
            print(f"exported {outcome.model_id} to {dest}")
        models = {"default": codec.load_model("default"),
                  "aerial": model_resolver(cfg.registry, cfg.storage).load(outcome.model_id)}
        holdout = {k.split("/train/")[-1]: read_rgb(k, cfg.storage) for k in card["data"]["holdout_keys"]}
        result = {"model_id": outcome.model_id, "steps": outcome.steps, "train_minutes": outcome.seconds / 60,
                  "train_images": outcome.train_images, "config": card["training"], "holdout": sorted(holdout)}
        sets = {"aerial held-out": holdout}
        kodak = load_folder(KODAK)[: a.kodak] if a.kodak and KODAK.exists() else []
        if kodak:
            sets["kodak"] = dict(kodak)
        curves = {}
        for label, images in sets.items():
            cmp = compare(models, images, reference="default")
            bd = cmp["bd_rate"]["aerial"]
            per = {k: v["aerial"] for k, v in cmp["bd_rate_per_image"].items()}
            result[label] = {"bd_rate_pct": bd, "per_image_bd_rate_pct": per,
                             "mean": {m: vars(c) for m, c in cmp["mean"].items()}}
            curves[label] = cmp["mean"]
            finite = [v for v in per.values() if v is not None]
            print(f"{label}: aerial vs default BD-rate {bd:+.1f}% over {len(images)} images "
                  f"(per image: median {np.median(finite):+.1f}%, best {min(finite):+.1f}%, worst {max(finite):+.1f}%)")
    result["seconds"] = time.time() - t0
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "aerial_rd.json").write_text(json.dumps(result, indent=1, default=float))
    plot(curves, a.out / "aerial_rd.png")
    print(f"wrote {a.out / 'aerial_rd.json'} and {a.out / 'aerial_rd.png'}")
    return 0


def plot(curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(6 * len(curves), 4.5), squeeze=False)
    for ax, (label, models) in zip(axes[0], curves.items()):
        for name, c in models.items():
            ax.plot(c.bpp, c.psnr, marker="o", label=name)
        ax.set_title(label)
        ax.set_xlabel("bits per pixel")
        ax.set_ylabel("PSNR (dB)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
