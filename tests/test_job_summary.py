"""The compress job's summary and start line say what a --lossless run did (issue 26 item 6)."""

from __future__ import annotations

import math

from pipeline.compress import JobSummary


def ok(psnr):
    return {"status": "ok", "original_bytes": 100, "compressed_bytes": 50, "width": 10, "height": 10, "psnr": psnr}


def test_a_lossless_run_says_every_record_is_exact_not_nan():
    s = JobSummary("r")
    for _ in range(3):
        s.add(ok(math.inf))
    assert s.exact == 3 and "every record exact: 3 exact (lossless)" in s.table() and "nan" not in s.table()


def test_a_mixed_run_averages_the_lossy_records_and_counts_the_exact_ones():
    s = JobSummary("r")
    for p in (40.0, 42.0, math.inf):
        s.add(ok(p))
    assert "mean PSNR 41.00 dB (2 records; 1 exact (lossless))" in s.table()
    s = JobSummary("r")
    s.add(ok(None))
    assert "PSNR not measured" in s.table()


def test_the_lossless_job_does_not_announce_a_psnr_target(capsys, monkeypatch):
    import jobs.compress_bucket as job
    import pipeline.compress

    def stop(cfg):
        raise SystemExit(0)

    monkeypatch.setattr(pipeline.compress, "run_job", stop)
    try:
        job.main(["--input", "s3://a/", "--output", "s3://b/", "--lossless"])
    except SystemExit:
        pass
    out = capsys.readouterr().out
    assert "lossless (every tile exact)" in out and "target_psnr" not in out
