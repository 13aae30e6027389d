"""The embedded default: a local S3 server, sample imagery, the archival job, a look at the result.

    python jobs/demo.py [--images 24] [--target-psnr 38] [--dir .demo]

Starts SeaweedFS on 127.0.0.1 (free port, fresh access keys), uploads sample
images to s3://raw/samples/ (aerial scenes from ../shared/data/aerial when present,
else scikit-image's samples), runs jobs/compress_bucket.py's job on local Ray,
then queries the stats with DuckDB, writes the HTML report (.demo/report.html) and restores
one image and one region of it from its record.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402

AERIAL = ROOT.parent / "shared" / "data" / "aerial" / "train"
SEED_MODELS = ROOT / "models"  # a model registry in the object-storage layout (the aerial model lives here)


def sample_images(n: int) -> dict[str, bytes]:
    if AERIAL.exists():
        files = sorted(AERIAL.rglob("*.png"))
        step = max(1, len(files) // n)
        return {f"{p.parent.name}/{p.name}": p.read_bytes() for p in files[::step][:n]}
    from skimage import data

    out = {}
    for name in ["astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "camera", "hubble_deep_field"][:n]:
        buf = io.BytesIO()
        Image.fromarray(getattr(data, name)()).save(buf, format="PNG")
        out[f"skimage/{name}.png"] = buf.getvalue()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--target-psnr", type=float, default=38.0)
    ap.add_argument("--dir", type=Path, default=ROOT / ".demo", help="where the local S3 server keeps its data")
    ap.add_argument("--model", default="auto", help="auto: the aerial model for aerial samples, else default")
    a = ap.parse_args(argv)

    from pipeline.archive import Archive
    from pipeline.config import CompressJobConfig
    from pipeline.localstack import LocalS3
    from pipeline.run import run_job


    with LocalS3(a.dir / "s3", buckets=["raw", "archive", "models"]) as s3:
        os.environ.update(s3.env)
        print(f"local S3 (SeaweedFS) at {s3.endpoint_url}, data in {a.dir / 's3'}")
        fs = s3.filesystem()
        images = sample_images(a.images)
        for name, data in images.items():
            fs.pipe(f"raw/samples/{name}", data)
        print(f"uploaded {len(images)} images ({sum(map(len, images.values())) / 1e6:.1f} MB) to s3://raw/samples/")

        registry = None
        if SEED_MODELS.exists():  # the model registry a user's bucket would hold
            for f in SEED_MODELS.rglob("*"):
                if f.is_file() and f.suffix in (".pt", ".json"):
                    fs.pipe(f"models/{f.relative_to(SEED_MODELS).as_posix()}", f.read_bytes())
            registry = "s3://models/"
            print(f"model registry: s3://models/ ({', '.join(sorted(p.name for p in SEED_MODELS.iterdir() if p.is_dir()))})")
        model = a.model
        if model == "auto":
            model = "aerial" if registry and AERIAL.exists() and (SEED_MODELS / "aerial").exists() else "default"
        cfg = CompressJobConfig(input="s3://raw/samples/", output="s3://archive/demo/", target_psnr=a.target_psnr,
                                model=model, model_registry=registry)
        print(f"archiving s3://raw/samples/ → s3://archive/demo/ at {a.target_psnr} dB per tile with model {model} ...",
              flush=True)
        summary = run_job(cfg)
        print(summary.table())
        print("records: s3://archive/demo/records/   stats: s3://archive/demo/stats/   manifests: s3://archive/demo/_manifests/")

        import duckdb

        con = duckdb.connect()
        con.register_filesystem(fs)
        print("\nDuckDB: per folder")
        print(con.sql("""
            select split_part(key, '/', 5) as folder, count(*) as images, round(avg(bpp), 3) as mean_bpp,
                   round(avg(psnr), 2) as mean_psnr, round(sum(original_bytes) / sum(compressed_bytes), 1) as ratio
            from read_parquet('s3://archive/demo/stats/*/*.parquet') where status = 'ok' group by 1 order by 1
        """))

        from jobs import report as report_job
        from pipeline.restore import restore_one

        print()
        report_job.main(["--stats", "s3://archive/demo/stats/", "--html", str(a.dir / "report.html")])
        rec = Archive("s3://archive/demo/").committed_table("records", ["key", "width", "height"]).slice(0, 1).to_pylist()
        if rec:
            key, w, h = rec[0]["key"], rec[0]["width"], rec[0]["height"]
            whole = restore_one("s3://archive/demo/", key, str(a.dir / "restored.png"), model_registry=registry)
            region = (w // 4, h // 4, w // 2, h // 2)
            crop = restore_one("s3://archive/demo/", key, str(a.dir / "restored-region.png"), region=region,
                               model_registry=registry)
            print(f"\nrestored {key} → {whole['output']} ({whole['width']}×{whole['height']}, {whole['seconds']:.2f} s)")
            print(f"restored region {region} → {crop['output']} ({crop['seconds']:.2f} s, only the tiles that cover it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
