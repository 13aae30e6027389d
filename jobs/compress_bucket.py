"""Archive a bucket of imagery: ``ray job submit --working-dir . -- python jobs/compress_bucket.py ...``

    python jobs/compress_bucket.py --input s3://raw/2026-11/ --output s3://archive/ --target-psnr 38
    python jobs/compress_bucket.py --config job.yaml [--run-id ...]

Locally it starts Ray in-process; under ``ray job submit`` it joins the cluster.
Endpoint and credentials come from the AWS_* variables (or ``storage:`` in the config file).
Exit codes: 0 ok, 2 invalid options (a run id that was used before included), 3 error
fraction above --max-error-fraction, 4 storage unreachable, access denied, full or read-only
(at start-up, or mid-run once a write failed for --write-retry-s; committed segments stay intact), 5 another run
holds the output (or took it over from this one): one run writes an output at a time.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pydantic import ValidationError  # noqa: E402

from codec.errors import ModelNotFoundError  # noqa: E402
from pipeline.config import CompressJobConfig, describe_errors  # noqa: E402
from pipeline.storage import StorageAccessError  # noqa: E402

FLAGS = {  # flag → config field; every field is settable from the command line
    "input": str, "output": str, "target_psnr": float, "quality": float, "target_bpp": float, "max_error": int, "model": str, "raster_model": str, "nodata": int, "model_registry": str,
    "tile_size": int, "replicas": int, "gpus_per_replica": float, "batch_size": int, "max_error_fraction": float,
    "max_pixels": int, "max_image_memory": int, "segment_rows": int, "segment_bytes": int, "run_id": str,
    "fetch_attempts": int, "max_replica_restarts": int, "cluster_retries": int, "lease_ttl_s": float, "write_retry_s": float,
    "wait_for_lease_s": float, "window_over_bytes": int, "scratch_dir": str,
}


def parse_args(argv=None) -> CompressJobConfig:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, help="YAML or JSON file with the same option names")
    for name, typ in FLAGS.items():
        flags = ["--" + name.replace("_", "-")] + (["--wait-for-lease"] if name == "wait_for_lease_s" else [])
        ap.add_argument(*flags, dest=name, type=typ)
    ap.add_argument("--verify", dest="verify", action=argparse.BooleanOptionalAction, default=None,
                    help="decode every record before commit (default on)")
    ap.add_argument("--retry-errors", dest="retry_errors", action="store_true", default=None)
    ap.add_argument("--lossless", dest="lossless", action="store_true", default=None,
                    help="code every tile losslessly (restores are bit-exact)")
    ap.add_argument("--endpoint-url", help="S3 endpoint (default $AWS_ENDPOINT_URL)")
    a = vars(ap.parse_args(argv))
    return CompressJobConfig.from_cli(a, a.pop("config"), a.pop("endpoint_url"))


def main(argv=None) -> int:
    try:
        cfg = parse_args(argv)
    except ValidationError as exc:
        print("compress_bucket: invalid options:\n" + describe_errors(exc), file=sys.stderr)
        return 2
    from pipeline.archive import RECORDS, STATS, ArchiveError, LeaseHeldError, LeaseLostError, folder_url
    from pipeline.compress import run_job

    mode, target = cfg.mode
    rate = "lossless (every tile exact)" if cfg.lossless else f"{mode} {target:g}"  # --lossless has no target
    print(f"archiving {cfg.input} → {cfg.output} ({rate}, model {cfg.model}, run {cfg.run_id})", flush=True)
    try:
        summary = run_job(cfg)
    except StorageAccessError as exc:
        print(f"compress_bucket: {exc}", file=sys.stderr)
        return 4
    except ModelNotFoundError as exc:
        print(f"compress_bucket: {exc}", file=sys.stderr)
        return 2
    except (LeaseHeldError, LeaseLostError) as exc:
        print(f"compress_bucket: {exc}", file=sys.stderr)
        return 5
    except ArchiveError as exc:
        print(f"compress_bucket: {exc}", file=sys.stderr)
        return 2
    print(summary.table())
    print(f"records: {folder_url(cfg.output, RECORDS)}   stats: {folder_url(cfg.output, STATS)}")
    if summary.error_fraction > cfg.max_error_fraction:
        print(f"compress_bucket: error fraction {summary.error_fraction:.1%} exceeds --max-error-fraction "
              f"{cfg.max_error_fraction:.1%}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
