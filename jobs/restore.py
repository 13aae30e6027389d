"""Restore images from the archive: many keys as a Ray job, or one key for a person.

    ray job submit --working-dir . -- python jobs/restore.py --archive s3://archive/ --output s3://restored/ \\
        [--keys K1 K2 ... | --prefix s3://raw/2026-11/] [--region x,y,w,h] [--format auto|png|tiff] [--plain-tiff]
    python jobs/restore.py --archive s3://archive/ --key s3://raw/2026-11/scene.tif --output scene.tif [--region ...]
    python jobs/restore.py --record 's3://archive/records/run=R/part-000003.parquet#key=...' --output scene.tif

Keys are the source keys as the compress job recorded them (see the stats' `key`).
The Ray job writes OUTPUT/<key path>.png|.tif and a log of every key (ok or error) to
OUTPUT/_restore_log/ID.parquet. --key fetches one record without scanning the archive
and needs no Ray; --record HREF (a STAC item's record asset, pipeline/record_ref.py)
restores exactly that record, the archive being the href's. Georeferenced records come back as GeoTIFF unless --format says otherwise.
Exit codes: 0 all restored, 2 invalid options, 3 some keys failed (checksum, missing
record, ...), 4 storage unreachable or access denied.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pydantic import ValidationError  # noqa: E402

from pipeline.config import RestoreJobConfig, describe_errors  # noqa: E402
from pipeline.storage import StorageAccessError  # noqa: E402


def parse_args(argv=None) -> tuple[RestoreJobConfig, str | None, str | None]:
    """The job's options and, for the one-image paths, the key or the record href."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, help="YAML or JSON file with the same option names")
    ap.add_argument("--archive")
    ap.add_argument("--output")
    ap.add_argument("--key", help="restore this one key to --output (a file path or URL)")
    ap.add_argument("--record", help="restore exactly this record (a STAC item's record asset href) to --output")
    ap.add_argument("--keys", nargs="+")
    ap.add_argument("--prefix")
    ap.add_argument("--region", help="x,y,w,h")
    ap.add_argument("--format", choices=["auto", "png", "tiff"])
    ap.add_argument("--plain-tiff", dest="plain_tiff", action="store_true", default=None,
                    help="TIFF outputs: a plain tiled GeoTIFF instead of a Cloud Optimized GeoTIFF (the default)")
    ap.add_argument("--model-registry", dest="model_registry", help="URL of the model registry (non-built-in models)")
    ap.add_argument("--replicas", type=int)
    ap.add_argument("--gpus-per-replica", dest="gpus_per_replica", type=float)
    ap.add_argument("--batch-size", dest="batch_size", type=int)
    ap.add_argument("--restore-id", dest="restore_id")
    ap.add_argument("--endpoint-url", help="S3 endpoint (default $AWS_ENDPOINT_URL)")
    a = vars(ap.parse_args(argv))
    key, record = a.pop("key"), a.pop("record")
    if record and a["archive"] is None:  # the href names its archive
        from pipeline.record_ref import RecordRef

        try:
            a["archive"] = RecordRef.parse(record).archive
        except ValueError as exc:
            ap.error(str(exc))
    if (key or record) and a["format"] is None:  # one image: the output file's suffix says the format
        suffix = Path(a["output"] or "").suffix.lower()
        a["format"] = {".png": "png", ".tif": "tiff", ".tiff": "tiff"}.get(suffix, "auto")
    return RestoreJobConfig.from_cli(a, a.pop("config"), a.pop("endpoint_url")), key, record


def main(argv=None) -> int:
    try:
        cfg, key, record = parse_args(argv)
    except ValidationError as exc:
        print("restore: invalid options:\n" + describe_errors(exc), file=sys.stderr)
        return 2
    from pipeline.restore import restore_one, restore_ref, run_restore
    from pipeline.storage import check_readable

    try:
        check_readable(cfg.archive, cfg.storage)
        if key or record:
            kw = dict(region=cfg.region, fmt=cfg.format, storage=cfg.storage, model_registry=cfg.model_registry,
                      cog=not cfg.plain_tiff)
            row = restore_ref(record, cfg.output, **kw) if record else restore_one(cfg.archive, key, cfg.output, **kw)
            if row["status"] != "ok":
                print(f"restore: {row['error']}", file=sys.stderr)
                return 3
            print(f"{record or key} → {cfg.output} ({row['width']}×{row['height']}, model {row['model_id']}, {row['seconds']:.2f} s)")
            return 0
        summary = run_restore(cfg)
    except StorageAccessError as exc:
        print(f"restore: {exc}", file=sys.stderr)
        return 4
    print(summary.table())
    return 3 if summary.errors else 0


if __name__ == "__main__":
    sys.exit(main())
