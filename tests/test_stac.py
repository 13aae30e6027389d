"""The archive's STAC catalogue (issue 27 item 1): a run on a georeferenced raster and photos leaves a catalogue
that pystac opens (through fsspec, from the real S3 server), items round-trip and carry the right fields, the
record asset restores exactly its record, and a crash leaves only committed items (local Ray)."""

import hashlib
import io
import json
import uuid

import numpy as np
import pystac
import pytest
from PIL import Image

from codec.format.container import read_header
from pipeline.archive import Archive
from pipeline.compress import run_job
from pipeline.config import CompressJobConfig
from pipeline.record_ref import RecordRef
from pipeline.restore import restore_one, restore_ref
from pipeline.stac import FsspecStacIO, acquired, item_id, parse_time
from pipeline_fixtures import GEO_TAGS, png, upload
from conftest import natural_image
from test_pipeline_rasters import BAND_NAMES, geotiff, raster

pytestmark = pytest.mark.usefixtures("ray_local")

SENSED = "2023-06-01T10:20:30.024Z"
GDAL_METADATA = ("<GDALMetadata>" + f'<Item name="DATATAKE_1_DATATAKE_SENSING_START">{SENSED}</Item>' + "".join(
    f'<Item name="DESCRIPTION" sample="{i}" role="description">{n}</Item>' for i, n in enumerate(BAND_NAMES))
    + "</GDALMetadata>")


def scene() -> np.ndarray:
    ms = raster(96, 128, 4, seed=1)
    ms[:20, :30] = 0  # nodata
    return ms


def exif_jpeg() -> bytes:
    e = Image.Exif()
    e.get_ifd(0x8769)[36867] = "2021:03:04 05:06:07"  # DateTimeOriginal
    buf = io.BytesIO()
    Image.fromarray(natural_image(64, 80, 3)).save(buf, format="JPEG", quality=90, exif=e.tobytes())
    return buf.getvalue()


def objects() -> dict[str, bytes]:
    tags = GEO_TAGS + [(42113, "s", 0, "0", False), (42112, "s", 0, GDAL_METADATA, False)]
    return {"sat/ms4.tif": geotiff(scene(), tags), "photos/a.png": png(natural_image(64, 96, 5)),
            "photos/b.jpg": exif_jpeg()}


def catalogue(output: str) -> pystac.Collection:
    col = pystac.read_file(f"{output}stac/collection.json", stac_io=FsspecStacIO())
    assert isinstance(col, pystac.Collection)
    return col


def items_by_key(output: str) -> dict[str, pystac.Item]:
    return {i.properties["tlic:key"]: i for i in catalogue(output).get_items()}


@pytest.fixture(scope="module")
def archived(s3_server):
    """One run over the three inputs, two per segment; (cfg, bucket)."""
    import os

    name = "stac-" + uuid.uuid4().hex[:8]
    s3_server.make_bucket(name)
    upload(s3_server.filesystem(), name, "raw", objects())
    old = {k: os.environ.get(k) for k in s3_server.env}
    os.environ.update(s3_server.env)
    cfg = CompressJobConfig(input=f"s3://{name}/raw/", output=f"s3://{name}/out/", segment_rows=2)
    summary = run_job(cfg, progress=False)
    assert summary.ok == 3 and summary.segments == 2
    yield cfg, name
    for k, v in old.items():
        os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def test_catalogue_opens_with_pystac_and_items_round_trip(archived):
    cfg, bucket = archived
    col = catalogue(cfg.output)
    items = list(col.get_items())
    assert sorted(i.properties["tlic:key"] for i in items) == sorted(f"s3://{bucket}/raw/{k}" for k in objects())
    assert col.extra_fields["tlic:commit_seq"] == max(m.commit_seq for m in Archive(cfg.output).committed())
    for item in items:
        d = item.to_dict(include_self_link=False, transform_hrefs=False)
        assert pystac.Item.from_dict(d).to_dict(include_self_link=False, transform_hrefs=False) == d
        assert item.collection_id == col.id and item.id == item_id(item.properties["tlic:key"])
    georef = [i for i in items if i.geometry]
    assert len(georef) == 1 and col.extent.spatial.bboxes[0] == pytest.approx(georef[0].bbox)
    start, end = col.extent.temporal.intervals[0]
    assert start == min(i.datetime for i in items) and end == max(i.datetime for i in items)


