"""Compiled loops of the `lossy` fast mode: statistics, measurement and quantization.

The tensor is a (rows, chans) view read in place (bf16 as its uint16 bits, widened to
float32 one row at a time), so no whole-tensor float copy exists on either side. Work is
cut into blocks of rows that do not depend on the thread count (partial sums per block,
summed in block order by the caller), so frames are identical whatever the number of
threads. The integer codes are then entropy-coded by the rANS lanes of
entropy/rans_lanes.py, whose decoder dequantizes with the same float64 steps as
`dequant_row` here, so the values the encoder verified are bit for bit the values the
decoder produces.
"""

from __future__ import annotations

import numba
import numpy as np

CODE_LIMIT = 32767  # int16 code buffers; a block with a larger code asks for int64 ones

SRC_F32, SRC_BF16, SRC_F16 = 0, 1, 2  # how a source holds its values: float32, or the 16
# bits of a bf16 or an fp16 value (uint16, widened here a row at a time: no float32 copy)


@numba.njit(nogil=True, inline="always")
def f16_bits(h):
    """float32 bits of the IEEE half whose 16 bits are h (exact, subnormals included)."""
    sign = (h & 0x8000) << 16
    e = (h >> 10) & 0x1F
    m = h & 0x3FF
    if e == 0x1F:
        return sign | 0x7F800000 | (m << 13)
    if e != 0:
        return sign | ((e + 112) << 23) | (m << 13)
    if m == 0:
        return sign
    e = 113  # subnormal: shift the mantissa up to its leading one
    while (m & 0x400) == 0:
        m <<= 1
        e -= 1
    return sign | (e << 23) | ((m & 0x3FF) << 13)


@numba.njit(nogil=True, inline="always")
def _load_row(src, src_kind, base, chans, sf, su):
    """Row of the tensor as float32 in sf (su is the same memory seen as uint32)."""
    row = src[base : base + chans]
    if src_kind == SRC_BF16:
        for j in range(chans):
            su[j] = np.uint32(row[j]) << np.uint32(16)
    elif src_kind == SRC_F16:
        for j in range(chans):
            su[j] = f16_bits(np.uint32(row[j]))
    else:
        for j in range(chans):
            sf[j] = row[j]


@numba.njit(nogil=True, inline="always")
def _sub_proj(sf, proj, base, chans, cf):
    """cf = the row minus its low-rank projection: the signal the quantizer codes."""
    p = proj[base : base + chans]
    for j in range(chans):
        cf[j] = sf[j] - p[j]


@numba.njit(nogil=True, inline="always")
def dequant_row(r_row, mu, step, is_bf16, yf, yu, chans, proj, base):
    """Decoded row: float32((r + mu) * step [+ projection]), then rounded to bf16 (kept in
    float32) if asked. An empty proj means no low-rank part."""
    if proj.size:
        p = proj[base : base + chans]
        for j in range(chans):
            yf[j] = np.float32((np.float64(r_row[j]) + mu[j]) * step + np.float64(p[j]))
    else:
        for j in range(chans):
            yf[j] = np.float32((np.float64(r_row[j]) + mu[j]) * step)
    if is_bf16:
        for j in range(chans):
            u = yu[j]
            yu[j] = (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) & np.uint32(
                0xFFFF0000
            )


@numba.njit(nogil=True, fastmath={"reassoc"})
def _row_sums(sf, yf, chans):
    """(x.y, x.x, y.y, |x-y|^2, max |x-y|) of one row; reassociated so the loop vectorizes."""
    dot = xx = yy = ee = 0.0
    emax = 0.0
    for j in range(chans):
        xv = np.float64(sf[j])
        yv = np.float64(yf[j])
        d = xv - yv
        dot += xv * yv
        xx += xv * xv
        yy += yv * yv
        ee += d * d
        emax = max(emax, abs(d))
    return dot, xx, yy, ee, emax


@numba.njit(nogil=True, inline="always")
def _quantize_row(sf, inv, mu, rr, chans):
    """rr = residual codes of one row: rint(x / step) - channel mean (strict IEEE)."""
    for j in range(chans):
        rr[j] = np.rint(np.float64(sf[j]) * inv) - mu[j]


@numba.njit(nogil=True, cache=True, fastmath={"reassoc"})
def channel_stats(src, src_kind, r0, r1, chans, s1, s2, proj):
    """Add per-channel sum and sum of squares (float64) of rows r0..r1, minus their low-rank
    projection if proj is not empty, to s1, s2; return the rows' |x|^2 (no projection)."""
    sf = np.empty(chans, np.float32)
    su = sf.view(np.uint32)
    cf = np.empty(chans, np.float32)
    xx = 0.0
    for r in range(r0, r1):
        _load_row(src, src_kind, r * chans, chans, sf, su)
        if proj.size:
            for j in range(chans):
                v = np.float64(sf[j])
                xx += v * v
            _sub_proj(sf, proj, r * chans, chans, cf)
            for j in range(chans):
                v = np.float64(cf[j])
                s1[j] += v
                s2[j] += v * v
        else:
            for j in range(chans):
                v = np.float64(sf[j])
                s1[j] += v
                s2[j] += v * v
    if not proj.size:
        for j in range(chans):
            xx += s2[j]
    return xx


