"""Public encode/decode functions: arrays in, bytes out, and back.

    image ─prepare─▶ tiles ─engine.batches─▶ strategy.choose (ratecontrol) ─▶ engine.encode_latents ─▶ bitstream.pack ─▶ bytes
    bytes ─read_header─▶ tile index ─(only the tiles needed)─▶ engine.decode_latents ─▶ engine.synthesize ─▶ image or region

This module only wires the parts together: which quality a tile gets is :mod:`codec.families.hyperprior.ratecontrol`'s,
the batched model work :mod:`codec.families.hyperprior.engine`'s, the tile grid :mod:`codec.format.tiles`' and the format
:mod:`codec.format.container`'s.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from codec.format import raster as bands, container as bitstream
from codec.tilecoders import jxl_exact as exact
from codec.families.hyperprior import ratecontrol
from codec.format.container import FLAG_ALPHA, FLAG_LOSSLESS, FLAG_MISSED_TARGET, FLAG_NODATA, RASTER_VERSION, Header, TileEntry
from codec.families.hyperprior.engine import Engine, get_coder, map_ahead, psnr_from_mse
from codec.errors import CodecError, CorruptStreamError, ModelMismatchError, StreamTooLargeError, UnsupportedImageError
from codec.images.imageio import DEFAULT_MAX_PIXELS
from codec.images.prep import PreparedImage, finish, prepare
from codec.metrics import bits_per_sample, psnr_from_band_sse
from codec.rangecoder import RangeCodingError, is_panic
from codec.families.hyperprior.ratecontrol import DEFAULT_TARGET_PSNR, RateTarget
from codec.registry import LoadedModel, default_model_name, load_model
from codec.format.tiles import DEFAULT_TILE, Box, batches, check_tile_size, grid_boxes, intersecting, latent_grid, overlap

LOSSLESS_CODE = 0xFFFF  # the quality code an exact tile lists in the index (quality 1.0)


@dataclass
class EncodeResult:
    data: bytes
    header: Header
    tile_psnr: np.ndarray  # per tile, NaN where not measured (quality mode); inf for exact tiles
    psnr: float | None  # whole image, when every tile was measured: 8-bit v1 streams today's PSNR over all
    #                     colour samples; rasters (v2) codec.metrics.raster_psnr (valid pixels, peak = image's)

    @property
    def bpp(self) -> float:
        return len(self.data) * 8 / (self.header.width * self.header.height)

    @property
    def bits_per_sample(self) -> float:
        """codec.metrics.bits_per_sample: bits / (pixels × bands) (RGB: bpp / 3)."""
        return bits_per_sample(len(self.data), self.header.height, self.header.width, self.header.bands)

    @property
    def raster_psnr(self) -> float | None:
        """The raster PSNR (codec.metrics) of a v2 stream; None for 8-bit v1 streams (see ``psnr``)."""
        return self.psnr if self.header.raster is not None else None

    @property
    def missed_tiles(self) -> int:
        return sum(t.missed_target for t in self.header.tiles)


def encode(
    image: np.ndarray,
    model: str | LoadedModel | None = None,
    *,
    target_psnr: float | None = None,
    quality: float | None = None,
    target_bpp: float | None = None,
    target: RateTarget | None = None,
    tile_size: int = DEFAULT_TILE,
    device: str = "cpu",
    half: bool = False,
    batch_size: int = 8,
    entropy_workers: int = 0,
    overlap_coding: bool | None = None,
    name: str = "image",
    nodata: int | None = None,
    bit_depth: int | None = None,
    band_names=None,
    lossless: bool = False,
    lossless_fallback: bool = True,
) -> EncodeResult:
    """Encode an image or raster. At most one of ``target_psnr`` (default 38 dB), ``quality`` or
    ``target_bpp`` (bits per sample for rasters), or a ready :class:`~codec.families.hyperprior.ratecontrol.RateTarget` as
    ``target`` (what a job validated once).

    8-bit (H, W), (H, W, 1|3|4) arrays without nodata are coded as today (stream version 1). Anything
    else, uint8/uint16 with any band count, or with ``nodata`` (a pixel whose bands ALL equal it),
    ``bit_depth``, ``band_names`` or ``lossless``, is a raster (version 2, :mod:`codec.format.raster`): decoded
    to the same dtype and band order, nodata exactly. ``lossless`` codes every tile exactly
    (:mod:`codec.tilecoders.jxl_exact`); ``lossless_fallback`` codes exactly the raster tiles a ``target_psnr`` cannot
    reach even at the model's top quality (else they are coded at the top and flagged missed).
    With ``model=None`` a raster uses :func:`codec.registry.default_model_name`'s choice.

    ``device``/``half`` run the transforms on a GPU (float16); ``entropy_workers`` range-codes
    tiles in that many CPU processes; ``overlap_coding`` range-codes each batch on a background thread
    while the next batch's transforms run (default: on a GPU or with entropy workers, see
    :meth:`~codec.families.hyperprior.engine.Engine.overlaps`). None of them changes a bit: any device decodes.
    """
    if target is None:
        target = RateTarget.from_options(target_psnr=target_psnr, quality=quality, target_bpp=target_bpp)
    elif any(v is not None for v in (target_psnr, quality, target_bpp)):
        raise ValueError("give target or one of target_psnr, quality, target_bpp, not both")
    check_tile_size(tile_size)
    raster = is_raster(image, nodata, bit_depth, band_names, lossless)
    if isinstance(model, LoadedModel):
        loaded = model
    else:  # no model named: the codec's one rule (codec.registry.default_model_name)
        loaded = load_model(model or default_model_name(raster))
    if _family(loaded) == "minnen2018":
        if raster:
            raise UnsupportedImageError(f"{name}: the minnen2018 family codes 8-bit gray/RGB images, not rasters "
                                        "(16-bit, multi-band, nodata or lossless): use a hyperprior model")
        from codec.families.minnen2018 import coding

        return coding.encode(image, loaded, target, tile_size=tile_size, name=name)
    if raster:
        return _encode_raster(image, loaded, target, tile_size, device, half, batch_size, entropy_workers, name,
                              nodata, bit_depth, band_names, lossless, lossless_fallback, overlap_coding)
    img = prepare(image, name)
    loaded, engine = get_coder(loaded, device, half, entropy_workers)
    header = Header(loaded.model_id, loaded.sha256, img.width, img.height, img.channels, tile_size,
                    target.mode, target.value)
    boxes = header.boxes()
    strategy = ratecontrol.plan(target, engine, lambda: engine.batches(img, boxes, batch_size),
                                width=img.width, height=img.height, n_tiles=len(boxes),
                                overhead_bytes=bitstream.estimated_overhead(loaded.model_id, len(boxes)))
    while strategy is not None:  # one pass, or more where the strategy asks for another (target_bpp)
        result = _encode_pass(engine, img, header, boxes, strategy, batch_size, overlap_coding)
        strategy = strategy.retry(len(result.data))
    return result


def _encode_pass(engine: Engine, img: PreparedImage, header: Header, boxes: list[Box],
                 strategy: ratecontrol.Strategy, batch_size: int,
                 overlap_coding: bool | None = None) -> EncodeResult:
    """Analyse every tile, let ``strategy`` choose its quantisation, entropy-code, pack.

    With ``overlap_coding``, batch k is range-coded while batch k+1 is analysed and quantised."""
    blobs: list[bytes] = [b""] * len(boxes)
    entries: list[TileEntry | None] = [None] * len(boxes)
    sse = np.full(len(boxes), np.nan)
    chosen = ((batch.ids, strategy.choose(engine, batch)) for batch in engine.batches(img, boxes, batch_size))
    for (ids, choice), (z_streams, y_streams) in map_ahead(lambda c: engine.encode_latents(c[1].latents), chosen,
                                                             engine.overlaps(overlap_coding)):
        if choice.sse is not None:
            sse[ids] = choice.sse
        for k, i in enumerate(ids):
            x, y, w, h = boxes[i]
            alpha = np.ascontiguousarray(img.alpha[y : y + h, x : x + w]).tobytes() if img.alpha is not None else None
            blobs[i] = bitstream.tile_blob(z_streams[k], y_streams[k], alpha)
            missed = choice.missed is not None and choice.missed[k]
            flags = (FLAG_MISSED_TARGET if missed else 0) | (FLAG_ALPHA if alpha is not None else 0)
            entries[i] = TileEntry(0, 0, int(choice.codes[k]), flags, 0)
    header.tiles = entries
    data = bitstream.pack(header, blobs)
    npix = np.array([w * h for _, _, w, h in boxes], dtype=np.float64)
    psnr = None if np.isnan(sse).any() else float(psnr_from_mse(np.array([sse.sum() / (3 * npix.sum())]))[0])
    return EncodeResult(data, header, psnr_from_mse(sse / (3 * npix)), psnr)


# --- rasters (stream version 2) ------------------------------------------------------------


def is_raster(image, nodata=None, bit_depth=None, band_names=None, lossless: bool = False) -> bool:
    """Whether ``image`` (with these options) is coded as a raster (v2) rather than today's 8-bit image (v1)."""
    eight_bit = (getattr(image, "dtype", None) == np.uint8 and
                 (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3, 4))))
    return not eight_bit or nodata is not None or bit_depth not in (None, 8) or band_names is not None or lossless


