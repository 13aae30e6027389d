"""The codec replica: one Ray actor that holds the model and turns fetched images into rows.

    fetched row ─▶ decode_image ─▶ codec.encode ─▶ measure (+ codec.decode_region strips, --verify) ─▶ ok row
    deferred row (over --window-over-bytes) ─▶ staged to local disk ─▶ read window by window ─▶ the same
                   any failure on the way ─▶ error row naming the key and its error_kind

The model loads once per replica (on its GPU in float16, or on the CPU), which is why this is
a callable class in an actor pool and not a task. Every input row comes out as exactly one
output row, even when an image kills the replica: see ``crashes.py``.
"""

from __future__ import annotations

import json
import os
import socket
import time

import numpy as np
from codec.errors import SourceReadError

from ..archive import Archive
from ..config import CompressJobConfig
from ..schema import ROW_SCHEMA, Verified, RowContext, base_row, error_row, ok_row
from .crashes import CRASH_LIMIT, CrashLedger
from .decode import Rejected, decode_image
from .measure import Mismatch, SourcePass, measure_source
from .stage import staged_source

FAULT_ENV = "TLIC_FAULT_KILL_REPLICA_AFTER"  # "N:/path/marker": die once after N images (resilience tests)
FAULT_KEY_ENV = "TLIC_FAULT_KILL_ON_KEY"  # die whenever a key containing this text is processed (tests)