@numba.njit(nogil=True, cache=True, fastmath={"reassoc"})
def row_energy(src, src_kind, r0, r1, chans, mean, inv_var, stride, out, proj):
    """out[r] = mean over every stride-th channel of (x - mean)^2 / var, rows r0..r1 (x less
    its low-rank projection if proj is not empty)."""
    sf = np.empty(chans, np.float32)
    su = sf.view(np.uint32)
    cnt = (chans + stride - 1) // stride
    for r in range(r0, r1):
        _load_row(src, src_kind, r * chans, chans, sf, su)
        if proj.size:
            _sub_proj(sf, proj, r * chans, chans, sf)
        acc = 0.0
        for j in range(0, chans, stride):
            d = np.float64(sf[j]) - mean[j]
            acc += d * d * inv_var[j]
        out[r] = acc / cnt


@numba.njit(nogil=True, cache=True)
def measure_rows(src, src_kind, row_ids, chans, step, mu, out_bf16, proj):
    """(x.y, x.x, y.y, |x-y|^2, max |x-y|, max |code|) over the given rows at step."""
    inv = 1.0 / step
    sf = np.empty(chans, np.float32)
    su = sf.view(np.uint32)
    cf = np.empty(chans, np.float32)
    yf = np.empty(chans, np.float32)
    yu = yf.view(np.uint32)
    rr = np.empty(chans)
    dot = xx = yy = ee = emax = vmax = 0.0
    for r in row_ids:
        _load_row(src, src_kind, r * chans, chans, sf, su)
        if proj.size:
            _sub_proj(sf, proj, r * chans, chans, cf)
            _quantize_row(cf, inv, mu, rr, chans)
        else:
            _quantize_row(sf, inv, mu, rr, chans)
        for j in range(chans):
            vmax = max(vmax, abs(rr[j]))
        dequant_row(rr, mu, step, out_bf16, yf, yu, chans, proj, r * chans)
        d, x2, y2, e, m = _row_sums(sf, yf, chans)
        dot += d
        xx += x2
        yy += y2
        ee += e
        emax = max(emax, m)
    return dot, xx, yy, ee, emax, vmax


@numba.njit(nogil=True, fastmath={"reassoc"})
def _code_sums(rr, w, chan_acc, chans):
    """Largest |code| of a row; chan_acc += code^2 * w (reassociated so it vectorizes)."""
    rowmax = 0.0
    for j in range(chans):
        v = rr[j]
        chan_acc[j] += v * v * w
        rowmax = max(rowmax, abs(v))
    return rowmax


@numba.njit(nogil=True, cache=True)
def quantize_block(src, src_kind, r0, r1, chans, step, mu, row_w, out_bf16, q, chan_acc, proj):
    """Quantize rows r0..r1 into q (flat, int16 or int64) and verify them.

    Returns (x.y, y.y, |x-y|^2, max |x-y|, max |code|); chan_acc (zeroed here) receives the
    sum over rows of code^2 * row_w. With an int16 q, codes beyond CODE_LIMIT stop the
    block early and report their size, so the caller can redo it with int64 codes.
    """
    inv = 1.0 / step
    wide = q.itemsize == 8
    sf = np.empty(chans, np.float32)
    su = sf.view(np.uint32)
    yf = np.empty(chans, np.float32)
    yu = yf.view(np.uint32)
    cf = np.empty(chans, np.float32)
    rr = np.empty(chans)
    dot = yy = ee = emax = vmax = 0.0
    chan_acc[:] = 0.0
    for r in range(r0, r1):
        base = r * chans
        _load_row(src, src_kind, base, chans, sf, su)
        if proj.size:
            _sub_proj(sf, proj, base, chans, cf)
            _quantize_row(cf, inv, mu, rr, chans)
        else:
            _quantize_row(sf, inv, mu, rr, chans)
        rowmax = _code_sums(rr, row_w[r], chan_acc, chans)
        vmax = max(vmax, rowmax)
        if not wide and rowmax > CODE_LIMIT:
            return dot, yy, ee, emax, vmax
        qr = q[base : base + chans]
        for j in range(chans):
            qr[j] = rr[j]
        dequant_row(rr, mu, step, out_bf16, yf, yu, chans, proj, base)
        d, _x2, y2, e, m = _row_sums(sf, yf, chans)
        dot += d
        yy += y2
        ee += e
        emax = max(emax, m)
    return dot, yy, ee, emax, vmax
