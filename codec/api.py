"""Public encode/decode functions: arrays in, bytes out, and back; wiring only.

    image ─EncodeOptions (validated once)─▶ THE raster rule (codec.format.raster) ─▶ the model's family
          (codec.families: photo → encode_image; raster → encode_raster) or, for every tile, one tile coder
          (codec.tilecoders) ─▶ bytes
    bytes ─read_header─▶ tile index ─(only the tiles needed, checksums first)─▶ learned tiles: the family;
          other tiles: the tile coder their index entry names ─▶ image or region

No family is named here: which family codes a model is the table's (codec.families), which coder codes a
tile is the index entry's (codec.tilecoders).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from codec import bounded, tilecoders
from codec.errors import CorruptStreamError, ModelMismatchError, StreamTooLargeError, UnsupportedImageError
from codec.format import container, raster as rasters
from codec.format.container import RASTER_VERSION, Header, TileEntry
from codec.format.tiles import DEFAULT_TILE, Box, grid_boxes, intersecting, overlap
from codec.options import DEFAULT_TARGET_PSNR, DecodeOptions, EncodeOptions
from codec.registry import LoadedModel, default_model_name, load_model
from codec.results import EncodeResult


def encode(image: np.ndarray, model: str | LoadedModel | None = None, options: EncodeOptions | None = None,
           **keywords) -> EncodeResult:
    """Encode an image or raster with ``options`` (:class:`codec.options.EncodeOptions`), or with its fields as
    keywords (plus at most one of ``target_psnr`` (default 38 dB), ``quality``, ``target_bpp``, ``max_error``
    or a ready ``target``). ``max_error=E`` keeps every sample within ±E (codec.bounded; E=0: lossless).

    8-bit (H, W), (H, W, 1|3|4) arrays without nodata are coded as today (stream version 1). Anything
    else (THE rule: :func:`codec.format.raster.is_raster`) is a raster (version 2): decoded to the same dtype
    and band order, nodata exactly. ``lossless`` codes every tile exactly; ``lossless_fallback`` codes exactly
    the raster tiles a ``target_psnr`` cannot reach even at the model's top quality. With ``model=None`` the
    codec's choice (:func:`codec.registry.default_model_name`). ``device``/``half``/``entropy_workers``/
    ``overlap_coding`` change where the work runs, never a bit.
    """
    if options is None:
        options = EncodeOptions.from_keywords(**keywords)
    elif keywords:
        raise ValueError(f"give options or keywords, not both (got {', '.join(sorted(keywords))})")
    if options.target.max_error == 0:
        options = options.with_(lossless=True)  # ±0 is lossless: the exact path, the header still says max_error 0
    raster = is_raster(image, options.nodata, options.bit_depth, options.band_names,
                       options.coder_name is not None)
    loaded = model if isinstance(model, LoadedModel) else load_model(model or default_model_name(raster))
    family = loaded.family
    reason = family.refuses(raster, options)
    if reason is not None:
        raise UnsupportedImageError(f"{options.name}: {reason}")
    return _with_georef(_encode(image, raster, loaded, options), options.georef)


def _encode(image, raster: bool, loaded: LoadedModel, options: EncodeOptions) -> EncodeResult:
    family = loaded.family
    bounded_mode = options.target.max_error is not None and not options.lossless
    if not raster:
        return bounded.encode_photo(image, loaded, options) if bounded_mode else family.encode_image(image, loaded, options)
    img, header, valid, counts = _describe_raster(image, loaded, options)
    if bounded_mode:
        return bounded.encode_raster(img, header, valid, counts, options)
    if options.coder_name is not None:
        return _encode_with_coder(img, header, options)
    return family.encode_raster(img, header, valid, counts, loaded, options)


def _with_georef(result: EncodeResult, georef) -> EncodeResult:
    """The stream with its georeferencing block (v4) when there is georeferencing; untouched otherwise."""
    if georef is None or georef.empty:
        return result
    data, header = container.with_georef(result.data, georef)
    return dataclasses.replace(result, data=data, header=header)


def is_raster(image, nodata=None, bit_depth=None, band_names=None, lossless: bool = False) -> bool:
    """Whether ``image`` (with these options) is coded as a raster (v2): :func:`codec.format.raster.is_raster`."""
    return rasters.is_raster(getattr(image, "dtype", None), rasters.image_bands(image), nodata=nodata,
                             bit_depth=bit_depth, band_names=band_names, lossless=lossless)


def _describe_raster(image, loaded: LoadedModel, options: EncodeOptions):
    """(checked (H, W, B) raster, its v2 header without tiles, per-tile valid masks, valid pixels per tile)."""
    checked = rasters.check_raster(image, options.name)
    img = rasters.to_coded(checked)  # int16: uint16 value + 32768, the dtype recorded in the stream
    h, w, n_bands = img.shape
    boxes = grid_boxes(w, h, options.tile_size)
    info, valid = rasters.describe(img, boxes, options.nodata, options.bit_depth, options.band_names, options.name,
                                   options.nodata_mode, signed=checked.dtype == np.int16)
    header = Header(loaded.model_id, loaded.sha256, w, h, n_bands, options.tile_size, options.target.mode,
                    options.target.value, version=RASTER_VERSION, raster=info, lossless=options.lossless)
    return img, header, valid, rasters.valid_counts(boxes, valid, n_bands, info.band_nodata is not None)


def _encode_with_coder(img: np.ndarray, header: Header, options: EncodeOptions) -> EncodeResult:
    """Every tile with one tile coder (``lossless``: JPEG XL exact). The container writes v2 where it can spell
    the coder (today's bytes) and v3 otherwise."""
    coder = tilecoders.by_name(options.coder_name)
    if coder.encode is None or coder.needs_prediction:
        raise UnsupportedImageError(f"{options.name}: tile coder {coder.name!r} cannot code every tile on its own")
    info, blobs, entries = header.raster, [], []
    for x, y, bw, bh in header.boxes():
        ctx = tilecoders.TileContext(bh, bw, info.bands, info.dtype, info.rule)
        blobs.append(coder.encode_tile(np.asarray(img[y : y + bh, x : x + bw]), ctx))
        entries.append(TileEntry(0, 0, container.LOSSLESS_CODE if coder.exact else 0, 0, 0, coder.id))
    header.tiles = entries
    data = container.pack(header, blobs)
    exact = coder.exact
    return EncodeResult(data, header, np.full(len(entries), np.inf if exact else np.nan), float("inf") if exact else None)


# --- decoding ------------------------------------------------------------------------------


def read_header(data: bytes) -> Header:
    """Parse and verify a stream's header (no model needed)."""
    return container.read_header(bytes(data))


def _model_for(header: Header, model: str | LoadedModel | None) -> LoadedModel:
    """The model a stream needs: the one given, or the one its header names; its hash must match."""
    loaded = model if isinstance(model, LoadedModel) else load_model(model or header.model_id)
    if loaded.sha256 != header.model_hash:
        raise ModelMismatchError(
            f"stream was encoded with model {header.model_id} (sha256 {header.model_hash.hex()[:16]}…); "
            f"{loaded.model_id} (sha256 {loaded.hash_hex[:16]}…) cannot decode it"
        )
    return loaded


def decode(data: bytes, model: str | LoadedModel | None = None, *, header: Header | None = None,
           **options) -> np.ndarray:
    """Decode a whole image; verifies every checksum first. ``options``: :class:`codec.options.DecodeOptions`'
    fields (``max_pixels`` refuses, before allocating anything, a stream of more pixels: a few bytes of stream
    can describe a huge image; ``max_bits``: a progressive preview, for families that have one)."""
    header = header or read_header(data)
    container.check_length(data, header)
    return decode_region(data, (0, 0, header.width, header.height), model, header=header, **options)


def decode_region(data: bytes, box: tuple[int, int, int, int], model: str | LoadedModel | None = None, *,
                  header: Header | None = None, **options) -> np.ndarray:
    """Decode only the tiles covering ``box = (x, y, w, h)`` and return that crop.

    ``max_pixels`` bounds the pixels of the tiles decoded (at least the region's), checked before any
    allocation. Tiles are verified up front and inflated batch by batch, so memory beyond the output stays
    bounded by a few batches.
    """
    opts = options.pop("options", None) or DecodeOptions(**options)
    data = bytes(data)
    header = header or read_header(data)
    region = _region_inside(header, box)
    boxes = header.boxes()
    ids = intersecting(boxes, region)
    _check_pixels(header, boxes, ids, region, opts.max_pixels)
    for i in ids:  # every checksum before any work: a damaged stream fails fast
        container.tile_payload(data, header, i)
    if header.raster is None:
        return _decode_photo(data, header, ids, region, model, opts)
    if opts.max_bits is not None:
        raise ValueError("max_bits: progressive decoding is not available for raster streams")
    return _decode_raster(data, header, ids, region, model, opts)


def _decode_photo(data: bytes, header: Header, ids: list[int], region: Box, model, opts: DecodeOptions) -> np.ndarray:
    """The region of an 8-bit image: learned tiles by the model's family (loaded only when there are any), tiles
    of a tile coder (v3) one by one over their colour bands, alpha from the tile."""
    learned = [i for i in ids if header.tiles[i].learned]
    if learned:
        loaded = _model_for(header, model)
        out = loaded.family.decode_image(data, header, loaded, region, learned, opts)
    else:
        out = np.empty((region[3], region[2]) + (() if header.channels == 1 else (header.channels,)), dtype=np.uint8)
    boxes, colour = header.boxes(), 1 if header.channels == 1 else 3
    for i in ids:
        if header.tiles[i].learned:
            continue
        _, _, bw, bh = boxes[i]
        try:
            payload, alpha = container.split_photo_coder_blob(container.tile_payload(data, header, i),
                                                              bw * bh if header.channels == 4 else None)
            block = tilecoders.coder(header.tiles[i].coder).decode_tile(
                payload, tilecoders.TileContext(bh, bw, colour, "uint8"))
        except CorruptStreamError as exc:
            raise CorruptStreamError(f"{header.tile_label(i)}: {exc}") from exc
        if alpha is not None:
            block = np.concatenate([block, np.frombuffer(alpha, np.uint8).reshape(bh, bw, 1)], axis=2)
        into, part = overlap(boxes[i], region)
        out[into] = block[..., 0][part] if header.channels == 1 else block[part]
    return out


def _decode_raster(data: bytes, header: Header, ids: list[int], region: Box, model, opts: DecodeOptions) -> np.ndarray:
    """The region of a raster: tiles of a tile coder decoded one by one, learned tiles by the model's family
    (loaded only when there are any). (H, W) for one band."""
    info, boxes = header.raster, header.boxes()
    out = np.empty((region[3], region[2], info.bands), dtype=info.dtype)
    learned = [i for i in ids if header.tiles[i].learned]
    for i in ids:
        if header.tiles[i].learned:
            continue
        _, _, bw, bh = boxes[i]
        ctx = tilecoders.TileContext(bh, bw, info.bands, info.dtype, info.rule)
        try:
            coder = tilecoders.coder(header.tiles[i].coder)
            block = coder.decode_tile(container.tile_payload(data, header, i), ctx)
        except CorruptStreamError as exc:
            raise CorruptStreamError(f"{header.tile_label(i)}: {exc}") from exc
        into, part = overlap(boxes[i], region)
        out[into] = block[part]
    if learned:
        loaded = _model_for(header, model)
        loaded.family.decode_raster_tiles(data, header, loaded, learned, region, out, opts)
    out = rasters.from_coded(out, info)  # int16 rasters: back from the coded uint16
    return out[..., 0] if info.bands == 1 else out


def _region_inside(header: Header, box) -> Box:
    x0, y0, bw, bh = (int(v) for v in box)
    if bw <= 0 or bh <= 0 or x0 < 0 or y0 < 0 or x0 + bw > header.width or y0 + bh > header.height:
        raise ValueError(f"region {box} is not inside the {header.width}×{header.height} image")
    return x0, y0, bw, bh


def _check_pixels(header: Header, boxes: list[Box], ids: list[int], region: Box, max_pixels: int) -> None:
    """StreamTooLargeError when the tiles to decode hold more than ``max_pixels`` pixels."""
    pixels = sum(boxes[i][2] * boxes[i][3] for i in ids)
    if pixels > max_pixels:
        what = "the image" if pixels == header.width * header.height else f"region {region}'s {len(ids)} tiles"
        raise StreamTooLargeError(f"{header.width}×{header.height} stream: decoding {what} means {pixels} pixels, "
                                  f"over the limit of {max_pixels} (max_pixels)")


__all__ = ["EncodeResult", "encode", "is_raster", "decode", "decode_region", "read_header", "DEFAULT_TILE",
           "DEFAULT_TARGET_PSNR"]
