"""The hyperprior's 8-bit image coding (stream version 1): tiles through rate control and the engine.

    image ─prepare─▶ tiles ─engine.batches─▶ strategy.choose (ratecontrol) ─▶ engine.encode_latents ─▶ container.pack
    stream ─tile index─▶ (only the tiles needed) ─▶ engine.decode_latents ─▶ engine.synthesize ─▶ region
"""

from __future__ import annotations

import numpy as np

from codec import tilecoders, toolchoice
from codec.errors import damaged, is_damaged_tile
from codec.families.hyperprior import ratecontrol
from codec.families.hyperprior.engine import Engine, get_coder, map_ahead
from codec.families.hyperprior.tiling import batches, latent_grid
from codec.format import container
from codec.format.container import FLAG_ALPHA, FLAG_MISSED_TARGET, Header, TileEntry
from codec.format.tiles import Box, overlap
from codec.images.prep import PreparedImage, finish, prepare
from codec.metrics import psnr_from_mse
from codec.options import DecodeOptions, EncodeOptions
from codec.rangecoder import RangeCodingError
from codec.results import EncodeResult


def encode_image(image: np.ndarray, loaded, options: EncodeOptions) -> EncodeResult:
    """A v1 stream of an 8-bit gray/RGB/RGBA image; passes until the strategy is done (target_bpp may retry)."""
    img = prepare(image, options.name)
    loaded, engine = get_coder(loaded, options.device, options.half, options.entropy_workers)
    target = options.target
    header = Header(loaded.model_id, loaded.sha256, img.width, img.height, img.channels, options.tile_size,
                    target.mode, target.value)
    boxes = header.boxes()
    strategy = ratecontrol.plan(target, engine, lambda: engine.batches(img, boxes, options.batch_size),
                                width=img.width, height=img.height, n_tiles=len(boxes),
                                overhead_bytes=container.estimated_overhead(loaded.model_id, len(boxes)), effort=options.effort)
    while strategy is not None:  # one pass, or more where the strategy asks for another (target_bpp)
        result = _encode_pass(engine, img, header, boxes, strategy, options)
        strategy = strategy.retry(len(result.data))
    return result


def _encode_pass(engine: Engine, img: PreparedImage, header: Header, boxes: list[Box],
                 strategy: ratecontrol.Strategy, options: EncodeOptions) -> EncodeResult:
    """Analyse every tile, let ``strategy`` choose its quantisation, entropy-code, pack.

    With overlap coding, batch k is range-coded while batch k+1 is analysed and quantised."""
    blobs: list[bytes] = [b""] * len(boxes)
    entries: list[TileEntry | None] = [None] * len(boxes)
    sse = np.full(len(boxes), np.nan)
    chosen = ((batch.ids, strategy.choose(engine, batch)) for batch in engine.batches(img, boxes, options.batch_size))
    for (ids, choice), (z_streams, y_streams) in map_ahead(lambda c: engine.encode_latents(c[1].latents), chosen,
                                                             engine.overlaps(options.overlap_coding)):
        if choice.sse is not None:
            sse[ids] = choice.sse
        for k, i in enumerate(ids):
            x, y, w, h = boxes[i]
            alpha = img.tile_alpha(x, y, w, h)
            blobs[i] = container.tile_blob(z_streams[k], y_streams[k], alpha)
            missed = choice.missed is not None and choice.missed[k]
            flags = (FLAG_MISSED_TARGET if missed else 0) | (FLAG_ALPHA if alpha is not None else 0)
            entries[i] = TileEntry(0, 0, int(choice.codes[k]), flags, 0)
    npix = np.array([w * h for _, _, w, h in boxes], dtype=np.float64)
    if options.target.mode == "target_psnr":
        allowed = toolchoice.allowed_tools(options.tools, options.lossless_fallback)
        thorough = options.effort >= toolchoice.THOROUGH_EFFORT

        def search(tile) -> toolchoice.TileChoice:
            colour, learned, ctx = tile
            return toolchoice.choose_tile(colour, ctx, learned, options.target.value, toolchoice.photo_psnr(colour),
                                          allowed, thorough)

        ids = range(len(boxes)) if allowed else range(0)
        tiles = (_photo_tile(img, boxes[i], blobs[i], entries[i], sse[i] / (3 * npix[i])) for i in ids)  # read here
        for i, choice in zip(ids, toolchoice.map_tiles(search, tiles, toolchoice.tool_workers())):
            if choice.payload is not None:
                sse[i] = _use_photo_tool(img, boxes[i], blobs, entries, i, choice)
    header.tiles = entries
    data = container.pack(header, blobs)
    psnr = None if np.isnan(sse).any() else float(psnr_from_mse(np.array([sse.sum() / (3 * npix.sum())]))[0])
    return EncodeResult(data, header, psnr_from_mse(sse / (3 * npix)), psnr)