class CodecReplica:
    """One codec replica: loads the model once, then encodes (and verifies) batches of images.

    With a GPU assigned by Ray (``num_gpus``) it runs on that GPU in float16;
    otherwise on the CPU.
    """

    def __init__(self, config: CompressJobConfig, cpu_threads: int | None = None):
        import ray
        import torch

        import codec

        from ..model_store import model_resolver

        self.cfg = config  # passed as an object: its SecretStr credentials survive pickling, not JSON
        self.gpu_ids = [str(g) for g in ray.get_gpu_ids()]
        self.device = "cuda" if self.gpu_ids and torch.cuda.is_available() else "cpu"
        if self.device == "cpu" and cpu_threads:
            torch.set_num_threads(cpu_threads)
        # the driver pinned cfg.model to NAME@VERSION: every replica loads exactly those weights
        self.models = model_resolver(config.model_registry, config.storage)
        self.model = self._coder(config.model)
        self._raster_model = None  # config.raster_model, loaded with the first raster
        self.archive = Archive(config.output, config.storage)
        gpu = f"/gpu{','.join(self.gpu_ids)}" if self.gpu_ids else "/cpu"
        self.ctx = RowContext.of(config, f"{socket.gethostname()}:{os.getpid()}{gpu}")
        self.options = config.encode_options().with_(device=self.device, half=self.device == "cuda")
        self.crashes = CrashLedger(self.archive, config.run_id)
        self.done = 0
        self.models_used: dict[str, int] = {}  # model id the stream names → records this replica coded with it
        self._announced: dict[str, int] | None = None
        self._announce()

    def _announce(self) -> None:
        """Record this replica (host, GPU, device, models) under the run, for audits and tests: ``models`` lists
        the models its records were actually coded with, with counts (rewritten after a batch that changed them);
        ``model_id`` is the photo model it loaded."""
        if self._announced == self.models_used:
            return
        info = {"replica": self.ctx.replica, "gpu_ids": self.gpu_ids, "device": self.device,
                "model_id": self.model.model_id, "models": dict(sorted(self.models_used.items()))}
        path = self.archive.replica_info(self.cfg.run_id, f"{socket.gethostname()}-{os.getpid()}")
        self.archive.put(path, json.dumps(info).encode())
        self._announced = dict(self.models_used)

    def __call__(self, batch):
        """One output row per input row, whatever happens to any one image.

        The batch is coded under one in-flight marker. If an earlier attempt at it died with
        its replica, Ray retries it here: then each key is coded under its own marker, so the
        key that kills the replica is named, and a key that did so CRASH_LIMIT times becomes a
        ``crashed`` error row while the rest of the batch goes on.
        """
        import pyarrow as pa

        rows = batch.to_pylist()
        keys = [str(r["key"]) for r in rows]
        deaths = self.crashes.deaths(keys)
        if not any(deaths.values()):
            with self.crashes.in_flight(keys):
                out = [self._one(row) for row in rows]
        else:
            out = [self._one_alone(row, deaths[key]) for row, key in zip(rows, keys)]
        self._announce()
        return pa.Table.from_pylist(out, schema=ROW_SCHEMA)

    def _one_alone(self, listed: dict, deaths: int) -> dict:
        """A key of a batch that killed a replica before: coded under its own marker, or given up on."""
        key = str(listed["key"])
        if deaths >= CRASH_LIMIT:
            return error_row(base_row(listed, self.ctx), "crashed",
                             f"{key}: the codec replica died {deaths} times while coding this image "
                             "(out of memory, or a crash in native code); it is not retried without --retry-errors")
        with self.crashes.in_flight([key]):
            return self._one(listed)

    def _one(self, listed: dict) -> dict:
        """Decode, encode and verify one fetched image; any failure is an error row naming the key. A deferred
        row (a source over --window-over-bytes) is staged to local disk first and read window by window."""
        row = base_row(listed, self.ctx)
        key = row["key"]
        if listed.get("fetch_error"):
            return error_row(row, listed.get("fetch_error_kind") or "fetch", f"cannot read {key}: {listed['fetch_error']}")
        with staged_source(listed, self.cfg) as (source, error):
            if error is not None:
                return error_row(row, error[1], f"cannot read {key}: {error[0]}")
            row["original_bytes"] = source.size
            row["source_sha256"] = source.sha256  # the STAC item's file:checksum
            try:
                maybe_fault(key, self.done)
                image = with_nodata(decode_image(source.content, key, self.cfg.max_pixels, self.cfg.max_image_memory,
                                                 windowed=source.path is not None), self.cfg.nodata)
            except Rejected as exc:
                return error_row(row, exc.kind, str(exc))
            try:
                return self._code(row, image)
            finally:
                getattr(image.pixels, "close", lambda: None)()  # a window reader's open file

    def _code(self, row: dict, image) -> dict:
        key = row["key"]
        try:
            t = time.perf_counter()
            result = self._encode(image, key)
            seconds = time.perf_counter() - t
            measured, source = self._measure(result, image)
        except SourceReadError as exc:  # a window of a staged scene that cannot be read: the file, not the codec
            return error_row(row, "decode", str(exc))
        except BaseException as exc:  # noqa: BLE001 — CUDA OOM, MemoryError, native panics, asserts
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            self._free_memory()
            return error_row(row, "encode", f"{key}: {type(exc).__name__}: {exc}")
        ok_row(row, result, image, seconds, measured, source)
        self.models_used[result.header.model_id] = self.models_used.get(result.header.model_id, 0) + 1
        self.done += 1
        maybe_fault(key, self.done)
        return row

    def _coder(self, spec: str):
        import codec

        return codec.get_coder(self.models.load(spec), self.device, half=self.device == "cuda")[0]

    def model_for(self, image):
        """--model for 8-bit photos, --raster-model for what the codec codes as a raster: THE rule
        (codec.format.raster.is_raster) with everything ``_encode`` passes, ``--lossless`` included."""
        if not image.codes_as_raster(self.cfg.lossless):
            return self.model
        if self._raster_model is None:
            from codec.registry import default_model_name

            spec = self.cfg.raster_model or default_model_name(raster=True, sources=self.models.sources)
            self._raster_model = self._coder(spec)  # the driver pinned it to NAME@VERSION
        return self._raster_model

    def _encode(self, image, key: str):
        import codec

        options = self.options.with_(name=key, nodata=image.nodata, nodata_mode=image.nodata_mode,
                                     bit_depth=image.bit_depth, band_names=image.band_names, georef=image.georef)
        return codec.encode(image.pixels, self.model_for(image), options)

    def _measure(self, r, image) -> tuple[Verified | None, SourcePass]:
        """(the record as measured on decoding it, or None without --verify; the pass over the source's samples).

        Rasters: one strip-by-strip pass (stages.measure) over the source and, with --verify, the record decoded
        region by region as a restore would: nodata must come back exactly where it was, lossless records
        bit-exactly, a max_error record within its bound (:func:`_check_bound`); PSNR per band against the
        stream's band peaks. 8-bit images: decoded whole, PSNR and MS-SSIM over the colour channels (an alpha
        plane checked to be exact). A record that fails is refused (CodecError).
        """
        import codec
        from codec.metrics import band_psnr, psnr_from_band_sse

        raster = r.header.raster
        if raster is None:
            source = measure_source(image.pixels, None, r.header.tile_size)
            return (self._verify_photo(r, image) if self.cfg.verify else None), source
        decode_rows = None
        if self.cfg.verify:
            def decode_rows(y0: int, y1: int) -> np.ndarray:
                return codec.decode_region(r.data, (0, y0, r.header.width, y1 - y0), self.model_for(image),
                                           header=r.header, device=self.device, half=self.device == "cuda",
                                           max_pixels=self.cfg.max_pixels)
        try:
            source = measure_source(image.pixels, raster.real_rule, r.header.tile_size, decode_rows, r.header.lossless)
        except Mismatch as exc:
            raise codec.CodecError(f"verification failed: {exc}") from None
        if decode_rows is None:
            return None, source
        measured = psnr_from_band_sse(source.sse, source.count, raster.band_peaks)
        if r.psnr is not None and np.isfinite(r.psnr) and abs(measured - r.psnr) > 0.05:
            raise codec.CodecError(f"verification failed: decoded PSNR {measured:.3f} dB, encoder measured {r.psnr:.3f} dB")
        # MS-SSIM is defined for 8-bit colour here, not for rasters
        verified = Verified(measured, None, [float(v) for v in band_psnr(source.sse, source.count, raster.band_peaks)],
                            [int(v) for v in source.max_error])
        return _check_bound(r.header, verified), source

    def _verify_photo(self, r, image) -> Verified:
        import codec
        from codec.metrics import ms_ssim, psnr

        pixels = image.pixels
        decoded = codec.decode(r.data, self.model_for(image), device=self.device, half=self.device == "cuda",
                               max_pixels=self.cfg.max_pixels)
        if decoded.shape != pixels.shape or decoded.dtype != pixels.dtype:
            raise codec.CodecError(f"verification failed: decoded {decoded.dtype}{decoded.shape} != "
                                   f"{pixels.dtype}{pixels.shape}")
        colour, decoded_colour = (pixels[..., :3], decoded[..., :3]) if pixels.ndim == 3 else (pixels, decoded)
        if pixels.ndim == 3 and pixels.shape[2] == 4 and not np.array_equal(pixels[..., 3], decoded[..., 3]):
            raise codec.CodecError("verification failed: the alpha plane did not come back exactly")
        measured = psnr(colour, decoded_colour)
        if r.psnr is not None and np.isfinite(r.psnr) and r.header.channels != 1 and abs(measured - r.psnr) > 0.05:
            raise codec.CodecError(f"verification failed: decoded PSNR {measured:.3f} dB, encoder measured {r.psnr:.3f} dB")
        return _check_bound(r.header, Verified(measured, ms_ssim(colour, decoded_colour),
                                               *_per_band(colour, decoded_colour, None, 255.0)))

    def _free_memory(self) -> None:
        import gc

        gc.collect()
        if self.device == "cuda":
            import torch

            torch.cuda.empty_cache()


