"""Stages that run on Ray workers: fetching objects, and the codec replica.

Each stage is a plain function or callable class over a batch (a dict of
numpy arrays), in the style of Ray's batch-inference examples; ``run.py`` wires
them into the dataset. Every input row comes out as exactly one output row:
an ``ok`` row with its bitstream, or an ``error`` row saying what went wrong.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import uuid
from datetime import datetime, timezone

import numpy as np

from .config import CompressJobConfig, StorageOptions
from .storage import filesystem

FAULT_ENV = "TLIC_FAULT_KILL_REPLICA_AFTER"  # "N:/path/marker": die once after N images (resilience tests)
FAULT_KEY_ENV = "TLIC_FAULT_KILL_ON_KEY"  # die whenever a key containing this text is processed (tests)
CRASH_LIMIT = 2  # a key that killed its replica this many times gets a `crashed` row instead of another try


class CodecReplica:
    """One codec replica: loads the model once, then encodes (and verifies) batches of images.

    With a GPU assigned by Ray (``num_gpus``) it runs on that GPU in float16;
    otherwise on the CPU.
    """

    def __init__(self, config: CompressJobConfig, cpu_threads: int | None = None):
        import ray
        import torch

        import codec

        self.cfg = config  # passed as an object: its SecretStr credentials survive pickling, not JSON
        self.gpu_ids = [str(g) for g in ray.get_gpu_ids()]
        self.device = "cuda" if self.gpu_ids and torch.cuda.is_available() else "cpu"
        if self.device == "cpu" and cpu_threads:
            torch.set_num_threads(cpu_threads)
        from .model_store import install_model

        model_id = install_model(self.cfg.model, self.cfg.model_registry, self.cfg.storage)
        self.model, _ = codec.get_coder(model_id, self.device, half=self.device == "cuda")
        from .archive import Archive

        self.archive = Archive(self.cfg.output, self.cfg.storage)
        gpu = f"/gpu{','.join(self.gpu_ids)}" if self.gpu_ids else "/cpu"
        self.replica = f"{socket.gethostname()}:{os.getpid()}{gpu}"
        self.done = 0
        self._announce()

    def _announce(self) -> None:
        """Record this replica (host, GPU, device, model) under the run, for audits and tests."""
        import json

        info = {"replica": self.replica, "gpu_ids": self.gpu_ids, "device": self.device, "model_id": self.model.model_id}
        name = f"{socket.gethostname()}-{os.getpid()}.json"
        self.archive.put(self.archive.run_path(self.cfg.run_id, "replicas", name), json.dumps(info).encode())

    def __call__(self, batch):
        """One output row per input row, whatever happens to any one image.

        Before working on a batch the replica leaves an in-flight marker naming its keys under
        the run; it removes it when the batch is done. Markers left behind are attempts that
        died with their replica (killed for memory, a crash in native code). When Ray retries
        such a batch, the replica codes its keys one at a time, each under its own marker, so
        the key that kills it is named; after CRASH_LIMIT deaths that key becomes a
        ``crashed`` error row and the rest of the batch goes on.
        """
        import pyarrow as pa

        from .archive import ROW_SCHEMA

        rows = batch.to_pylist()
        deaths = self._deaths([str(r["key"]) for r in rows])
        if not any(deaths.values()):
            with self._in_flight([str(r["key"]) for r in rows]):
                out = [self._one(row) for row in rows]
        else:
            out = []
            for row in rows:
                key = str(row["key"])
                if deaths[key] >= CRASH_LIMIT:
                    out.append(_error(_base_row(row, self.cfg, self.replica), "crashed",
                                      f"{key}: the codec replica died {deaths[key]} times while coding this image "
                                      "(out of memory, or a crash in native code); it is not retried without "
                                      "--retry-errors"))
                    continue
                with self._in_flight([key]):
                    out.append(self._one(row))
        return pa.Table.from_pylist(out, schema=ROW_SCHEMA)

    # --- in-flight markers: how a replica learns that an earlier attempt died -----------------
    def _marker_dir(self) -> str:
        return self.archive.run_path(self.cfg.run_id, "inflight")

    def _deaths(self, keys: list[str]) -> dict[str, int]:
        import json

        counts = dict.fromkeys(keys, 0)
        try:
            names = self.archive.fs.ls(self._marker_dir(), detail=False)
        except FileNotFoundError:
            return counts
        for n in names:
            try:
                for k in json.loads(self.archive.fs.cat_file(n)):
                    if k in counts:
                        counts[k] += 1
            except Exception:  # a marker being written or removed right now: not a death
                continue
        return counts

    @contextlib.contextmanager
    def _in_flight(self, keys: list[str]):
        import json

        path = f"{self._marker_dir()}/{uuid.uuid4().hex}.json"
        self.archive.put(path, json.dumps(keys).encode())
        try:
            yield
        finally:  # not reached when the process dies: that is what leaves the marker behind
            try:
                self.archive.fs.rm(path)
            except FileNotFoundError:
                pass

    def _one(self, row: dict) -> dict:
        """Decode, encode and verify one image; any failure is an error row naming the key."""
        from codec.errors import ImageTooLargeError, UnsupportedImageError
        from codec.imageio import load_image

        out = _base_row(row, self.cfg, self.replica)
        key = str(row["key"])
        if row.get("fetch_error"):
            return _error(out, row.get("fetch_error_kind") or "fetch", f"cannot read {key}: {row['fetch_error']}")
        data = row["data"]
        out["original_bytes"] = len(data)
        try:
            self._maybe_fault(key)
            image = load_image(data, key, max_pixels=self.cfg.max_pixels, max_bytes=self.cfg.max_image_memory)
        except ImageTooLargeError as exc:
            return _error(out, "too_large", str(exc))
        except UnsupportedImageError as exc:
            return _error(out, "unsupported" if "not supported" in str(exc) else "decode", str(exc))
        except BaseException as exc:  # noqa: BLE001 — one image must never stop the batch
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            return _error(out, "decode", f"{key}: {type(exc).__name__}: {exc}")
        try:
            out.update(self._encode(image.pixels, key))
        except BaseException as exc:  # noqa: BLE001 — CUDA OOM, MemoryError, native panics, asserts
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            self._free_memory()
            return _error(out, "encode", f"{key}: {type(exc).__name__}: {exc}")
        out.update(geo=image.geo, icc_profile=image.icc_profile, exif=image.exif)
        out["ratio"] = out["original_bytes"] / out["compressed_bytes"]
        self.done += 1
        self._maybe_fault(key)
        return out

    def _free_memory(self) -> None:
        import gc

        gc.collect()
        if self.device == "cuda":
            import torch

            torch.cuda.empty_cache()

    def _encode(self, pixels: np.ndarray, key: str) -> dict:
        import codec

        mode, target = self.cfg.mode
        t = time.perf_counter()
        r = codec.encode(pixels, self.model, tile_size=self.cfg.tile_size, device=self.device,
                         half=self.device == "cuda", name=key, **{mode: target})
        seconds = time.perf_counter() - t
        q = np.array([tile.quality for tile in r.header.tiles])
        h, w = pixels.shape[:2]
        res = {
            "status": "ok", "bitstream": r.data, "compressed_bytes": len(r.data), "bpp": r.bpp,
            "tile_quality_min": float(q.min()), "tile_quality_mean": float(q.mean()), "tile_quality_max": float(q.max()),
            "tiles": len(q), "tiles_missed": r.missed_tiles, "width": w, "height": h, "channels": r.header.channels,
            "format_version": r.header.version, "encode_seconds": seconds, "psnr": r.psnr,
            "model_id": r.header.model_id,  # what the stream says decodes it
        }
        if self.cfg.verify:
            res.update(self._verify(r, pixels))
        return res

    def _verify(self, r, pixels: np.ndarray) -> dict:
        """Decode the record as a restore would; measure it; refuse it if it is not what was encoded.

        PSNR and MS-SSIM are over the colour channels (an alpha plane is checked to be exact).
        """
        import codec
        from codec.metrics import ms_ssim, psnr

        decoded = codec.decode(r.data, self.model, device=self.device, half=self.device == "cuda",
                               max_pixels=self.cfg.max_pixels)
        if decoded.shape != pixels.shape:
            raise codec.CodecError(f"verification failed: decoded shape {decoded.shape} != {pixels.shape}")
        colour, decoded_colour = (pixels[..., :3], decoded[..., :3]) if pixels.ndim == 3 else (pixels, decoded)
        if pixels.ndim == 3 and pixels.shape[2] == 4 and not np.array_equal(pixels[..., 3], decoded[..., 3]):
            raise codec.CodecError("verification failed: the alpha plane did not come back exactly")
        measured = psnr(colour, decoded_colour)
        if r.psnr is not None and np.isfinite(r.psnr) and r.header.channels != 1 and abs(measured - r.psnr) > 0.05:
            raise codec.CodecError(f"verification failed: decoded PSNR {measured:.3f} dB, encoder measured {r.psnr:.3f} dB")
        return {"psnr": measured, "ms_ssim": ms_ssim(colour, decoded_colour)}

    def _maybe_fault(self, key: str) -> None:
        """Test hooks: die like a replica killed for memory (no Python cleanup)."""
        poison = os.environ.get(FAULT_KEY_ENV)
        if poison and poison in key:
            os._exit(1)
        spec = os.environ.get(FAULT_ENV)
        if not spec:
            return
        n, marker = spec.split(":", 1)
        if self.done >= int(n) and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)


def _base_row(row: dict, cfg: CompressJobConfig, replica: str) -> dict:
    mode, target = cfg.mode
    return {
        "key": str(row["key"]), "version": row["version"], "source_size": int(row["size"]), "etag": row["etag"],
        "mtime": row["mtime"], "status": "error", "error_kind": None, "error": None, "bitstream": None,
        "original_bytes": int(row["size"]), "compressed_bytes": None, "bpp": None, "ratio": None, "psnr": None,
        "ms_ssim": None, "mode": mode, "target": float(target), "tile_quality_min": None, "tile_quality_mean": None,
        "tile_quality_max": None, "tiles": None, "tiles_missed": None, "width": None, "height": None,
        "channels": None, "model_id": None, "format_version": None, "geo": None, "encode_seconds": None,
        "icc_profile": None, "exif": None,
        "replica": replica, "run_id": cfg.run_id, "timestamp": datetime.now(timezone.utc),
    }


def _error(out: dict, kind: str, message: str) -> dict:
    out.update(status="error", error_kind=kind, error=message[:2000])
    return out