def test_items_validate_against_the_core_stac_schemas(archived):
    """pystac ships the STAC 1.1 core schemas (no network); extension fields are checked in the next test."""
    jsonschema = pytest.importorskip("jsonschema")
    referencing = pytest.importorskip("referencing")
    from pystac.validation.local_validator import _read_schema, get_local_schema_cache

    registry = referencing.Registry().with_resources(
        [(k, referencing.Resource.from_contents(v)) for k, v in get_local_schema_cache().items()])
    cfg, _ = archived
    col = catalogue(cfg.output)
    for kind, obj in [("collection", col), *(("item", i) for i in col.get_items())]:
        validator = jsonschema.Draft7Validator(_read_schema(f"stac-spec/v1.1.0/{kind}.json"), registry=registry)
        errors = [e.message for e in validator.iter_errors(obj.to_dict(include_self_link=False, transform_hrefs=False))]
        assert not errors, (kind, errors)


def test_item_fields_are_present_and_right(archived, s3_server):
    cfg, bucket = archived
    items, archive = items_by_key(cfg.output), Archive(cfg.output)
    stats = {r["key"]: r for r in archive.committed_table("stats").to_pylist()}
    key = f"s3://{bucket}/raw/sat/ms4.tif"
    item, row, record = items[key], stats[key], archive.find_record(key)
    # footprint: the scene's west edge is easting 500000 of UTM 33N, i.e. 15°E; northing 4,000,000 m ≈ 36.14°N
    west, south, east, north = item.bbox
    assert west == pytest.approx(15.0, abs=1e-9) and 15.0 < east < 15.02 and 36.13 < south < north < 36.15
    lons = [p[0] for p in item.geometry["coordinates"][0]]
    assert min(lons) == pytest.approx(15.0, abs=1e-9)
    p = item.properties
    assert p["datetime"] == SENSED.replace(".024Z", ".024000Z") and p["tlic:datetime_source"] == \
        "tag:DATATAKE_1_DATATAKE_SENSING_START"
    assert p["proj:code"] == "EPSG:32633" and p["proj:shape"] == [96, 128]
    assert p["proj:transform"] == [10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0] and "UTM zone 33N" in p["proj:wkt2"]
    assert p["proj:projjson"]["type"] == "ProjectedCRS"
    header = read_header(bytes(record["bitstream"]))
    assert p["tlic:model_id"] == row["model_id"] and p["tlic:model_sha256"] == header.model_hash.hex()
    assert (p["tlic:tile_size"], p["tlic:mode"], p["tlic:target"]) == (header.tile_size, "target_psnr", 38.0)
    assert p["tlic:band_psnr"] == row["band_psnr"] and p["tlic:band_max_error"] == row["band_max_error"]
    assert p["tlic:tile_coders"] == dict(row["tile_coders"]) and p["tlic:band_names"] == BAND_NAMES
    assert p["processing:software"]["tlic"] and "satellite@" in p["processing:lineage"]
    stream = item.assets["record"].extra_fields
    assert stream["file:checksum"] == "1220" + hashlib.sha256(bytes(record["bitstream"])).hexdigest()
    assert stream["file:size"] == len(record["bitstream"])
    source = item.assets["source"].extra_fields
    assert source["file:checksum"] == "1220" + hashlib.sha256(objects()["sat/ms4.tif"]).hexdigest()
    assert source["file:size"] == len(objects()["sat/ms4.tif"]) and item.assets["source"].href == key
    bands, px = source["raster:bands"], scene()
    valid = ~(px == 0).all(-1)
    assert [b["data_type"] for b in bands] == ["uint16"] * 4 and all(b["nodata"] == 0 for b in bands)
    for b, band in enumerate(bands):
        s = band["statistics"]
        assert (s["minimum"], s["maximum"]) == (px[..., b][valid].min(), px[..., b][valid].max())
        assert s["mean"] == pytest.approx(px[..., b][valid].mean()) and s["stddev"] == pytest.approx(px[..., b][valid].std())
        assert s["valid_percent"] == pytest.approx(100 * valid.mean())


def test_photos_have_null_geometry_and_say_where_their_time_comes_from(archived):
    cfg, bucket = archived
    items, archive = items_by_key(cfg.output), Archive(cfg.output)
    png_item = items[f"s3://{bucket}/raw/photos/a.png"]
    assert png_item.geometry is None and png_item.bbox is None and png_item.properties["proj:code"] is None
    assert png_item.properties["tlic:georeferenced"] is False and "not georeferenced" in png_item.properties["tlic:footprint"]
    assert png_item.properties["tlic:datetime_source"] == "source_mtime"
    mtime = archive.find_record(f"s3://{bucket}/raw/photos/a.png")["mtime"]
    assert png_item.datetime == parse_time(mtime)
    jpg = items[f"s3://{bucket}/raw/photos/b.jpg"]
    assert jpg.properties["tlic:datetime_source"] == "exif:DateTimeOriginal"
    assert pystac.utils.datetime_to_str(jpg.datetime) == "2021-03-04T05:06:07Z"
    assert len(jpg.assets["source"].extra_fields["raster:bands"]) == 3


