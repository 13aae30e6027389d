"""The embedded default: a local S3 server, sample imagery, the archival job, a look at the result.

    python jobs/demo.py [--images 24] [--target-psnr 38] [--dir .demo]

Starts SeaweedFS on 127.0.0.1 (free port, fresh access keys), uploads sample
images to s3://raw/samples/ (aerial scenes from ../shared/data/aerial when present,
else scikit-image's samples), runs jobs/compress_bucket.py's job on local Ray,
then queries the stats with DuckDB, writes the HTML report (.demo/report.html), restores
one image and one region of it from its record, and opens the archive's STAC catalogue
(s3://archive/demo/stac/collection.json) with pystac, printing its path last.
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

from pipeline.archive import MANIFESTS, RECORDS, STATS, Archive, folder_url  # noqa: E402

INPUT, OUTPUT = "s3://raw/samples/", "s3://archive/demo/"
AERIAL = ROOT.parent / "shared" / "data" / "aerial" / "train"
SATELLITE = ROOT.parent / "shared" / "data" / "satellite" / "train"
DEMO_SCENES = [  # small ones, one per sensor and band layout: WorldView 4-band MS, Sentinel-2 60 m (2 bands),
    "SpaceNet_solaris__ms1.tif", "S2dec_riotilerpds__T29RKH_60m.tif",  # Landsat 3-band, WorldView pan
    "L8dec_riotiler__mosaic_cog3.tif", "SpaceNet_solaris__pan1.tif", "S2dec_riotilerpds__T29RKH_20m.tif"]
SEED_MODELS = ROOT / "models"  # a model registry in the object-storage layout (the aerial model lives here)


def satellite_scenes(n: int) -> dict[str, bytes]:
    """16-bit multi-band scenes to archive beside the 8-bit photos: a few of ../shared's satellite
    rasters when present (the smaller ones, several sensors), and one synthetic georeferenced
    4-band uint16 scene with nodata corners (../shared's scenes carry no georeferencing: this one
    gives the STAC catalogue a footprint and an acquisition time)."""
    pick = [SATELLITE / name for name in DEMO_SCENES if (SATELLITE / name).exists()][:n]
    return {**{f"satellite/{p.name}": p.read_bytes() for p in pick}, "satellite/synthetic_4band.tif": synthetic_scene()}


def synthetic_scene(size: int = 512, bands: int = 4) -> bytes:
    """A smooth 12-bit-in-uint16 GeoTIFF (EPSG:32633, 10 m) with zero (nodata) corners."""
    import numpy as np
    import tifffile

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = 800 + 1500 * (np.sin(6 * xx) * np.cos(4 * yy) + 1) + rng.normal(0, 30, (size, size))
    arr = np.stack([np.clip(base * (0.7 + 0.2 * b), 1, 4095) for b in range(bands)], -1).astype(np.uint16)
    arr[(xx + yy) < 0.3] = 0
    geo = [(33550, 12, 3, (10.0, 10.0, 0.0), True), (33922, 12, 6, (0, 0, 0, 500000.0, 5000000.0, 0), True),
           (34735, 3, 16, (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32633), True),
           (42113, 2, 0, "0", True), (306, 2, 0, "2026:11:22 10:30:00", True)]  # TIFF DateTime: the STAC datetime
    buf = io.BytesIO()
    tifffile.imwrite(buf, arr, photometric="minisblack", planarconfig="contig", extratags=geo, compression="zlib")
    return buf.getvalue()


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


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--target-psnr", type=float, default=38.0)
    ap.add_argument("--dir", type=Path, default=ROOT / ".demo", help="where the local S3 server keeps its data")
    ap.add_argument("--model", default="auto", help="auto: the aerial model for aerial samples, else default")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    a = parse_args(argv)
    from devtools.localstack import LocalS3

    with LocalS3(a.dir / "s3", buckets=["raw", "archive", "models"]) as s3:
        os.environ.update(s3.env)
        print(f"local S3 (SeaweedFS) at {s3.endpoint_url}, data in {a.dir / 's3'}")
        fs = s3.filesystem()
        upload_samples(fs, a.images)
        registry = seed_registry(fs)
        model = a.model
        if model == "auto":
            model = "aerial" if registry and AERIAL.exists() and (SEED_MODELS / "aerial").exists() else "default"
        archive(a.target_psnr, model, registry)
        show_folders(fs)
        print()
        from jobs import report as report_job

        report_job.main(["--stats", folder_url(OUTPUT, STATS), "--html", str(a.dir / "report.html"), "--group-by", "product"]
                        + (["--model-registry", registry] if registry else []))
        restore_sample(a.dir, registry)
        show_catalogue(a.dir, registry)
    return 0


def upload_samples(fs, n: int) -> None:
    """The sample images, to s3://raw/samples/ (the bucket a user would archive)."""
    images = {**sample_images(n), **satellite_scenes(max(1, n // 6))}
    for name, data in images.items():
        fs.pipe(f"raw/samples/{name}", data)
    print(f"uploaded {len(images)} images ({sum(map(len, images.values())) / 1e6:.1f} MB) to {INPUT}")


def seed_registry(fs) -> str | None:
    """models/ (a registry in the object-storage layout) copied to s3://models/, as a user's bucket would hold it."""
    if not SEED_MODELS.exists():
        return None
    for f in SEED_MODELS.rglob("*"):
        if f.is_file() and f.suffix in (".pt", ".json"):
            fs.pipe(f"models/{f.relative_to(SEED_MODELS).as_posix()}", f.read_bytes())
    print(f"model registry: s3://models/ ({', '.join(sorted(p.name for p in SEED_MODELS.iterdir() if p.is_dir()))})")
    return "s3://models/"


def archive(target_psnr: float, model: str, registry: str | None) -> None:
    """The archival job (jobs/compress_bucket.py's run_job) over the samples, on local Ray."""
    from pipeline.compress import run_job
    from pipeline.config import CompressJobConfig

    # the satellite scenes' zeros are nodata (their PROVENANCE), untagged: --nodata 0 applies to rasters only
    cfg = CompressJobConfig(input=INPUT, output=OUTPUT, target_psnr=target_psnr, model=model, model_registry=registry,
                            nodata=0)
    print(f"archiving {INPUT} → {OUTPUT} at {target_psnr} dB per tile with model {model} ...", flush=True)
    summary = run_job(cfg)
    print(summary.table())
    print(f"records: {folder_url(OUTPUT, RECORDS)}   stats: {folder_url(OUTPUT, STATS)}   "
          f"manifests: {folder_url(OUTPUT, MANIFESTS)}")


def show_folders(fs) -> None:
    """A DuckDB query over the stats files, straight from S3 (no httpfs: the s3fs filesystem is registered)."""
    import duckdb

    con = duckdb.connect()
    con.register_filesystem(fs)
    print("\nDuckDB: per folder")
    print(con.sql("""
        select split_part(key, '/', 5) as folder, count(*) as images, round(avg(bpp), 3) as mean_bpp,
               round(avg(psnr), 2) as mean_psnr, round(sum(original_bytes) / sum(compressed_bytes), 1) as ratio
        from read_parquet($files) where status = 'ok' group by 1 order by 1
    """, params={"files": f"{folder_url(OUTPUT, STATS)}*/*.parquet"}))  # paths are bound, never pasted into SQL


def restore_sample(out_dir: Path, registry: str | None) -> None:
    """One archived image restored whole, and one region of it (only the tiles that cover it are decoded)."""
    from pipeline.restore import restore_one

    rec = Archive(OUTPUT).committed_table(RECORDS, ["key", "width", "height"]).slice(0, 1).to_pylist()
    if not rec:
        return
    key, w, h = rec[0]["key"], rec[0]["width"], rec[0]["height"]
    whole = restore_one(OUTPUT, key, str(out_dir / "restored.png"), model_registry=registry)
    region = (w // 4, h // 4, w // 2, h // 2)
    crop = restore_one(OUTPUT, key, str(out_dir / "restored-region.png"), region=region, model_registry=registry)
    print(f"\nrestored {key} → {whole['output']} ({whole['width']}×{whole['height']}, {whole['seconds']:.2f} s)")
    print(f"restored region {region} → {crop['output']} ({crop['seconds']:.2f} s, only the tiles that cover it)")
    rasters = Archive(OUTPUT).committed_table(RECORDS, ["key", "bands", "dtype"]).to_pylist()
    raster = next((r for r in rasters if r["dtype"] not in (None, "uint8")), None)
    if raster:  # a satellite scene comes back as a GeoTIFF: dtype, bands, nodata, band names, georeferencing
        out = restore_one(OUTPUT, raster["key"], str(out_dir / "restored-raster.tif"), model_registry=registry)
        print(f"restored {raster['key']} → {out['output']} ({out['width']}×{out['height']}×{raster['bands']} "
              f"{raster['dtype']}, {out['seconds']:.2f} s)")


def show_catalogue(out_dir: Path, registry: str | None) -> None:
    """The archive's STAC catalogue, opened with pystac as a team would; one item restored from its record asset."""
    import pystac

    from pipeline.restore import restore_ref
    from pipeline.stac import FsspecStacIO

    url = f"{OUTPUT}stac/collection.json"
    col = pystac.read_file(url, stac_io=FsspecStacIO())
    items = list(col.get_items())
    geo = next((i for i in items if i.geometry), None)
    if geo is not None:
        out = restore_ref(geo.assets["record"].href, str(out_dir / "restored-from-stac.tif"), model_registry=registry)
        print(f"\nrestored STAC item {geo.id} ({geo.properties['tlic:datetime_source']} {geo.datetime:%Y-%m-%d}, "
              f"bbox {', '.join(f'{v:.4f}' for v in geo.bbox)}) from its record asset → {out['output'] or out['error']}")
    print(f"\nSTAC catalogue: {url} ({len(items)} items, {sum(bool(i.geometry) for i in items)} georeferenced; "
          f"server {os.environ.get('AWS_ENDPOINT_URL', '')}); open it with "
          "pystac.read_file(URL, stac_io=pipeline.stac.FsspecStacIO())")


if __name__ == "__main__":
    sys.exit(main())
