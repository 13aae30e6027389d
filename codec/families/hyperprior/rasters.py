"""The hyperprior's raster coding (stream version 2, or 3 with a tool the v2 index cannot spell): every band
group of every tile through rate control and the engine; under target_psnr each tile then coded by the tool
codec.toolchoice picks (JPEG XL lossy where it is smaller or the model misses, exact as the last resort)."""

from __future__ import annotations

import numpy as np

from codec import tilecoders, toolchoice
from codec.errors import CorruptStreamError
from codec.families.hyperprior import bands as band_coding, ratecontrol
from codec.families.hyperprior.coding import latents
from codec.families.hyperprior.engine import Engine, get_coder, map_ahead
from codec.families.hyperprior.tiling import batches
from codec.format import container, raster
from codec.format.container import FLAG_MISSED_TARGET, FLAG_NODATA, Header, TileEntry
from codec.format.tiles import Box, overlap
from codec.metrics import band_psnr, band_sse as band_sse_of, psnr_from_band_sse, worst_band_psnr
from codec.options import DecodeOptions, EncodeOptions
from codec.results import EncodeResult


def encode_raster(img: np.ndarray, header: Header, valid: list, counts: np.ndarray, loaded,
                  options: EncodeOptions) -> EncodeResult:
    """The v2 stream of a checked (H, W, B) raster whose header (with its RasterInfo) is built."""
    _, engine = get_coder(loaded, options.device, options.half, options.entropy_workers)
    info, boxes = header.raster, header.boxes()
    groups, n, n_bands = info.groups, len(boxes), info.bands

    def all_batches():
        for g, group in enumerate(groups):
            yield from engine.raster_batches(img, info, valid, boxes, group, g * n, options.batch_size)

    # target_bpp is bits per sample here: the budget of a W·bands × H image
    strategy = ratecontrol.plan(options.target, engine, all_batches, width=header.width * n_bands,
                                height=header.height, n_tiles=n * len(groups),
                                overhead_bytes=container.estimated_overhead(loaded.model_id, n * len(groups)),
                                effort=options.effort)
    psnr_mode = options.target.mode == "target_psnr"
    allowed = toolchoice.allowed_tools(options.tools, options.lossless_fallback) if psnr_mode else ()
    while strategy is not None:
        result = _raster_pass(engine, img, header, valid, counts, strategy, options, allowed)
        strategy = strategy.retry(len(result.data))
    return result


def _code_groups(engine: Engine, img: np.ndarray, header: Header, valid: list, strategy: ratecontrol.Strategy,
                 options: EncodeOptions):
    """(per tile per group (code, z, y), missed per tile, (n, bands) squared error) of one pass."""
    info, boxes = header.raster, header.boxes()
    n, groups = len(boxes), info.groups
    parts: list[list] = [[None] * len(groups) for _ in range(n)]
    missed = np.zeros(n, dtype=bool)
    band_sse = np.full((n, info.bands), np.nan)
    for g, group in enumerate(groups):
        keep = raster.real_bands(group)
        chosen = ((batch.ids, strategy.choose(engine, batch)) for batch in
                  engine.raster_batches(img, info, valid, boxes, group, g * n, options.batch_size))
        for (ids, choice), (z_streams, y_streams) in map_ahead(lambda c: engine.encode_latents(c[1].latents), chosen,
                                                                 engine.overlaps(options.overlap_coding)):
            for k, gid in enumerate(ids):
                i = gid - g * n
                parts[i][g] = (int(choice.codes[k]), z_streams[k], y_streams[k])
                missed[i] |= choice.missed is not None and bool(choice.missed[k])
                if choice.band_sse is not None:
                    band_sse[i, [group[p] for p in keep]] = choice.band_sse[k, keep]
    return parts, missed, band_sse


