"""Compiled rANS lanes: chunks of integer codes, four interleaved rANS states per chunk.

A flat field of integer codes (rows x chans, read in place) is cut into chunks of fixed
size that do not depend on the thread count, so frames are identical whatever the number
of threads: each chunk is an independent stream of four interleaved rANS states (lane =
position in the chunk mod 4) sharing one word stream, plus a stack of raw bits (low bits
of wide buckets, escapes). Each value's model table comes from its row's and channel's
scale codes (rans_field.py builds the tables; rans.py holds the static-model pieces).

The decoder is fused with dequantization: decode_range writes float32((code + mu) * step
[+ projection]), rounded to bf16 when asked, with the same float64 steps as the `lossy`
fast mode's encoder (families/lossy/kernels.py `dequant_row`), or the codes themselves.
Renormalisation is branch-free on both sides.
"""

from __future__ import annotations

import numba
import numpy as np

from swarmpress.codecs.entropy.rans import PREC, RANS_L, TOTAL, bits_add, bits_take, enc_step

ESC_HALF = 26  # an escaped value travels as two 26-bit halves of its zigzag code
LANES = 4
OK, FULL, CORRUPT = 0, 1, 2
OUT_F32, OUT_BF16, OUT_CODES = 0, 1, 2  # what decode writes: float32, bf16 bits, or codes
_MASK = TOTAL - 1


@numba.njit(nogil=True, cache=True)
def chunk_tables(a, b, chans, row_tab, rc_idx, tt):
    """tt[i - a] = model table of flat element i, for i in a..b: row_tab[rc_idx[row], chan]."""
    i = a
    while i < b:
        r = i // chans
        j0 = i - r * chans
        end = min(b, (r + 1) * chans)
        tt[i - a : end - a] = row_tab[rc_idx[r], j0 : j0 + end - i]
        i = end


@numba.njit(nogil=True, inline="always")
def _renc(x, enc, e, buf, pos):
    """(state, word position) after coding the symbol whose encoder entry is e (unsigned
    indices: no negative-index fix-ups in the hot loop)."""
    row = enc[np.uint64(e)]
    c = x >= row[0]  # renormalise first: branch-free, the word is kept only if c
    buf[np.uint64(pos - 1)] = x & 0xFFFF
    pos -= c
    x >>= 16 * c
    return enc_step(x, row[1], row[2], row[3], row[4]), pos


@numba.njit(nogil=True, inline="always")
def _sym(v, inf):
    """(encoder entry, raw value, raw width) of residual v in the table whose packed info
    (first entry | m << 24 | low bits << 40) is inf; width -1: an escape."""
    lb = inf >> 40
    m = (inf >> 24) & 0xFFFF
    hi = v >> lb
    s = hi + m
    if np.uint64(s) > np.uint64(2 * m):  # |hi| > m, in one unsigned compare
        return (inf & 0xFFFFFF) + 2 * m + 1, v, np.int64(-1)
    return (inf & 0xFFFFFF) + s, v - (hi << lb), lb


@numba.njit(nogil=True, inline="always")
def _flush(acc, nacc, wi, bits):
    """Move one whole 32-bit word from the accumulator to bits: (acc, nacc, wi, full)."""
    if nacc < 32:
        return acc, nacc, wi, False
    if wi >= bits.size:
        return acc, nacc, wi, True
    bits[wi] = acc & 0xFFFFFFFF
    return acc >> 32, nacc - 32, wi + 1, False


@numba.njit(nogil=True)
def _push_raw(acc, nacc, wi, bits, r, w):
    """Push w raw bits of r (w < 0: the escaped value r as two 26-bit zigzag halves), flushing
    whole 32-bit words; (acc, nacc, wi, full). Out of line: the rare and general path."""
    if w < 0:
        z = (r << 1) ^ (r >> 63)  # |r| < 2**50 keeps it below 2**52
        for half in (z, z >> ESC_HALF):
            acc, nacc = bits_add(acc, nacc, half, ESC_HALF)
            acc, nacc, wi, full = _flush(acc, nacc, wi, bits)
            if full:
                return acc, nacc, wi, True
        return acc, nacc, wi, False
    acc, nacc = bits_add(acc, nacc, r, w)
    return _flush(acc, nacc, wi, bits)


