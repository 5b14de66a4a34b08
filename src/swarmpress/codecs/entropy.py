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

from swarmpress.codecs.errors import CodecError
from swarmpress.codecs.zstdio import decompress_exact

_CONST = 0
_RANGE = 1
_HEAD = struct.Struct("<BII")  # mode, first symbol, alphabet span (or constant symbol, 0)
MAX_ALPHABET = 1 << 16


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
    """Decode n int32 symbols from a stream that fills all of data."""
    out = np.empty(n, dtype=np.int32)
    pos = 0
    for part in iter_symbols(data, n):
        out[pos : pos + part.size] = part
        pos += part.size
    return out


def iter_symbols(data: bytes | memoryview, n: int, chunk: int = CHUNK) -> Iterator[np.ndarray]:
    """The n symbols of a stream as int32 arrays of at most chunk values, in order.

    The histogram check runs as the chunks go by and raises CodecError at the end, so a
    caller must not keep a result before the generator is exhausted.
    """
    mv = memoryview(data)
    if len(mv) < _HEAD.size:
        raise CodecError("entropy stream truncated: header missing")
    mode, lo, span = _HEAD.unpack_from(mv, 0)
    if mode == _CONST:
        if lo >= MAX_ALPHABET or span != 0:
            raise CodecError(f"entropy stream declares an invalid constant symbol {lo}")
        for i in range(0, n, chunk):
            yield np.full(min(chunk, n - i), lo, dtype=np.int32)
        return
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
    if int(counts.astype(np.uint64).sum()) != n:
        raise CodecError(
            f"entropy stream table counts {int(counts.sum())} symbols, the frame declares {n}"
        )
    decoder = range_decoder(mv[pos:], "entropy stream payload")
    model = _model(counts)
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
