"""Compiled loops of the `lossy` fast mode: statistics, measure-at-a-step, encode, decode.

Each loop reads the tensor in place (bf16 bits are widened one row at a time into a
scratch row), so no whole-tensor float copy exists on either side. The encoder and the
decoder share `_dequant_row`, so the values the encoder measured are bit for bit the values
the decoder produces. Element (row, channel) of a (rows, chans) view uses the model table
picked by its channel and row scale codes (see lossy_fast.py).
"""

from __future__ import annotations

import numba
import numpy as np

from swarmpress.codecs.rans import (
    ENC_SHIFT,
    RANS_L,
    TOTAL,
    bits_add,
    bits_take,
    dec_step,
    enc_step,
)

ESC_HALF = 26  # an escaped value travels as two 26-bit halves of its zigzag code
OK, FULL, CORRUPT = 0, 1, 2
OUT_F32, OUT_BF16, OUT_CODES = 0, 1, 2  # what decode writes: float32, bf16 bits, or codes


@numba.njit(nogil=True)
def _load_row(src, is_bf16, base, chans, sf, su):
    """Row of the tensor as float32 in sf (su is the same memory seen as uint32)."""
    if is_bf16:
        for j in range(chans):
            su[j] = np.uint32(src[base + j]) << np.uint32(16)
    else:
        for j in range(chans):
            sf[j] = src[base + j]


_MAGIC = 6755399441055744.0  # 1.5 * 2**52: (v + M) - M rounds v to nearest even integer


@numba.njit(nogil=True)
def _quant(xv, inv, mu_j):
    """Residual code of one value (strict IEEE, shared by measure and encode)."""
    return ((xv * inv + _MAGIC) - _MAGIC) - mu_j


@numba.njit(nogil=True)
def _dequant_row(r_row, mu, step, is_bf16, yf, yu, chans):
    """Decoded row: float32((r + mu) * step), then rounded to bf16 (kept in float32) if asked."""
    for j in range(chans):
        yf[j] = np.float32((r_row[j] + mu[j]) * step)
    if is_bf16:
        for j in range(chans):
            u = yu[j]
            yu[j] = (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) & np.uint32(
                0xFFFF0000
            )


@numba.njit(nogil=True, cache=True)
def channel_stats(src, is_bf16, rows, chans):
    """Per-channel sum and sum of squares (float64)."""
    s1 = np.zeros(chans)
    s2 = np.zeros(chans)
    sf = np.empty(chans, np.float32)
    su = sf.view(np.uint32)
    for r in range(rows):
        _load_row(src, is_bf16, r * chans, chans, sf, su)
        for j in range(chans):
            v = np.float64(sf[j])
            s1[j] += v
            s2[j] += v * v
    return s1, s2


@numba.njit(nogil=True, cache=True)
def row_energy(src, is_bf16, rows, chans, mean, inv_var):
    """Per-row mean of (x - channel mean)^2 / channel variance over channels that vary."""
    e = np.zeros(rows)
    sf = np.empty(chans, np.float32)
    su = sf.view(np.uint32)
    for r in range(rows):
        _load_row(src, is_bf16, r * chans, chans, sf, su)
        acc = 0.0
        for j in range(chans):
            d = np.float64(sf[j]) - mean[j]
            acc += d * d * inv_var[j]
        e[r] = acc / chans
    return e


@numba.njit(nogil=True, cache=True)
def measure(src, is_bf16, rows, chans, step, mu, row_w, chan_acc, out_bf16):
    """Quantize at step and compare with the exact values the decoder will produce.

    Returns (dot, |x|^2, |y|^2, |x-y|^2, max |x-y|, max |code|); chan_acc receives the sum
    over rows of r^2 * row_w (the channel scale estimate of the residual codes).
    """
    inv = 1.0 / step
    sf = np.empty(chans, np.float32)
    su = sf.view(np.uint32)
    yf = np.empty(chans, np.float32)
    yu = yf.view(np.uint32)
    rr = np.empty(chans)
    dot = xx = yy = ee = emax = 0.0
    rmax = 0.0
    for j in range(chans):
        chan_acc[j] = 0.0
    for r in range(rows):
        _load_row(src, is_bf16, r * chans, chans, sf, su)
        w = row_w[r]
        for j in range(chans):
            v = _quant(np.float64(sf[j]), inv, mu[j])
            rr[j] = v
            chan_acc[j] += v * v * w
            a = abs(v)
            if a > rmax:
                rmax = a
        _dequant_row(rr, mu, step, out_bf16, yf, yu, chans)
        for j in range(chans):
            xv = np.float64(sf[j])
            yv = np.float64(yf[j])
            d = xv - yv
            dot += xv * yv
            xx += xv * xv
            yy += yv * yv
            ee += d * d
            if abs(d) > emax:
                emax = abs(d)
    return dot, xx, yy, ee, emax, rmax


@numba.njit(nogil=True)
def _row_tables(cc, rc_r, kmin, kmax, slot_of_k, tj):
    """Model table of every channel in a row with row scale code rc_r."""
    for j in range(cc.size):
        k = min(max(cc[j] + rc_r, kmin), kmax)
        tj[j] = slot_of_k[k - kmin]


