"""Stages that run on Ray workers: fetching objects, and the codec replica.

Each stage is a plain function or callable class over a batch (a dict of
numpy arrays), in the style of Ray's batch-inference examples; ``run.py`` wires
them into the dataset. Every input row comes out as exactly one output row:
an ``ok`` row with its bitstream, or an ``error`` row saying what went wrong.
"""

from __future__ import annotations

import os
import socket
import time
from datetime import datetime, timezone

import numpy as np

from .config import CompressJobConfig, StorageOptions
from .storage import filesystem

FAULT_ENV = "TLIC_FAULT_KILL_REPLICA_AFTER"  # "N:/path/marker": die once after N images (resilience tests)


def fetch_objects(batch, storage: StorageOptions):
    """Read each object's bytes; failures become ``fetch_error`` instead of raising."""
    import pyarrow as pa

    data, errors = [], []
    for key in batch.column("key").to_pylist():
        try:
            fs, path = filesystem(str(key), storage)
            data.append(fs.cat_file(path))
            errors.append("")
        except Exception as exc:  # one unreadable object must not stop the batch
            data.append(b"")
            errors.append(f"{type(exc).__name__}: {exc}")
    return batch.append_column("data", pa.array(data, pa.large_binary())).append_column("fetch_error", pa.array(errors, pa.string()))


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
        gpu = f"/gpu{','.join(self.gpu_ids)}" if self.gpu_ids else "/cpu"
        self.replica = f"{socket.gethostname()}:{os.getpid()}{gpu}"
        self.done = 0
        self._announce()

    def _announce(self) -> None:
        """Record this replica (host, GPU, device, model) under the run, for audits and tests."""
        import json

        from .archive import Archive

        archive = Archive(self.cfg.output, self.cfg.storage)
        info = {"replica": self.replica, "gpu_ids": self.gpu_ids, "device": self.device, "model_id": self.model.model_id}
        name = f"{socket.gethostname()}-{os.getpid()}.json"
        archive.put(f"{archive.root}/_runs/{self.cfg.run_id}/replicas/{name}", json.dumps(info).encode())

    def __call__(self, batch):
        import pyarrow as pa

        from .archive import ROW_SCHEMA

        return pa.Table.from_pylist([self._one(row) for row in batch.to_pylist()], schema=ROW_SCHEMA)

    def _one(self, row: dict) -> dict:
        from codec.errors import CodecError, UnsupportedImageError

        from .imagedecode import ImageTooLargeError, decode_image

        out = _base_row(row, self.cfg, self.replica)
        if row["fetch_error"]:
            return _error(out, "fetch", f"cannot read {row['key']}: {row['fetch_error']}")
        data = row["data"]
        out["original_bytes"] = len(data)
        try:
            pixels, geo = decode_image(data, str(row["key"]), self.cfg.max_pixels)
        except ImageTooLargeError as exc:
            return _error(out, "too_large", str(exc))
        except UnsupportedImageError as exc:
            return _error(out, "unsupported" if "not supported" in str(exc) else "decode", str(exc))
        except Exception as exc:
            return _error(out, "decode", f"{row['key']}: {type(exc).__name__}: {exc}")
        try:
            out.update(self._encode(pixels, str(row["key"])))
        except (CodecError, ValueError) as exc:
            return _error(out, "encode", f"{row['key']}: {exc}")
        out["geo"] = geo
        out["model_id"] = self.model.model_id
        out["ratio"] = out["original_bytes"] / out["compressed_bytes"]
        self.done += 1
        self._maybe_fault()
        return out

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

        decoded = codec.decode(r.data, self.model, device=self.device, half=self.device == "cuda")
        if decoded.shape != pixels.shape:
            raise codec.CodecError(f"verification failed: decoded shape {decoded.shape} != {pixels.shape}")
        colour, decoded_colour = (pixels[..., :3], decoded[..., :3]) if pixels.ndim == 3 else (pixels, decoded)
        if pixels.ndim == 3 and pixels.shape[2] == 4 and not np.array_equal(pixels[..., 3], decoded[..., 3]):
            raise codec.CodecError("verification failed: the alpha plane did not come back exactly")
        measured = psnr(colour, decoded_colour)
        if r.psnr is not None and np.isfinite(r.psnr) and r.header.channels != 1 and abs(measured - r.psnr) > 0.05:
            raise codec.CodecError(f"verification failed: decoded PSNR {measured:.3f} dB, encoder measured {r.psnr:.3f} dB")
        return {"psnr": measured, "ms_ssim": ms_ssim(colour, decoded_colour)}

    def _maybe_fault(self) -> None:
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
        "replica": replica, "run_id": cfg.run_id, "timestamp": datetime.now(timezone.utc),
    }


def _error(out: dict, kind: str, message: str) -> dict:
    out.update(status="error", error_kind=kind, error=message[:2000])
    return out
