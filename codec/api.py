"""Public encode/decode functions: arrays in, bytes out, and back.

    image ─prepare─▶ tiles ─(batches by shape)─▶ TileCoder ─▶ blobs ─container.pack─▶ bytes
    bytes ─read_header─▶ tile index ─(only the tiles needed)─▶ TileCoder ─▶ image or region
"""

from __future__ import annotations

import copy
import struct
from dataclasses import dataclass

import numpy as np
import torch

from . import container
from .coder import QUALITY_LEVELS, Quantized, TileCoder, level_to_q, psnr_from_mse
from .container import FLAG_ALPHA, FLAG_MISSED_TARGET, Header, TileEntry
from .errors import CodecError, CorruptStreamError, ModelMismatchError, StreamTooLargeError
from .imageio import DEFAULT_MAX_PIXELS
from .imageprep import PreparedImage, finish, prepare
from .rangecoder import RangeCodingError, is_panic
from .registry import LoadedModel, load_model
from .tiling import batches, grid_boxes, intersecting, pad_tile

DEFAULT_TILE = 256
DEFAULT_TARGET_PSNR = 38.0
# pixels per forward pass (encode and decode): 8 default 256² tiles, as before; larger tiles go fewer at a time
PIXELS_PER_BATCH = 8 * DEFAULT_TILE * DEFAULT_TILE


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


_CODERS: dict[tuple[str, str, bool, int], TileCoder] = {}


def get_coder(model: str | LoadedModel | None = None, device: str = "cpu", half: bool = False,
              entropy_workers: int = 0) -> tuple[LoadedModel, TileCoder]:
    """The cached :class:`TileCoder` for a model on a device (the model is loaded once)."""
    loaded = model if isinstance(model, LoadedModel) else load_model(model or "default")
    key = (loaded.model_id + loaded.hash_hex, str(device), half, entropy_workers)
    if key not in _CODERS:
        net = loaded.model if str(device) == "cpu" and not half else copy.deepcopy(loaded.model)
        _CODERS[key] = TileCoder(net, device, half, entropy_workers)
    return loaded, _CODERS[key]


def encode(
    image: np.ndarray,
    model: str | LoadedModel | None = None,
    *,
    target_psnr: float | None = None,
    quality: float | None = None,
    target_bpp: float | None = None,
    tile_size: int = DEFAULT_TILE,
    device: str = "cpu",
    half: bool = False,
    batch_size: int = 8,
    entropy_workers: int = 0,
    name: str = "image",
) -> EncodeResult:
    """Encode an 8-bit image. Exactly one of ``target_psnr`` (default 38 dB), ``quality`` or ``target_bpp``.

    ``device``/``half`` run the transforms on a GPU (float16); ``entropy_workers`` range-codes
    tiles in that many CPU processes. Neither changes the bits' meaning: any device decodes.
    """
    chosen = [v is not None for v in (target_psnr, quality, target_bpp)]
    if sum(chosen) > 1:
        raise ValueError("give only one of target_psnr, quality, target_bpp")
    if not any(chosen):
        target_psnr = DEFAULT_TARGET_PSNR
    if quality is not None and not 0.0 <= quality <= 1.0:
        raise ValueError(f"quality must be in [0, 1], got {quality}")
    if target_bpp is not None and not target_bpp > 0:
        raise ValueError(f"target_bpp must be positive, got {target_bpp}")
    if tile_size % 64 or not 64 <= tile_size <= 4096:
        raise ValueError(f"tile_size must be a multiple of 64 in [64, 4096], got {tile_size}")
    img = prepare(image, name)
    loaded, coder = get_coder(model, device, half, entropy_workers)
    boxes = grid_boxes(img.width, img.height, tile_size)
    mode = "quality" if quality is not None else "target_psnr" if target_psnr is not None else "target_bpp"
    target = {"quality": quality, "target_psnr": target_psnr, "target_bpp": target_bpp}[mode]
    header = Header(loaded.model_id, loaded.sha256, img.width, img.height, img.channels, tile_size, mode, float(target))

    def fixed_quality(batch: _Batch):
        return coder.quantize(batch.y, torch.full((len(batch.ids),), quality)), None, None

    def psnr_search(batch: _Batch):
        quant, psnr, missed = coder.search_target_psnr(batch.y, batch.originals, batch.masks, target_psnr)
        return quant, _psnr_to_sse(psnr, batch.npix), missed

    if mode != "target_bpp":
        return _encode_tiles(coder, img, boxes, header, fixed_quality if mode == "quality" else psnr_search, batch_size)

    # target_bpp: measure a ladder of levels once, then pick levels per tile to fit the budget;
    # if the real size overshoots the estimate, shrink the budget and pick again.
    ladder, dist, bits = _measure_ladder(coder, img, boxes, batch_size)
    budget_bytes = target_bpp * img.width * img.height / 8
    budget_bits = (budget_bytes - _overhead_bytes(header, len(boxes))) * 8
    for _ in range(8):
        choice, feasible = _choose_levels(dist, bits, budget_bits)

        def from_ladder(batch: _Batch, choice=choice, feasible=feasible):
            j = choice[batch.ids]
            q = torch.from_numpy(level_to_q(ladder[j])).float()
            return coder.quantize(batch.y, q), dist[batch.ids, j], np.full(len(batch.ids), not feasible)

        result = _encode_tiles(coder, img, boxes, header, from_ladder, batch_size)
        if len(result.data) <= budget_bytes or not feasible:
            return result
        budget_bits *= budget_bytes / len(result.data) * 0.98
    return result