@numba.njit(nogil=True, cache=True)
def encode(
    src, is_bf16, codes, from_codes, rows, chans, step, mu, cc, rc, kmin, kmax, slot_of_k, lb_t,
    m_t, enc, buf, bits,
):  # fmt: skip
    """rANS-code every residual (backwards) and stack raw bits; (word start, bit count, status).

    Raw bits (low bits of wide buckets, escaped values) are appended to `bits` in 32-bit
    words; the decoder, walking forwards, takes them from the top. With from_codes the
    residuals come ready-made in `codes` (quantized on a device) instead of from `src`.
    """
    inv = 1.0 / step
    sf = np.empty(chans, np.float32)
    su = sf.view(np.uint32)
    tj = np.empty(chans, np.int64)
    x = np.int64(RANS_L)
    pos = buf.size
    acc = np.int64(0)
    nacc = 0
    wi = 0
    for r in range(rows - 1, -1, -1):
        if not from_codes:
            _load_row(src, is_bf16, r * chans, chans, sf, su)
        _row_tables(cc, rc[r], kmin, kmax, slot_of_k, tj)
        for j in range(chans - 1, -1, -1):
            if from_codes:
                v = codes[r * chans + j]
            else:
                v = np.int64(_quant(np.float64(sf[j]), inv, mu[j]))
            t = tj[j]
            lb = lb_t[t]
            m = m_t[t]
            hi = v >> lb
            if hi > m or hi < -m:
                z = (v << 1) ^ (v >> 63)  # zigzag; |v| < 2**50 keeps it below 2**52
                acc, nacc = bits_add(acc, nacc, z, ESC_HALF)
                if nacc >= 32:
                    if wi >= bits.size:
                        return 0, 0, FULL
                    bits[wi] = acc & 0xFFFFFFFF
                    wi += 1
                    acc >>= 32
                    nacc -= 32
                acc, nacc = bits_add(acc, nacc, z >> ESC_HALF, ESC_HALF)
                s = 2 * m + 1
            else:
                if lb:
                    acc, nacc = bits_add(acc, nacc, v - (hi << lb), lb)
                s = hi + m
            if nacc >= 32:
                if wi >= bits.size:
                    return 0, 0, FULL
                bits[wi] = acc & 0xFFFFFFFF
                wi += 1
                acc >>= 32
                nacc -= 32
            if x >= (enc[t, s, 0] << ENC_SHIFT):
                pos -= 1
                buf[pos] = x & 0xFFFF
                x >>= 16
            x = enc_step(x, enc[t, s, 1], enc[t, s, 2], enc[t, s, 3], enc[t, s, 4])
    buf[pos - 1] = x & 0xFFFF
    buf[pos - 2] = x >> 16
    nbits = 32 * wi + nacc
    if nacc:
        if wi >= bits.size:
            return 0, 0, FULL
        bits[wi] = acc
    return pos - 2, nbits, OK


@numba.njit(nogil=True, cache=True)
def decode(
    words,
    bits,
    nbits,
    rows,
    chans,
    step,
    mu,
    cc,
    rc,
    kmin,
    kmax,
    slot_of_k,
    lb_t,
    m_t,
    slots,
    out,
    out_mode,
):
    """Inverse of encode, writing float32 values, bf16 bits (uint16) or the integer codes
    (int64), as out_mode says; returns a status."""
    if words.size < 2:
        return CORRUPT
    x = (np.int64(words[0]) << 16) | np.int64(words[1])
    ptr = 2
    wi = (nbits - 1) >> 5 if nbits else 0  # word holding the top of the bit stack
    nacc = nbits - 32 * wi
    acc = bits[wi] if nbits else np.int64(0)
    if acc >> nacc:
        return CORRUPT  # set bits above the declared count
    rr = np.empty(chans)
    yf = np.empty(chans, np.float32)
    yu = yf.view(np.uint32)
    tj = np.empty(chans, np.int64)
    for r in range(rows):
        _row_tables(cc, rc[r], kmin, kmax, slot_of_k, tj)
        for j in range(chans):
            t = tj[j]
            s, x = dec_step(x, slots[t, x & (TOTAL - 1)])
            if x < RANS_L:
                if ptr >= words.size:
                    return CORRUPT
                x = (x << 16) | np.int64(words[ptr])
                ptr += 1
            m = m_t[t]
            lb = lb_t[t]
            if s > 2 * m + 1:
                return CORRUPT
            if s == 2 * m + 1:
                if nacc < ESC_HALF:
                    if wi == 0:
                        return CORRUPT
                    wi -= 1
                    acc, nacc = (acc << 32) | bits[wi], nacc + 32
                hi_z, acc, nacc = bits_take(acc, nacc, ESC_HALF)
                if nacc < ESC_HALF:
                    if wi == 0:
                        return CORRUPT
                    wi -= 1
                    acc, nacc = (acc << 32) | bits[wi], nacc + 32
                lo_z, acc, nacc = bits_take(acc, nacc, ESC_HALF)
                z = (hi_z << ESC_HALF) | lo_z
                v = (z >> 1) ^ -(z & 1)
            else:
                v = s - m
                if lb:
                    if nacc < lb:
                        if wi == 0:
                            return CORRUPT
                        wi -= 1
                        acc, nacc = (acc << 32) | bits[wi], nacc + 32
                    low, acc, nacc = bits_take(acc, nacc, lb)
                    v = (v << lb) + low
            rr[j] = np.float64(v)
        base = r * chans
        if out_mode == OUT_CODES:
            for j in range(chans):
                out[base + j] = rr[j]
            continue
        _dequant_row(rr, mu, step, out_mode == OUT_BF16, yf, yu, chans)
        if out_mode == OUT_BF16:
            for j in range(chans):
                out[base + j] = yu[j] >> np.uint32(16)
        else:
            for j in range(chans):
                out[base + j] = yf[j]
    if x != RANS_L or ptr != words.size or nacc != 0 or wi != 0:
        return CORRUPT
    return OK
