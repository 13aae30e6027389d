"""Domain retraining with Ray Train: fine-tune the codec on your imagery and register the result.

    ray job submit --working-dir . -- python jobs/train_codec.py --data s3://imagery/aerial/train/ \\
        --base default --name aerial --registry s3://models/ --storage-path s3://models/_runs/ \\
        [--num-workers 2] [--use-gpu] [--steps 2000] [--holdout s3://imagery/aerial/val/] [--run-name NAME]

Workers train with DDP on crops streamed by Ray Data, checkpointing every
--checkpoint-every steps under STORAGE_PATH/RUN_NAME; a killed worker restarts the group
from the last checkpoint, and rerunning with the same --run-name resumes a stopped run.
At the end the model is finalised, compared with its base on held-out images (real
streams: BD-rate overall and per image) and registered as NAME@N in --registry, from
where `compress_bucket.py --model NAME --model-registry URL` and `restore.py` load it.
Exit codes: 0 ok, 2 invalid options, 4 storage unreachable or access denied.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pydantic import ValidationError  # noqa: E402

from pipeline.config import TrainJobConfig, describe_errors  # noqa: E402
from pipeline.storage import StorageAccessError  # noqa: E402

FLAGS = {"data": str, "holdout": str, "holdout_fraction": float, "name": str, "base": str, "registry": str,
         "storage_path": str, "run_name": str, "num_workers": int, "cpus_per_worker": float, "steps": int,
         "batch_size": int, "crop": int, "crops_per_image": int, "lr": float, "checkpoint_every": int,
         "max_failures": int, "eval_images": int}


def parse_args(argv=None) -> TrainJobConfig:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, help="YAML or JSON file with the same option names")
    for name, typ in FLAGS.items():
        ap.add_argument("--" + name.replace("_", "-"), dest=name, type=typ)
    ap.add_argument("--use-gpu", dest="use_gpu", action="store_true", default=None)
    ap.add_argument("--from-scratch", action="store_true", help="no base model")
    ap.add_argument("--endpoint-url")
    a = vars(ap.parse_args(argv))
    scratch = a.pop("from_scratch")
    cfg = TrainJobConfig.from_cli(a, a.pop("config"), a.pop("endpoint_url"))
    return cfg.model_copy(update={"base": None}) if scratch else cfg


def main(argv=None) -> int:
    try:
        cfg = parse_args(argv)
    except ValidationError as exc:
        print("train_codec: invalid options:\n" + describe_errors(exc), file=sys.stderr)
        return 2
    from codec.errors import ModelNotFoundError
    from pipeline.retrain import run_training
    from pipeline.storage import check_readable

    try:
        check_readable(cfg.data, cfg.storage)
        outcome = run_training(cfg)
    except StorageAccessError as exc:
        print(f"train_codec: {exc}", file=sys.stderr)
        return 4
    except (ModelNotFoundError, ValueError) as exc:
        print(f"train_codec: {exc}", file=sys.stderr)
        return 2
    print(outcome.table)
    resumed = f", resumed at steps {outcome.resumed_at}" if outcome.resumed_at else ""
    print(f"registered {outcome.model_id} in {cfg.registry} after {outcome.steps} steps{resumed} "
          f"({outcome.train_images} training images, {outcome.holdout_images} held out, {outcome.seconds / 60:.1f} min)")
    print(f"use it: python jobs/compress_bucket.py --model {outcome.model_id} --model-registry {cfg.registry} ...")
    return 0


if __name__ == "__main__":
    sys.exit(main())
