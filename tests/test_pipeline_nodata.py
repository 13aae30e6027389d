"""Issue 26 items 4 and 5 through the pipeline (real S3 server, local Ray): an int16 DEM with a -9999 void and a
uint16 scene with zeros in single bands of valid pixels (GDAL: nodata in that band only) are archived and
restored as GeoTIFFs that rasterio reads back as int16 / uint16 with the same nodata, every nodata sample exact."""

import io
import uuid

import numpy as np
import pytest

from pipeline.compress import run_job
from pipeline.config import CompressJobConfig, RestoreJobConfig
from pipeline.restore import run_restore
from pipeline_fixtures import upload

pytestmark = pytest.mark.usefixtures("ray_local")
rasterio = pytest.importorskip("rasterio")


def tif(arr: np.ndarray, nodata) -> bytes:
    from rasterio.io import MemoryFile
    from rasterio.transform import from_origin

    a = arr if arr.ndim == 3 else arr[..., None]
    with MemoryFile() as mem:
        with mem.open(driver="GTiff", width=a.shape[1], height=a.shape[0], count=a.shape[2], dtype=a.dtype.name,
                      nodata=nodata, crs="EPSG:32633", transform=from_origin(500000, 4e6, 30, 30)) as ds:
            ds.write(np.moveaxis(a, -1, 0))
        return mem.read()


def scenes() -> dict[str, tuple[np.ndarray, int]]:
    rng = np.random.default_rng(9)
    yy, xx = np.mgrid[0:90, 0:120].astype(np.float64)
    dem = np.rint(-200 + 900 * np.sin(xx / 13) * np.cos(yy / 11) + rng.normal(0, 3, xx.shape)).astype(np.int16)
    dem[:15, :25] = -9999
    ms = np.stack([np.rint(1500 + 900 * np.sin(xx / 9 + b) * np.cos(yy / 7)) for b in range(3)], -1).astype(np.uint16)
    ms[(xx + yy) < 30] = 0  # the scene border
    ms[40:55, 60:90, 1] = 0  # one band's own gap
    return {"dem.tif": (dem, -9999), "ms.tif": (ms, 0)}


def test_int16_and_per_band_nodata_archive_and_restore(s3_server, s3_env):
    bucket = "nodata-" + uuid.uuid4().hex[:8]
    s3_server.make_bucket(bucket)
    upload(s3_server.filesystem(), bucket, "raw", {k: tif(a, nd) for k, (a, nd) in scenes().items()})
    cfg = CompressJobConfig(input=f"s3://{bucket}/raw/", output=f"s3://{bucket}/arch/", max_error=2)
    summary = run_job(cfg, progress=False)
    assert summary.ok == 2, summary
    restored = run_restore(RestoreJobConfig(archive=cfg.output, output=f"s3://{bucket}/back/"), progress=False)
    assert restored.ok == 2
    fs = s3_server.filesystem()
    for name, (source, nodata) in scenes().items():
        with rasterio.io.MemoryFile(fs.cat_file(f"{bucket}/back/{bucket}/raw/{name}")) as mem, mem.open() as ds:
            assert ds.dtypes[0] == source.dtype.name and ds.nodata == nodata and ds.crs.to_epsg() == 32633
            back = np.moveaxis(ds.read(), 0, -1)
        src = source if source.ndim == 3 else source[..., None]
        gdal_valid = src != nodata  # GDAL's per-band rule
        assert np.array_equal(back != nodata, gdal_valid), name  # the same nodata samples, band by band
        assert np.abs(back.astype(np.int64) - src)[gdal_valid].max() <= 2, name