def _encode_raster(image, loaded: LoadedModel, target: RateTarget, tile_size: int, device: str, half: bool,
                   batch_size: int, entropy_workers: int, name: str, nodata, bit_depth, band_names, lossless: bool,
                   lossless_fallback: bool, overlap_coding: bool | None = None) -> EncodeResult:
    img = bands.check_raster(image, name)
    h, w, n_bands = img.shape
    boxes = grid_boxes(w, h, tile_size)
    info, valid = bands.describe(img, boxes, nodata, bit_depth, band_names, name)
    header = Header(loaded.model_id, loaded.sha256, w, h, n_bands, tile_size, target.mode, target.value,
                    version=RASTER_VERSION, raster=info, lossless=lossless)
    counts = np.array([bw * bh if v is None else int(v.sum()) for (_, _, bw, bh), v in zip(boxes, valid)])
    if lossless:
        blobs = [exact.encode_tile(np.asarray(img[y : y + bh, x : x + bw])) for x, y, bw, bh in boxes]
        header.tiles = [TileEntry(0, 0, LOSSLESS_CODE, FLAG_LOSSLESS, 0) for _ in boxes]
        return EncodeResult(bitstream.pack(header, blobs), header, np.full(len(boxes), np.inf), float("inf"))
    _, engine = get_coder(loaded, device, half, entropy_workers)
    groups, n = info.groups, len(boxes)

    def all_batches():
        for g, group in enumerate(groups):
            yield from engine.raster_batches(img, info, valid, boxes, group, g * n, batch_size, info.peak)

    # target_bpp is bits per sample here: the budget of a W·bands × H image
    strategy = ratecontrol.plan(target, engine, all_batches, width=w * n_bands, height=h, n_tiles=n * len(groups),
                                overhead_bytes=bitstream.estimated_overhead(loaded.model_id, n * len(groups)))
    fallback = lossless_fallback and target.mode == "target_psnr"
    while strategy is not None:
        result = _raster_pass(engine, img, header, boxes, valid, counts, strategy, batch_size, fallback, overlap_coding)
        strategy = strategy.retry(len(result.data))
    return result


