"""The error-bounded mode (``max_error=E``, E ≥ 1): every tile coded by the coder codec.toolchoice picks among
those that keep every sample within ±E (near-lossless, exact as the last resort); no tile is learned, so
decoding needs no model. Photos are written as v3 photos (alpha exact, as learned tiles carry it), rasters as
v3 rasters (nodata exact). E = 0 is the lossless path (codec.api)."""

from __future__ import annotations

import numpy as np

from codec import tilecoders, toolchoice
from codec.format import container
from codec.format.container import FLAG_ALPHA, Header, TileEntry
from codec.images.prep import prepare
from codec.metrics import band_psnr, band_sse, psnr_from_band_sse, psnr_from_mse, worst_band_psnr
from codec.options import EncodeOptions
from codec.results import EncodeResult


def _entry(name: str, flags: int = 0) -> TileEntry:
    coder = tilecoders.by_name(name)
    return TileEntry(0, 0, container.LOSSLESS_CODE if coder.exact else 0, flags, 0, coder.id)


def encode_photo(image: np.ndarray, loaded, options: EncodeOptions) -> EncodeResult:
    """A v3 photo of an 8-bit gray/RGB/RGBA image, every colour sample within ±E, alpha exact."""
    e = options.target.max_error
    img = prepare(image, options.name)
    header = Header(loaded.model_id, loaded.sha256, img.width, img.height, img.channels, options.tile_size,
                    "max_error", float(e))
    blobs, entries, sse, samples = [], [], [], []

    def tiles():
        for x, y, w, h in header.boxes():
            yield img.tile_colour(x, y, w, h), img.tile_alpha(x, y, w, h)

    def search(tile):
        colour, _ = tile
        h, w, bands = colour.shape
        return tile, toolchoice.choose_bounded(colour, tilecoders.TileContext(h, w, bands, "uint8"), e)

    for (colour, alpha), choice in toolchoice.map_tiles(search, tiles(), toolchoice.tool_workers()):
        blobs.append(container.photo_coder_blob(choice.payload, alpha))
        entries.append(_entry(choice.coder, FLAG_ALPHA if alpha is not None else 0))
        sse.append(float(np.sum((choice.decoded.astype(np.int64) - colour.astype(np.int64)) ** 2)))
        samples.append(colour.size)
    header.tiles = entries
    sse_a, n_a = np.array(sse), np.array(samples, dtype=np.float64)
    psnr = float(psnr_from_mse(np.array([sse_a.sum() / n_a.sum()]))[0])
    return EncodeResult(container.pack(header, blobs), header, psnr_from_mse(sse_a / n_a), psnr)


def encode_raster(img: np.ndarray, header: Header, valid: list, counts: np.ndarray,
                  options: EncodeOptions) -> EncodeResult:
    """A v3 raster (header built by codec.api with its RasterInfo), every valid sample within ±E, nodata exact;
    PSNRs as a learned raster reports them (each band against its own peak, a tile's its worst band's)."""
    e, info = options.target.max_error, header.raster
    peaks = info.band_peaks
    blobs, entries, tile_psnr = [], [], []
    total = np.zeros(info.bands)

    def tiles():  # read in this thread (a windowed source), coded on the search threads
        for i, (x, y, bw, bh) in enumerate(header.boxes()):
            yield i, np.asarray(img[y : y + bh, x : x + bw])

    def search(tile):
        i, block = tile
        choice = toolchoice.choose_bounded(block, tilecoders.TileContext(*block.shape[:2], info.bands, info.dtype,
                                                                          info.rule), e)
        return i, choice, band_sse(block, choice.decoded, valid[i])[0]

    for i, choice, sse in toolchoice.map_tiles(search, tiles(), toolchoice.tool_workers()):
        blobs.append(choice.payload)
        entries.append(_entry(choice.coder))
        total += sse
        tile_psnr.append(worst_band_psnr(sse, counts[i], peaks))
    header.tiles = entries
    n = counts.sum(0)
    return EncodeResult(container.pack(header, blobs), header, np.array(tile_psnr),
                        psnr_from_band_sse(total, n, peaks), band_psnr(total, n, peaks))
