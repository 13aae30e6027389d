"""Job options: what a flag overrides and what it leaves alone."""

from pipeline.config import CompressJobConfig


def test_endpoint_flag_keeps_the_rest_of_the_files_storage_block(tmp_path, monkeypatch):
    for var in ("AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var, raising=False)
    f = tmp_path / "job.yaml"
    f.write_text("input: s3://in/\noutput: s3://out/\nstorage:\n  region: eu-west-3\n  anonymous: true\n"
                 "  endpoint_url: http://old:9000\n")
    cfg = CompressJobConfig.from_cli({"quality": 0.5}, f, "http://127.0.0.1:8333")
    assert cfg.storage.endpoint_url == "http://127.0.0.1:8333"
    assert cfg.storage.region == "eu-west-3" and cfg.storage.anonymous is True
    assert cfg.quality == 0.5 and cfg.target_psnr is None


def test_flags_override_the_file(tmp_path):
    f = tmp_path / "job.json"
    f.write_text('{"input": "s3://in/", "output": "s3://out/", "batch_size": 2, "run_id": "from-file"}')
    cfg = CompressJobConfig.from_cli({"batch_size": 8, "run_id": None}, f)
    assert cfg.batch_size == 8 and cfg.run_id == "from-file"