def _raster_pass(engine: Engine, img: np.ndarray, header: Header, boxes: list[Box], valid: list, counts: np.ndarray,
                 strategy: ratecontrol.Strategy, batch_size: int, fallback: bool,
                 overlap_coding: bool | None = None) -> EncodeResult:
    """Every band group of every tile through ``strategy`` and the entropy coder (overlapped with the next
    batch's transforms, as for images); exact tiles where asked; pack."""
    info, n = header.raster, len(boxes)
    groups = info.groups
    parts: list[list] = [[None] * len(groups) for _ in range(n)]
    missed = np.zeros(n, dtype=bool)
    band_sse = np.full((n, info.bands), np.nan)
    for g, group in enumerate(groups):
        keep = bands.real_bands(group)
        chosen = ((batch.ids, strategy.choose(engine, batch))
                  for batch in engine.raster_batches(img, info, valid, boxes, group, g * n, batch_size, info.peak))
        for (ids, choice), (z_streams, y_streams) in map_ahead(lambda c: engine.encode_latents(c[1].latents), chosen,
                                                                 engine.overlaps(overlap_coding)):
            for k, gid in enumerate(ids):
                i = gid - g * n
                parts[i][g] = (int(choice.codes[k]), z_streams[k], y_streams[k])
                missed[i] |= choice.missed is not None and bool(choice.missed[k])
                if choice.band_sse is not None:
                    band_sse[i, [group[p] for p in keep]] = choice.band_sse[k, keep]
    blobs, entries = [], []
    for i, (x, y, bw, bh) in enumerate(boxes):
        if fallback and missed[i]:  # the model cannot reach the target here: keep the tile exactly
            blobs.append(exact.encode_tile(np.asarray(img[y : y + bh, x : x + bw])))
            entries.append(TileEntry(0, 0, LOSSLESS_CODE, FLAG_LOSSLESS, 0))
            band_sse[i] = 0.0
            continue
        mask = bands.pack_mask(valid[i]) if valid[i] is not None else None
        blobs.append(bitstream.raster_tile_blob(parts[i], mask))
        flags = (FLAG_MISSED_TARGET if missed[i] else 0) | (FLAG_NODATA if mask is not None else 0)
        entries.append(TileEntry(0, 0, max(code for code, _, _ in parts[i]), flags, 0))
    header.tiles = entries
    data = bitstream.pack(header, blobs)
    tile_psnr = np.array([np.nan if np.isnan(band_sse[i]).any() else psnr_from_band_sse(band_sse[i], counts[i], info.peak)
                          for i in range(n)])
    psnr = None if np.isnan(band_sse).any() else psnr_from_band_sse(band_sse.sum(0), int(counts.sum()), info.peak)
    return EncodeResult(data, header, tile_psnr, psnr)


