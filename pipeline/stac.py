"""The archive as a static STAC catalogue: one Collection per output, one Item per archived key (issue 27).

    OUTPUT/stac/collection.json     the Collection: extent, a link to every item, ``tlic:commit_seq``
    OUTPUT/stac/items/ITEM.json     one Item per key (ITEM = item_id(key)): its latest committed record

When: the archive's writer, under its lease, after a segment's manifest is committed (so only committed
records ever appear): the segment's items first, the collection last, each one whole-object PUT. The
collection says which commit sequence it reflects (``tlic:commit_seq``); a run first catches up the
manifests committed after that (a crash between a manifest and its items; an archive older than the
catalogue). So a crash leaves a catalogue that at worst lags the archive, never one naming an
uncommitted record, and a commit costs its segment's items plus the collection (whose item links,
~90 bytes each, grow with the archive).

An Item carries the footprint and bbox in lon/lat (null for images without georeferencing, said in
``tlic:footprint``), ``datetime`` from the acquisition tags (else EXIF, TIFF DateTime, the source's mtime;
``tlic:datetime_source`` says which), the projection, raster, file and processing extensions, and the
codec's ``tlic:`` fields. Assets: ``record`` (a :mod:`pipeline.record_ref` href that the restore job
accepts) and ``source`` (the source's URL, which may be gone once originals are deleted).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pystac
from pystac.extensions.file import FileExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import DataType, RasterBand, RasterExtension, Statistics

from .archive import RECORDS, STATS, Archive, Lease, Manifest
from .config import StorageOptions
from .record_ref import RecordRef
from .storage import filesystem, put_atomic

PROCESSING_URI = "https://stac-extensions.github.io/processing/v1.2.0/schema.json"
WORLD = [-180.0, -90.0, 180.0, 90.0]  # a collection's spatial extent while no item is georeferenced
# dataset tags (GDAL's default domain) that say when a scene was acquired, most specific first
ACQUISITION_TAGS = ("ACQUISITIONDATETIME", "ACQUISITION_DATETIME", "DATATAKE_1_DATATAKE_SENSING_START",
                    "SENSING_START", "SENSING_TIME", "PRODUCT_START_TIME", "ACQUISITION_DATE", "DATE_ACQUIRED")
_TIME = re.compile(r"^(\d{4})[:-](\d{2})[:-](\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?)?\s*(Z|[+-]\d{2}:?\d{2})?$")
_MEDIA = {".tif": pystac.MediaType.TIFF, ".tiff": pystac.MediaType.TIFF, ".png": pystac.MediaType.PNG,
          ".jpg": pystac.MediaType.JPEG, ".jpeg": pystac.MediaType.JPEG, ".webp": "image/webp",
          ".jp2": pystac.MediaType.JPEG2000}
PARQUET = "application/vnd.apache.parquet"
ITEM_LINKS = ("root", "parent", "collection")
MAX_ERRORS = 100  # keys whose item could not be built, listed in the collection (``tlic:item_errors``)


def item_id(key: str) -> str:
    """A file-name-safe, unique id for a key: its path's tail, readable, plus a hash of the whole key."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", key.split("://", 1)[-1]).strip("._-")[-80:]
    return f"{slug}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"


def multihash_sha256(data: bytes) -> str:
    """``file:checksum``: a sha2-256 multihash (code 0x12, length 0x20) in hex."""
    return "1220" + hashlib.sha256(data).hexdigest()


# --- when ----------------------------------------------------------------------------------------
def parse_time(text) -> datetime | None:
    """A tag's date-time (ISO 8601 or TIFF/EXIF ``YYYY:MM:DD HH:MM:SS``) in UTC; no zone reads as UTC; None if none."""
    m = _TIME.match(str(text).strip().strip("\x00"))
    if not m:
        return None
    y, mo, d, hh, mm, ss, frac, tz = m.groups()
    zone = timezone.utc
    if tz and tz != "Z":
        sign = -1 if tz[0] == "-" else 1
        zone = timezone(sign * timedelta(hours=int(tz[1:3]), minutes=int(tz[-2:])))
    try:
        return datetime(int(y), int(mo), int(d), int(hh or 0), int(mm or 0), int(ss or 0),
                        int(((frac or ".")[1:] + "000000")[:6]), zone).astimezone(timezone.utc)
    except ValueError:  # "0000:00:00 00:00:00", a 13th month: no time
        return None


