"""The numba rANS pieces: exact reciprocals, table invariants, streams that round-trip."""

import numba
import numpy as np
import pytest

from swarmpress.codecs.core.errors import CodecError
from swarmpress.codecs.entropy import rans


def test_quantized_frequencies_sum_to_total_and_keep_every_symbol():
    rng = np.random.default_rng(0)
    for n in (1, 2, 17, 256):
        p = rng.random(n) ** 8
        f = rans.quantize(p / p.sum())
        assert f.sum() == rans.TOTAL and f.min() >= 1
    with pytest.raises(CodecError, match="symbols"):
        rans.quantize(np.ones(257) / 257)


def test_reciprocal_division_is_exact_for_every_frequency_at_extreme_states():
    freqs = np.arange(1, rans.TOTAL + 1)
    enc = rans.enc_entries(np.ones(1, np.int64))  # shape check only
    assert enc.shape == (1, 5)
    for f in freqs:
        e = rans.enc_entries(np.array([f, rans.TOTAL - f]) if f < rans.TOTAL else np.array([f]))
        _, rcp, shift, bias, cmpl = (int(v) for v in e[0])
        limit = f << rans.ENC_SHIFT  # the largest state coded with this frequency, plus one
        for x in {rans.RANS_L, rans.RANS_L + 1, limit - 1, (rans.RANS_L + limit) // 2}:
            if not rans.RANS_L <= x < limit:
                continue
            got = x + bias + ((x * rcp) >> shift) * cmpl
            assert got == ((x // f) << rans.PREC) + x % f, (f, x)
            assert got < 1 << 31


def test_slot_table_entries_decode_their_symbol():
    freq = rans.quantize(np.array([0.5, 0.25, 0.125, 0.125]))
    table = rans.dec_entries(freq)
    starts = np.concatenate([[0], np.cumsum(freq)[:-1]])
    for slot in (0, 1, int(freq[0]), rans.TOTAL - 1):
        e = int(table[slot])
        s = e & 0xFF
        assert starts[s] <= slot < starts[s] + freq[s]
        assert (e >> 8) & 0x1FFF == freq[s] and e >> 21 == slot - starts[s]


@numba.njit
def _encode(symbols, tables, enc, buf):
    x = np.int64(rans.RANS_L)
    pos = buf.size
    for i in range(symbols.size - 1, -1, -1):
        t, s = tables[i], symbols[i]
        if x >= (enc[t, s, 0] << rans.ENC_SHIFT):
            pos -= 1
            buf[pos] = x & 0xFFFF
            x >>= 16
        x = rans.enc_step(x, enc[t, s, 1], enc[t, s, 2], enc[t, s, 3], enc[t, s, 4])
    buf[pos - 1] = x & 0xFFFF
    buf[pos - 2] = x >> 16
    return pos - 2


@numba.njit
def _decode(words, tables, slots, out):
    x = (np.int64(words[0]) << 16) | np.int64(words[1])
    ptr = 2
    for i in range(out.size):
        s, x = rans.dec_step(x, slots[tables[i], x & (rans.TOTAL - 1)])
        out[i] = s
        if x < rans.RANS_L:
            x = (x << 16) | np.int64(words[ptr])
            ptr += 1
    return x, ptr


def test_multi_table_stream_round_trips_near_its_entropy():
    rng = np.random.default_rng(3)
    probs = [rng.dirichlet(np.full(n, 0.3)) for n in (2, 40, 200)]
    freqs = [rans.quantize(p) for p in probs]
    width = max(f.size for f in freqs)
    enc = np.zeros((3, width, 5), np.int64)
    slots = np.stack([rans.dec_entries(f) for f in freqs])
    for t, f in enumerate(freqs):
        enc[t, : f.size] = rans.enc_entries(f)
    tables = rng.integers(0, 3, 50_000)
    symbols = np.array([rng.choice(freqs[t].size, p=probs[t]) for t in tables])
    buf = np.zeros(symbols.size + 2, np.uint16)
    start = _encode(symbols, tables, enc, buf)
    words = buf[start:].copy()
    out = np.empty_like(symbols)
    x, ptr = _decode(words, tables, slots, out)
    np.testing.assert_array_equal(out, symbols)
    assert x == rans.RANS_L and ptr == words.size
    ideal = -sum(np.log2(probs[t][s]) for t, s in zip(tables, symbols, strict=True))
    assert 16 * words.size < 1.02 * ideal + 64


def test_bit_stack_pops_in_reverse_push_order():
    rng = np.random.default_rng(4)
    widths = rng.integers(0, 33, 500)
    values = np.array([int(rng.integers(0, 1 << int(w))) if w else 0 for w in widths])
    acc, nacc, words = 0, 0, []
    for v, w in zip(values, widths, strict=True):
        acc, nacc = rans.bits_add(np.int64(acc), nacc, np.int64(v), int(w))
        if nacc >= 32:
            words.append(acc & 0xFFFFFFFF)
            acc, nacc = acc >> 32, nacc - 32
    words.append(acc)
    stack = [int(w) for w in words]
    acc, nacc = stack.pop(), nacc  # the top word holds the last nacc bits
    for v, w in zip(values[::-1], widths[::-1], strict=True):
        if nacc < w:
            acc, nacc = (acc << 32) | stack.pop(), nacc + 32
        got, acc, nacc = rans.bits_take(np.int64(acc), nacc, int(w))
        assert got == v
    assert nacc == 0 and not stack
