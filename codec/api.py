"""Public encode/decode functions: arrays in, bytes out, and back.

    image ─prepare─▶ tiles ─engine.batches─▶ strategy.choose (ratecontrol) ─▶ engine.encode_latents ─▶ bitstream.pack ─▶ bytes
    bytes ─read_header─▶ tile index ─(only the tiles needed)─▶ engine.decode_latents ─▶ engine.synthesize ─▶ image or region

This module only wires the parts together: which quality a tile gets is :mod:`codec.ratecontrol`'s,
the batched model work :mod:`codec.engine`'s, the tile grid :mod:`codec.tiles`' and the format
:mod:`codec.bitstream`'s.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from . import bitstream, ratecontrol
from .bitstream import FLAG_ALPHA, FLAG_MISSED_TARGET, Header, TileEntry
from .engine import Engine, get_coder, psnr_from_mse
from .errors import CodecError, CorruptStreamError, ModelMismatchError, StreamTooLargeError
from .imageio import DEFAULT_MAX_PIXELS
from .imageprep import PreparedImage, finish, prepare
from .rangecoder import RangeCodingError, is_panic
from .ratecontrol import DEFAULT_TARGET_PSNR, RateTarget
from .registry import LoadedModel, load_model
from .tiles import DEFAULT_TILE, Box, batches, check_tile_size, intersecting, latent_grid, overlap


@dataclass
class EncodeResult:
    data: bytes
    header: Header
    tile_psnr: np.ndarray  # per tile, NaN where not measured (quality mode)
    psnr: float | None  # whole image (colour channels), when every tile was measured

    @property
    def bpp(self) -> float:
        return len(self.data) * 8 / (self.header.width * self.header.height)

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
    name: str = "image",
) -> EncodeResult:
    """Encode an 8-bit image. At most one of ``target_psnr`` (default 38 dB), ``quality`` or ``target_bpp``,
    or a ready :class:`~codec.ratecontrol.RateTarget` as ``target`` (what a job validated once).

    ``device``/``half`` run the transforms on a GPU (float16); ``entropy_workers`` range-codes
    tiles in that many CPU processes. Neither changes the bits' meaning: any device decodes.
    """
    if target is None:
        target = RateTarget.from_options(target_psnr=target_psnr, quality=quality, target_bpp=target_bpp)
    elif any(v is not None for v in (target_psnr, quality, target_bpp)):
        raise ValueError("give target or one of target_psnr, quality, target_bpp, not both")
    check_tile_size(tile_size)
    if _family(loaded := model if isinstance(model, LoadedModel) else load_model(model or "default")) == "minnen2018":
        from .minnen2018 import coding

        return coding.encode(image, loaded, target, tile_size=tile_size, name=name)
    img = prepare(image, name)
    loaded, engine = get_coder(loaded, device, half, entropy_workers)
    header = Header(loaded.model_id, loaded.sha256, img.width, img.height, img.channels, tile_size,
                    target.mode, target.value)
    boxes = header.boxes()
    strategy = ratecontrol.plan(target, engine, lambda: engine.batches(img, boxes, batch_size),
                                width=img.width, height=img.height, n_tiles=len(boxes),
                                overhead_bytes=bitstream.estimated_overhead(loaded.model_id, len(boxes)))
    while strategy is not None:  # one pass, or more where the strategy asks for another (target_bpp)
        result = _encode_pass(engine, img, header, boxes, strategy, batch_size)
        strategy = strategy.retry(len(result.data))
    return result


def _encode_pass(engine: Engine, img: PreparedImage, header: Header, boxes: list[Box],
                 strategy: ratecontrol.Strategy, batch_size: int) -> EncodeResult:
    """Analyse every tile, let ``strategy`` choose its quantisation, entropy-code, pack."""
    blobs: list[bytes] = [b""] * len(boxes)
    entries: list[TileEntry | None] = [None] * len(boxes)
    sse = np.full(len(boxes), np.nan)
    for batch in engine.batches(img, boxes, batch_size):
        choice = strategy.choose(engine, batch)
        if choice.sse is not None:
            sse[batch.ids] = choice.sse
        z_streams, y_streams = engine.encode_latents(choice.latents)
        for k, i in enumerate(batch.ids):
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
           batch_size: int = 8, entropy_workers: int = 0, max_pixels: int = DEFAULT_MAX_PIXELS,
           max_bits: float | None = None) -> np.ndarray:
    """Decode a whole image; verifies every checksum first.

    Refuses (:class:`StreamTooLargeError`) a stream of more than ``max_pixels`` pixels before
    allocating anything: a few bytes of stream can describe a huge image. ``max_bits`` (minnen2018
    streams only): a progressive preview from a prefix of every tile's bits (a number of bits, or a
    fraction below 1).
    """
    header = read_header(data)
    bitstream.check_length(data, header)
    return decode_region(data, (0, 0, header.width, header.height), model, device=device, half=half,
                         batch_size=batch_size, entropy_workers=entropy_workers, header=header,
                         max_pixels=max_pixels, max_bits=max_bits)


def decode_region(data: bytes, box: tuple[int, int, int, int], model: str | LoadedModel | None = None, *,
                  device: str = "cpu", half: bool = False, batch_size: int = 8, entropy_workers: int = 0,
                  header: Header | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
                  max_bits: float | None = None) -> np.ndarray:
    """Decode only the tiles covering ``box = (x, y, w, h)`` and return that crop.

    ``max_pixels`` bounds the pixels of the tiles decoded (at least the region's), checked before
    any allocation. Tiles are verified up front and inflated batch by batch, so memory beyond the
    output stays bounded by one batch.
    """
    data = bytes(data)
    header = header or read_header(data)
    region = _region_inside(header, box)
    boxes = header.boxes()
    ids = intersecting(boxes, region)
    _check_pixels(header, boxes, ids, region, max_pixels)
    if _family(loaded := _model_for(header, model)) == "minnen2018":
        from .minnen2018 import coding

        return coding.decode_region(data, header, loaded, region, max_pixels=max_pixels, max_bits=max_bits)
    if max_bits is not None:
        raise ValueError(f"max_bits: progressive decoding needs a minnen2018 stream, this one is {header.model_id}'s")
    _, engine = get_coder(loaded, device, half, entropy_workers)
    for i in ids:  # every checksum before any work: a damaged stream fails fast
        bitstream.tile_payload(data, header, i)
    rgb = np.empty((region[3], region[2], 3), dtype=np.uint8)
    alpha = np.empty((region[3], region[2]), dtype=np.uint8) if header.channels == 4 else None
    for shape, chunk in batches(boxes, ids, batch_size):
        parts = [bitstream.tile_parts(data, header, i) for i in chunk]  # alpha inflated for this batch only
        recon = _decode_batch(engine, header, chunk, shape, parts)
        for k, i in enumerate(chunk):
            into, part = overlap(boxes[i], region)
            rgb[into] = recon[k][part]
            if alpha is not None:
                alpha[into] = np.frombuffer(parts[k][2], dtype=np.uint8).reshape(boxes[i][3], boxes[i][2])[part]
    return finish(rgb, alpha, header.channels)


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


def _decode_batch(engine: Engine, header: Header, chunk: list[int], shape: tuple[int, int], parts) -> np.ndarray:
    """uint8 (B, H, W, 3) reconstructions of a batch of tiles; a damaged tile is a CorruptStreamError naming it."""
    try:
        y_hat = engine.decode_latents([p[0] for p in parts], [p[1] for p in parts], latent_grid(shape))
    except BaseException as exc:  # BaseException: a Rust panic in constriction is one
        if not isinstance(exc, _TILE_DECODE_ERRORS) and not is_panic(exc):
            raise
        stream = exc.stream if isinstance(exc, RangeCodingError) else None
        where = header.tile_label(chunk[stream]) if stream is not None else ", ".join(map(header.tile_label, chunk))
        raise CorruptStreamError(f"{where}: {exc}") from exc
    codes = [header.tiles[i].quality_code for i in chunk]
    return engine.synthesize(y_hat, codes).permute(0, 2, 3, 1).cpu().numpy()


__all__ = ["EncodeResult", "encode", "decode", "decode_region", "read_header", "get_coder", "CodecError",
           "DEFAULT_TILE", "DEFAULT_TARGET_PSNR"]
