"""Batched tile engine: one model on one device, many same-shaped tiles per forward pass. No policy.

    image, boxes ─batches─▶ Batch(y = g_a(padded tiles), originals, masks)        (tiles.batches: by padded shape)
    y, codes ─quantize─▶ Latents ─encode_latents─▶ (z bytes, y bytes) per tile      encoder
    y, codes ─measure─▶ Latents + MSE of the 8-bit reconstruction                     what rate control asks
    (z bytes, y bytes) ─decode_latents─▶ ŷ_s ─synthesize(codes)─▶ uint8 tiles        decoder

Qualities come in as u16 codes (:mod:`codec.quality`) and are handed to the model the same
way on both sides. The float transforms run on any device and dtype; everything that decides
the bits (ẑ, the integer hyper-synthesis, the symbols) is exact, so a CPU decodes what a GPU
encoded. Which quality a tile gets is decided in :mod:`codec.families.hyperprior.ratecontrol`, not here.
"""

from __future__ import annotations

import copy
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, TypeVar

import numpy as np
import torch

from codec import quality, rangecoder
from codec.images.prep import PreparedImage
from codec.families.hyperprior.model import HyperpriorCodec, Latents
from codec.loaded import LoadedModel
from codec.families.hyperprior.tiling import batches, pad_tile
from codec.format.tiles import Box
from codec.metrics import psnr_from_mse

# On a CPU the float transforms run on at most this many padded pixels at a time (one default tile):
# a 256² tile's activations (up to 8 MB each) then stay in malloc's heap, where a batch of 8 tiles'
# (64 MB) were mapped afresh and page-faulted in on every pass (glibc maps blocks over 32 MB
# directly): that cost ~40% of the transforms' time. The results are the same bits (per-tile math).
TRANSFORM_PIXELS = 256 * 256
LATENT_STRIDE = 16  # pixels per latent, each way


@dataclass
class RasterGroup:
    """How one band group's [0, 1] model output maps back to its bands' integers, and their PSNR peaks
    (codec.format.raster, codec.metrics): a batch of raster tiles is measured in those integers."""

    lo: torch.Tensor  # (3,) float32
    hi: torch.Tensor  # (3,)
    scale: torch.Tensor  # (3,)
    weight: torch.Tensor  # (3,) 1 for a band of its own, 0 for a repeated one
    peaks: np.ndarray  # (3,) each band's PSNR peak (RasterInfo.band_peaks)


@dataclass
class Batch:
    """One forward pass worth of same-shaped tiles, analysed."""

    ids: list[int]
    y: torch.Tensor
    originals: torch.Tensor  # uint8 (B, 3, H, W) on the device; rasters: their integers as float32
    masks: torch.Tensor  # 1 inside the image (and, for rasters, on valid pixels), 0 elsewhere; (n, h, w), or
    #                      (n, 3, h, w) for a raster under the band nodata rule (sample_masks)
    npix: np.ndarray  # valid pixels per tile
    raster: RasterGroup | None = None


@dataclass
class Quantised:
    """Tiles quantised at some codes, and the MSE of their 8-bit reconstructions."""

    latents: Latents
    codes: np.ndarray
    mse: np.ndarray  # 8-bit MSE; for rasters the MSE that gives their PSNR at peak 255 (so rate control is one)
    band_sse: np.ndarray | None = None  # rasters: (n, 3) squared error per group position over valid pixels

    @property
    def psnr(self) -> np.ndarray:
        return psnr_from_mse(self.mse)


def sample_masks(masks: torch.Tensor) -> torch.Tensor:
    """A batch's masks per sample, (n, 3, h, w): the band rule's as they are, a pixel mask repeated over 3."""
    return masks if masks.dim() == 4 else masks[:, None].expand(-1, 3, -1, -1)


