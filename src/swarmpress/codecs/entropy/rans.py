"""Static-model rANS in numba: many small frequency tables, one interleaved-free stream.

constriction (order0.py) is the reference coder but is driven from Python one model at a
time; the fast lossy path needs the table chosen per symbol inside a compiled quantization
loop, at a few nanoseconds a symbol. This module holds the pieces those loops inline:
frequency tables built from probabilities (deterministic integer arithmetic after one IEEE
multiply), encoder entries with exact reciprocals (Alverson's method, as in Fabian
Giesen's public-domain rans_byte), a slot-to-symbol table per model for decoding, and a
bit stack for raw bits that both sides read in opposite orders.

State: 31 bits, renormalised 16 bits at a time, PREC-bit probabilities (PREC = 12), so
each symbol emits at most one 16-bit word and a reciprocal is exact for every state.
"""

from __future__ import annotations

import numba
import numpy as np

from swarmpress.codecs.core.errors import CodecError

PREC = 12
TOTAL = 1 << PREC
RANS_L = 1 << 15  # lower bound of the normalised state; states stay below 2**31
MAX_SYMBOLS = 256  # slot tables hold uint8 symbols


def quantize(p: np.ndarray) -> np.ndarray:
    """Integer frequencies summing to TOTAL, every symbol at least 1, from probabilities."""
    n = p.size
    if not 0 < n <= MAX_SYMBOLS:
        raise CodecError(f"rANS model needs 1..{MAX_SYMBOLS} symbols, got {n}")
    f = np.floor(np.asarray(p, dtype=np.float64) * float(TOTAL - n)).astype(np.int64) + 1
    f[int(np.argmax(p))] += TOTAL - int(f.sum())
    return f


def enc_entries(freq: np.ndarray) -> np.ndarray:
    """Per symbol: freq, reciprocal, shift, bias, complement (int64, shape (n, 5))."""
    out = np.zeros((freq.size, 5), dtype=np.int64)
    start = 0
    for s, f in enumerate(int(v) for v in freq):
        if f == 1:
            rcp, shift, bias = (1 << 32) - 1, 0, start + TOTAL - 1
        else:
            shift = 0
            while f > (1 << shift):
                shift += 1
            rcp = ((1 << (shift + 31)) + f - 1) // f
            shift, bias = shift - 1, start
        out[s] = (f, rcp, shift + 32, bias, TOTAL - f)
        start += f
    return out


def dec_entries(freq: np.ndarray) -> np.ndarray:
    """Slot table (int64, size TOTAL): symbol | freq << 8 | (slot - start) << 21 per slot.

    One load per decoded symbol gives everything the state update needs.
    """
    start = np.concatenate([[0], np.cumsum(freq)[:-1]]).astype(np.int64)
    sym = np.repeat(np.arange(freq.size, dtype=np.int64), freq)
    offset = np.arange(TOTAL, dtype=np.int64) - start[sym]
    return sym | (freq.astype(np.int64)[sym] << 8) | (offset << 21)


# Kernel helpers take and return scalars only: numba reference-counts every array passed
# to a jitted function, which costs more than the coding itself at this granularity. The
# callers index the tables and move words in and out of their buffers.
#
# Arithmetic is int64: states are < 2**31 and x * reciprocal < 2**63.

ENC_SHIFT = 16 + 15 - PREC  # renormalise when x >= freq << ENC_SHIFT ((L >> PREC) << 16)


@numba.njit(inline="always", nogil=True)
def enc_step(x, rcp, shift, bias, cmpl):
    """x after coding a symbol (x already renormalised): (x // f) << PREC + x % f + start."""
    return x + bias + ((x * rcp) >> shift) * cmpl


@numba.njit(inline="always", nogil=True)
def dec_step(x, entry):
    """(symbol, x) after removing the symbol whose slot-table entry is given."""
    return entry & 0xFF, ((entry >> 8) & 0x1FFF) * (x >> PREC) + (entry >> 21)


@numba.njit(inline="always", nogil=True)
def bits_add(acc, nacc, val, w):
    """Append the low w (<= 32) bits of val to an accumulator of nacc (< 32) bits."""
    return acc | ((val & ((np.int64(1) << w) - 1)) << nacc), nacc + w


@numba.njit(inline="always", nogil=True)
def bits_take(acc, nacc, w):
    """(value, acc, nacc): the top w of nacc (>= w) bits, most recently pushed first."""
    nacc -= w
    val = (acc >> nacc) & ((np.int64(1) << w) - 1)
    return val, acc & ((np.int64(1) << nacc) - 1), nacc


def dec_entries32(freq: np.ndarray) -> np.ndarray:
    """Compact slot table (uint32, size TOTAL): symbol | freq << 7 | (slot - start) << 20.

    Half the bytes of dec_entries, so more tables stay in L1; needs at most 128 symbols.
    """
    if freq.size > 128:
        raise CodecError(f"compact rANS tables hold at most 128 symbols, got {freq.size}")
    start = np.concatenate([[0], np.cumsum(freq)[:-1]]).astype(np.int64)
    sym = np.repeat(np.arange(freq.size, dtype=np.int64), freq)
    offset = np.arange(TOTAL, dtype=np.int64) - start[sym]
    return (sym | (freq.astype(np.int64)[sym] << 7) | (offset << 20)).astype(np.uint32)