def acquired(tags: dict, exif: bytes | None, mtime: str | None, archived: datetime) -> tuple[datetime, str]:
    """(when the image was taken, what says so): acquisition tags, EXIF DateTimeOriginal, TIFF DateTime,
    EXIF DateTime, the source's mtime, else the archive time."""
    upper = {str(k).upper(): v for k, v in (tags or {}).items()}
    if "DATE_ACQUIRED" in upper and "SCENE_CENTER_TIME" in upper:  # Landsat MTL: a date and a time
        upper["DATE_ACQUIRED"] = f"{upper['DATE_ACQUIRED']}T{upper['SCENE_CENTER_TIME']}".replace('"', "")
    exif_tags = _exif_times(exif)
    candidates = [(f"tag:{n}", upper.get(n)) for n in ACQUISITION_TAGS]
    candidates += [("exif:DateTimeOriginal", exif_tags.get("DateTimeOriginal")),
                   ("tag:TIFFTAG_DATETIME", upper.get("TIFFTAG_DATETIME")), ("exif:DateTime", exif_tags.get("DateTime"))]
    for source, value in candidates:
        t = parse_time(value) if value else None
        if t is not None:
            return t, source
    if mtime:
        try:
            t = datetime.fromisoformat(str(mtime))
            return (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).astimezone(timezone.utc), "source_mtime"
        except ValueError:
            pass
    return archived.astimezone(timezone.utc), "archived"


def _exif_times(exif: bytes | None) -> dict[str, str]:
    """DateTimeOriginal (with OffsetTimeOriginal) and DateTime of a raw EXIF block; {} when unreadable."""
    if not exif:
        return {}
    from PIL import Image

    try:
        e = Image.Exif()
        e.load(bytes(exif))
        sub = e.get_ifd(0x8769)
    except Exception:  # noqa: BLE001 — a broken EXIF block is no time, not a failed catalogue
        return {}
    out = {"DateTime": e.get(306)}
    if sub.get(36867):
        out["DateTimeOriginal"] = f"{sub[36867]}{sub.get(36881) or ''}"
    return {k: str(v) for k, v in out.items() if v}


# --- where ---------------------------------------------------------------------------------------
def footprint(georef, width: int, height: int) -> dict:
    """The image's outline in lon/lat and its projection fields, from the stream's GeoInfo (GDAL's reading).

    Keys: ``geometry`` and ``bbox`` (None when not georeferenced), ``proj`` (the projection extension's
    fields), ``note`` (how the footprint was found, or why there is none).
    """
    from rasterio.crs import CRS
    from rasterio.errors import RasterioError

    proj: dict = {"shape": [height, width], "code": None}
    wkt = georef and (georef.gcp_crs_wkt if georef.gcps else georef.crs_wkt)
    if not wkt or (georef.transform is None and not georef.gcps):
        return {"geometry": None, "bbox": None, "proj": proj,
                "note": "not georeferenced: geometry and bbox are null" if not wkt else "a CRS without a transform"}
    try:
        crs = CRS.from_wkt(wkt)
        t, how = _affine(georef)
        proj.update(code=f"EPSG:{georef.epsg}" if georef.epsg and not georef.gcps else _code(crs), wkt2=wkt,
                    projjson=crs.to_dict(projjson=True))
        if not georef.gcps:
            proj["transform"] = [float(v) for v in list(t)[:6]]
        geometry, bbox, native = _outline(crs, t, width, height)
        proj["bbox"] = native
    except (RasterioError, ValueError, TypeError) as exc:
        return {"geometry": None, "bbox": None, "proj": proj, "note": f"footprint not computed: {exc}"}
    return {"geometry": geometry, "bbox": bbox, "proj": proj, "note": how}


def _code(crs) -> str | None:
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else None


def _affine(georef):
    from rasterio.control import GroundControlPoint
    from rasterio.transform import Affine, from_gcps

    if georef.transform is not None and not georef.gcps:
        return Affine.from_gdal(*georef.transform), "from the geotransform"
    gcps = [GroundControlPoint(g.line, g.pixel, g.x, g.y, g.z) for g in georef.gcps]
    return from_gcps(gcps), f"from an affine fit to {len(gcps)} GCPs (approximate)"


def _outline(crs, t, width: int, height: int, per_side: int = 8):
    """(lon/lat polygon, lon/lat bbox, native bbox) of the pixel grid's outline, edges densified."""
    from rasterio.warp import transform_bounds, transform_geom

    steps = [i / per_side for i in range(per_side)]
    px = ([(s * width, 0) for s in steps] + [(width, s * height) for s in steps]
          + [((1 - s) * width, height) for s in steps] + [(0, (1 - s) * height) for s in steps])
    ring = [t @ p for p in px]
    ring.append(ring[0])
    xs, ys = [p[0] for p in ring], [p[1] for p in ring]
    native = [min(xs), min(ys), max(xs), max(ys)]
    geometry = transform_geom(crs, "EPSG:4326", {"type": "Polygon", "coordinates": [ring]})
    bbox = [float(v) for v in transform_bounds(crs, "EPSG:4326", *native, densify_pts=21)]
    return _plain(geometry), bbox, native


