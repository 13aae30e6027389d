"""Report on what the archive did: a table in the terminal, and an HTML report with plots.

    python jobs/report.py --stats s3://archive/stats/ [--since 2026-11-01] [--group-by prefix|day|model|run|product] \\
        [--html report.html] [--image s3://raw/scene.tif]

Queries the committed stats with DuckDB (through the same S3 settings as the jobs:
AWS_ENDPOINT_URL and keys, path-style addressing). The table: images, bytes in/out,
ratio, mean/median/p90 bpp, mean and 10th-percentile PSNR, share of tiles that missed
the target, MP/s per replica; then errors by cause and the runs. --html writes a
self-contained page (no network) with the bpp and PSNR distributions, the ratio over
time, bytes saved per prefix and one image's per-tile bit allocation.
Exit codes: 0 ok, 2 invalid options, 4 storage unreachable or access denied.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pydantic import ValidationError  # noqa: E402

from pipeline.config import ReportJobConfig, describe_errors  # noqa: E402
from pipeline.storage import StorageAccessError  # noqa: E402


def parse_args(argv=None) -> ReportJobConfig:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path)
    ap.add_argument("--stats")
    ap.add_argument("--since", help="YYYY-MM-DD")
    ap.add_argument("--group-by", dest="group_by", choices=["prefix", "day", "model", "run", "product"])
    ap.add_argument("--html")
    ap.add_argument("--image")
    ap.add_argument("--model-registry", dest="model_registry", help="URL of the model registry (non-built-in models)")
    ap.add_argument("--endpoint-url")
    a = vars(ap.parse_args(argv))
    return ReportJobConfig.from_cli(a, a.pop("config"), a.pop("endpoint_url"))


def main(argv=None) -> int:
    try:
        cfg = parse_args(argv)
    except ValidationError as exc:
        print("report: invalid options:\n" + describe_errors(exc), file=sys.stderr)
        return 2
    from pipeline.archive import Archive, archive_url
    from pipeline.report import build_report, connect
    from pipeline.storage import check_readable, filesystem

    try:
        check_readable(archive_url(cfg.stats), cfg.storage)
        con = connect(cfg.stats, cfg.storage, cfg.since)
        report = build_report(con, cfg.group_by)
        print(report.text())
        if cfg.html:
            from pipeline.model_store import model_resolver
            from pipeline.report_html import render_html

            archive = Archive(archive_url(cfg.stats), cfg.storage)
            key = cfg.image or next(iter(con.execute(
                "select key from stats where status = 'ok' order by tiles desc, key limit 1").fetchone() or []), None)
            record = archive.find_record(key) if key else None
            if cfg.image and record is None:
                print(f"report: {cfg.image}: no committed record; the bit-allocation plot is left out", file=sys.stderr)
            page = render_html(report, con, archive_url(cfg.stats), (key, record) if record else None,
                               model_resolver(cfg.model_registry, cfg.storage))
            fs, path = filesystem(cfg.html, cfg.storage)
            fs.pipe_file(path, page.encode())
            print(f"\nHTML report: {cfg.html}")
    except StorageAccessError as exc:
        print(f"report: {exc}", file=sys.stderr)
        return 4
    return 0


if __name__ == "__main__":
    sys.exit(main())