def with_nodata(image, nodata: int | None):
    """``image`` with the job's ``--nodata`` where it is a 16-bit or multi-band raster whose file named none
    (satellite products often carry nodata zeros untagged); 8-bit gray/RGB/RGBA photos never get one."""
    import dataclasses

    from codec.format.raster import is_raster

    eight_bit = not is_raster(image.pixels.dtype, image.channels)  # THE rule, for the pixels alone
    info = np.iinfo(image.pixels.dtype)
    if nodata is None or image.nodata is not None or eight_bit or not info.min <= nodata <= info.max:
        return image
    return dataclasses.replace(image, nodata=nodata)


def _per_band(reference: np.ndarray, decoded: np.ndarray, valid, peaks) -> tuple[list[float], list[int]]:
    """Per band of the decoded record: PSNR against ``peaks`` (codec.metrics) and the largest |error|."""
    from codec.metrics import band_max_error, raster_band_psnr

    return ([float(v) for v in raster_band_psnr(reference, decoded, valid, peaks)],
            [int(v) for v in band_max_error(reference, decoded, valid)])


def _check_bound(header, measured: Verified) -> Verified:
    """``measured`` when the record keeps its ``max_error`` bound on every valid sample (or has none); a record
    that exceeds it fails verification, naming the band, the error reached and the bound."""
    import codec

    if header.mode != "max_error":
        return measured
    bound = int(header.target)
    for b, err in enumerate(measured.band_max_error or []):
        if err > bound:
            raise codec.CodecError(f"verification failed: band {b} is off by up to {err}, the bound is max_error {bound}")
    return measured


def maybe_fault(key: str, done: int) -> None:
    """Test hooks: die like a replica killed for memory (no Python cleanup)."""
    poison = os.environ.get(FAULT_KEY_ENV)
    if poison and poison in key:
        os._exit(1)
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    n, marker = spec.split(":", 1)
    if done >= int(n) and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)