class Engine:
    """One model on one device; tiles in, latents, bytes and reconstructions out."""

    def __init__(self, model: HyperpriorCodec, device: str | torch.device = "cpu", half: bool = False,
                 entropy_workers: int = 0):
        self.device = torch.device(device)
        self.entropy_workers = entropy_workers
        self._pool = None
        self.dtype = torch.float16 if half and self.device.type == "cuda" else torch.float32
        self.model = model.to(self.device).eval()
        for m in (model.g_a, model.g_s, model.h_a):
            m.to(dtype=self.dtype, memory_format=torch.channels_last)

    # --- tensors and transforms ------------------------------------------------------------
    def upload(self, tiles: np.ndarray) -> torch.Tensor:
        """(B, H, W, 3) on the host → (B, 3, H, W) on the device, same dtype: the one host→device copy
        of a batch (from pinned memory, asynchronous, on a GPU)."""
        x = torch.from_numpy(np.ascontiguousarray(tiles))
        if self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
        return x.permute(0, 3, 1, 2)

    def as_float(self, originals: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W), or float32 already in [0, 1] (rasters), on the device → the transforms'
        float input in [0, 1], channels-last."""
        x = originals.to(self.dtype)
        if originals.dtype == torch.uint8:
            x = x.div_(255.0)
        return x.contiguous(memory_format=torch.channels_last)

    def to_tensor(self, tiles: np.ndarray) -> torch.Tensor:
        """uint8 (B, H, W, 3), or float32 already in [0, 1] (rasters), → float (B, 3, H, W) in [0, 1] on the device."""
        return self.as_float(self.upload(tiles))

    def _per_chunk(self, transform, pixels: int, x: torch.Tensor, *per_tile) -> torch.Tensor:
        """``transform(x, *per_tile)``, on a CPU over chunks of tiles of at most :data:`TRANSFORM_PIXELS`
        padded pixels (``pixels`` per tile; at least one tile a chunk), concatenated."""
        size = max(1, TRANSFORM_PIXELS // pixels)
        if self.device.type != "cpu" or len(x) <= size:
            return transform(x, *per_tile)
        return torch.cat([transform(x[s : s + size], *(a[s : s + size] for a in per_tile))
                          for s in range(0, len(x), size)])

    @torch.no_grad()
    def analyse(self, x: torch.Tensor) -> torch.Tensor:
        return self._per_chunk(lambda t: self.model.g_a(t).float(), x.shape[-2] * x.shape[-1], x)

    def batches(self, img: PreparedImage, boxes: list[Box], batch_size: int):
        """Every tile of ``img``, padded, analysed and grouped into :class:`Batch` es."""
        for (pw, ph), ids in batches(boxes, range(len(boxes)), batch_size):
            tiles = np.empty((len(ids), ph, pw, 3), dtype=np.uint8)
            masks = np.zeros((len(ids), ph, pw), dtype=np.float32)
            for k, i in enumerate(ids):
                x, y, w, h = boxes[i]
                tiles[k] = pad_tile(img.tile_rgb(x, y, w, h), pw, ph)
                masks[k, :h, :w] = 1.0
            originals = self.upload(tiles)  # uploaded once: the transforms' input and the error's reference
            y = self.analyse(self.as_float(originals))
            yield Batch(ids, y, originals, torch.from_numpy(masks).to(self.device), masks.reshape(len(ids), -1).sum(1))

    def raster_batches(self, image: np.ndarray, info, valid: list, boxes: list[Box], group: list[int],
                       first_id: int, batch_size: int):
        """Every tile of one band group of a raster (codec.format.raster), normalised, nodata filled, analysed; ids are
        ``first_id + tile index``. Floats exist for one batch at a time, never for the whole raster."""
        from codec.families.hyperprior import bands

        lo, scale, weight = bands.group_constants(info, group)
        hi = np.array([info.hi[b] for b in group], dtype=np.float32)
        consts = RasterGroup(*(torch.from_numpy(v).to(self.device) for v in (lo, hi, scale, weight)),
                             info.band_peaks[group])
        for (pw, ph), ids in batches(boxes, range(len(boxes)), batch_size):
            tiles = np.empty((len(ids), ph, pw, 3), dtype=np.float32)
            raw = np.empty((len(ids), ph, pw, 3), dtype=np.float32)
            per_band = info.band_nodata is not None  # the band rule: a mask per group position
            masks = np.zeros((len(ids), 3, ph, pw) if per_band else (len(ids), ph, pw), dtype=np.float32)
            for k, i in enumerate(ids):
                x, y, w, h = boxes[i]
                block = np.asarray(image[y : y + h, x : x + w])
                tiles[k] = pad_tile(bands.normalised(block, info, group, valid[i]), pw, ph)
                raw[k] = pad_tile(block[..., group].astype(np.float32), pw, ph)
                if per_band:
                    v = valid[i]
                    masks[k, :, :h, :w] = (1.0 if v is None else v[None] if v.ndim == 2
                                           else np.moveaxis(v[..., group], 2, 0))
                else:
                    masks[k, :h, :w] = 1.0 if valid[i] is None else valid[i]
            y = self.analyse(self.to_tensor(tiles))
            originals = torch.from_numpy(raw).to(self.device).permute(0, 3, 1, 2)
            npix = masks.reshape(len(ids), -1).sum(1) / (3 if per_band else 1)  # band rule: mean over positions
            yield Batch([first_id + i for i in ids], y, originals, torch.from_numpy(masks).to(self.device), npix,
                        consts)

    def quantize(self, y: torch.Tensor, codes, z_hat: torch.Tensor | None = None) -> Latents:
        return self.model.compress(y, quality.q_tensor(codes), z_hat)

    @torch.no_grad()
    def synthesize(self, y_hat: torch.Tensor, codes) -> torch.Tensor:
        """Reconstruction as uint8 (B, 3, H, W): exactly what a decoder outputs."""
        return self.synthesize_float(y_hat, codes).mul_(255).round_().to(torch.uint8)

    @torch.no_grad()
    def synthesize_float(self, y_hat: torch.Tensor, codes) -> torch.Tensor:
        """Reconstruction as float32 (B, 3, H, W) in [0, 1], unrounded: what a raster decoder maps to its bands."""
        def synthesize(y, q):
            return self.model.decompress(y, q).float().clamp_(0, 1)

        pixels = y_hat.shape[-2] * y_hat.shape[-1] * LATENT_STRIDE**2
        return self._per_chunk(synthesize, pixels, y_hat.to(self.device), quality.q_tensor(codes))

    @torch.no_grad()
    def measure(self, y: torch.Tensor, codes, originals: torch.Tensor, masks: torch.Tensor,
                raster: RasterGroup | None = None, z_hat: torch.Tensor | None = None) -> Quantised:
        """Quantise at ``codes`` (with hyper-latent ``z_hat`` where given) and measure the MSE of the 8-bit
        reconstruction over ``masks`` (for a raster group, of its integers: :meth:`_measure_raster`)."""
        latents = self.quantize(y, codes, z_hat)
        if raster is not None:
            return self._measure_raster(latents, codes, originals, masks, raster)
        recon = self.synthesize(latents.y_hat, codes)
        diff = recon.to(torch.int32) - originals.to(torch.int32)
        sse = (diff * diff).sum(1).mul_(masks > 0).flatten(1).sum(1)  # exact integers (int64)
        mse = (sse.double() / (3 * masks.flatten(1).sum(1))).cpu().numpy()
        return Quantised(latents, np.asarray(codes), mse)

    def _measure_raster(self, latents: Latents, codes, originals, masks, r: RasterGroup) -> Quantised:
        """Per tile: the group's worst band PSNR (codec.metrics.worst_band_psnr: over valid pixels, each band
        against its own peak), handed to rate control as the MSE with that PSNR at peak 255, so a tile's
        group passes a target only when each of its bands does."""
        from codec.metrics import worst_band_psnr

        x = self.synthesize_float(latents.y_hat, codes)
        raw = torch.minimum(torch.maximum(torch.round(r.lo[:, None, None] + x * r.scale[:, None, None]),
                                          r.lo[:, None, None]), r.hi[:, None, None])
        diff = (raw - originals).double()
        m = sample_masks(masks).double()  # (n, 3, h, w)
        band_sse = (diff * diff * m).flatten(2).sum(2).cpu().numpy()  # (n, 3)
        count = m.flatten(2).sum(2).cpu().numpy().astype(np.int64)  # (n, 3) valid samples per position
        keep = r.weight.cpu().numpy() > 0
        psnr = np.array([worst_band_psnr(band_sse[t, keep], count[t, keep], r.peaks[keep]) for t in range(len(count))])
        mse = np.where(np.isinf(psnr), 0.0, 255.0**2 / 10 ** (np.minimum(psnr, 1e3) / 10))
        return Quantised(latents, np.asarray(codes), mse, band_sse)

    def estimate_bits(self, latents: Latents) -> np.ndarray:
        return self.model.estimate_bits(latents)

    def overlaps(self, overlap_coding: bool | None) -> bool:
        """Whether to range-code on a background thread (:func:`map_ahead`): as asked, else on a GPU or
        with an entropy pool, where the coding otherwise leaves the device or the pool idle. Off by
        default for in-process coding on a CPU: there the transforms already use every core, the
        coding is ~10% of the time, and a third thread on 2 cores measured anywhere from ×0.7 to
        ×1.8 on a shared machine (bench/overlap_ab.py). The bytes are the same either way."""
        if overlap_coding is not None:
            return overlap_coding
        return self.device.type != "cpu" or self.entropy_workers > 0

    # --- entropy coding (in process, or mapped over a pool of CPU processes) ------------------
    @property
    def coder(self):
        """What range-codes lists of tiles: the :mod:`codec.rangecoder` module or an entropy pool."""
        if self.entropy_workers and self._pool is None:
            from codec.parallel import EntropyPool

            self._pool = EntropyPool(self.model.tables(), self.entropy_workers)
        return self._pool or rangecoder

    def encode_latents(self, latents: Latents) -> tuple[list[bytes], list[bytes]]:
        """(z streams, y streams), one of each per tile."""
        return self.model.to_bytes(latents, self.coder)

    def decode_latents(self, z_streams: list[bytes], y_streams: list[bytes], spatial: tuple[int, int]) -> torch.Tensor:
        """ŷ_s of a batch of tiles (the integer hyper-synthesis runs on the device)."""
        return self.model.from_bytes(z_streams, y_streams, spatial, self.device, self.coder)


T = TypeVar("T")
R = TypeVar("R")


def map_ahead(fn: Callable[[T], R], items: Iterable[T], overlap: bool = True) -> Iterator[tuple[T, R]]:
    """``(item, fn(item))`` in order. With ``overlap``, ``fn`` runs on one background thread, one item
    ahead: it overlaps both the work that produces the next item (a lazy generator's transforms)
    and what the caller does with the previous result. Entropy coding is ``fn``: the transforms
    release the GIL in torch's kernels, and an entropy pool's waits release it too. The results
    are the same either way; at most two items are in flight.
    """
    if not overlap:
        for item in items:
            yield item, fn(item)
        return
    with ThreadPoolExecutor(1, thread_name_prefix="tlic-coding") as thread:
        pending: deque = deque()
        for item in items:
            pending.append((item, thread.submit(fn, item)))
            if len(pending) > 1:
                first, future = pending.popleft()
                yield first, future.result()
        while pending:
            first, future = pending.popleft()
            yield first, future.result()


_ENGINES: dict[tuple[str, str, bool, int], Engine] = {}


def get_coder(loaded: LoadedModel, device: str = "cpu", half: bool = False,
              entropy_workers: int = 0) -> tuple[LoadedModel, Engine | None]:
    """The cached :class:`Engine` for a loaded model (``codec.load_model``) on a device. A model of another
    family (``model.family``, e.g. minnen2018) has no Engine: (loaded, None)."""
    if not isinstance(loaded, LoadedModel):
        raise TypeError(f"get_coder takes a LoadedModel (codec.load_model(name)), got {type(loaded).__name__}")
    if loaded.model.family != "hyperprior":  # this family's engine; other families code without one
        return loaded, None
    key = (loaded.model_id + loaded.hash_hex, str(device), half, entropy_workers)
    if key not in _ENGINES:
        net = loaded.model if str(device) == "cpu" and not half else copy.deepcopy(loaded.model)
        _ENGINES[key] = Engine(net, device, half, entropy_workers)
    return loaded, _ENGINES[key]
