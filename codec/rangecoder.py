"""Range coding of integer symbols with fixed probability tables (constriction).

Every symbol is coded with one table out of a :class:`TableSet`; which table is
known to both sides before coding (a channel for the hyper-latent, a scale index
for the main latent). Symbols are coded grouped by table, in raster order inside
a group, so each group is a single vectorised constriction call. Values outside a
table's support are coded as the table's escape bin followed by an Elias-gamma
style payload, so nothing is ever clipped.

    values, table_index ──group by table──▶ Categorical(pmf[t]) ──▶ RangeEncoder ──▶ bytes
"""

from __future__ import annotations

import numpy as np
import constriction

from codec.errors import is_panic  # noqa: F401 (re-exported: callers of the range coder ask it)

_Categorical = constriction.stream.model.Categorical
_Uniform = constriction.stream.model.Uniform
_BITLEN_MODEL = _Uniform(33)
# constriction's Uniform model takes at most 2**24 symbols, so an escape payload has at most 25 bits;
# a larger count can only come from damaged bytes (and would make constriction panic)
MAX_ESCAPE_BITS = 25


class RangeCodingError(ValueError):
    """The bytes do not decode as a valid range-coded stream; ``stream`` is its position in a batch, if known."""

    def __init__(self, message: str, stream: int | None = None):
        super().__init__(message, stream)  # both in args, so the error pickles back from a worker process
        self.message, self.stream = message, stream

    def __str__(self) -> str:
        return self.message


class TableSet:
    """Discrete distributions over integer supports, with an escape bin each.

    Table ``t`` covers the values ``offsets[t] .. offsets[t] + lengths[t] - 2``;
    its last bin (``lengths[t] - 1``) is the escape symbol.
    """

    def __init__(self, pmfs: np.ndarray, lengths: np.ndarray, offsets: np.ndarray):
        self.pmfs = np.asarray(pmfs, dtype=np.float64)
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self._models: dict[int, object] = {}
        self._log2: np.ndarray | None = None

    def __getstate__(self) -> dict:  # constriction models don't pickle: rebuild them lazily
        return {"pmfs": self.pmfs, "lengths": self.lengths, "offsets": self.offsets}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["pmfs"], state["lengths"], state["offsets"])

    def __len__(self) -> int:
        return len(self.lengths)

    def model(self, t: int):
        m = self._models.get(t)
        if m is None:
            m = _Categorical(self.pmfs[t, : self.lengths[t]], perfect=False)
            self._models[t] = m
        return m

    def to_dict(self) -> dict:
        """Tensors only, so weights files load with ``torch.load(weights_only=True)``."""
        import torch

        return {k: torch.from_numpy(np.ascontiguousarray(getattr(self, k))) for k in ("pmfs", "lengths", "offsets")}

    @classmethod
    def from_dict(cls, d: dict) -> "TableSet":
        return cls(*(np.asarray(d[k]) for k in ("pmfs", "lengths", "offsets")))

    def bin_index(self, values: np.ndarray, table_index: np.ndarray) -> np.ndarray:
        """Bin of each value in its table; escapes map to the table's last bin."""
        idx = values.astype(np.int64) - self.offsets[table_index]
        esc = self.lengths[table_index] - 1
        return np.where((idx < 0) | (idx >= esc), esc, idx)

    def estimate_bits(self, values: np.ndarray, table_index: np.ndarray) -> float:
        """Ideal code length in bits (escape payloads counted roughly), for rate control."""
        if self._log2 is None:
            norm = self.pmfs / self.pmfs.sum(axis=1, keepdims=True)
            self._log2 = -np.log2(np.maximum(norm, 2.0**-24))
        bins = self.bin_index(values, table_index)
        bits = float(self._log2[table_index, bins].sum())
        n_esc = int((bins == self.lengths[table_index] - 1).sum())
        return bits + 24.0 * n_esc