# --- decoding ------------------------------------------------------------------------------


def read_header(data: bytes) -> Header:
    """Parse and verify a stream's header (no model needed)."""
    return bitstream.read_header(bytes(data))


def _model_for(header: Header, model: str | LoadedModel | None) -> LoadedModel:
    """The model a stream needs: the one given, or the one its header names; its hash must match."""
    loaded = model if isinstance(model, LoadedModel) else load_model(model or header.model_id)
    if loaded.sha256 != header.model_hash:
        raise ModelMismatchError(
            f"stream was encoded with model {header.model_id} (sha256 {header.model_hash.hex()[:16]}…); "
            f"{loaded.model_id} (sha256 {loaded.hash_hex[:16]}…) cannot decode it"
        )
    return loaded


def _family(loaded: LoadedModel) -> str:
    """Which model family codes with ``loaded``: "hyperprior" (this module's pipeline) or "minnen2018"."""
    return getattr(loaded.model, "family", "hyperprior")


def decode(data: bytes, model: str | LoadedModel | None = None, *, device: str = "cpu", half: bool = False,
           batch_size: int = 8, entropy_workers: int = 0, overlap_coding: bool | None = None,
           max_pixels: int = DEFAULT_MAX_PIXELS, max_bits: float | None = None) -> np.ndarray:
    """Decode a whole image; verifies every checksum first.

    Refuses (:class:`StreamTooLargeError`) a stream of more than ``max_pixels`` pixels before
    allocating anything: a few bytes of stream can describe a huge image. ``max_bits`` (minnen2018
    streams only): a progressive preview from a prefix of every tile's bits (a number of bits, or a
    fraction below 1).
    """
    header = read_header(data)
    bitstream.check_length(data, header)
    return decode_region(data, (0, 0, header.width, header.height), model, device=device, half=half,
                         batch_size=batch_size, entropy_workers=entropy_workers, overlap_coding=overlap_coding,
                         header=header, max_pixels=max_pixels, max_bits=max_bits)


def decode_region(data: bytes, box: tuple[int, int, int, int], model: str | LoadedModel | None = None, *,
                  device: str = "cpu", half: bool = False, batch_size: int = 8, entropy_workers: int = 0,
                  overlap_coding: bool | None = None, header: Header | None = None,
                  max_pixels: int = DEFAULT_MAX_PIXELS, max_bits: float | None = None) -> np.ndarray:
    """Decode only the tiles covering ``box = (x, y, w, h)`` and return that crop.

    ``max_pixels`` bounds the pixels of the tiles decoded (at least the region's), checked before
    any allocation. Tiles are verified up front and inflated batch by batch, so memory beyond the
    output stays bounded by a few batches. With ``overlap_coding``, batch k+1 is range-decoded on a
    background thread while batch k is synthesised.
    """
    data = bytes(data)
    header = header or read_header(data)
    region = _region_inside(header, box)
    boxes = header.boxes()
    ids = intersecting(boxes, region)
    _check_pixels(header, boxes, ids, region, max_pixels)
    for i in ids:  # every checksum before any work: a damaged stream fails fast
        bitstream.tile_payload(data, header, i)
    loaded = None if header.raster is not None else _model_for(header, model)  # a raster's exact tiles need none
    if loaded is not None and _family(loaded) == "minnen2018":
        from codec.families.minnen2018 import coding

        return coding.decode_region(data, header, loaded, region, max_pixels=max_pixels, max_bits=max_bits)
    if max_bits is not None:
        raise ValueError(f"max_bits: progressive decoding needs a minnen2018 stream, this one is {header.model_id}'s")
    if header.raster is not None:
        return _decode_raster(data, header, boxes, ids, region, model, device, half, batch_size, entropy_workers)
    _, engine = get_coder(loaded, device, half, entropy_workers)
    rgb = np.empty((region[3], region[2], 3), dtype=np.uint8)
    alpha = np.empty((region[3], region[2]), dtype=np.uint8) if header.channels == 4 else None

    def parsed():
        for shape, chunk in batches(boxes, ids, batch_size):
            yield shape, chunk, [bitstream.tile_parts(data, header, i) for i in chunk]  # alpha inflated per batch

    for (shape, chunk, parts), y_hat in map_ahead(lambda b: _batch_latents(engine, header, *b), parsed(),
                                                  engine.overlaps(overlap_coding)):
        codes = [header.tiles[i].quality_code for i in chunk]
        recon = engine.synthesize(y_hat, codes).permute(0, 2, 3, 1).cpu().numpy()
        for k, i in enumerate(chunk):
            into, part = overlap(boxes[i], region)
            rgb[into] = recon[k][part]
            if alpha is not None:
                alpha[into] = np.frombuffer(parts[k][2], dtype=np.uint8).reshape(boxes[i][3], boxes[i][2])[part]
    return finish(rgb, alpha, header.channels)