def _plain(geometry) -> dict:
    """A rasterio geometry as plain JSON (lists, floats)."""
    return json.loads(json.dumps(dict(geometry), default=list))


# --- the item ------------------------------------------------------------------------------------
def build_item(record: dict, stats: dict, href: str, collection_id: str) -> pystac.Item:
    """The STAC Item of one committed record (a records row, bitstream included) and its stats row."""
    from codec.format.container import read_header

    data = bytes(record["bitstream"])
    header = read_header(data)
    where = footprint(header.georef, header.width, header.height)
    archived = stats.get("timestamp") or datetime.now(timezone.utc)
    when, when_source = acquired(header.georef.tags if header.georef else {}, record.get("exif"),
                                 record.get("mtime"), archived)
    item = pystac.Item(id=item_id(record["key"]), geometry=where["geometry"], bbox=where["bbox"], datetime=when,
                       properties={}, collection=collection_id)
    item.common_metadata.created = archived
    item.properties.update(_tlic_fields(record, stats, header, where["note"], when_source))
    item.properties.update(_processing_fields(record, stats, header, archived))
    item.stac_extensions.append(PROCESSING_URI)
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    proj.apply(**{k: v for k, v in where["proj"].items() if k != "code"})
    proj.code = where["proj"]["code"]
    _add_record_asset(item, href, record, data)
    _add_source_asset(item, record, stats, header)
    for rel in ITEM_LINKS:
        item.add_link(pystac.Link(rel, "../collection.json", pystac.MediaType.JSON))
    return item


def _tlic_fields(record: dict, stats: dict, header, footprint_note: str, when_source: str) -> dict:
    """Our own fields: how the record was coded and what it achieved (absent where the archive does not say)."""
    fields = {
        "key": record["key"], "version": record.get("version"), "run_id": record.get("run_id"),
        "model_id": header.model_id, "model_sha256": header.model_hash.hex(), "format_version": header.version,
        "tile_size": header.tile_size, "mode": stats.get("mode") or header.mode,
        "target": _finite(stats.get("target") if stats.get("target") is not None else header.target),
        "effort": stats.get("effort"), "psnr": _finite(stats.get("psnr")), "ms_ssim": _finite(stats.get("ms_ssim")),
        "psnr_peak": stats.get("psnr_peak"), "band_psnr": _finite_list(stats.get("band_psnr")),
        "band_max_error": stats.get("band_max_error"), "max_abs_error": stats.get("max_abs_error"),
        "tile_coders": dict(stats["tile_coders"]) if stats.get("tile_coders") else None,
        "tiles": stats.get("tiles"), "tiles_missed": stats.get("tiles_missed"),
        "lossless_tiles": stats.get("lossless_tiles"), "bpp": _finite(stats.get("bpp")),
        "bits_per_sample": _finite(stats.get("bits_per_sample")), "ratio": _finite(stats.get("ratio")),
        "bands": header.bands, "dtype": header.dtype, "band_names": record.get("band_names"),
        "nodata_fraction": stats.get("nodata_fraction"), "georeferenced": header.georef is not None
        and footprint_note.startswith("from"), "footprint": footprint_note, "datetime_source": when_source,
    }
    return {f"tlic:{k}": v for k, v in fields.items() if v is not None}


@functools.lru_cache(maxsize=1)
def _our_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tlic")
    except PackageNotFoundError:
        return "unknown"


def _processing_fields(record: dict, stats: dict, header, archived: datetime) -> dict:
    ours = _our_version()
    target = "" if header.mode == "lossless" else f" {stats.get('target') or header.target:g}"
    return {"processing:lineage": f"archived by TLIC (mode {header.mode}{target}, model {header.model_id}) in run "
                                  f"{record.get('run_id')}; the source's pixels are restored by decoding the record",
            "processing:software": {"tlic": ours}, "processing:datetime": pystac.utils.datetime_to_str(archived)}


def _add_record_asset(item: pystac.Item, href: str, record: dict, data: bytes) -> None:
    asset = pystac.Asset(href, title="TLIC record", media_type=PARQUET, roles=["data"],
                         description="one row of a committed Parquet segment (pipeline/record_ref.py); file:size "
                                     "and file:checksum are those of its TLIC stream (the bitstream column)",
                         extra_fields={"tlic:key": record["key"]})
    item.add_asset("record", asset)
    FileExtension.ext(asset, add_if_missing=True).apply(size=len(data), checksum=multihash_sha256(data))