@dataclass
class _Batch:
    """One forward pass worth of same-shaped tiles."""

    ids: list[int]
    y: torch.Tensor
    originals: torch.Tensor  # uint8 (B, 3, H, W) on the device
    masks: torch.Tensor  # 1 inside the image, 0 on padding
    npix: np.ndarray  # valid pixels per tile


def _batches(boxes, ids, batch_size: int):
    """:func:`tiling.batches` with at most ``PIXELS_PER_BATCH`` padded pixels per batch (at least one tile):
    ``batch_size`` alone would put 8 tiles of 4096² (134 MP) in one forward pass."""
    for (pw, ph), group in batches(boxes, ids, max(len(ids), 1)):
        n = max(1, min(batch_size, PIXELS_PER_BATCH // (pw * ph)))
        for s in range(0, len(group), n):
            yield (pw, ph), group[s : s + n]


def _iter_batches(coder: TileCoder, img: PreparedImage, boxes, batch_size: int):
    for (pw, ph), ids in _batches(boxes, range(len(boxes)), batch_size):
        tiles = np.empty((len(ids), ph, pw, 3), dtype=np.uint8)
        masks = np.zeros((len(ids), ph, pw), dtype=np.float32)
        for k, i in enumerate(ids):
            x, y, w, h = boxes[i]
            tiles[k] = pad_tile(img.tile_rgb(x, y, w, h), pw, ph)
            masks[k, :h, :w] = 1.0
        y = coder.analyse(coder.to_tensor(tiles))
        originals = torch.from_numpy(np.ascontiguousarray(tiles)).to(coder.device).permute(0, 3, 1, 2)
        yield _Batch(ids, y, originals, torch.from_numpy(masks).to(coder.device), masks.reshape(len(ids), -1).sum(1))


def _encode_tiles(coder: TileCoder, img: PreparedImage, boxes, header: Header, choose, batch_size: int) -> EncodeResult:
    """Analyse, choose a quantisation per tile (``choose``), entropy-code, pack."""
    blobs: list[bytes] = [b""] * len(boxes)
    entries: list[TileEntry | None] = [None] * len(boxes)
    sse = np.full(len(boxes), np.nan)
    for batch in _iter_batches(coder, img, boxes, batch_size):
        quant, batch_sse, missed = choose(batch)
        if batch_sse is not None:
            sse[batch.ids] = batch_sse
        _emit(coder, img, boxes, batch.ids, quant, missed, blobs, entries)
    header.tiles = entries
    data = container.pack(header, blobs)
    npix = np.array([w * h for _, _, w, h in boxes], dtype=np.float64)
    tile_psnr = psnr_from_mse(sse / (3 * npix))
    psnr = None if np.isnan(sse).any() else float(psnr_from_mse(np.array([sse.sum() / (3 * npix.sum())]))[0])
    return EncodeResult(data, header, tile_psnr, psnr)


def _psnr_to_sse(psnr: np.ndarray, npix: np.ndarray) -> np.ndarray:
    mse = np.where(np.isinf(psnr), 0.0, 255.0**2 / 10 ** (np.asarray(psnr) / 10))
    return mse * 3 * npix


def _emit(coder: TileCoder, img: PreparedImage, boxes, ids, quant: Quantized, missed, blobs, entries) -> None:
    """Entropy-code a batch and record its tile index entries."""
    z_streams, y_streams = coder.entropy_encode(quant)
    q = quant.q.cpu().numpy()
    for k, i in enumerate(ids):
        x, y, w, h = boxes[i]
        alpha = np.ascontiguousarray(img.alpha[y : y + h, x : x + w]).tobytes() if img.alpha is not None else None
        blobs[i] = container.tile_blob(z_streams[k], y_streams[k], alpha)
        flags = (FLAG_MISSED_TARGET if missed is not None and missed[k] else 0) | (FLAG_ALPHA if alpha is not None else 0)
        entries[i] = TileEntry(0, 0, container.quality_code(float(q[k])), flags, 0)


def _measure_ladder(coder: TileCoder, img: PreparedImage, boxes, batch_size: int):
    """Squared error and estimated bits of every tile at a ladder of quality levels."""
    ladder = np.unique(np.round(np.linspace(0, QUALITY_LEVELS - 1, 12)).astype(int))
    dist = np.zeros((len(boxes), len(ladder)))
    bits = np.zeros((len(boxes), len(ladder)))
    hyper, gaussian = coder.model.hyper, coder.model.gaussian
    for batch in _iter_batches(coder, img, boxes, batch_size):
        for j, lvl in enumerate(ladder):
            q = torch.full((len(batch.ids),), float(level_to_q(lvl)))
            cand = coder.evaluate(batch.y, q, batch.originals, batch.masks)
            dist[batch.ids, j] = cand.mse * 3 * batch.npix
            quant = cand.quantized
            bits[batch.ids, j] = hyper.estimate_bits(quant.z_hat) + gaussian.estimate_bits(quant.symbols, quant.index)
    return ladder, dist, bits


def _overhead_bytes(header: Header, n_tiles: int) -> int:
    """Header, tile index, per-tile length fields and range-coder flushes."""
    return 64 + len(header.model_id) + 19 * n_tiles + 16 * n_tiles


def _choose_levels(dist: np.ndarray, bits: np.ndarray, budget_bits: float) -> tuple[np.ndarray, bool]:
    """Per-tile ladder index minimising total squared error with total bits ≤ budget (Lagrangian)."""
    rows = np.arange(len(dist))

    def choose(log_lambda: float) -> np.ndarray:
        return np.argmin(dist + 10.0**log_lambda * bits, axis=1)

    lo, hi = -12.0, 12.0  # small λ favours quality
    if bits[rows, choose(hi)].sum() > budget_bits:
        return np.zeros(len(dist), dtype=int), False  # even the lowest quality is over budget
    for _ in range(60):
        mid = (lo + hi) / 2
        if bits[rows, choose(mid)].sum() > budget_bits:
            lo = mid
        else:
            hi = mid
    return choose(hi), True


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


def decode(data: bytes, model: str | LoadedModel | None = None, *, device: str = "cpu", half: bool = False,
           batch_size: int = 8, entropy_workers: int = 0, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a whole image; verifies every checksum first.

    Refuses (:class:`StreamTooLargeError`) a stream of more than ``max_pixels`` pixels before
    allocating anything: a few bytes of stream can describe a huge image.
    """
    header = read_header(data)
    container.check_length(data, header)
    return decode_region(data, (0, 0, header.width, header.height), model, device=device, half=half,
                         batch_size=batch_size, entropy_workers=entropy_workers, header=header,
                         max_pixels=max_pixels)


def decode_region(data: bytes, box: tuple[int, int, int, int], model: str | LoadedModel | None = None, *,
                  device: str = "cpu", half: bool = False, batch_size: int = 8, entropy_workers: int = 0,
                  header: Header | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode only the tiles covering ``box = (x, y, w, h)`` and return that crop.

    ``max_pixels`` bounds the pixels of the tiles decoded (at least the region's), checked before
    any allocation. Tiles are verified up front and inflated batch by batch, so memory beyond the
    output stays bounded by one batch.
    """
    data = bytes(data)
    header = header or read_header(data)
    x0, y0, bw, bh = (int(v) for v in box)
    if bw <= 0 or bh <= 0 or x0 < 0 or y0 < 0 or x0 + bw > header.width or y0 + bh > header.height:
        raise ValueError(f"region {box} is not inside the {header.width}×{header.height} image")
    boxes = grid_boxes(header.width, header.height, header.tile_size)
    ids = intersecting(boxes, (x0, y0, bw, bh))
    pixels = sum(boxes[i][2] * boxes[i][3] for i in ids)
    if pixels > max_pixels:
        what = "the image" if pixels == header.width * header.height else f"region {(x0, y0, bw, bh)}'s {len(ids)} tiles"
        raise StreamTooLargeError(f"{header.width}×{header.height} stream: decoding {what} means {pixels} pixels, "
                                  f"over the limit of {max_pixels} (max_pixels)")
    _, coder = get_coder(_model_for(header, model), device, half, entropy_workers)
    for i in ids:  # every checksum before any work: a damaged stream fails fast
        container.tile_payload(data, header, i)
    rgb = np.empty((bh, bw, 3), dtype=np.uint8)
    alpha = np.empty((bh, bw), dtype=np.uint8) if header.channels == 4 else None
    for shape, chunk in _batches(boxes, ids, batch_size):
        parts = [container.tile_parts(data, header, i) for i in chunk]
        recon = _decode_batch(coder, header, chunk, shape, parts)
        for k, i in enumerate(chunk):
            x, y, w, h = boxes[i]
            ix0, iy0 = max(x, x0), max(y, y0)
            ix1, iy1 = min(x + w, x0 + bw), min(y + h, y0 + bh)
            rgb[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0] = recon[k, iy0 - y : iy1 - y, ix0 - x : ix1 - x]
            if alpha is not None:
                a = np.frombuffer(parts[k][2], dtype=np.uint8).reshape(h, w)
                alpha[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0] = a[iy0 - y : iy1 - y, ix0 - x : ix1 - x]
    return finish(rgb, alpha, header.channels)


# what a damaged tile makes the range decoder (constriction) or its callers raise
_TILE_DECODE_ERRORS = (AssertionError, ValueError, OverflowError, struct.error)


def _decode_batch(coder: TileCoder, header: Header, chunk, shape, parts) -> np.ndarray:
    pw, ph = shape
    try:
        y_hat = coder.entropy_decode([p[0] for p in parts], [p[1] for p in parts], (ph // 64, pw // 64))
    except BaseException as exc:  # BaseException: a Rust panic in constriction is one
        if not isinstance(exc, _TILE_DECODE_ERRORS) and not is_panic(exc):
            raise
        stream = exc.stream if isinstance(exc, RangeCodingError) else None
        where = header.tile_label(chunk[stream]) if stream is not None else ", ".join(map(header.tile_label, chunk))
        raise CorruptStreamError(f"{where}: {exc}") from exc
    q = torch.tensor([header.tiles[i].quality for i in chunk], dtype=torch.float32)
    return coder.synthesize(y_hat, q).permute(0, 2, 3, 1).cpu().numpy()


__all__ = ["EncodeResult", "encode", "decode", "decode_region", "read_header", "get_coder", "CodecError"]
