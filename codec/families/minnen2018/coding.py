"""Coding with the minnen2018 family: 32×32 sub-tiles in raster order, each predicted from its decoded
neighbours and refined by the residual coder until it reaches the target, bits range-coded.

    image ─pad to 32─▶ sub-tiles in raster order ─┬ predict from decoded left/above/above-left (mid-grey off the image)
                                                 └ iterate: encoder → 128 bits → decoder (+=) until PSNR ≥ target
    per container tile: [iteration counts (uniform), bits (P(1) per iteration and bit position)] ─range coder─▶ blob
    blobs ─codec.format.container.pack─▶ a TLIC stream whose model id names a minnen2018 model

Container: the TLIC container unchanged. Its tiles (``tile_size``, 256 by default) are *container*
tiles, each holding the 32×32 sub-tiles inside it: the TLIC tile index costs 19 bytes a tile, which
at 32×32 would be 0.15 bpp, a third of a 0.5 bpp budget. A container tile's ``quality`` is the mean
iteration count of its sub-tiles over :data:`MAX_ITERATIONS`; its blob is the range-coded symbols,
trailing zero bytes dropped (the decoder puts them back), then for RGBA ``u32 length``-prefixed
bits and the deflated alpha plane.

Determinism: the decoder reruns exactly the encoder's float operations (one sub-tile at a time, the
same shapes), so on one machine the decoded image is the encoder's to the bit. The bits themselves
never depend on float results at decode time (fixed probabilities from the weights file), so any
machine decodes the same bits; its reconstruction may differ from the encoder's by float rounding.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch

from codec import rangecoder
from codec.format import container as bitstream
from codec.format.container import FLAG_ALPHA, FLAG_MISSED_TARGET, Header, TileEntry
from codec.errors import CorruptStreamError, StreamTooLargeError, damaged, is_damaged_tile
from codec.metrics import psnr_from_mse
from codec.results import EncodeResult
from codec.images.prep import finish, prepare
from codec.quality import code_of_fraction
from codec.options import RateTarget
from codec.format.tiles import check_tile_size, intersecting, overlap
from codec.families.minnen2018.model import BORDER_FILL, TILE, Minnen2018Codec, context_patch

MAX_ITERATIONS = 16  # 16 × 128 bits = 2 bpp per sub-tile at most
STOP_MIN_GAIN = 0.08  # @2 adaptive: a sub-tile stops once an iteration takes < 8% off its squared error
# (with the target alone, sub-tiles that cannot reach it took all 16 iterations: 73-88% of @1's bits on
# 20-35% of the sub-tiles; bench/results/minnen2018_diagnosis.md). The value is chosen on training data
# (bench/minnen2018_stop_gain.py: 16 random 256² crops of train-natural, never Kodak): the lowest BD-rate
# vs no rule over constant 2-4 iterations' PSNR, -40.9% (0.03: -24.3%); above 0.08 the curves no longer
# reach 4 iterations' quality at any target. @1 streams keep the rule they had (none).


# --- the per-sub-tile iteration ------------------------------------------------------------


@dataclass
class SubtileCodes:
    """Every sub-tile's iteration count and bits, on the image's 32-px grid."""

    iterations: np.ndarray  # (rows, cols) int
    bits: dict[tuple[int, int], np.ndarray]  # (r, c) → (iterations, symbols_per_iteration) uint8 in {0, 1}:
    # for @2 each row is the iteration's head (HEAD_BITS: gain, mean colour), then the 128 code bits


@dataclass
class Coded:
    """What :func:`code_subtiles` made: the codes, the decoded (padded) image and per-sub-tile errors."""

    codes: SubtileCodes
    recon: np.ndarray  # (rows·32, cols·32, 3) uint8, the decoder's output before cropping
    sse: np.ndarray  # (rows, cols) squared error over the sub-tile's pixels inside the image (3 channels)
    missed: np.ndarray  # (rows, cols) bool: the target was not reached in MAX_ITERATIONS


def subtile_grid(width: int, height: int) -> tuple[int, int]:
    return -(-height // TILE), -(-width // TILE)


def _padded(rgb: np.ndarray) -> np.ndarray:
    rows, cols = subtile_grid(rgb.shape[1], rgb.shape[0])
    return np.pad(rgb, ((0, rows * TILE - rgb.shape[0]), (0, cols * TILE - rgb.shape[1]), (0, 0)), mode="edge")


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x.clamp(0, 1) * 255)


class _Canvas:
    """The decoded sub-tiles so far, as float tensors of their 8-bit values (what later predictions see)."""

    def __init__(self, rows: int, cols: int):
        self.rows, self.cols = rows, cols
        self.tiles: dict[tuple[int, int], torch.Tensor] = {}

    def patch(self, r: int, c: int, like: torch.Tensor) -> torch.Tensor:
        get = self.tiles.get
        return context_patch(get((r, c - 1)), get((r - 1, c)), get((r - 1, c - 1)), like)

    def row_done(self, r: int) -> None:
        """Row ``r - 1`` is no longer anyone's neighbour: memory stays at two rows of sub-tiles."""
        for c in range(self.cols):
            self.tiles.pop((r - 1, c), None)