def _raster_pass(engine: Engine, img: np.ndarray, header: Header, valid: list, counts: np.ndarray,
                 strategy: ratecontrol.Strategy, options: EncodeOptions, allowed: tuple[str, ...]) -> EncodeResult:
    """Every band group of every tile through ``strategy`` and the entropy coder (overlapped with the next
    batch's transforms, as for images); then, under target_psnr, each tile's tool (codec.toolchoice); pack."""
    info, boxes = header.raster, header.boxes()
    parts, missed, band_sse = _code_groups(engine, img, header, valid, strategy, options)
    blobs, entries = [], []

    def tiles():  # drawn in this thread: a windowed source is read here, never from the search threads
        for i, (x, y, bw, bh) in enumerate(boxes):
            mask = raster.pack_mask(valid[i], info.mask_bands) if valid[i] is not None else None
            block = np.asarray(img[y : y + bh, x : x + bw]) if allowed else None  # no tool: nothing to read
            yield i, block, container.raster_tile_blob(parts[i], mask), mask

    def search(tile):
        i, block, blob, _ = tile
        choice = _tool_for(block, valid[i], info, blob, band_sse[i], counts[i], missed[i], options, allowed)
        sse = None if choice.payload is None else _band_sse_of(tilecoders.by_name(choice.coder), choice.payload,
                                                                 block, valid[i], info)
        return tile, choice, sse

    for (i, _, blob, mask), choice, sse in toolchoice.map_tiles(search, tiles(),
                                                                          toolchoice.tool_workers() if allowed else 1):
        if choice.payload is not None:
            coder = tilecoders.by_name(choice.coder)
            blobs.append(choice.payload)
            entries.append(TileEntry(0, 0, container.LOSSLESS_CODE if coder.exact else 0, 0, 0, coder.id))
            band_sse[i] = sse
            continue
        blobs.append(blob)
        flags = (FLAG_MISSED_TARGET if missed[i] else 0) | (FLAG_NODATA if mask is not None else 0)
        entries.append(TileEntry(0, 0, max(code for code, _, _ in parts[i]), flags, 0))
    header.tiles = entries
    data = container.pack(header, blobs)
    n = len(boxes)
    peaks = info.band_peaks
    tile_psnr = np.array([np.nan if np.isnan(band_sse[i]).any() else worst_band_psnr(band_sse[i], counts[i], peaks)
                          for i in range(n)])  # a tile's PSNR is its worst band's: what the target checks
    if np.isnan(band_sse).any():
        return EncodeResult(data, header, tile_psnr, None)
    total = band_sse.sum(0)
    return EncodeResult(data, header, tile_psnr, psnr_from_band_sse(total, counts.sum(0), peaks),
                        band_psnr(total, counts.sum(0), peaks))


def _tool_for(block, valid, info, blob: bytes, band_sse: np.ndarray, count: int, missed: bool,
              options: EncodeOptions, allowed: tuple[str, ...]) -> toolchoice.TileChoice:
    """codec.toolchoice's pick for one raster tile (the learned tile when no tool is allowed or measured)."""
    psnr = np.nan if np.isnan(band_sse).any() else worst_band_psnr(band_sse, count, info.band_peaks)
    if not allowed or np.isnan(psnr) and not missed:
        return toolchoice.TileChoice("learned", None, psnr, missed)
    block = np.asarray(block)
    learned = toolchoice.LearnedTile(len(blob), psnr, missed, block.shape[0] * block.shape[1] * block.shape[2])
    ctx = tilecoders.TileContext(block.shape[0], block.shape[1], info.bands, info.dtype, info.rule)
    return toolchoice.choose_tile(block, ctx, learned, options.target.value, toolchoice.raster_psnr(block, valid, info.band_peaks),
                                  allowed, thorough=options.effort >= toolchoice.THOROUGH_EFFORT)


def _band_sse_of(coder, payload: bytes, block, valid, info) -> np.ndarray:
    """Squared error per band of a tile another tool coded (zeros for an exact one)."""
    if coder.exact:
        return np.zeros(info.bands)
    block = np.asarray(block)
    ctx = tilecoders.TileContext(block.shape[0], block.shape[1], info.bands, info.dtype, info.rule)
    return band_sse_of(block, coder.decode_tile(payload, ctx), valid)[0]


def decode_raster_tiles(data: bytes, header: Header, loaded, ids: list[int], region: Box, out: np.ndarray,
                        options: DecodeOptions) -> None:
    """The learned tiles ``ids`` of a raster into ``out``: a batch and a band group at a time (floats for one
    batch only), nodata put back from each tile's mask."""
    info, boxes = header.raster, header.boxes()
    _, engine = get_coder(loaded, options.device, options.half, options.entropy_workers)
    for shape, chunk in batches(boxes, ids, options.batch_size):
        parts = [container.raster_tile_parts(data, header, i) for i in chunk]
        for g, group in enumerate(info.groups):
            codes = [p[0][g][0] for p in parts]
            y_hat = latents(engine, header, chunk, shape, [p[0][g][1] for p in parts], [p[0][g][2] for p in parts])
            raw = band_coding.to_raw(engine.synthesize_float(y_hat, codes).cpu().numpy(), info, group)
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
                    valid = raster.unpack_mask(parts[k][1], bh, bw, info.mask_bands)[part]
                except CorruptStreamError as exc:
                    raise CorruptStreamError(f"{header.tile_label(i)}: {exc}") from exc
            raster.restore_nodata(out[into], valid, info.rule)