def _add_source_asset(item: pystac.Item, record: dict, stats: dict, header) -> None:
    key = record["key"]
    suffix = "." + key.rsplit(".", 1)[-1].lower() if "." in key.rsplit("/", 1)[-1] else ""
    media = _MEDIA.get(suffix)
    if media == pystac.MediaType.TIFF and header.georef is not None:
        media = pystac.MediaType.GEOTIFF
    asset = pystac.Asset(key, title="source", media_type=media, roles=["source"],
                         description="the archived original (it may have been deleted since)")
    item.add_asset("source", asset)
    file_ext = FileExtension.ext(asset, add_if_missing=True)
    file_ext.size = record.get("source_size")
    if record.get("source_sha256"):
        file_ext.checksum = "1220" + record["source_sha256"]
    RasterExtension.ext(asset, add_if_missing=True).bands = _raster_bands(record, stats, header)


def _raster_bands(record: dict, stats: dict, header) -> list[RasterBand]:
    """Per band of the source: data type, nodata, scale/offset/unit (GDAL's), bits per sample, statistics."""
    bits = header.raster.bit_depth if header.raster is not None else None
    nodata = record.get("nodata") if record.get("nodata") is not None else (header.raster and header.raster.nodata)
    infos = header.georef.bands if header.georef is not None and len(header.georef.bands) == header.bands else ()
    band_stats = stats.get("band_stats") or []
    out = []
    for b in range(header.bands):
        info = infos[b] if infos else None
        s = band_stats[b] if b < len(band_stats) else None
        out.append(RasterBand.create(
            nodata=nodata, data_type=DataType(header.dtype),
            bits_per_sample=bits if bits and bits < 8 * (2 if header.dtype == "uint16" else 1) else None,
            scale=info.scale if info else None, offset=info.offset if info else None,
            unit=(info.units or None) if info else None,
            statistics=Statistics.create(**{k: v for k, v in s.items() if v is not None}) if s else None))
    return out


def _finite(v):
    return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else v


def _finite_list(vs):
    """Per-band PSNRs: an exact band (infinite PSNR, max error 0) is null, JSON having no infinity."""
    return None if vs is None else [_finite(float(v)) for v in vs]