def test_record_href_restores_exactly_that_record(archived, s3_server, tmp_path):
    from jobs import restore as restore_job
    from pipeline import record_ref

    cfg, bucket = archived
    key = f"s3://{bucket}/raw/sat/ms4.tif"
    href = items_by_key(cfg.output)[key].assets["record"].href
    ref = RecordRef.parse(href)
    assert ref.key == key and ref.archive == cfg.output.rstrip("/") and ref.href == href
    by_href = restore_ref(href, str(tmp_path / "href.tif"))
    by_key = restore_one(cfg.output, key, str(tmp_path / "key.tif"))
    assert by_href["status"] == by_key["status"] == "ok"
    assert (tmp_path / "href.tif").read_bytes() == (tmp_path / "key.tif").read_bytes()
    assert restore_job.main(["--record", href, "--output", str(tmp_path / "job.tif")]) == 0
    assert (tmp_path / "job.tif").read_bytes() == (tmp_path / "key.tif").read_bytes()
    assert record_ref.main([href, str(tmp_path / "x.tlic")]) == 0
    assert (tmp_path / "x.tlic").read_bytes() == bytes(Archive(cfg.output).find_record(key)["bitstream"])


def test_bad_record_hrefs_are_refused_naming_the_href(archived, tmp_path):
    cfg, bucket = archived
    for bad in ("s3://b/out/records/run=a/part-000000.parquet", f"{cfg.output}stats/run=a/part-000000.parquet#key=x"):
        with pytest.raises(ValueError, match="record href"):
            RecordRef.parse(bad)
    missing = f"{cfg.output}records/run=nope/part-000000.parquet#key=x"
    row = restore_ref(missing, str(tmp_path / "x.tif"))
    assert row["status"] == "error" and "not a committed segment" in row["error"]
    href = items_by_key(cfg.output)[f"s3://{bucket}/raw/photos/a.png"].assets["record"].href
    row = restore_ref(href.rsplit("#key=", 1)[0] + "#key=s3%3A%2F%2Fnone", str(tmp_path / "y.png"))
    assert row["status"] == "error" and "holds no record of s3://none" in row["error"]


def test_records_of_older_archives_give_items_without_the_missing_fields(archived):
    """A record from before source_sha256 / band_stats (and a stats row without the issue 23 columns): no such fields."""
    from pipeline.stac import build_item

    cfg, bucket = archived
    record = Archive(cfg.output).find_record(f"s3://{bucket}/raw/sat/ms4.tif")
    item = build_item({**record, "source_sha256": None}, {}, "x#key=y", "c").to_dict()
    source = item["assets"]["source"]
    assert "file:checksum" not in source and all("statistics" not in b for b in source["raster:bands"])
    assert "tlic:band_psnr" not in item["properties"] and item["properties"]["tlic:tile_size"] == 256
    assert item["assets"]["record"]["file:checksum"].startswith("1220")


def test_acquisition_time_rules():
    archived_at = parse_time("2026-01-01T00:00:00Z")
    assert acquired({"TIFFTAG_DATETIME": "2020:05:06 07:08:09"}, None, None, archived_at) == \
        (parse_time("2020-05-06T07:08:09Z"), "tag:TIFFTAG_DATETIME")
    both = {"TIFFTAG_DATETIME": "2020:05:06 07:08:09", "SENSING_TIME": "2019-01-02T03:04:05.1234567+02:00"}
    assert acquired(both, None, None, archived_at) == (parse_time("2019-01-02T01:04:05.123456Z"), "tag:SENSING_TIME")
    landsat = {"DATE_ACQUIRED": "2018-07-08", "SCENE_CENTER_TIME": '"10:11:12.5Z"'}
    assert acquired(landsat, None, None, archived_at)[0] == parse_time("2018-07-08T10:11:12.5Z")
    junk = {"TIFFTAG_DATETIME": "0000:00:00 00:00:00"}
    assert acquired(junk, None, "2024-02-03T04:05:06+00:00", archived_at)[1] == "source_mtime"
    assert acquired({}, None, None, archived_at) == (archived_at, "archived")


