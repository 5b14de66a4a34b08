"""Order-0 entropy coding of integer symbol streams with constriction's range coder.

The symbol histogram travels with the stream (zstd-packed counts), so the decoder rebuilds
exactly the model the encoder used. Constriction's quantization of the probabilities is
deterministic, which keeps encoder and decoder in lockstep across machines.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import constriction
import numpy as np
import zstandard

from swarmpress.codecs.core.errors import CodecError
from swarmpress.codecs.entropy.zstdio import decompress_exact

_CONST = 0
_RANGE = 1
_HEAD = struct.Struct("<BII")  # mode, first symbol, alphabet span (or constant symbol, 0)
MAX_ALPHABET = 1 << 16
QUANTA = float(1 << 24)  # constriction's categorical models: 24-bit probabilities
SLACK_BITS = 128  # a range coder's final state: its output may undercut the ideal by this


def range_decoder(data: bytes | memoryview, what: str) -> constriction.stream.queue.RangeDecoder:
    """A range decoder over data, which must be whole 32-bit words; CodecError otherwise."""
    if len(data) % 4:
        raise CodecError(f"{what} is not a whole number of 32-bit words")
    try:
        return constriction.stream.queue.RangeDecoder(np.frombuffer(data, dtype=np.uint32).copy())
    except Exception as exc:  # constriction raises plain errors on malformed streams
        raise CodecError(f"{what} is corrupt: {exc}") from None


def _model(counts: np.ndarray) -> constriction.stream.model.Categorical:
    probs = counts.astype(np.float64)
    probs /= probs.sum()
    return constriction.stream.model.Categorical(probs, perfect=False)


CHUNK = 1 << 14  # symbols per coder call: bounds the int32 temporaries on both sides


def encode_symbols(symbols: np.ndarray) -> bytes:
    """Entropy-code non-negative integer symbols (< 65536) into self-contained bytes."""
    sym = np.asarray(symbols).reshape(-1)
    if sym.size == 0:
        return _HEAD.pack(_CONST, 0, 0)
    lo = int(sym.min())
    hi = int(sym.max())
    if lo < 0 or hi >= MAX_ALPHABET:
        raise CodecError(f"entropy coder takes symbols in [0, {MAX_ALPHABET}), got [{lo}, {hi}]")
    if lo == hi:
        return _HEAD.pack(_CONST, lo, 0)
    counts = np.zeros(hi - lo + 1, dtype=np.int64)
    for i in range(0, sym.size, CHUNK):
        counts += np.bincount(sym[i : i + CHUNK] - lo, minlength=hi - lo + 1)
    counts = counts.astype(np.uint32)
    table = zstandard.ZstdCompressor(level=9).compress(counts.tobytes())
    coder = constriction.stream.queue.RangeEncoder()
    model = _model(counts)
    for i in range(0, sym.size, CHUNK):
        coder.encode((sym[i : i + CHUNK] - lo).astype(np.int32), model)
    words = coder.get_compressed()
    return b"".join(
        [_HEAD.pack(_RANGE, lo, hi - lo + 1), struct.pack("<I", len(table)), table, words.tobytes()]
    )


def decode_symbols(data: bytes | memoryview, n: int) -> np.ndarray:
    """Decode n int32 symbols from a stream that fills all of data.

    The stream's header and table are checked (and the words must be able to hold n
    symbols) before the n-value result is allocated.
    """
    parts = iter_symbols(data, n)
    out = np.empty(n, dtype=np.int32)
    pos = 0
    for part in parts:
        out[pos : pos + part.size] = part
        pos += part.size
    return out


def min_code_bits(probs: np.ndarray) -> np.ndarray:
    """The fewest bits a range coder can spend on each symbol of a categorical model.

    constriction's fast quantization (perfect=False, 24-bit precision) gives every symbol
    of the alphabet one quantum of 2**-24 and shares the rest in proportion, so a quantized
    probability is below p + 3 quanta and below 1 - (span - 1) quanta; a symbol costs at
    least -log2 of that. (Measured slack on encoded streams: always >= 0 bits.)
    """
    p = np.asarray(probs, dtype=np.float64)
    total = float(p.sum())
    q = (p / total if total > 0 else p) + 3.0 / QUANTA
    q = np.minimum(q, 1.0 - (p.size - 1) / QUANTA)
    return -np.log2(q)


def check_room(nbytes: int, bits: float, what: str) -> None:
    """CodecError unless nbytes of range-coder words can hold a code of at least `bits` bits.

    A range coder's output is never shorter than the information content of the message
    under its quantized models (less a couple of words of state), so a payload too short
    for the declared symbols is refused before anything is decoded or allocated.
    """
    if 8.0 * nbytes + SLACK_BITS < bits:
        raise CodecError(
            f"{what} holds {nbytes} bytes, too few for the symbols it declares "
            f"(at least {int(bits // 8)} bytes)"
        )


def constant_symbol(data: bytes | memoryview) -> int | None:
    """The symbol of a valid constant-mode stream (every symbol the same), else None."""
    mv = memoryview(data)
    if len(mv) != _HEAD.size:
        return None
    mode, lo, span = _HEAD.unpack_from(mv, 0)
    return lo if mode == _CONST and lo < MAX_ALPHABET and span == 0 else None


def iter_symbols(data: bytes | memoryview, n: int, chunk: int = CHUNK) -> Iterator[np.ndarray]:
    """The n symbols of a stream as int32 arrays of at most chunk values, in order.

    The header, the table and the room in the payload are checked here, before the first
    chunk is asked for; the histogram check runs as the chunks go by and raises CodecError
    at the end, so a caller must not keep a result before the iterator is exhausted.
    """
    mv = memoryview(data)
    if len(mv) < _HEAD.size:
        raise CodecError("entropy stream truncated: header missing")
    mode, lo, span = _HEAD.unpack_from(mv, 0)
    if mode == _CONST:
        if lo >= MAX_ALPHABET or span != 0:
            raise CodecError(f"entropy stream declares an invalid constant symbol {lo}")
        if len(mv) != _HEAD.size:
            raise CodecError("entropy stream of a constant symbol has trailing bytes")
        return _constant(lo, n, chunk)
    if mode != _RANGE:
        raise CodecError(f"entropy stream has unknown mode {mode}")
    if not 2 <= span <= MAX_ALPHABET or lo + span > MAX_ALPHABET:
        raise CodecError(f"entropy stream declares an invalid alphabet [{lo}, {lo + span})")
    pos = _HEAD.size
    if len(mv) < pos + 4:
        raise CodecError("entropy stream truncated: table length missing")
    (tlen,) = struct.unpack_from("<I", mv, pos)
    pos += 4
    if tlen > len(mv) - pos:
        raise CodecError("entropy stream truncated: symbol table runs past the end")
    raw = decompress_exact(mv[pos : pos + tlen], span * 4, "entropy stream symbol table")
    pos += tlen
    counts = np.frombuffer(raw, dtype=np.uint32)
    declared = int(counts.sum(dtype=np.uint64))
    if declared != n:
        raise CodecError(f"entropy stream table counts {declared} symbols, the frame declares {n}")
    bits = float(counts @ min_code_bits(counts))
    check_room(len(mv) - pos, bits, "entropy stream payload")
    decoder = range_decoder(mv[pos:], "entropy stream payload")
    return _ranged(decoder, counts, lo, n, chunk)


def _constant(symbol: int, n: int, chunk: int) -> Iterator[np.ndarray]:
    for i in range(0, n, chunk):
        yield np.full(min(chunk, n - i), symbol, dtype=np.int32)


def _ranged(
    decoder: constriction.stream.queue.RangeDecoder,
    counts: np.ndarray,
    lo: int,
    n: int,
    chunk: int,
) -> Iterator[np.ndarray]:
    model = _model(counts)
    span = counts.size
    seen = np.zeros(span, dtype=np.int64)
    for i in range(0, n, chunk):
        try:
            rel = decoder.decode(model, min(chunk, n - i))
        except Exception as exc:  # constriction raises plain errors on malformed streams
            raise CodecError(f"entropy stream is corrupt: {exc}") from None
        rel = rel.astype(np.int32)
        seen += np.bincount(rel, minlength=span)[:span]
        yield rel + lo
    if not np.array_equal(seen, counts):
        raise CodecError("entropy stream is corrupt: decoded symbols disagree with the table")