def _sort_key(table_index: np.ndarray) -> np.ndarray:
    """``table_index`` in the narrowest unsigned dtype that holds it: numpy's stable argsort is a
    radix sort for 8- and 16-bit integers (~8× faster than int64's merge sort, which took 60% of
    encode time) and the stable order is the same, so the bytes are too."""
    if table_index.size and 0 <= table_index.min() and table_index.max() < 1 << 16:
        return table_index.astype(np.uint8 if table_index.max() < 1 << 8 else np.uint16)
    return table_index


def _groups(table_index: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """The stable order of positions by table, and ``(table, start, end)`` of each table's run in it
    (tables in increasing order, positions in raster order inside a run)."""
    order = np.argsort(_sort_key(table_index), kind="stable")
    sorted_t = table_index[order]
    cuts = (np.flatnonzero(np.diff(sorted_t)) + 1).tolist()
    starts, ends = [0, *cuts], [*cuts, len(order)]
    return order, [(int(sorted_t[s]), s, e) for s, e in zip(starts, ends)]


def encode(values: np.ndarray, table_index: np.ndarray, tables: TableSet) -> bytes:
    """Range-code ``values`` (any int shape), each with table ``table_index`` (same shape)."""
    values = np.asarray(values, dtype=np.int64).ravel()
    table_index = np.asarray(table_index, dtype=np.int64).ravel()
    enc = constriction.stream.queue.RangeEncoder()
    if values.size == 0:
        return b""
    bins = tables.bin_index(values, table_index)
    order, runs = _groups(table_index)
    grouped = bins[order].astype(np.int32)  # one gather; each table's run is then a slice
    for t, s, e in runs:
        enc.encode(grouped[s:e], tables.model(t))
    escaped = np.flatnonzero(bins == tables.lengths[table_index] - 1)
    for p in escaped:
        _encode_escape(enc, int(values[p]), int(table_index[p]), tables)
    return enc.get_compressed().astype("<u4").tobytes()


def decode(data: bytes, table_index: np.ndarray, tables: TableSet) -> np.ndarray:
    """Inverse of :func:`encode`; returns int64 values shaped like ``table_index``."""
    shape = np.shape(table_index)
    table_index = np.asarray(table_index, dtype=np.int64).ravel()
    if table_index.size == 0:
        return np.zeros(shape, dtype=np.int64)
    if len(data) % 4 or not data:
        raise RangeCodingError(f"range-coded payload of {len(data)} bytes is not a whole number of 32-bit words")
    words = np.frombuffer(data, dtype="<u4").astype(np.uint32)
    try:
        dec = constriction.stream.queue.RangeDecoder(words)
        order, runs = _groups(table_index)
        grouped = np.empty(table_index.size, dtype=np.int64)
        for t, s, e in runs:
            grouped[s:e] = dec.decode(tables.model(t), e - s)
        bins = np.empty_like(grouped)
        bins[order] = grouped
        values = bins + tables.offsets[table_index]
        for p in np.flatnonzero(bins == tables.lengths[table_index] - 1):
            values[p] = _decode_escape(dec, int(table_index[p]), tables)
    except RangeCodingError:
        raise
    except (AssertionError, ValueError, RuntimeError, OverflowError) as exc:  # constriction reports bad input this way
        raise RangeCodingError(f"range decoder failed: {type(exc).__name__}: {exc}") from exc
    except BaseException as exc:
        if not is_panic(exc):
            raise
        raise RangeCodingError(f"range decoder panicked: {exc}") from exc
    return values.reshape(shape)


def encode_each(values, table_indexes, tables: TableSet) -> list[bytes]:
    """:func:`encode` of each tile of a batch (``values[k]`` with ``table_indexes[k]``): one stream per tile.

    With :func:`decode_each`, the one function that codes a list of tiles; an entropy pool
    (:mod:`codec.parallel`) maps these same two over CPU processes.
    """
    return [encode(v, t, tables) for v, t in zip(values, table_indexes)]


def decode_each(streams: list[bytes], table_indexes, tables: TableSet) -> list[np.ndarray]:
    """:func:`decode` of each stream with its table index; an error names the stream's position."""
    out = []
    for k, (data, table_index) in enumerate(zip(streams, table_indexes)):
        try:
            out.append(decode(data, table_index, tables))
        except RangeCodingError as exc:
            raise RangeCodingError(exc.message, k) from exc
    return out


def encode_counted_bits(counts: np.ndarray, n_counts: int, bits: list[np.ndarray], p_one: np.ndarray) -> bytes:
    """Range-code ``counts`` (uniform over 0..n_counts-1), then each ``bits[k]`` ((counts[k], width) of 0/1) with
    P(1) ``p_one[:counts[k]]``: a family whose symbols are binary codes of a varying length (minnen2018's
    iterations). Trailing zero bytes are dropped; :func:`decode_counted_bits` puts them back."""
    enc = constriction.stream.queue.RangeEncoder()
    enc.encode(np.asarray(counts, dtype=np.int32), _Uniform(n_counts))
    bernoulli = constriction.stream.model.Bernoulli(perfect=False)
    for b in bits:
        if len(b):
            enc.encode(b.ravel().astype(np.int32), bernoulli, p_one[: len(b)].ravel())
    return enc.get_compressed().tobytes().rstrip(b"\0")


def decode_counted_bits(data: bytes, n: int, n_counts: int, p_one: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Inverse of :func:`encode_counted_bits` for ``n`` counts: (counts, bits as uint8 (count, width) arrays).
    Damaged bytes raise what constriction raises (a panic included): callers map it to the tile it hit."""
    words = np.frombuffer(data + b"\0" * (-len(data) % 4), dtype=np.uint32)
    dec = constriction.stream.queue.RangeDecoder(words)
    bernoulli = constriction.stream.model.Bernoulli(perfect=False)
    counts = dec.decode(_Uniform(n_counts), n)
    width = p_one.shape[1]
    bits = [dec.decode(bernoulli, p_one[:k].ravel()).astype(np.uint8).reshape(k, width) if k
            else np.zeros((0, width), np.uint8) for k in counts]
    return counts, bits


def _encode_escape(enc, value: int, t: int, tables: TableSet) -> None:
    lo = int(tables.offsets[t])
    hi = lo + int(tables.lengths[t]) - 2
    above = value > hi
    dist = value - hi - 1 if above else lo - 1 - value
    nbits = dist.bit_length()
    if nbits > MAX_ESCAPE_BITS:
        raise ValueError(f"value {value} is too far outside table {t} to code (at most {MAX_ESCAPE_BITS} escape bits)")
    enc.encode(np.array([int(above)], dtype=np.int32), _Uniform(2))
    enc.encode(np.array([nbits], dtype=np.int32), _BITLEN_MODEL)
    if nbits > 1:
        rest = dist - (1 << (nbits - 1))
        enc.encode(np.array([rest], dtype=np.int32), _Uniform(1 << (nbits - 1)))


def _decode_escape(dec, t: int, tables: TableSet) -> int:
    lo = int(tables.offsets[t])
    hi = lo + int(tables.lengths[t]) - 2
    above = int(dec.decode(_Uniform(2), 1)[0])
    nbits = int(dec.decode(_BITLEN_MODEL, 1)[0])
    if nbits > MAX_ESCAPE_BITS:
        raise RangeCodingError(f"escape payload of {nbits} bits (at most {MAX_ESCAPE_BITS} are ever written)")
    if nbits == 0:
        dist = 0
    elif nbits == 1:
        dist = 1
    else:
        dist = (1 << (nbits - 1)) + int(dec.decode(_Uniform(1 << (nbits - 1)), 1)[0])
    return hi + 1 + dist if above else lo - 1 - dist
