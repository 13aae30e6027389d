"""The bitstream (container): a self-describing, versioned header with a tile index, then tile payloads.

Layout (little-endian)::

    magic "TLIC" | version u16 | header_len u32
    model_id (u8 length + UTF-8) | model sha256 (32 bytes)
    width u32 | height u32 | channels u8 | tile_size u16 | mode u8 | target f32 | tile count u32
    tile index: per tile (row-major) offset u64 | length u32 | quality u16 | flags u8 | crc32 u32
    header crc32 u32   (over every header byte before it)
    payload: tile blobs at their offsets (relative to the end of the header)

A tile blob is ``z_len u32 | y_len u32 | z bytes | y bytes`` followed, for RGBA
images, by the tile's alpha plane deflated (lossless). Random access needs only the header.

Version 2 (rasters: any band count, uint8/uint16, nodata, exact tiles; codec.format.raster) writes the
channels byte as 0 and, after the image fields, a raster block::

    dtype u8 (0 uint8, 1 uint16, 2 int16) | bit depth u8 | bands u16 | flags u8 (1 nodata, 2 names, 4 lossless,
    8 nodata per band) | nodata u16 | per band: lo u16, hi u16 | if names: per band name (u16 length + UTF-8)
    | if nodata per band: per band has u8 (0/1), value u16

Issue 26 added, without changing any older stream's bytes: dtype 2 (int16 samples, coded and stored as uint16
value + 32768; lo/hi/nodata in that domain; bit depth 16) and flag 8 (GDAL's per-band nodata rule: a sample
is nodata when it equals ITS band's value; the nodata field then holds 0 and the per-band table the values;
learned tiles' and tile coders' masks are (h, w, bands), codec.format.raster.pack_mask). Without flag 8 a
nodata stream has the per-pixel rule (every band equals the value), as every older stream does.

Its tile index is v1's; a tile's flags say its kind: FLAG_LOSSLESS (codec.tilecoders.jxl_exact payload, exact)
or learned: per band group (codec.format.raster.band_groups) ``quality u16 | z_len u32 | y_len u32``, then
every group's z and y bytes, then, with FLAG_NODATA, the tile's valid mask (codec.format.raster.pack_mask).
The entry's quality is the highest of its groups' (what tile maps show). 8-bit gray/RGB/RGBA
images without nodata or exact tiles are still written as version 1, byte for byte as before.

Version 4 (issue 26: the stream carries its georeferencing) is version 3's layout (a coder id per index entry;
a photo's channels byte non-zero, a raster's 0 and its raster block) with, after the image fields and raster
block, a metadata descriptor ``meta_len u32 | meta_crc u32``; the metadata block itself, ``meta_len`` bytes of
:class:`codec.format.georef.GeoInfo` (compact key-sorted JSON), follows the last tile, checked by its own CRC
(a damaged block is a CorruptStreamError naming the "georeferencing block"). It is written only when there is
georeferencing: a stream without it keeps its v1/v2/v3 bytes. The block trails the payload so tile offsets,
and a reader of the header alone, stay as they are.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

from codec.format import tiles
from codec.format.georef import BLOCK_NAME, GeoInfo
from codec.format.raster import SAMPLE_DTYPES, RasterInfo, band_groups
from codec.errors import CorruptStreamError
from codec.format.inflate import inflate_exact
from codec.quality import quality_of
from codec.options import MODES, RateTarget

MAGIC = b"TLIC"
FORMAT_VERSION = 1  # what 8-bit gray/RGB/RGBA streams are written as
RASTER_VERSION = 2  # rasters (codec.format.raster)
CODER_VERSION = 3  # v2 plus a tile coder id in each index entry: written only when a tile's coder has no v2 spelling
GEO_VERSION = 4  # v3 plus a trailing georeferencing block (codec.format.georef): written only when there is one
VERSIONS = (FORMAT_VERSION, RASTER_VERSION, CODER_VERSION, GEO_VERSION)
INDEXED_CODERS = (CODER_VERSION, GEO_VERSION)  # versions whose index entries carry the coder id
# tile coder ids (u8; codec.tilecoders keys its table by them). v1 spells only LEARNED; v2 spells JXL_EXACT as
# FLAG_LOSSLESS + quality 0xFFFF; v3 stores the id. Ids are assigned here, once, and never reused.
CODER_LEARNED = 0  # the stream's model family codes the tile
CODER_JXL_EXACT = 1  # JPEG XL lossless per band (codec.tilecoders.jxl_exact)
CODER_JXL_LOSSY, CODER_AVIF_444 = 2, 3  # JPEG XL lossy, AVIF 4:4:4 (codec.tilecoders)
CODER_NEAR_LOSSLESS = 4  # the near-lossless coder of max_error (codec.tilecoders.nearlossless)
CODER_J2K = 5  # JPEG 2000 lossy, aimed at a PSNR (codec.tilecoders.j2k)
CODER_IDS = frozenset(range(8))  # 6 and 7 free for the next coders
LOSSLESS_CODE = 0xFFFF  # the quality code an exact tile lists in the index (quality 1.0)
FLAG_MISSED_TARGET = 1
FLAG_ALPHA = 2  # v1: the tile carries its alpha plane
FLAG_LOSSLESS = 4  # v2: the tile is coded exactly (codec.tilecoders.jxl_exact)
FLAG_NODATA = 8  # v2, learned tiles: the tile's valid mask follows the latents
KNOWN_FLAGS = {FORMAT_VERSION: FLAG_MISSED_TARGET | FLAG_ALPHA,
               RASTER_VERSION: FLAG_MISSED_TARGET | FLAG_LOSSLESS | FLAG_NODATA,
               CODER_VERSION: FLAG_MISSED_TARGET | FLAG_NODATA | FLAG_ALPHA,
               GEO_VERSION: FLAG_MISSED_TARGET | FLAG_NODATA | FLAG_ALPHA}
RASTER_NODATA, RASTER_NAMES, RASTER_LOSSLESS = 1, 2, 4
RASTER_BAND_NODATA = 8  # issue 26: nodata per band (GDAL's rule): a per-band table follows the names
RASTER_FLAGS = RASTER_NODATA | RASTER_NAMES | RASTER_LOSSLESS | RASTER_BAND_NODATA
_BAND_NODATA = struct.Struct("<BH")  # per band: has a nodata value u8 (0/1) | value u16 (coded domain)
CHANNELS = (1, 3, 4)  # what prepare() produces: gray, RGB, RGBA

_PREFIX = struct.Struct("<4sHI")
_IMAGE = struct.Struct("<IIBHBfI")
_TILE = struct.Struct("<QIHBI")
_TILE3 = struct.Struct("<QIHBBI")  # v3: offset, length, quality, flags, coder, crc
_CRC = struct.Struct("<I")
_RASTER = struct.Struct("<BBHBH")
_LOHI = struct.Struct("<HH")
_GROUP = struct.Struct("<HII")
_META = struct.Struct("<II")  # v4: metadata block length, crc32
# a header without model id and tiles: prefix, id length, sha256, image fields, CRC
MIN_HEADER_LEN = _PREFIX.size + 1 + 32 + _IMAGE.size + _CRC.size


@dataclass
class TileEntry:
    offset: int
    length: int
    quality_code: int  # u16: the quality the tile was coded at (codec.quality)
    flags: int
    crc: int
    coder: int = CODER_LEARNED  # which tile coder wrote the payload (codec.tilecoders); v1/v2 derive it from flags

    @property
    def quality(self) -> float:
        return quality_of(self.quality_code)

    @property
    def missed_target(self) -> bool:
        return bool(self.flags & FLAG_MISSED_TARGET)

    @property
    def lossless(self) -> bool:
        """Coded exactly (JPEG XL lossless)."""
        return self.coder == CODER_JXL_EXACT

    @property
    def learned(self) -> bool:
        return self.coder == CODER_LEARNED


@dataclass
class Header:
    model_id: str
    model_hash: bytes
    width: int
    height: int
    channels: int
    tile_size: int
    mode: str
    target: float
    tiles: list[TileEntry] = field(default_factory=list)
    version: int = FORMAT_VERSION
    header_len: int = 0
    raster: RasterInfo | None = None  # version 2 only
    lossless: bool = False  # version 2: every tile exact (asked for, not a fallback)
    georef: GeoInfo | None = None  # version 4: the georeferencing block
    georef_len: int = 0  # version 4: bytes of the block after the last tile (as read; pack sets it)

    @property
    def bands(self) -> int:
        """Samples per pixel of the decoded array (gray 1, RGB 3, RGBA 4, or a raster's bands)."""
        return self.raster.bands if self.raster is not None else self.channels

    @property
    def dtype(self) -> str:
        """What decode returns: uint8, uint16 or int16."""
        return self.raster.sample_dtype if self.raster is not None else "uint8"

    @property
    def grid(self) -> tuple[int, int]:
        """(rows, cols) of the tile grid."""
        return tiles.grid(self.width, self.height, self.tile_size)

    def tile_box(self, i: int) -> tiles.Box:
        """(x, y, w, h) of tile ``i`` in image pixels."""
        return tiles.tile_box(i, self.width, self.height, self.tile_size)

    def boxes(self) -> list[tiles.Box]:
        """(x, y, w, h) of every tile, row-major."""
        return tiles.grid_boxes(self.width, self.height, self.tile_size)

    def tile_label(self, i: int) -> str:
        """How errors name tile ``i``: index, row and column."""
        r, c = divmod(i, self.grid[1])
        return f"tile {i} (row {r}, col {c})"


_LENGTHS = struct.Struct("<II")


def tile_blob(z_bytes: bytes, y_bytes: bytes, alpha: bytes | None = None) -> bytes:
    blob = _LENGTHS.pack(len(z_bytes), len(y_bytes)) + z_bytes + y_bytes
    return blob + zlib.compress(alpha, 6) if alpha is not None else blob


def split_tile_blob(blob: bytes, alpha_size: int | None = None) -> tuple[bytes, bytes, bytes | None]:
    """(z bytes, y bytes, alpha plane or None) of a verified tile blob.

    ``alpha_size`` is the tile's pixel count when the image has alpha (the plane must inflate to
    exactly that), None when it has none (then nothing may follow the latents).
    """
    if len(blob) < _LENGTHS.size:
        raise CorruptStreamError("tile blob shorter than its length fields")
    z_len, y_len = _LENGTHS.unpack_from(blob, 0)
    end = _LENGTHS.size + z_len + y_len
    if end > len(blob):
        raise CorruptStreamError("tile blob shorter than its latent lengths")
    z, y = blob[_LENGTHS.size : _LENGTHS.size + z_len], blob[_LENGTHS.size + z_len : end]
    if alpha_size is None:
        if end < len(blob):
            raise CorruptStreamError(f"{len(blob) - end} unexpected bytes after the latents (the image has no alpha)")
        return z, y, None
    return z, y, inflate_alpha(blob[end:], alpha_size)


_SYMBOLS_LEN = struct.Struct("<I")


def symbols_blob(symbols: bytes, alpha: bytes | None = None) -> bytes:
    """The tile blob of a family with one symbol stream per tile (minnen2018): the symbols alone, or for
    images with alpha ``u32 length`` + symbols + the deflated alpha plane."""
    return symbols if alpha is None else _SYMBOLS_LEN.pack(len(symbols)) + symbols + zlib.compress(alpha, 6)


def split_symbols_blob(blob: bytes, has_alpha: bool) -> tuple[bytes, bytes | None]:
    """(symbols, the still deflated alpha plane or None) of a verified :func:`symbols_blob`."""
    if not has_alpha:
        return blob, None
    if len(blob) < _SYMBOLS_LEN.size:
        raise CorruptStreamError("tile blob shorter than its length field")
    (n,) = _SYMBOLS_LEN.unpack_from(blob)
    if _SYMBOLS_LEN.size + n > len(blob):
        raise CorruptStreamError("tile blob shorter than its symbols' length")
    return blob[_SYMBOLS_LEN.size : _SYMBOLS_LEN.size + n], blob[_SYMBOLS_LEN.size + n :]


def photo_coder_blob(payload: bytes, alpha: bytes | None = None) -> bytes:
    """A v3 photo's tile coded by a tile coder: its payload over the colour bands (1 or 3), then for RGBA images
    ``payload length u32`` first and the deflated alpha plane after it (as learned tiles carry it)."""
    if alpha is None:
        return payload
    return struct.pack("<I", len(payload)) + payload + zlib.compress(alpha, 6)


def split_photo_coder_blob(blob: bytes, alpha_size: int | None) -> tuple[bytes, bytes | None]:
    """(coder payload, alpha plane or None) of a verified :func:`photo_coder_blob`."""
    if alpha_size is None:
        return blob, None
    if len(blob) < 4:
        raise CorruptStreamError("tile blob shorter than its payload length")
    (n,) = struct.unpack_from("<I", blob, 0)
    if 4 + n > len(blob):
        raise CorruptStreamError("tile blob shorter than its coder payload")
    return blob[4 : 4 + n], inflate_alpha(blob[4 + n :], alpha_size)


def inflate_alpha(data: bytes, size: int) -> bytes:
    """An alpha plane that must inflate to exactly ``size`` bytes (:func:`codec.format.inflate.inflate_exact`)."""
    return inflate_exact(data, size, "alpha plane")


def pack(header: Header, blobs: list[bytes]) -> bytes:
    """Serialise header + payload; fills in offsets, lengths and CRCs from ``blobs``."""
    if len(header.tiles) != len(blobs):
        raise ValueError("one tile entry per blob")
    offset = 0
    for entry, blob in zip(header.tiles, blobs):
        entry.offset, entry.length, entry.crc = offset, len(blob), zlib.crc32(blob)
        offset += len(blob)
    header.version = _version_for(header)
    raster = header.raster is not None
    block = header.georef.to_bytes() if header.version == GEO_VERSION else b""
    header.georef_len = len(block)
    meta = _META.pack(len(block), zlib.crc32(block)) if header.version == GEO_VERSION else b""
    mid = _model_part(header) + _IMAGE.pack(
        header.width, header.height, 0 if raster else header.channels, header.tile_size,
        MODES.index(header.mode), header.target, len(header.tiles),
    ) + (_raster_part(header) if raster else b"") + meta + b"".join(_entry_bytes(header.version, t) for t in header.tiles)
    header_len = _PREFIX.size + len(mid) + _CRC.size
    head = _PREFIX.pack(MAGIC, header.version, header_len) + mid
    header.header_len = header_len
    return b"".join([head, _CRC.pack(zlib.crc32(head)), *blobs, block])  # one copy of the payload (a 100 MP exact raster: 600 MB)


def with_georef(data: bytes, georef: GeoInfo | None) -> tuple[bytes, Header]:
    """``data`` re-packed with ``georef`` as its metadata block (v4), or without one (its v1/v2/v3 bytes) when
    ``georef`` is None or empty; the tile payloads are copied as they are, checksums verified first."""
    header = read_header(data)
    view = memoryview(data)  # payloads as views: re-packing a 1 GB record costs one copy, not two
    blobs = [tile_payload(view, header, i) for i in range(len(header.tiles))]
    header.georef = None if georef is None or georef.empty else georef
    return pack(header, blobs), header


def _version_for(header: Header) -> int:
    """The version ``header`` is written as: v1 for 8-bit images whose tiles are all learned, v2 for rasters whose
    tiles v2 can spell (learned or JPEG XL exact: today's bytes), v3 once a tile has another coder (photos too:
    a v3 photo keeps v1's image fields, channels byte included, and has no raster block); v4 whenever the header
    carries georeferencing."""
    if header.georef is not None:
        if header.version == FORMAT_VERSION and header.raster is not None:
            raise ValueError("version 1 header with raster info")
        return GEO_VERSION
    if header.raster is None:
        if header.version not in (FORMAT_VERSION, CODER_VERSION, GEO_VERSION):
            raise ValueError("a version 2 header needs raster info")
        return FORMAT_VERSION if all(t.coder == CODER_LEARNED for t in header.tiles) else CODER_VERSION
    if header.version == FORMAT_VERSION:
        raise ValueError("version 1 header with raster info")
    if header.version == GEO_VERSION:  # the block was dropped: back to the version the tiles need
        header.version = RASTER_VERSION
    v2 = all(t.coder in (CODER_LEARNED, CODER_JXL_EXACT) for t in header.tiles)
    return RASTER_VERSION if v2 else CODER_VERSION


def _entry_bytes(version: int, t: TileEntry) -> bytes:
    """One index entry as ``version`` spells it (v2: the exact coder as FLAG_LOSSLESS + quality 0xFFFF)."""
    if t.coder not in CODER_IDS:
        raise ValueError(f"tile coder id {t.coder} is not assigned (codec.format.container.CODER_IDS)")
    if version in INDEXED_CODERS:
        return _TILE3.pack(t.offset, t.length, t.quality_code, t.flags & ~FLAG_LOSSLESS, t.coder, t.crc)
    if version == RASTER_VERSION and t.coder == CODER_JXL_EXACT:
        return _TILE.pack(t.offset, t.length, LOSSLESS_CODE, t.flags | FLAG_LOSSLESS, t.crc)
    return _TILE.pack(t.offset, t.length, t.quality_code, t.flags & ~FLAG_LOSSLESS, t.crc)


def _read_entry(version: int, data: bytes, pos: int) -> TileEntry:
    if version in INDEXED_CODERS:
        offset, length, code, flags, coder, crc = _TILE3.unpack_from(data, pos)
        return TileEntry(offset, length, code, flags, crc, coder)
    t = TileEntry(*_TILE.unpack_from(data, pos))
    if version == RASTER_VERSION and t.flags & FLAG_LOSSLESS:
        t.coder = CODER_JXL_EXACT
    return t


def estimated_overhead(model_id: str, n_tiles: int) -> int:
    """Bytes besides the latents, as rate control budgets them: header, tile index, per-tile
    length fields and range-coder flushes."""
    return 64 + len(model_id) + 19 * n_tiles + 16 * n_tiles


def _raster_part(h: Header) -> bytes:
    r = h.raster
    band = r.band_nodata is not None
    flags = (RASTER_NODATA if r.has_nodata else 0) | (RASTER_NAMES if r.band_names is not None else 0) | (
        RASTER_LOSSLESS if h.lossless else 0) | (RASTER_BAND_NODATA if band else 0)
    out = [_RASTER.pack(SAMPLE_DTYPES.index(r.sample_dtype), r.bit_depth, r.bands, flags,
                        0 if band else r.nodata or 0)]
    out += [_LOHI.pack(lo, hi) for lo, hi in zip(r.lo, r.hi)]
    for name in r.band_names or ():
        b = name.encode()
        if len(b) > 65535:
            raise ValueError(f"band name of {len(b)} bytes (at most 65535)")
        out.append(struct.pack("<H", len(b)) + b)
    if band:
        out += [_BAND_NODATA.pack(v is not None, v or 0) for v in r.band_nodata]
    return b"".join(out)


def _read_raster(data: bytes, pos: int, end: int) -> tuple[RasterInfo, bool, int]:
    """(RasterInfo, lossless, position after it) of a v2 raster block ending before ``end``; every field checked."""
    if pos + _RASTER.size > end:
        raise CorruptStreamError("header too short for its raster block")
    dtype, depth, bands, flags, nodata = _RASTER.unpack_from(data, pos)
    pos += _RASTER.size
    if dtype >= len(SAMPLE_DTYPES):
        raise CorruptStreamError(f"unknown sample type {dtype}")
    signed = SAMPLE_DTYPES[dtype] == "int16"
    coded = "uint16" if signed else SAMPLE_DTYPES[dtype]
    top_bits = 8 if coded == "uint8" else 16
    if not (depth == 16 if signed else 1 <= depth <= top_bits):
        raise CorruptStreamError(f"bit depth {depth} is impossible for {SAMPLE_DTYPES[dtype]} samples")
    if bands == 0:
        raise CorruptStreamError("raster of 0 bands")
    if flags & ~RASTER_FLAGS:
        raise CorruptStreamError(f"unknown raster flags {flags:#x}")
    top = (1 << top_bits) - 1
    if flags & RASTER_BAND_NODATA and (not flags & RASTER_NODATA or nodata):
        raise CorruptStreamError("per-band nodata without the nodata flag, or with a nodata field")
    if flags & RASTER_NODATA:
        if nodata > top:
            raise CorruptStreamError(f"nodata {nodata} does not fit {coded} samples")
    elif nodata:
        raise CorruptStreamError("nodata value without the nodata flag")
    if pos + bands * _LOHI.size > end:
        raise CorruptStreamError(f"header too short for {bands} bands' ranges")
    lohi = [_LOHI.unpack_from(data, pos + b * _LOHI.size) for b in range(bands)]
    pos += bands * _LOHI.size
    for b, (lo, hi) in enumerate(lohi):
        if lo > hi or hi >= 1 << depth:
            raise CorruptStreamError(f"band {b}: range [{lo}, {hi}] is impossible at {depth} bits")
    names = None
    if flags & RASTER_NAMES:
        names = []
        for b in range(bands):
            if pos + 2 > end:
                raise CorruptStreamError(f"header too short for band {b}'s name")
            (n,) = struct.unpack_from("<H", data, pos)
            if pos + 2 + n > end:
                raise CorruptStreamError(f"header too short for band {b}'s {n}-byte name")
            try:
                names.append(data[pos + 2 : pos + 2 + n].decode())
            except UnicodeDecodeError as exc:
                raise CorruptStreamError(f"band {b}'s name is not UTF-8 ({exc.reason})") from exc
            pos += 2 + n
    shared, band_nodata = nodata if flags & RASTER_NODATA else None, None
    if flags & RASTER_BAND_NODATA:
        band_nodata, pos = _read_band_nodata(data, pos, end, bands, top)
        values = {v for v in band_nodata if v is not None}
        shared = values.pop() if len(values) == 1 else None
    info = RasterInfo(coded, depth, bands, tuple(v[0] for v in lohi), tuple(v[1] for v in lohi),
                      shared, tuple(names) if names is not None else None, band_nodata, signed)
    return info, bool(flags & RASTER_LOSSLESS), pos


def _read_band_nodata(data: bytes, pos: int, end: int, bands: int, top: int) -> tuple[tuple[int | None, ...], int]:
    """(per band nodata value or None, position after) of the v2 per-band nodata table; every field checked."""
    if pos + bands * _BAND_NODATA.size > end:
        raise CorruptStreamError(f"header too short for {bands} bands' nodata values")
    out = []
    for b in range(bands):
        has, value = _BAND_NODATA.unpack_from(data, pos + b * _BAND_NODATA.size)
        if has > 1 or not has and value or value > top:
            raise CorruptStreamError(f"band {b}: nodata entry ({has}, {value}) is impossible")
        out.append(value if has else None)
    if all(v is None for v in out):
        raise CorruptStreamError("per-band nodata table without a value")
    return tuple(out), pos + bands * _BAND_NODATA.size


def raster_tile_blob(groups: list[tuple[int, bytes, bytes]], mask: bytes | None = None) -> bytes:
    """A learned v2 tile: per band group (quality code, z bytes, y bytes), then the deflated valid mask if any."""
    head = b"".join(_GROUP.pack(code, len(z), len(y)) for code, z, y in groups)
    return head + b"".join(z + y for _, z, y in groups) + (mask or b"")


def split_raster_blob(blob: bytes, n_groups: int, has_mask: bool) -> tuple[list[tuple[int, bytes, bytes]], bytes | None]:
    """(per group (code, z, y), mask bytes or None) of a verified learned v2 tile."""
    pos = n_groups * _GROUP.size
    if len(blob) < pos:
        raise CorruptStreamError(f"tile blob shorter than its {n_groups} groups' length fields")
    heads = [_GROUP.unpack_from(blob, g * _GROUP.size) for g in range(n_groups)]
    groups = []
    for g, (code, z_len, y_len) in enumerate(heads):
        if pos + z_len + y_len > len(blob):
            raise CorruptStreamError(f"tile blob shorter than band group {g}'s latents")
        groups.append((code, blob[pos : pos + z_len], blob[pos + z_len : pos + z_len + y_len]))
        pos += z_len + y_len
    if has_mask:
        if pos == len(blob):
            raise CorruptStreamError("nodata mask missing")
        return groups, blob[pos:]
    if pos != len(blob):
        raise CorruptStreamError(f"{len(blob) - pos} unexpected bytes after the latents (the tile has no nodata)")
    return groups, None


def _model_part(h: Header) -> bytes:
    mid = h.model_id.encode()
    if len(mid) > 255 or len(h.model_hash) != 32:
        raise ValueError("model id must be ≤255 bytes and the hash 32 bytes")
    return bytes([len(mid)]) + mid + h.model_hash


def read_header(data: bytes) -> Header:
    """Parse and verify the header: magic, version, CRC, every field, and a tile index that lies in ``data``.

    Everything after the CRC is checked too, because a crafted stream can carry a valid CRC: a field
    the encoder never writes is a CorruptStreamError here, not an exception deep in the decoder.
    """
    if len(data) < _PREFIX.size:
        raise CorruptStreamError(f"stream of {len(data)} bytes is too short to hold a header")
    magic, version, header_len = _PREFIX.unpack_from(data, 0)
    if magic != MAGIC:
        raise CorruptStreamError(f"not a TLIC stream (magic {magic!r}, expected {MAGIC!r})")
    if version not in VERSIONS:
        raise CorruptStreamError(f"unsupported format version {version} (this decoder reads {', '.join(map(str, VERSIONS))})")
    if header_len < MIN_HEADER_LEN:
        raise CorruptStreamError(f"header length {header_len} is below the smallest header ({MIN_HEADER_LEN} bytes)")
    if header_len > len(data):
        raise CorruptStreamError(f"truncated header: needs {header_len} bytes, stream has {len(data)}")
    head = data[: header_len - _CRC.size]
    (crc,) = _CRC.unpack_from(data, header_len - _CRC.size)
    if zlib.crc32(head) != crc:
        raise CorruptStreamError("header checksum mismatch: the header is corrupted")
    pos = _PREFIX.size
    id_len = data[pos]
    if MIN_HEADER_LEN + id_len > header_len:
        raise CorruptStreamError(f"header of {header_len} bytes cannot hold a {id_len}-byte model id")
    try:
        model_id = data[pos + 1 : pos + 1 + id_len].decode()
    except UnicodeDecodeError as exc:
        raise CorruptStreamError(f"model id is not UTF-8 ({exc.reason})") from exc
    pos += 1 + id_len
    model_hash = data[pos : pos + 32]
    pos += 32
    width, height, channels, tile_size, mode, target, n_tiles = _IMAGE.unpack_from(data, pos)
    pos += _IMAGE.size
    raster, lossless = None, False
    photo = version == FORMAT_VERSION or version in INDEXED_CODERS and channels != 0  # v3/v4 photos: no raster block
    if not photo:
        if channels != 0:
            raise CorruptStreamError(f"version {version} header with {channels} in its channels byte (must be 0)")
        raster, lossless, pos = _read_raster(data, pos, header_len - _CRC.size)
        channels = raster.bands
    meta_len, meta_crc, pos = _read_meta(version, data, pos, header_len - _CRC.size)
    _check_image_fields(width, height, channels if raster is None else 1, tile_size, mode, target)
    h = Header(model_id, model_hash, width, height, channels, tile_size, MODES[mode], target, [], version, header_len,
               raster, lossless, georef_len=meta_len)
    rows, cols = h.grid
    if rows * cols != n_tiles:
        raise CorruptStreamError(f"tile index lists {n_tiles} tiles, a {width}×{height} image in {tile_size}px tiles has {rows * cols}")
    entry = _TILE3 if version in INDEXED_CODERS else _TILE
    if pos + n_tiles * entry.size + _CRC.size != header_len:
        raise CorruptStreamError(f"header length {header_len} does not match its {n_tiles}-tile index")
    h.tiles = [_read_entry(version, data, pos + i * entry.size) for i in range(n_tiles)]
    if version != GEO_VERSION:
        _check_tile_index(h, len(data) - header_len)
        return h
    tiles_end = sum(t.length for t in h.tiles)  # the block follows the tiles: they may not reach into it
    _check_tile_index(h, min(len(data) - header_len, tiles_end))
    h.georef = _read_georef(data, header_len + tiles_end, meta_len, meta_crc)
    return h


def _read_meta(version: int, data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(block length, block crc, position after) of a v4 metadata descriptor; (0, 0, pos) for other versions."""
    if version != GEO_VERSION:
        return 0, 0, pos
    if pos + _META.size > end:
        raise CorruptStreamError(f"header too short for its {BLOCK_NAME} descriptor")
    return (*_META.unpack_from(data, pos), pos + _META.size)


def _read_georef(data: bytes, start: int, length: int, crc: int) -> GeoInfo:
    """The v4 metadata block at ``start``: present in full, its CRC right, a GeoInfo; else CorruptStreamError."""
    block = data[start : start + length]
    if len(block) < length:
        raise CorruptStreamError(f"truncated stream: the {BLOCK_NAME} needs {length} bytes at {start}, "
                                 f"the stream has {max(0, len(data) - start)}")
    if zlib.crc32(block) != crc:
        raise CorruptStreamError(f"{BLOCK_NAME} checksum mismatch: the georeferencing is corrupted")
    return GeoInfo.from_bytes(block)


def _check_image_fields(width: int, height: int, channels: int, tile_size: int, mode: int, target: float) -> None:
    """The image description must be one the encoder can write."""
    if width == 0 or height == 0:
        raise CorruptStreamError(f"empty image ({width}×{height})")
    if channels not in CHANNELS:
        raise CorruptStreamError(f"{channels} channels (streams hold {', '.join(map(str, CHANNELS))})")
    try:
        tiles.check_tile_size(tile_size)
    except ValueError:
        raise CorruptStreamError(f"tile size {tile_size} is not a multiple of 64 in "
                                 f"[{tiles.MIN_TILE}, {tiles.MAX_TILE}]") from None
    if mode >= len(MODES):
        raise CorruptStreamError(f"unknown rate-control mode {mode}")
    try:
        RateTarget(MODES[mode], target)  # the encoder's own rule: what it accepts is what it writes
    except ValueError as exc:
        raise CorruptStreamError(f"target {target} is out of range for mode {MODES[mode]} ({exc})") from None


def _check_tile_index(h: Header, payload_len: int) -> None:
    """Known flags only, alpha exactly where the image has it, tiles disjoint and inside the payload.

    Every u16 quality code is a valid quality (codes map onto [0, 1]), so quality needs no check.
    """
    for i, t in enumerate(h.tiles):
        if t.flags & ~KNOWN_FLAGS[h.version]:
            raise CorruptStreamError(f"{h.tile_label(i)}: unknown flags {t.flags:#x}")
        if t.coder not in CODER_IDS:
            raise CorruptStreamError(f"{h.tile_label(i)}: unknown tile coder id {t.coder}")
        if h.raster is not None:
            if t.flags & FLAG_NODATA and (not h.raster.has_nodata or t.lossless):
                raise CorruptStreamError(f"{h.tile_label(i)}: nodata mask flag on a "
                                         f"{'lossless tile' if t.lossless else 'raster without nodata'}")
            if t.flags & FLAG_ALPHA:
                raise CorruptStreamError(f"{h.tile_label(i)}: alpha flag on a raster's tile")
            if h.lossless and not t.lossless:
                raise CorruptStreamError(f"{h.tile_label(i)}: a tile not coded exactly in a lossless stream")
        elif t.flags & FLAG_NODATA:
            raise CorruptStreamError(f"{h.tile_label(i)}: nodata mask flag on a photo's tile")
        elif bool(t.flags & FLAG_ALPHA) != (h.channels == 4):
            raise CorruptStreamError(f"{h.tile_label(i)}: alpha flag does not match the image's {h.channels} channels")
        if t.offset + t.length > payload_len:
            raise CorruptStreamError(f"truncated stream: {h.tile_label(i)} needs payload bytes up to "
                                     f"{t.offset + t.length}, the stream has {payload_len}")
    end = 0
    for i in sorted(range(len(h.tiles)), key=lambda i: h.tiles[i].offset):
        if h.tiles[i].offset < end:
            raise CorruptStreamError(f"{h.tile_label(i)} overlaps another tile's bytes")
        end = h.tiles[i].offset + h.tiles[i].length


def tile_payload(data: bytes, header: Header, i: int) -> bytes:
    """The verified payload of tile ``i``; raises if it is truncated or its CRC fails."""
    t = header.tiles[i]
    start = header.header_len + t.offset
    end = start + t.length
    if end > len(data):
        raise CorruptStreamError(f"truncated stream: tile {i} needs bytes up to {end}, stream has {len(data)}")
    blob = data[start:end]
    if zlib.crc32(blob) != t.crc:
        raise CorruptStreamError(f"{header.tile_label(i)} checksum mismatch: payload corrupted")
    return blob


def raster_tile_parts(data: bytes, header: Header, i: int) -> tuple[list[tuple[int, bytes, bytes]], bytes | None]:
    """(per group (code, z, y), deflated mask or None) of learned v2 tile ``i``, verified."""
    try:
        return split_raster_blob(tile_payload(data, header, i), len(band_groups(header.raster.bands)),
                                 bool(header.tiles[i].flags & FLAG_NODATA))
    except CorruptStreamError as exc:
        raise CorruptStreamError(f"{header.tile_label(i)}: {exc}") from exc


def tile_parts(data: bytes, header: Header, i: int) -> tuple[bytes, bytes, bytes | None]:
    """(z bytes, y bytes, alpha plane or None) of tile ``i``: verified, and the alpha plane inflated
    to exactly the tile's size (never more, so a deflate bomb costs nothing)."""
    blob = tile_payload(data, header, i)
    _, _, w, h = header.tile_box(i)
    try:
        return split_tile_blob(blob, w * h if header.channels == 4 else None)
    except CorruptStreamError as exc:
        raise CorruptStreamError(f"{header.tile_label(i)}: {exc}") from exc


def check_length(data: bytes, header: Header) -> None:
    expected = header.header_len + sum(t.length for t in header.tiles) + header.georef_len
    if len(data) < expected:
        raise CorruptStreamError(f"truncated stream: {len(data)} bytes, header describes {expected}")
    if len(data) > expected:
        raise CorruptStreamError(f"{len(data) - expected} unexpected trailing bytes after the last tile")
