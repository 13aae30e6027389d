"""What a stream keeps of a GeoTIFF's georeferencing, so a ``.tlic`` file is a GeoTIFF's equal (issue 26).

:class:`GeoInfo` is the one home of it: the loader fills it from what GDAL (rasterio) reports, the container
carries it as a metadata block (compact, sorted JSON: deterministic bytes, checksummed; codec.format.container),
the restore writers give it back to GDAL, and the Parquet record's ``geo`` column is :meth:`GeoInfo.record`.

Conventions are GDAL's, as rasterio reports them: ``transform`` is GDAL's geotransform
``(x0, dx, rx, y0, ry, dy)`` of the pixel *corner*, also for a PixelIsPoint raster (``raster_type`` "point";
GDAL moves the tie point half a pixel on reading and back on writing); GCPs are (pixel, line) → (x, y, z) in
``gcp_crs_wkt``. Pure data: no GDAL here (codec.images.gdalio reads and writes it).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace

from codec.errors import CorruptStreamError

BLOCK_NAME = "georeferencing block"  # how errors name the container's metadata block
RASTER_TYPES = ("area", "point")


@dataclass(frozen=True)
class GCP:
    """One ground control point: image (pixel, line) → world (x, y, z)."""

    pixel: float
    line: float
    x: float
    y: float
    z: float = 0.0
    id: str = ""
    info: str = ""


@dataclass(frozen=True)
class BandInfo:
    """Per-band metadata GDAL keeps: scale/offset (physical value = scale·sample + offset), units, colour
    interpretation (GDAL's name: "gray", "red", "blue", "undefined", ...), description and band tags."""

    scale: float = 1.0
    offset: float = 0.0
    units: str = ""
    colorinterp: str = "undefined"
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class GeoInfo:
    """A raster's georeferencing and GDAL metadata (see the module docstring for the conventions)."""

    crs_wkt: str | None = None  # WKT2
    epsg: int | None = None  # the CRS's EPSG code where it has one
    transform: tuple[float, ...] | None = None  # GDAL geotransform, corner-based
    gcps: tuple[GCP, ...] = ()
    gcp_crs_wkt: str | None = None
    raster_type: str = "area"
    nodata: float | None = None  # the file's declared nodata (GDAL's; the codec's mask rule is the raster block's)
    tags: dict[str, str] = field(default_factory=dict)  # dataset tags (default domain, AREA_OR_POINT left out)
    bands: tuple[BandInfo, ...] = ()

    def __post_init__(self):
        if self.raster_type not in RASTER_TYPES:
            raise ValueError(f"GeoInfo: raster_type must be one of {RASTER_TYPES}, got {self.raster_type!r}")
        if self.transform is not None and len(self.transform) != 6:
            raise ValueError(f"GeoInfo: a geotransform has 6 numbers, got {len(self.transform)}")

    @property
    def empty(self) -> bool:
        """Nothing worth a block: no CRS, transform, GCPs, tags or band metadata beyond GDAL's defaults."""
        return self == GeoInfo(bands=tuple(BandInfo() for _ in self.bands))

    def shifted(self, x: int, y: int) -> "GeoInfo":
        """The same georeferencing for the crop whose top-left pixel is (x, y): the origin moves to that pixel's
        corner, the GCPs' pixel/line move with it, so the crop sits at the original's world coordinates."""
        t = self.transform
        moved = None if t is None else (t[0] + x * t[1] + y * t[2], t[1], t[2], t[3] + x * t[4] + y * t[5], t[4], t[5])
        gcps = tuple(replace(g, pixel=g.pixel - x, line=g.line - y) for g in self.gcps)
        return replace(self, transform=moved, gcps=gcps)

    def record(self) -> dict:
        """The Parquet record's ``geo`` fields: ``crs`` ("EPSG:n", or WKT for a CRS without a code), ``epsg``,
        ``geotransform`` (as GDAL reports it, PixelIsPoint included), ``raster_type``, ``nodata`` and GCPs."""
        out: dict = {"raster_type": self.raster_type}
        if self.crs_wkt or self.epsg:
            out["crs"] = f"EPSG:{self.epsg}" if self.epsg else self.crs_wkt
            out["epsg"] = self.epsg
        if self.transform is not None:
            out["geotransform"] = list(self.transform)
        if self.nodata is not None:
            out["nodata"] = _number_text(self.nodata)
        if self.gcps:
            out["gcps"] = len(self.gcps)
            out["gcp_crs"] = self.gcp_crs_wkt
        return out

    def to_bytes(self) -> bytes:
        """Compact, key-sorted JSON (UTF-8): the same GeoInfo always gives the same bytes."""
        d = asdict(self)
        d["nodata"] = _float_out(self.nodata)
        return json.dumps(d, separators=(",", ":"), sort_keys=True, ensure_ascii=False, allow_nan=False).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> "GeoInfo":
        """Parse :meth:`to_bytes`; anything else is a CorruptStreamError naming the block."""
        try:
            d = json.loads(bytes(data).decode())
            if not isinstance(d, dict):
                raise TypeError("not a JSON object")
            bands = tuple(BandInfo(**{**b, "tags": dict(b.get("tags", {}))}) for b in d.pop("bands", ()))
            gcps = tuple(GCP(**g) for g in d.pop("gcps", ()))
            transform = d.pop("transform", None)
            nodata = _float_in(d.pop("nodata", None))
            return cls(transform=None if transform is None else tuple(float(v) for v in transform), gcps=gcps,
                       bands=bands, nodata=nodata, **d)
        except (UnicodeDecodeError, ValueError, TypeError, AttributeError) as exc:
            raise CorruptStreamError(f"{BLOCK_NAME} is not a valid GeoInfo ({type(exc).__name__}: {exc})") from None


def _number_text(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def _float_out(v: float | None):
    """JSON has no NaN: a NaN nodata (common for float products) is spelled "nan"."""
    return None if v is None else ("nan" if math.isnan(v) else float(v))


def _float_in(v) -> float | None:
    return None if v is None else float(v)


__all__ = ["GeoInfo", "BandInfo", "GCP", "BLOCK_NAME"]