def _photo_tile(img: PreparedImage, box: Box, blob: bytes, entry: TileEntry, mse: float):
    """(colour samples, what the learned pass measured, tile context) of one tile: codec.toolchoice's input."""
    x, y, w, h = box
    colour = img.tile_colour(x, y, w, h)
    learned = toolchoice.LearnedTile(len(blob), float(psnr_from_mse(np.array([mse]))[0]), entry.missed_target,
                                     w * h * colour.shape[2])
    return colour, learned, tilecoders.TileContext(h, w, colour.shape[2], "uint8")


def _use_photo_tool(img: PreparedImage, box: Box, blobs: list, entries: list, i: int,
                    choice: toolchoice.TileChoice) -> float:
    """Tile ``i`` coded by the tool codec.toolchoice picked (its blob and entry replaced); returns the tile's
    squared error over its colour samples (3 per pixel, as the learned tiles count it)."""
    x, y, w, h = box
    coder = tilecoders.by_name(choice.coder)
    alpha = img.tile_alpha(x, y, w, h)
    blobs[i] = container.photo_coder_blob(choice.payload, alpha)
    entries[i] = TileEntry(0, 0, container.LOSSLESS_CODE if coder.exact else 0, entries[i].flags & FLAG_ALPHA, 0, coder.id)
    return 0.0 if coder.exact else float(10 ** (-choice.psnr / 10) * 255.0**2 * 3 * w * h)


def decode_image(data: bytes, header: Header, loaded, region: Box, ids: list[int], options: DecodeOptions) -> np.ndarray:
    """``region`` of a v1 stream from tiles ``ids``; batch k+1 is range-decoded while batch k is synthesised."""
    _, engine = get_coder(loaded, options.device, options.half, options.entropy_workers)
    boxes = header.boxes()
    rgb = np.empty((region[3], region[2], 3), dtype=np.uint8)
    alpha = np.empty((region[3], region[2]), dtype=np.uint8) if header.channels == 4 else None

    def parsed():
        for shape, chunk in batches(boxes, ids, options.batch_size):
            yield shape, chunk, [container.tile_parts(data, header, i) for i in chunk]  # alpha inflated per batch

    def latents_of(b):
        shape, chunk, parts = b
        return latents(engine, header, chunk, shape, [p[0] for p in parts], [p[1] for p in parts])

    for (shape, chunk, parts), y_hat in map_ahead(latents_of, parsed(), engine.overlaps(options.overlap_coding)):
        codes = [header.tiles[i].quality_code for i in chunk]
        recon = engine.synthesize(y_hat, codes).permute(0, 2, 3, 1).cpu().numpy()
        for k, i in enumerate(chunk):
            into, part = overlap(boxes[i], region)
            rgb[into] = recon[k][part]
            if alpha is not None:
                alpha[into] = np.frombuffer(parts[k][2], dtype=np.uint8).reshape(boxes[i][3], boxes[i][2])[part]
    return finish(rgb, alpha, header.channels)


def latents(engine: Engine, header: Header, chunk: list[int], shape: tuple[int, int], z, y):
    """ŷ of a batch of tiles; a damaged tile is a CorruptStreamError naming it (codec.errors' one mapping)."""
    try:
        return engine.decode_latents(z, y, latent_grid(shape))
    except BaseException as exc:  # BaseException: a Rust panic in constriction is one
        if not is_damaged_tile(exc):
            raise
        stream = exc.stream if isinstance(exc, RangeCodingError) else None
        where = header.tile_label(chunk[stream]) if stream is not None else ", ".join(map(header.tile_label, chunk))
        raise damaged(where, exc) from exc