def _prediction(net: Minnen2018Codec, canvas: _Canvas, r: int, c: int, like: torch.Tensor, use_context: bool):
    if not use_context:
        return torch.full_like(like, BORDER_FILL)
    return net.predictor(canvas.patch(r, c, like))


class _one_thread(contextlib.ContextDecorator):
    """Run a block on one intra-op thread: a sub-tile's tensors are too small to split, and on a busy
    machine spinning worker threads cost more than they give."""

    def __enter__(self):
        self.saved = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.saved)


@torch.no_grad()
@_one_thread()
def _iterate(net: Minnen2018Codec, x, orig, out, valid_hw, limit: int, max_sse, min_gain: float, trace):
    """One sub-tile's iterations from the prediction ``out`` until it reaches ``max_sse``, the ``limit``, or
    stalls (an iteration took less than ``min_gain`` off its error): (bits per iteration, error, 8-bit recon)."""
    vh, vw = valid_hw
    q = _to_uint8(out)
    err = float(((q - orig)[..., :vh, :vw].double() ** 2).sum())
    if trace:
        trace(0, q)
    enc_s = dec_s = None
    tile_bits = []
    stalled = False
    while len(tile_bits) < limit and (max_sse is None or err > max_sse) and not stalled:
        before = err
        head = net.head_of(x - out)  # @2: the gain and mean colour of this iteration (none for @1)
        feat, enc_s = net.encoder(net.step_input(x - out, head), enc_s)
        code = net.binarizer.conv(feat) >= 0
        d, dec_s = net.decoder(code.float() * 2 - 1, dec_s)
        out = out + net.step_output(d, head)
        q = _to_uint8(out)
        err = float(((q - orig)[..., :vh, :vw].double() ** 2).sum())
        stalled = min_gain > 0 and max_sse is not None and err > before * (1 - min_gain)
        tile_bits.append(np.concatenate([head[0].to(torch.uint8).numpy(), code.flatten().to(torch.uint8).numpy()]))
        if trace:
            trace(len(tile_bits), q)
    return tile_bits, err, q


def code_subtiles(net: Minnen2018Codec, rgb: np.ndarray, *, target_psnr: float | None = None,
                  iterations: int | None = None, use_context: bool = True, min_gain: float = 0.0,
                  trace=None) -> Coded:
    """Encode every 32×32 sub-tile of uint8 ``rgb`` (H, W, 3) in raster order.

    Adaptive allocation (``target_psnr``): a sub-tile stops at the first iteration (0 = the prediction
    alone) whose 8-bit reconstruction reaches the target over its pixels inside the image. Constant
    allocation (``iterations``): every sub-tile gets that many. ``min_gain`` (adaptive only): a sub-tile also
    stops once an iteration took less than that fraction off its squared error (it will not reach the target
    at a price worth paying; marked missed). ``use_context=False`` predicts flat
    mid-grey (independent tiles; for comparisons, not a stream option). ``trace(r, c, t, q)``, if given, sees
    every sub-tile's 8-bit reconstruction (1, 3, 32, 32) after each iteration t (0: the prediction): diagnostics.
    """
    if (target_psnr is None) == (iterations is None):
        raise ValueError("give exactly one of target_psnr (adaptive) or iterations (constant allocation)")
    if iterations is not None and not 0 <= iterations <= MAX_ITERATIONS:
        raise ValueError(f"iterations must be in [0, {MAX_ITERATIONS}], got {iterations}")
    h, w = rgb.shape[:2]
    rows, cols = subtile_grid(w, h)
    padded = torch.from_numpy(np.ascontiguousarray(_padded(rgb))).permute(2, 0, 1).float()
    recon = torch.empty_like(padded)
    canvas = _Canvas(rows, cols)
    counts = np.zeros((rows, cols), dtype=np.int64)
    sse = np.zeros((rows, cols))
    missed = np.zeros((rows, cols), dtype=bool)
    bits: dict[tuple[int, int], np.ndarray] = {}
    max_sse = None
    for r in range(rows):
        for c in range(cols):
            orig = padded[None, :, r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE]
            vh, vw = min(TILE, h - r * TILE), min(TILE, w - c * TILE)
            if target_psnr is not None:
                max_sse = 3 * vh * vw * 255.0**2 / 10 ** (target_psnr / 10)
            x = orig / 255
            out = _prediction(net, canvas, r, c, x, use_context)
            limit = MAX_ITERATIONS if iterations is None else iterations
            step_trace = (lambda t, q, r=r, c=c: trace(r, c, t, q)) if trace else None
            tile_bits, err, q = _iterate(net, x, orig, out, (vh, vw), limit, max_sse, min_gain, step_trace)
            counts[r, c], sse[r, c] = len(tile_bits), err
            missed[r, c] = max_sse is not None and err > max_sse
            bits[r, c] = np.stack(tile_bits) if tile_bits else np.zeros((0, net.symbols_per_iteration), np.uint8)
            canvas.tiles[r, c] = q / 255
            recon[:, r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE] = q[0]
        canvas.row_done(r)
    recon_np = recon.permute(1, 2, 0).to(torch.uint8).numpy()
    return Coded(SubtileCodes(counts, bits), recon_np, sse, missed)


