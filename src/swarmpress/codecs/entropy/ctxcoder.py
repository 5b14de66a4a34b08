"""Context-conditioned entropy coding: one categorical model per context, one range coder.

A context is anything the decoder already knows when it reaches a symbol (a channel's
group, a previously decoded plane). Symbols are coded context by context in a single
constriction range-coder queue, each with the empirical distribution of its context; the
count tables travel in the stream (zstd-packed), so the decoder rebuilds the same models.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import constriction
import numpy as np
import zstandard

from swarmpress.codecs.core.errors import CodecError
from swarmpress.codecs.entropy.zstdio import decompress_exact

MAX_SPAN = 1 << 16
_HEAD = struct.Struct("<IIII")  # first symbol, alphabet span, contexts, packed table length


@dataclass(frozen=True)
class Table:
    """Symbol counts per context over the alphabet [lo, lo + span)."""

    lo: int
    counts: np.ndarray  # (contexts, span) uint32

    @property
    def span(self) -> int:
        return int(self.counts.shape[1])

    def cost_bits(self, packed_len: int) -> float:
        """Ideal code length of the symbols under these tables, plus the tables' own bytes."""
        c = self.counts.astype(np.float64)
        tot = c.sum(axis=1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            h = np.where(c > 0, -c * np.log2(c / np.where(tot > 0, tot, 1)), 0.0)
        return float(h.sum()) + 8.0 * packed_len


def build_table(symbols: np.ndarray, contexts: np.ndarray | None, ncontexts: int) -> Table:
    """Count symbols per context (contexts None means a single context)."""
    sym = symbols.reshape(-1).astype(np.int64)
    if sym.size == 0:
        return Table(0, np.zeros((max(ncontexts, 1), 1), dtype=np.uint32))
    lo, hi = int(sym.min()), int(sym.max())
    if lo < 0 or hi - lo >= MAX_SPAN:
        raise CodecError(f"context coder alphabet [{lo}, {hi}] is out of range")
    span = hi - lo + 1
    if contexts is None:
        flat = sym - lo
        ncontexts = 1
    else:
        flat = contexts.reshape(-1).astype(np.int64) * span + (sym - lo)
    counts = np.bincount(flat, minlength=ncontexts * span).astype(np.uint32)
    return Table(lo, counts.reshape(ncontexts, span))


def pack_table(table: Table) -> bytes:
    """Serialize a table (header plus zstd-packed counts)."""
    packed = zstandard.ZstdCompressor(level=19).compress(table.counts.tobytes())
    return _HEAD.pack(table.lo, table.span, table.counts.shape[0], len(packed)) + packed


def unpack_table(
    mv: memoryview, pos: int, expected_total: int, contexts: int, max_span: int = MAX_SPAN
) -> tuple[Table, int]:
    """Parse a table at pos: exactly `contexts` rows over at most max_span symbols, whose
    counts add up to expected_total. Shapes are checked before anything is decompressed."""
    if len(mv) - pos < _HEAD.size:
        raise CodecError("context table truncated")
    lo, span, nctx, plen = _HEAD.unpack_from(mv, pos)
    pos += _HEAD.size
    if not (1 <= span <= max_span and lo + span <= max_span and nctx == contexts):
        raise CodecError(f"context table declares an invalid shape ({nctx} x {span} from {lo})")
    if plen > len(mv) - pos:
        raise CodecError("context table runs past the end of the payload")
    size = nctx * span * 4
    raw = decompress_exact(mv[pos : pos + plen], size, "context table")
    counts = np.frombuffer(raw, dtype=np.uint32).reshape(nctx, span)
    if int(counts.sum(dtype=np.uint64)) != expected_total:
        raise CodecError(
            f"context table counts {int(counts.sum(dtype=np.uint64))} symbols, "
            f"the frame declares {expected_total}"
        )
    return Table(lo, counts), pos + plen


def _model(row: np.ndarray) -> constriction.stream.model.Categorical:
    p = row.astype(np.float64)
    return constriction.stream.model.Categorical(p / p.sum(), perfect=False)


def _order(contexts: np.ndarray | None, n: int) -> np.ndarray | None:
    if contexts is None:
        return None
    return np.argsort(contexts.reshape(-1), kind="stable")


def encode(
    coder: constriction.stream.queue.RangeEncoder,
    symbols: np.ndarray,
    contexts: np.ndarray | None,
    table: Table,
) -> None:
    """Append symbols to the coder, grouped by context in increasing order."""
    sym = symbols.reshape(-1).astype(np.int32) - table.lo
    order = _order(contexts, sym.size)
    if order is not None:
        sym = sym[order]
    start = 0
    for row in table.counts:
        n = int(row.sum())
        if n == 0:
            continue
        if np.count_nonzero(row) > 1:
            coder.encode(sym[start : start + n], _model(row))
        start += n


def decode(
    decoder: constriction.stream.queue.RangeDecoder,
    contexts: np.ndarray | None,
    table: Table,
    n: int,
) -> np.ndarray:
    """Inverse of encode: the n symbols in their original order (int32)."""
    parts = []
    try:
        for row in table.counts:
            k = int(row.sum())
            if k == 0:
                continue
            nz = np.flatnonzero(row)
            if nz.size == 1:
                parts.append(np.full(k, nz[0], dtype=np.int32))
            else:
                parts.append(np.asarray(decoder.decode(_model(row), k), dtype=np.int32))
    except Exception as exc:  # constriction raises plain errors on malformed streams
        raise CodecError(f"entropy-coded stream is corrupt: {exc}") from None
    sym = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)
    if sym.size != n:
        raise CodecError(f"entropy-coded stream holds {sym.size} symbols, expected {n}")
    order = _order(contexts, n)
    if order is not None:
        out = np.empty_like(sym)
        out[order] = sym
        sym = out
        ctx = contexts.reshape(-1).astype(np.int64)
        if ctx.size and (ctx.min() < 0 or ctx.max() >= table.counts.shape[0]):
            raise CodecError("context index outside the table")
        got = np.bincount(ctx * table.span + sym, minlength=table.counts.size)
    else:
        got = np.bincount(sym, minlength=table.span)
    if not np.array_equal(got, table.counts.reshape(-1)):
        raise CodecError("entropy-coded stream is corrupt: symbols disagree with the table")
    return sym + table.lo