@numba.njit(nogil=True, cache=True)
def encode_chunk(q, a, b, tt, einfo, enc, buf, bits):
    """Code flat elements a..b of q backwards into buf (words, from its end) and bits.

    Element i of the chunk goes to lane i % 4; its raw bits (low bits of wide buckets,
    escapes) are pushed in the same backward order. Returns (first word index, raw bit
    count, status); status FULL when bits is too small.
    """
    n = b - a
    qc = q[a:b]
    n4 = n - (n & 3)
    x0 = x1 = x2 = x3 = np.int64(RANS_L)
    pos = buf.size
    acc = np.int64(0)
    nacc = np.int64(0)
    wi = 0
    cap = bits.size
    for i in range(n - 1, n4 - 1, -1):  # the tail of n % 4 elements: lanes 0..2
        e, rv, rw = _sym(np.int64(qc[i]), einfo[tt[i]])
        acc, nacc, wi, full = _push_raw(acc, nacc, wi, bits, rv, rw)
        if full:
            return 0, 0, FULL
        if i - n4 == 2:
            x2, pos = _renc(x2, enc, e, buf, pos)
        elif i - n4 == 1:
            x1, pos = _renc(x1, enc, e, buf, pos)
        else:
            x0, pos = _renc(x0, enc, e, buf, pos)
    for gi in range(n4 // 4 - 1, -1, -1):
        g = gi * 4
        e3, r3, w3 = _sym(np.int64(qc[g + 3]), einfo[tt[g + 3]])
        e2, r2, w2 = _sym(np.int64(qc[g + 2]), einfo[tt[g + 2]])
        e1, r1, w1 = _sym(np.int64(qc[g + 1]), einfo[tt[g + 1]])
        e0, r0, w0 = _sym(np.int64(qc[g]), einfo[tt[g]])
        x3, pos = _renc(x3, enc, e3, buf, pos)
        x2, pos = _renc(x2, enc, e2, buf, pos)
        x1, pos = _renc(x1, enc, e1, buf, pos)
        x0, pos = _renc(x0, enc, e0, buf, pos)
        if (w3 | w2 | w1 | w0) < 0 or w3 + w2 + w1 + w0 > 32:  # escapes, wide raw fields
            for r, w in ((r3, w3), (r2, w2), (r1, w1), (r0, w0)):
                acc, nacc, wi, full = _push_raw(acc, nacc, wi, bits, r, w)
                if full:
                    return 0, 0, FULL
            continue
        acc |= r3 << nacc
        nacc += w3
        acc |= r2 << nacc
        nacc += w2
        acc |= r1 << nacc
        nacc += w1
        acc |= r0 << nacc
        nacc += w0
        if nacc >= 32:
            if wi >= cap:
                return 0, 0, FULL
            bits[wi] = acc & 0xFFFFFFFF
            wi += 1
            acc >>= 32
            nacc -= 32
    for x in (x3, x2, x1, x0):  # the decoder reads lane 0 first
        buf[pos - 1] = x & 0xFFFF
        buf[pos - 2] = x >> 16
        pos -= 2
    nbits = 32 * wi + nacc
    if nacc:
        if wi >= cap:
            return 0, 0, FULL
        bits[wi] = acc
    return pos, nbits, OK


ESCAPE_FIELD = 127  # slot-table value field of the escape symbol; others hold hi + 64
FIELD_BIAS = 64


@numba.njit(nogil=True, cache=True)
def encode_range(q, c0, c1, n, size, chans, row_tab, rc_idx, einfo, enc, tt, buf, bits, out_w,
                 out_b, table):  # fmt: skip
    """Code chunks c0..c1 (chunk c: flat values c*size ..), appending their words to out_w and
    their raw-bit words to out_b, and their counts to table[c]. Returns (words, bit words)
    written, or (-1, -1) when out_b is too small (the caller retries with more)."""
    wpos = 0
    bpos = 0
    for c in range(c0, c1):
        a = c * size
        b = min(n, a + size)
        chunk_tables(a, b, chans, row_tab, rc_idx, tt)
        start, nbits, status = encode_chunk(q, a, b, tt, einfo, enc, buf, bits)
        if status != OK:
            return -1, -1
        nw = buf.size - start
        nbw = (nbits + 31) >> 5
        if bpos + nbw > out_b.size:
            return -1, -1
        out_w[wpos : wpos + nw] = buf[start:]
        out_b[bpos : bpos + nbw] = bits[:nbw]
        table[c, 0] = nw
        table[c, 1] = nbits
        wpos += nw
        bpos += nbw
    return wpos, bpos


@numba.njit(nogil=True, inline="always")
def _dec_one(x, sb, slots, words, ptr, last):
    """(value field, state, word pointer) after decoding one symbol with the slot table at
    sb. Indices are unsigned: no negative-index fix-ups in the hot loop."""
    e = np.int64(slots[np.uint64(sb) + np.uint64(x & _MASK)])
    f = e & 0x7F
    x = ((e >> 7) & 0x1FFF) * (x >> PREC) + (e >> 20)
    nx = (x << 16) | np.int64(words[np.uint64(min(ptr, last))])
    c = x < RANS_L
    x = nx if c else x
    return f, x, ptr + c


@numba.njit(nogil=True, inline="always")
def _bits_word(b16, wi):
    """Raw-bit word wi of a stream held as little-endian uint16 pairs (no alignment needed)."""
    return np.int64(b16[2 * wi]) | (np.int64(b16[2 * wi + 1]) << 16)


@numba.njit(nogil=True, inline="always")
def _pop(acc, nacc, wi, b16, w):
    """(value, acc, nacc, wi, ok): the top w bits of the stack, refilled from below."""
    if nacc < w:
        if wi == 0:
            return np.int64(0), acc, nacc, wi, False
        wi -= 1
        acc = (acc << 32) | _bits_word(b16, wi)
        nacc += 32
    val, acc, nacc = bits_take(acc, nacc, w)
    return val, acc, nacc, wi, True


@numba.njit(nogil=True)
def _take_value(f, lb, b16, acc, nacc, wi):
    """(residual, acc, nacc, wi, ok) of value field f, raw bits popped from the stack.
    Out of line: the general path (escapes, wide raw fields, stream ends)."""
    if f == ESCAPE_FIELD:  # two 26-bit halves of the zigzag code, high half on top
        hi, acc, nacc, wi, ok1 = _pop(acc, nacc, wi, b16, ESC_HALF)
        lo, acc, nacc, wi, ok2 = _pop(acc, nacc, wi, b16, ESC_HALF)
        z = (hi << ESC_HALF) | lo
        return (z >> 1) ^ -(z & 1), acc, nacc, wi, ok1 and ok2
    v = f - FIELD_BIAS
    if not lb:
        return v, acc, nacc, wi, True
    low, acc, nacc, wi, ok = _pop(acc, nacc, wi, b16, lb)
    return (v << lb) + low, acc, nacc, wi, ok


@numba.njit(nogil=True, cache=True)
def decode_chunk(words, b16, nbits, n, info, slots, tt, codes):
    """Inverse of encode_chunk for its n values: codes[:n] receive the residuals; a status.

    info[t] = first slot of table t | raw low bits << 32. b16 holds the raw-bit words as
    uint16 pairs. A group of four values with no escape and at most 32 raw bits pops them
    in one refill; other groups take the general path.
    """
    if words.size < 2 * LANES or nbits > 16 * b16.size or b16.size & 1:
        return CORRUPT
    x0 = (np.int64(words[0]) << 16) | np.int64(words[1])
    x1 = (np.int64(words[2]) << 16) | np.int64(words[3])
    x2 = (np.int64(words[4]) << 16) | np.int64(words[5])
    x3 = (np.int64(words[6]) << 16) | np.int64(words[7])
    ptr = 2 * LANES
    last = words.size - 1
    wi = (nbits - 1) >> 5 if nbits else 0  # word holding the top of the bit stack
    nacc = nbits - 32 * wi
    acc = _bits_word(b16, wi) if nbits else np.int64(0)
    if acc >> nacc:
        return CORRUPT  # set bits above the declared count
    n4 = n - (n & 3)
    lowmask = np.int64(0xFFFFFFFF)
    for gi in range(n4 // 4):
        g = gi * 4
        i0 = info[tt[g]]
        i1 = info[tt[g + 1]]
        i2 = info[tt[g + 2]]
        i3 = info[tt[g + 3]]
        f0, x0, ptr = _dec_one(x0, i0 & lowmask, slots, words, ptr, last)
        f1, x1, ptr = _dec_one(x1, i1 & lowmask, slots, words, ptr, last)
        f2, x2, ptr = _dec_one(x2, i2 & lowmask, slots, words, ptr, last)
        f3, x3, ptr = _dec_one(x3, i3 & lowmask, slots, words, ptr, last)
        l0 = i0 >> 32
        l1 = i1 >> 32
        l2 = i2 >> 32
        l3 = i3 >> 32
        need = l0 + l1 + l2 + l3
        esc = (
            (f0 == ESCAPE_FIELD)
            | (f1 == ESCAPE_FIELD)
            | (f2 == ESCAPE_FIELD)
            | (f3 == ESCAPE_FIELD)
        )
        if not esc and need <= 32 and (nacc >= need or wi > 0):
            if nacc < need:
                wi -= 1
                acc = (acc << 32) | _bits_word(b16, wi)
                nacc += 32
            nacc -= l0
            codes[g] = ((f0 - FIELD_BIAS) << l0) + ((acc >> nacc) & ((np.int64(1) << l0) - 1))
            nacc -= l1
            codes[g + 1] = ((f1 - FIELD_BIAS) << l1) + ((acc >> nacc) & ((np.int64(1) << l1) - 1))
            nacc -= l2
            codes[g + 2] = ((f2 - FIELD_BIAS) << l2) + ((acc >> nacc) & ((np.int64(1) << l2) - 1))
            nacc -= l3
            codes[g + 3] = ((f3 - FIELD_BIAS) << l3) + ((acc >> nacc) & ((np.int64(1) << l3) - 1))
            acc &= (np.int64(1) << nacc) - 1
            continue
        for k, f, lb in ((0, f0, l0), (1, f1, l1), (2, f2, l2), (3, f3, l3)):
            v, acc, nacc, wi, ok = _take_value(f, lb, b16, acc, nacc, wi)
            if not ok:
                return CORRUPT
            codes[g + k] = v
    for i in range(n4, n):  # the tail of n % 4 elements: lanes 0..2
        inf = info[tt[i]]
        if i == n4:
            f, x0, ptr = _dec_one(x0, inf & lowmask, slots, words, ptr, last)
        elif i == n4 + 1:
            f, x1, ptr = _dec_one(x1, inf & lowmask, slots, words, ptr, last)
        else:
            f, x2, ptr = _dec_one(x2, inf & lowmask, slots, words, ptr, last)
        v, acc, nacc, wi, ok = _take_value(f, inf >> 32, b16, acc, nacc, wi)
        if not ok:
            return CORRUPT
        codes[i] = v
    if ptr != words.size or nacc != 0 or wi != 0:
        return CORRUPT
    if x0 != RANS_L or x1 != RANS_L or x2 != RANS_L or x3 != RANS_L:
        return CORRUPT
    return OK


@numba.njit(nogil=True, cache=True)
def decode_range(streams, woff, nwords, boff, nbits, c0, c1, n, size, chans, row_tab, rc_idx,
                 info, slots, step, mu, out, out_base, out_mode, tt, codes, proj,
                 proj_base):  # fmt: skip
    """Decode chunks c0..c1: element i goes to out[i - out_base] (and adds proj[i -
    proj_base] when proj is not empty); the first corrupt chunk's index, or -1."""
    for c in range(c0, c1):
        a = c * size
        b = min(n, a + size)
        words = streams[woff[c] : woff[c] + nwords[c]]
        b16 = streams[boff[c] : boff[c] + 2 * ((nbits[c] + 31) >> 5)]
        chunk_tables(a, b, chans, row_tab, rc_idx, tt)
        if decode_chunk(words, b16, nbits[c], b - a, info, slots, tt, codes) != OK:
            return c
        dequant_chunk(codes, a, b, chans, step, mu, out, out_base, out_mode, proj, proj_base)
    return -1


@numba.njit(nogil=True, cache=True)
def dequant_chunk(codes, a, b, chans, step, mu, out, out_base, out_mode, proj, proj_base):
    """Write elements a..b to out[a - out_base ...] from their codes (float32, bf16 bits or
    codes): float32((code + mu) * step [+ projection]), rounded to bf16 as in dequant_row."""
    if proj.size and out_mode != OUT_CODES:
        _dequant_proj(codes, a, b, chans, step, mu, out, out_base, out_mode == OUT_BF16, proj,
                      proj_base)  # fmt: skip
        return
    yf = np.empty(min(chans, b - a), np.float32)
    yu = yf.view(np.uint32)
    i = a
    while i < b:
        r = i // chans
        j0 = i - r * chans
        end = min(b, (r + 1) * chans)
        cnt = end - i
        c = codes[i - a : end - a]
        m = mu[j0 : j0 + cnt]
        o = out[i - out_base : end - out_base]
        if out_mode == OUT_CODES:
            o[:] = c
        elif out_mode == OUT_BF16:
            for k in range(cnt):
                yf[k] = np.float32((np.float64(c[k]) + m[k]) * step)
            for k in range(cnt):
                u = yu[k]
                u = u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))
                o[k] = np.uint16(u >> np.uint32(16))
        else:
            for k in range(cnt):
                o[k] = np.float32((np.float64(c[k]) + m[k]) * step)
        i = end


@numba.njit(nogil=True)
def _dequant_proj(codes, a, b, chans, step, mu, out, out_base, bf16, proj, proj_base):
    """dequant_chunk with a low-rank projection: the same float64 steps as dequant_row."""
    yf = np.empty(min(chans, b - a), np.float32)
    yu = yf.view(np.uint32)
    i = a
    while i < b:
        r = i // chans
        j0 = i - r * chans
        end = min(b, (r + 1) * chans)
        cnt = end - i
        c = codes[i - a : end - a]
        m = mu[j0 : j0 + cnt]
        p = proj[i - proj_base : end - proj_base]
        for k in range(cnt):
            yf[k] = np.float32((np.float64(c[k]) + m[k]) * step + np.float64(p[k]))
        o = out[i - out_base : end - out_base]
        if bf16:
            for k in range(cnt):
                u = yu[k]
                u = u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))
                o[k] = np.uint16(u >> np.uint32(16))
        else:
            for k in range(cnt):
                o[k] = yf[k]
        i = end