def _decode_raster(data: bytes, header: Header, boxes: list[Box], ids: list[int], region: Box, model, device: str,
                   half: bool, batch_size: int, entropy_workers: int) -> np.ndarray:
    """The region of a v2 stream: exact tiles decoded as they are, learned ones a batch and a band group at a
    time (floats for one batch only), nodata put back from each tile's mask. (H, W) for one band."""
    info = header.raster
    out = np.empty((region[3], region[2], info.bands), dtype=info.dtype)
    learned = []
    for i in ids:
        if not header.tiles[i].lossless:
            learned.append(i)
            continue
        _, _, bw, bh = boxes[i]
        try:
            block = exact.decode_tile(bitstream.tile_payload(data, header, i), bh, bw, info.bands, info.dtype)
        except CorruptStreamError as exc:
            raise CorruptStreamError(f"{header.tile_label(i)}: {exc}") from exc
        into, part = overlap(boxes[i], region)
        out[into] = block[part]
    if learned:
        _, engine = get_coder(_model_for(header, model), device, half, entropy_workers)
        for shape, chunk in batches(boxes, learned, batch_size):
            parts = [bitstream.raster_tile_parts(data, header, i) for i in chunk]
            for g, group in enumerate(info.groups):
                codes = [p[0][g][0] for p in parts]
                y_hat = _latents(engine, header, chunk, shape, [p[0][g][1] for p in parts], [p[0][g][2] for p in parts])
                raw = bands.to_raw(engine.synthesize_float(y_hat, codes).cpu().numpy(), info, group)
                first = group[0]
                for k, i in enumerate(chunk):
                    into, part = overlap(boxes[i], region)
                    out[into[0], into[1], first : first + raw.shape[-1]] = raw[k][part]
            for k, i in enumerate(chunk):
                into, part = overlap(boxes[i], region)
                _, _, bw, bh = boxes[i]
                valid = None
                if parts[k][1] is not None:
                    try:
                        valid = bands.unpack_mask(parts[k][1], bh, bw)[part]
                    except CorruptStreamError as exc:
                        raise CorruptStreamError(f"{header.tile_label(i)}: {exc}") from exc
                bands.restore_nodata(out[into], valid, info.nodata)
    return out[..., 0] if info.bands == 1 else out


def _batch_latents(engine: Engine, header: Header, shape: tuple[int, int], chunk: list[int], parts) -> "torch.Tensor":
    """ŷ of a batch of v1 tiles from their ``tile_parts``."""
    return _latents(engine, header, chunk, shape, [p[0] for p in parts], [p[1] for p in parts])


def _latents(engine: Engine, header: Header, chunk: list[int], shape: tuple[int, int], z, y):
    """ŷ of a batch of tiles; a damaged tile is a CorruptStreamError naming it."""
    try:
        return engine.decode_latents(z, y, latent_grid(shape))
    except BaseException as exc:  # BaseException: a Rust panic in constriction is one
        if not isinstance(exc, _TILE_DECODE_ERRORS) and not is_panic(exc):
            raise
        stream = exc.stream if isinstance(exc, RangeCodingError) else None
        where = header.tile_label(chunk[stream]) if stream is not None else ", ".join(map(header.tile_label, chunk))
        raise CorruptStreamError(f"{where}: {exc}") from exc


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


# what a damaged tile makes the range decoder (constriction) or its callers raise
_TILE_DECODE_ERRORS = (AssertionError, ValueError, OverflowError, struct.error)


__all__ = ["EncodeResult", "encode", "is_raster", "decode", "decode_region", "read_header", "get_coder", "CodecError",
           "DEFAULT_TILE", "DEFAULT_TARGET_PSNR"]
