"""The Ray Data archival jobs around the codec: compress a bucket into an archive, restore, report, retrain.

    compress.py     the archival job's driver (jobs/compress_bucket.py): listing, commit loop, JobSummary
    restore.py      the restore job's driver (jobs/restore.py): selection, output names, RestoreSummary
    driver.py       what both drivers share: Ray start-up, replica plan, actor pools, streamed results
    stages/         what runs on Ray workers: fetch, image decode, encode (CodecReplica), restore
    archive.py      the archive's layout (every path in it), writer lease and commit protocol
    schema.py       every Parquet schema, and the builders of their rows
    storage.py      fsspec/s3fs filesystems, streamed listings, create-only and atomic writes
    config.py       the jobs' options (pydantic)
    report.py       DuckDB over the committed stats (jobs/report.py), text tables
    report_html.py  the self-contained HTML report
    format.py       how sizes and table cells print
    retrain.py      domain retraining with Ray Train (jobs/train_codec.py)
    model_store.py  the versioned model registry on object storage
"""