# --- the catalogue -------------------------------------------------------------------------------
class Catalogue:
    """The archive's catalogue as its writer keeps it: the item ids and extent, updated per commit."""

    def __init__(self, archive: Archive, lease: Lease):
        self.archive, self.lease = archive, lease
        self.id = "tlic-" + re.sub(r"[^A-Za-z0-9._-]+", "-", archive.url.split("://", 1)[-1]).strip("-")[-100:]
        self.items: set[str] = set()
        self.bbox: list[float] | None = None
        self.interval: list[datetime] | None = None
        self.seq: int | None = None  # the last commit sequence the catalogue reflects; None: none yet
        self.failed: dict[str, str] = {}  # key → why its item could not be built (kept in the collection)

    @classmethod
    def open(cls, archive: Archive, lease: Lease) -> "Catalogue":
        """Read the collection (if any) and catch up with every manifest committed after it."""
        cat = cls(archive, lease)
        cat._load()
        pending = [m for m in archive.committed()
                   if cat.seq is None or (m.commit_seq is not None and m.commit_seq > cat.seq)]
        for m in pending:
            if m.records:
                records = archive.segment_table(m, RECORDS).to_pylist()
                stats = archive.segment_table(m, STATS).to_pylist()
                cat._write_items(m, records, stats)
            # legacy manifests (no sequence) come first in commit order: once caught up, -1 covers them
            cat.seq = m.commit_seq if m.commit_seq is not None else (-1 if cat.seq is None else cat.seq)
        if pending or cat.seq is None or not archive.fs.exists(archive.stac_collection()):
            cat._write_collection()
        return cat

    def add_segment(self, manifest: Manifest, records: list[dict], stats: list[dict]) -> None:
        """After ``manifest`` committed: its records' items, then the collection."""
        self._write_items(manifest, records, stats)
        if manifest.commit_seq is not None:
            self.seq = manifest.commit_seq
        self._write_collection()

    def _write_items(self, manifest: Manifest, records: list[dict], stats: list[dict]) -> None:
        file_url = self.archive.url_of(self.archive.path(manifest.files[RECORDS]))
        ok = {s["key"]: s for s in stats if s["status"] == "ok"}
        items = []
        for r in records:
            try:
                items.append(build_item(r, ok.get(r["key"], {}), RecordRef.of(file_url, r["key"]).href, self.id))
                self.failed.pop(r["key"], None)
            except Exception as exc:  # noqa: BLE001 — one odd record must not stop the archive (or every rerun)
                self.failed[r["key"]] = f"{type(exc).__name__}: {exc}"[:500]
                print(f"stac: no item for {r['key']}: {self.failed[r['key']]}", file=sys.stderr, flush=True)
        bodies = {self.archive.stac_item(i.id): _json(i.to_dict(include_self_link=False, transform_hrefs=False))
                  for i in items}
        self.lease.check()
        with ThreadPoolExecutor(8) as pool:  # one PUT per item; whole objects, retried like every archive write
            list(pool.map(lambda kv: self.archive.put(*kv), bodies.items()))
        for i in items:
            self.items.add(i.id)
            if i.bbox:
                self.bbox = _union(self.bbox, i.bbox)
            t = i.datetime
            self.interval = [min(self.interval[0], t), max(self.interval[1], t)] if self.interval else [t, t]

    def _write_collection(self) -> None:
        """The collection, one whole-object PUT, last: what it links was written before it."""
        extent = pystac.Extent(pystac.SpatialExtent([self.bbox or WORLD]),
                               pystac.TemporalExtent([self.interval or [None, None]]))
        col = pystac.Collection(
            self.id, f"Images archived by TLIC in {self.archive.url}: one item per key, its latest committed "
            "record (footprint, acquisition time, projection, raster statistics, checksums, codec parameters and "
            "the quality reached); the record asset restores it (python jobs/restore.py --record HREF).",
            extent, title=f"TLIC archive {self.archive.url}", license="other",
            extra_fields={"tlic:commit_seq": self.seq, "tlic:archive": self.archive.url,
                          "tlic:georeferenced_items": self.bbox is not None,
                          **({"tlic:item_errors": dict(sorted(self.failed.items())[:MAX_ERRORS])} if self.failed else {})})
        col.clear_links()
        col.add_link(pystac.Link("root", "./collection.json", pystac.MediaType.JSON))
        for i in sorted(self.items):
            col.add_link(pystac.Link("item", f"./items/{i}.json", pystac.MediaType.GEOJSON))
        self.lease.check()
        self.archive.put(self.archive.stac_collection(), _json(col.to_dict(include_self_link=False,
                                                                               transform_hrefs=False)))

    def _load(self) -> None:
        try:
            body = json.loads(self.archive.fs.cat_file(self.archive.stac_collection()))
        except FileNotFoundError:
            return
        if body.get("tlic:archive") != self.archive.url:  # a copy of an archive: its hrefs name the original
            print(f"stac: {self.archive.stac_collection()} was written for {body.get('tlic:archive')}; "
                  "rebuilding the catalogue for this archive", file=sys.stderr, flush=True)
            return
        self.seq = body.get("tlic:commit_seq")
        self.failed = dict(body.get("tlic:item_errors", {}))
        self.items = {link["href"].rsplit("/", 1)[-1][: -len(".json")] for link in body.get("links", [])
                      if link.get("rel") == "item"}
        self.bbox = body["extent"]["spatial"]["bbox"][0] if body.get("tlic:georeferenced_items") else None
        start, end = body["extent"]["temporal"]["interval"][0]
        if start and end:
            self.interval = [pystac.utils.str_to_datetime(start), pystac.utils.str_to_datetime(end)]


def _union(a: list[float] | None, b: list[float]) -> list[float]:
    """Two lon/lat bboxes' union (a bbox crossing the antimeridian, west > east, is kept whole as the world's)."""
    if a is None:
        return list(b)
    if a[0] > a[2] or b[0] > b[2]:
        return [-180.0, min(a[1], b[1]), 180.0, max(a[3], b[3])]
    return [min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])]


def _json(d: dict) -> bytes:
    return json.dumps(d, separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode()


class FsspecStacIO(pystac.StacIO):
    """pystac reading (and writing) through fsspec, S3 included: ``pystac.Catalog.from_file(URL, stac_io=...)``."""

    def __init__(self, storage: StorageOptions | None = None):
        self.storage = storage

    def read_text(self, source, *args, **kwargs) -> str:
        fs, path = filesystem(str(source), self.storage)
        return fs.cat_file(path).decode()

    def write_text(self, dest, txt: str, *args, **kwargs) -> None:
        fs, path = filesystem(str(dest), self.storage)
        put_atomic(fs, path, txt.encode())


__all__ = ["Catalogue", "build_item", "item_id", "footprint", "acquired", "parse_time", "FsspecStacIO",
           "multihash_sha256"]