def test_a_crash_leaves_only_committed_items_and_a_rerun_catches_up(s3_server, s3_env, monkeypatch):
    from pipeline import stac

    name = "stac-crash-" + uuid.uuid4().hex[:6]
    s3_server.make_bucket(name)
    images = {f"p/{i}.png": png(natural_image(48, 64, i)) for i in range(3)}
    upload(s3_server.filesystem(), name, "raw", images)
    cfg = CompressJobConfig(input=f"s3://{name}/raw/", output=f"s3://{name}/out/", segment_rows=1)

    class Crash(RuntimeError):
        pass

    put_manifest, calls = Archive._put_manifest, []

    def dies_at_second_manifest(self, lease, body):
        calls.append(1)
        if len(calls) == 2:
            raise Crash("killed before the manifest landed")
        return put_manifest(self, lease, body)

    def check(expect_keys: int):
        committed = Archive(cfg.output).record_index()
        items = items_by_key(cfg.output)
        assert set(items) <= set(committed["key"].to_pylist())  # never an uncommitted record
        assert len(items) == expect_keys
        files = dict(zip(committed["key"].to_pylist(), committed["file"].to_pylist()))
        for k, item in items.items():  # each item names its key's latest committed record
            assert RecordRef.parse(item.assets["record"].href).file in files[k]
        return items

    monkeypatch.setattr(Archive, "_put_manifest", dies_at_second_manifest)
    with pytest.raises(Crash):
        run_job(cfg, progress=False)
    monkeypatch.setattr(Archive, "_put_manifest", put_manifest)
    check(1)  # segment 1 committed with its item; segment 2 never committed: no item
    # a crash after a manifest, before its items: the catalogue lags, the next run catches up
    add_segment = stac.Catalogue.add_segment
    monkeypatch.setattr(stac.Catalogue, "add_segment", lambda self, *a: (_ for _ in ()).throw(Crash("after commit")))
    with pytest.raises(Crash):
        run_job(cfg.model_copy(update={"run_id": "second"}), progress=False)
    monkeypatch.setattr(stac.Catalogue, "add_segment", add_segment)
    assert Archive(cfg.output).record_index().num_rows == 2
    check(1)
    summary = run_job(cfg.model_copy(update={"run_id": "third"}), progress=False)
    assert summary.ok == 1  # the one key not committed yet; the lagging one came from the catch-up
    check(3)
    col = json.loads(s3_server.filesystem().cat_file(f"{name}/out/stac/collection.json"))
    assert col["tlic:commit_seq"] == max(m.commit_seq for m in Archive(cfg.output).committed())
    assert col["tlic:georeferenced_items"] is False and col["extent"]["spatial"]["bbox"] == [[-180, -90, 180, 90]]
    # a copy of the archive rebuilds its catalogue on its next run: its items' hrefs name the copy
    fs = s3_server.filesystem()
    fs.copy(f"{name}/out", f"{name}/copy", recursive=True)
    copy = cfg.model_copy(update={"output": f"s3://{name}/copy/", "run_id": "on-the-copy"})
    assert run_job(copy, progress=False).skipped_committed == 3
    hrefs = [i.assets["record"].href for i in items_by_key(copy.output).values()]
    assert len(hrefs) == 3 and all(h.startswith(f"s3://{name}/copy/records/") for h in hrefs)


def test_a_record_whose_item_cannot_be_built_is_named_in_the_collection(tmp_path, capsys):
    """One odd record must not stop the archive (or every rerun's catch-up): its key and the cause are kept."""
    from pipeline.archive import Manifest
    from pipeline.stac import Catalogue

    class Lease:
        def check(self):
            pass

    archive = Archive(str(tmp_path / "out"))
    cat = Catalogue(archive, Lease())
    bad = {"key": "s3://raw/broken.tif", "bitstream": b"not a stream", "status": "ok"}
    m = Manifest("0.json", "r", 0, 0, "", 1, 1, archive.segment_files("r", 0), None, None)
    cat.add_segment(m, [bad], [bad])
    col = json.loads((tmp_path / "out" / "stac" / "collection.json").read_text())
    assert "s3://raw/broken.tif" in col["tlic:item_errors"] and col["tlic:commit_seq"] == 0
    assert [link for link in col["links"] if link["rel"] == "item"] == []
    assert "no item for s3://raw/broken.tif" in capsys.readouterr().err