@torch.no_grad()
@_one_thread()
def reconstruct(net: Minnen2018Codec, codes: SubtileCodes, rows: int, cols: int,
                max_iterations: int | None = None) -> np.ndarray:
    """Decode sub-tiles [0, rows) × [0, cols) (a causal rectangle) → uint8 (rows·32, cols·32, 3).
    ``max_iterations`` caps every sub-tile's iterations (a progressive preview)."""
    canvas = _Canvas(rows, cols)
    out_img = np.empty((rows * TILE, cols * TILE, 3), dtype=np.uint8)
    like = torch.empty(1, 3, TILE, TILE)
    for r in range(rows):
        for c in range(cols):
            out = _prediction(net, canvas, r, c, like, True)
            dec_s = None
            b = codes.bits[r, c]
            n = len(b) if max_iterations is None else min(len(b), max_iterations)
            nh = net.config.head_bits
            for t in range(n):
                code = torch.from_numpy(b[t, nh:].astype(np.float32)).reshape(1, net.config.code_channels,
                                                                              TILE // 16, TILE // 16)
                d, dec_s = net.decoder(code * 2 - 1, dec_s)
                out = out + net.step_output(d, torch.from_numpy(b[t, :nh].astype(np.int64))[None])
            q = _to_uint8(out)
            canvas.tiles[r, c] = q / 255
            out_img[r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE] = q[0].permute(1, 2, 0).to(torch.uint8).numpy()
        canvas.row_done(r)
    return out_img


# --- entropy coding of one container tile's sub-tiles ---------------------------------------------


def subtiles_of(box, tile: int = TILE) -> list[tuple[int, int]]:
    """The (r, c) sub-tiles inside a container tile's box, raster order (container tiles are multiples of 32)."""
    x, y, w, h = box
    return [(r, c) for r in range(y // tile, -(-(y + h) // tile)) for c in range(x // tile, -(-(x + w) // tile))]


def pack_symbols(net: Minnen2018Codec, cells: list[tuple[int, int]], codes: SubtileCodes) -> bytes:
    """Range-code the iteration counts (uniform) then every sub-tile's bits (P(1) per iteration and bit position)."""
    return rangecoder.encode_counted_bits(np.array([codes.iterations[rc] for rc in cells]), MAX_ITERATIONS + 1,
                                          [codes.bits[rc] for rc in cells], net.bit_probabilities(MAX_ITERATIONS))


def unpack_symbols(net: Minnen2018Codec, cells: list[tuple[int, int]], data: bytes, codes: SubtileCodes) -> None:
    """Inverse of :func:`pack_symbols`, into ``codes``."""
    counts, bits = rangecoder.decode_counted_bits(data, len(cells), MAX_ITERATIONS + 1,
                                                  net.bit_probabilities(MAX_ITERATIONS))
    for rc, n, b in zip(cells, counts, bits):
        codes.iterations[rc] = n
        codes.bits[rc] = b


def _alpha_of(data: bytes, header: Header, i: int, box) -> bytes:
    """The inflated alpha plane of tile ``i`` (an RGBA stream)."""
    _, deflated = bitstream.split_symbols_blob(bitstream.tile_payload(data, header, i), True)
    return bitstream.inflate_alpha(deflated, box[2] * box[3])


# --- whole streams ------------------------------------------------------------------------------


def _quality_code(iterations: np.ndarray) -> int:
    return code_of_fraction(float(np.mean(iterations)) / MAX_ITERATIONS) if iterations.size else 0


def _pack_stream(loaded, img, coded: Coded, target: RateTarget, tile_size: int) -> tuple[bytes, Header]:
    net = loaded.model
    header = Header(loaded.model_id, loaded.sha256, img.width, img.height, img.channels, tile_size,
                    target.mode, target.value)
    blobs, entries = [], []
    for box in header.boxes():
        cells = subtiles_of(box)
        x, y, w, h = box
        alpha = img.tile_alpha(x, y, w, h)
        blobs.append(bitstream.symbols_blob(pack_symbols(net, cells, coded.codes), alpha))
        missed = any(coded.missed[rc] for rc in cells)
        flags = (FLAG_MISSED_TARGET if missed else 0) | (FLAG_ALPHA if alpha is not None else 0)
        entries.append(TileEntry(0, 0, _quality_code(np.array([coded.codes.iterations[rc] for rc in cells])), flags, 0))
    header.tiles = entries
    return bitstream.pack(header, blobs), header


def encode(image: np.ndarray, loaded, target: RateTarget, *, tile_size: int = 256, name: str = "image",
           use_context: bool = True):
    """An :class:`codec.api.EncodeResult` for ``image`` with a minnen2018 ``loaded`` model.

    ``target_psnr``: adaptive allocation (each sub-tile stops once it reaches the target: the paper's);
    ``quality`` q: constant allocation, round(q·16) iterations for every sub-tile; ``target_bpp``:
    adaptive allocation at the highest target PSNR (bisection, 10 passes) whose stream fits the budget.
    """
    check_tile_size(tile_size)
    img = prepare(image, name)
    rgb = img.rgb if img.channels != 1 else np.repeat(np.asarray(img.rgb)[..., :1], 3, axis=2)
    rgb = np.ascontiguousarray(np.asarray(rgb)[..., :3])
    net = loaded.model

    def run(mode: str, value: float):
        if mode == "quality":
            coded = code_subtiles(net, rgb, iterations=int(round(value * MAX_ITERATIONS)), use_context=use_context)
        else:
            coded = code_subtiles(net, rgb, target_psnr=value, use_context=use_context,
                                  min_gain=STOP_MIN_GAIN if net.config.residual_gain else 0.0)
        return coded, *_pack_stream(loaded, img, coded, target, tile_size)

    if target.mode == "target_bpp":
        budget = target.value * img.width * img.height / 8
        lo, hi, best = 10.0, 60.0, None
        for _ in range(10):
            mid = (lo + hi) / 2
            attempt = run("target_psnr", mid)
            if len(attempt[1]) <= budget:
                best, lo = attempt, mid
            else:
                hi = mid
        coded, data, header = best or run("target_psnr", 10.0)
        if best is None:  # even a 10 dB target overflows: mark every container tile as missing the target
            for t in header.tiles:
                t.flags |= FLAG_MISSED_TARGET
            data = bitstream.pack(header, [bitstream.tile_payload(data, header, i) for i in range(len(header.tiles))])
    else:
        coded, data, header = run(target.mode, target.value)
    sse_tiles = np.array([sum(coded.sse[rc] for rc in subtiles_of(b)) for b in header.boxes()])
    npix = np.array([w * h for _, _, w, h in header.boxes()], dtype=np.float64)
    psnr = float(psnr_from_mse(np.array([coded.sse.sum() / (3 * img.width * img.height)]))[0])
    return EncodeResult(data, header, psnr_from_mse(sse_tiles / (3 * npix)), psnr)


def read_codes(data: bytes, header: Header, net: Minnen2018Codec, ids: list[int]) -> SubtileCodes:
    """The sub-tile codes of container tiles ``ids`` (checksums verified); damage is a CorruptStreamError naming the tile."""
    rows, cols = subtile_grid(header.width, header.height)
    codes = SubtileCodes(np.zeros((rows, cols), dtype=np.int64), {})
    blobs = {i: bitstream.tile_payload(data, header, i) for i in ids}  # every checksum before any work
    for i in ids:
        box = header.tile_box(i)
        try:
            symbols, _ = bitstream.split_symbols_blob(blobs[i], header.channels == 4)
            unpack_symbols(net, subtiles_of(box), symbols, codes)
        except BaseException as exc:  # BaseException: a Rust panic in constriction is one
            if not is_damaged_tile(exc):
                raise
            raise damaged(header.tile_label(i), exc) from exc
    return codes


def prefix_iterations(iterations: np.ndarray, max_bits: float, bits_per_iteration: int) -> int:
    """The largest per-sub-tile iteration cap k whose bits (Σ min(n, k) · symbols per iteration) fit ``max_bits``;
    ``0 < max_bits < 1`` is a fraction of all the stream's iteration bits."""
    if not max_bits > 0:
        raise ValueError(f"max_bits must be positive (bits, or a fraction below 1), got {max_bits}")
    total = int(iterations.sum()) * bits_per_iteration
    budget = max_bits * total if max_bits < 1 else max_bits
    k = 0
    while k < MAX_ITERATIONS and np.minimum(iterations, k + 1).sum() * bits_per_iteration <= budget:
        k += 1
    return k


def decode_region(data: bytes, header: Header, loaded, region, *, max_pixels: int,
                  max_bits: float | None = None) -> np.ndarray:
    """Decode ``region`` (x, y, w, h) of a minnen2018 stream.

    The prediction of a sub-tile needs its decoded left, above and above-left neighbours, so
    decoding the region means decoding every sub-tile from the image's top-left corner down to
    the region's bottom-right one (a causal rectangle), then cropping. ``max_bits``: a progressive
    preview from the first k iterations of every sub-tile (:func:`prefix_iterations`).
    """
    net = loaded.model
    if header.tile_size % TILE:
        raise CorruptStreamError(f"tile size {header.tile_size} is not a multiple of the {TILE}-px sub-tiles")
    x0, y0, w, h = region
    rows, cols = -(-(y0 + h) // TILE), -(-(x0 + w) // TILE)
    causal = (0, 0, min(header.width, cols * TILE), min(header.height, rows * TILE))
    if causal[2] * causal[3] > max_pixels:
        raise StreamTooLargeError(f"{header.width}×{header.height} stream: decoding region {tuple(region)} means "
                                  f"decoding its causal rectangle of {causal[2]}×{causal[3]} pixels, over the limit "
                                  f"of {max_pixels} (max_pixels)")
    boxes = header.boxes()
    ids = intersecting(boxes, causal) if max_bits is None else list(range(len(boxes)))
    codes = read_codes(data, header, net, ids)
    cap = None if max_bits is None else prefix_iterations(codes.iterations, max_bits, net.symbols_per_iteration)
    full = reconstruct(net, codes, rows, cols, cap)
    rgb = np.ascontiguousarray(full[y0 : y0 + h, x0 : x0 + w])
    alpha = None
    if header.channels == 4:
        alpha = np.empty((h, w), dtype=np.uint8)
        for i in intersecting(boxes, region):
            bx = boxes[i]
            plane = _alpha_of(data, header, i, bx)
            into, part = overlap(bx, region)
            alpha[into] = np.frombuffer(plane, dtype=np.uint8).reshape(bx[3], bx[2])[part]
    return finish(rgb, alpha, header.channels)


def truncate(data: bytes, loaded, iterations: int) -> bytes:
    """The same stream with every sub-tile cut to its first ``iterations`` iterations (no network runs):
    what a progressive transmission of that prefix carries. Tiles cut short are flagged as missing the target."""
    header = bitstream.read_header(bytes(data))
    bitstream.check_length(data, header)
    net = loaded.model
    codes = read_codes(bytes(data), header, net, list(range(len(header.tiles))))
    cut = SubtileCodes(np.minimum(codes.iterations, iterations), {rc: b[:iterations] for rc, b in codes.bits.items()})
    blobs = []
    for i, (entry, box) in enumerate(zip(header.tiles, header.boxes())):
        cells = subtiles_of(box)
        alpha = None
        if header.channels == 4:
            alpha = _alpha_of(data, header, i, box)
        blobs.append(bitstream.symbols_blob(pack_symbols(net, cells, cut), alpha))
        if any(cut.iterations[rc] < codes.iterations[rc] for rc in cells):
            entry.flags |= FLAG_MISSED_TARGET
        entry.quality_code = _quality_code(np.array([cut.iterations[rc] for rc in cells]))
    return bitstream.pack(header, blobs)
