"""Entropy coding spread over CPU processes, tile by tile.

constriction holds the GIL, so threads do not help; a process pool does. Each
worker receives the model's tables once (at start-up) and then codes whole
tiles. Output bytes do not depend on which worker coded a tile. Worth it when a
GPU computes the transforms faster than one core can range-code.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from . import rangecoder
from .rangecoder import TableSet

_TABLES: dict[str, TableSet] = {}


def _init(hyper: dict, gaussian: dict) -> None:
    _TABLES["hyper"] = TableSet.from_dict(hyper)
    _TABLES["gaussian"] = TableSet.from_dict(gaussian)


def _channel_index(shape) -> np.ndarray:
    return np.broadcast_to(np.arange(shape[0]).reshape(-1, 1, 1), shape)


def _encode_tile(args) -> tuple[bytes, bytes]:
    z_hat, symbols, index = args
    z = rangecoder.encode(z_hat, _channel_index(z_hat.shape), _TABLES["hyper"])
    return z, rangecoder.encode(symbols, index, _TABLES["gaussian"])


def _decode_z(args) -> np.ndarray:
    data, shape = args
    return rangecoder.decode(data, _channel_index(shape), _TABLES["hyper"])


def _decode_y(args) -> np.ndarray:
    data, index = args
    return rangecoder.decode(data, index, _TABLES["gaussian"])


def _in_order(results) -> list:
    """Collect pool results; a stream that fails to decode is named by its position, as in-process."""
    out = []
    try:
        for r in results:
            out.append(r)
    except rangecoder.RangeCodingError as exc:
        raise rangecoder.RangeCodingError(exc.message, len(out)) from exc
    return out


class EntropyPool:
    """A pool of worker processes that range-code tiles with one model's tables."""

    def __init__(self, hyper: TableSet, gaussian: TableSet, workers: int):
        ctx = multiprocessing.get_context("spawn")
        self._pool = ProcessPoolExecutor(
            workers, mp_context=ctx, initializer=_init,
            initargs=({k: getattr(hyper, k) for k in ("pmfs", "lengths", "offsets")},
                      {k: getattr(gaussian, k) for k in ("pmfs", "lengths", "offsets")}),
        )

    def encode(self, z_hat: np.ndarray, symbols: np.ndarray, index: np.ndarray) -> tuple[list[bytes], list[bytes]]:
        out = list(self._pool.map(_encode_tile, zip(z_hat, symbols, index)))
        return [o[0] for o in out], [o[1] for o in out]

    def decode_z(self, streams: list[bytes], shape) -> np.ndarray:
        return np.stack(_in_order(self._pool.map(_decode_z, [(s, shape) for s in streams])))

    def decode_y(self, streams: list[bytes], index: np.ndarray) -> np.ndarray:
        return np.stack(_in_order(self._pool.map(_decode_y, zip(streams, index))))

    def close(self) -> None:
        self._pool.shutdown()
