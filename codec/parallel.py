"""Entropy coding spread over CPU processes.

constriction holds the GIL, so threads do not help; a process pool does. Each worker
receives the model's tables once (at start-up). The pool writes no coding of its own: it
splits a batch's tiles into one contiguous chunk per worker and maps
:func:`codec.rangecoder.encode_each` / :func:`~codec.rangecoder.decode_each` over the
chunks, so it is a drop-in for the :mod:`codec.rangecoder` module wherever a stage takes
a ``coder``. Output bytes do not depend on which worker coded a tile. Worth it when a GPU
computes the transforms faster than one core can range-code.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from codec import rangecoder
from codec.rangecoder import RangeCodingError, TableSet

_TABLES: list[TableSet] = []  # in a worker: the tables it was started with


def _init(tables: list[TableSet]) -> None:
    _TABLES[:] = tables


def _run(fn: str, table: int, *chunk):
    out = getattr(rangecoder, fn)(*chunk, _TABLES[table])
    return [compact(v) for v in out] if fn == "decode_each" else out


def compact(a) -> np.ndarray:
    """An integer array in the narrowest dtype that holds its values (same values, same shape).

    What crosses the process boundary is pickled and piped: int64 symbols and table indexes
    (16 bytes a symbol) cost more to ship than to range-code; most fit in 1 or 2 bytes.
    """
    a = np.asarray(a)
    if a.size == 0 or a.dtype.kind not in "iu":
        return a
    lo, hi = int(a.min()), int(a.max())
    for dt in (np.uint8, np.int8, np.int16, np.int32):
        info = np.iinfo(dt)
        if info.min <= lo and hi <= info.max:
            return a.astype(dt)
    return a


class EntropyPool:
    """Worker processes that range-code tiles with a fixed list of tables (a model's)."""

    def __init__(self, tables: list[TableSet], workers: int):
        self.workers = workers
        self._keys = {id(t): k for k, t in enumerate(tables)}
        self._tables = tables  # keeps the ids valid
        ctx = multiprocessing.get_context("spawn")
        self._pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init, initargs=(tables,))

    def encode_each(self, values, table_indexes, tables: TableSet) -> list[bytes]:
        return self._map("encode_each", tables, values, table_indexes)

    def decode_each(self, streams: list[bytes], table_indexes, tables: TableSet) -> list:
        return self._map("decode_each", tables, streams, table_indexes)

    def _map(self, fn: str, tables: TableSet, *lists) -> list:
        """``rangecoder.<fn>`` over contiguous chunks, in order; a failing stream is named by its batch position."""
        if id(tables) not in self._keys:
            raise ValueError("this entropy pool was not started with these tables")
        n = len(lists[0])
        size = max(1, -(-n // self.workers))
        starts = range(0, n, size)
        lists = [[b if isinstance(b, bytes) else compact(b) for b in seq] for seq in lists]
        futures = [self._pool.submit(_run, fn, self._keys[id(tables)], *(seq[s : s + size] for seq in lists))
                   for s in starts]
        out: list = []
        for start, future in zip(starts, futures):
            try:
                part = future.result()
                out.extend(part if fn == "encode_each" else (v.astype(np.int64) for v in part))
            except RangeCodingError as exc:
                raise RangeCodingError(exc.message, None if exc.stream is None else start + exc.stream) from exc
        return out

    def close(self) -> None:
        self._pool.shutdown()
