"""Compiled loops of the `lossless` default mode: statistics, histogram, rANS encode, decode.

Every value is one rANS symbol plus raw bits. The symbol joins the sign, an exponent class
and the top two mantissa bits; the exponent class is the exponent relative to the value's
expected binade (channel offset + row offset, in quarter binades) inside a window of at
most WMAX binades, or "zero" (+-0: no raw bits) or "escape" (the exponent follows raw).
The model table is picked by the quarter-binade fraction of the offset and the channel's
sign-balance bin, so a handful of static tables follow every channel's scale.

Four interleaved rANS states (31-bit, 16-bit renormalisation, PREC-bit frequencies, exact
reciprocals as in codecs/entropy/rans.py) share one word stream: the encoder walks the tensor
backwards writing words downwards, the decoder walks forwards reading them. Raw bits form
a stack of 32-bit words: the encoder pushes, the decoder pops from the top. The tensor is
read in place as (rows, chans).

Kernels take the model's scalars in one int64 vector `prm` (see P_* below); `cm` and `rm`
are all-ones masks, or 0 when the model has one shared channel or row entry.
"""

from __future__ import annotations

import numba
import numpy as np

PREC = 12
TOTAL = 1 << PREC
RANS_L = 1 << 15
ENC_SHIFT = 16 + 15 - PREC  # renormalise before coding when x >= freq << ENC_SHIFT
LANES = 4
MTOP = 2  # mantissa bits inside the symbol
WMAX = 29  # exponent window: 2 * (WMAX + 2) * 4 = 248 symbols, below the sentinel 255
REL_SPAN = 32  # histogram: exponents within 32 binades of the expected one, others escape
NREL = 3 + 2 * REL_SPAN + 1  # slots: zero, subnormal, inf/NaN or far, then rel -32..32
SIGN_FINE = 5  # fine sign-balance bins
FINE_CTX = 4 * SIGN_FINE  # histogram contexts: (k & 3) * SIGN_FINE + fine sign bin
CTX_MAP = 32  # table maps are indexed (k & 3) << 3 | sign bin
SENTINEL = 255  # slot-table symbol of an empty table
CLS_INVALID = 255
OK, FULL, CORRUPT = 0, 1, 2
BF16, FP16, FP32 = 0, 1, 2  # field layouts: (exponent bits, mantissa bits) below
FIELDS = {BF16: (8, 7), FP16: (5, 10), FP32: (8, 23)}
# prm: rows, chans, channel mask, row mask, window start, window width, dropped trailing
# mantissa bits, raw mantissa bits
P_ROWS, P_CHANS, P_CM, P_RM, P_LO, P_W, P_TZ, P_RB = range(8)
# streams (decoder): first word byte, word count, first raw-stack byte, raw bit count
S_WPOS, S_NWORDS, S_BPOS, S_NBITS = range(4)

# Each kernel is an inlined body taking the field widths, expanded by one compiled entry
# point per layout: with the widths constant the compiler folds the shifts and masks and
# keeps the loop's state in registers. Loops call no jitted helpers: numba reference-counts
# the arrays passed to one, which costs more than the coding itself.


@numba.njit(inline="always", nogil=True)
def _stats(u, prm, sr, sc, ebits, mbits, csum, ccnt, cneg, rsum, rcnt):
    rows, chans, cm, rm = prm[P_ROWS], prm[P_CHANS], prm[P_CM], prm[P_RM]
    emax = (1 << ebits) - 1
    sshift = ebits + mbits
    absmask = (np.int64(1) << sshift) - 1
    ashift = mbits - 7
    for r in range(rows):
        base = r * chans
        rs = np.int64(0)
        rc = np.int64(0)
        if r % sr == 0:  # a sampled row: every channel, for channel and row statistics
            for j in range(chans):
                v = np.int64(u[base + j])
                e = (v >> mbits) & emax
                if e != 0 and e != emax:
                    a = (v & absmask) >> ashift
                    jj = np.uintp(j & cm)
                    csum[jj] += a
                    ccnt[jj] += 1
                    cneg[jj] += v >> sshift
                    rs += a
                    rc += 1
        else:  # the row's scale from every sc-th channel
            for j in range(0, chans, sc):
                v = np.int64(u[base + j])
                e = (v >> mbits) & emax
                if e != 0 and e != emax:
                    rs += (v & absmask) >> ashift
                    rc += 1
        rsum[np.uintp(r & rm)] += rs
        rcnt[np.uintp(r & rm)] += rc


# One compiled entry point per layout, so a process compiles only the layouts it meets.
A = np.ndarray


@numba.njit(cache=True, nogil=True)
def _stats_bf16(u, prm, sr, sc, csum, ccnt, cneg, rsum, rcnt):
    _stats(u, prm, sr, sc, 8, 7, csum, ccnt, cneg, rsum, rcnt)


@numba.njit(cache=True, nogil=True)
def _stats_fp16(u, prm, sr, sc, csum, ccnt, cneg, rsum, rcnt):
    _stats(u, prm, sr, sc, 5, 10, csum, ccnt, cneg, rsum, rcnt)


@numba.njit(cache=True, nogil=True)
def _stats_fp32(u, prm, sr, sc, csum, ccnt, cneg, rsum, rcnt):
    _stats(u, prm, sr, sc, 8, 23, csum, ccnt, cneg, rsum, rcnt)


def stats(
    fmt: int, u: A, prm: A, sr: int, sc: int, csum: A, ccnt: A, cneg: A, rsum: A, rcnt: A
) -> None:
    """Sum and count of the log-magnitudes (e * 128 + top 7 mantissa bits) of normal
    values and negatives per channel, over the rows r % sr == 0; sum and count per row,
    over all channels in those rows and every sc-th channel in the others."""
    (_stats_bf16, _stats_fp16, _stats_fp32)[fmt](u, prm, sr, sc, csum, ccnt, cneg, rsum, rcnt)


@numba.njit(inline="always", nogil=True)
def _histogram(u, prm, kc, kr, mb, ebits, mbits, hist):
    rows, chans, cm, rm = prm[P_ROWS], prm[P_CHANS], prm[P_CM], prm[P_RM]
    emax = (1 << ebits) - 1
    sshift = ebits + mbits
    mmask = (np.int64(1) << mbits) - 1
    tshift = mbits - MTOP
    ctx = np.empty(kc.size, np.int64)
    off = np.empty(kc.size, np.int64)
    fine = np.empty(CTX_MAP, np.int64)
    for c in range(CTX_MAP):
        fine[c] = (c >> 3) * SIGN_FINE + min(c & 7, SIGN_FINE - 1)
    size = FINE_CTX * 2 * NREL * 4
    sub = np.zeros(size, np.uint32)  # counts in L1; flushed before they could overflow
    pending = 0
    orm = np.int64(0)
    for r in range(rows):
        if pending > (1 << 31) - chans:
            for t in range(size):
                hist[t] += sub[t]
                sub[t] = 0
            pending = 0
        pending += chans
        krr = kr[np.uintp(r & rm)]
        for c in range(kc.size):  # each channel's context and window start in this row
            k = kc[c] + krr
            ctx[c] = fine[((k & 3) << 3) | mb[c]]
            off[c] = (k >> 2) - REL_SPAN
        base = r * chans
        for j in range(chans):
            v = np.int64(u[base + j])
            orm |= v
            jj = np.uintp(j & cm)
            e = (v >> mbits) & emax
            m = v & mmask
            rel = e - off[jj]
            slot = 3 + rel if 0 <= rel <= 2 * REL_SPAN else 2
            if e == 0:
                slot = 0 if m == 0 else 1
            elif e == emax:
                slot = 2
            hi = ((ctx[jj] << 1) | (v >> sshift)) * NREL + slot
            sub[np.uintp((hi << 2) + (m >> tshift))] += 1
    for t in range(size):
        hist[t] += sub[t]
    return orm & mmask


@numba.njit(cache=True, nogil=True)
def _histogram_bf16(u, prm, kc, kr, mb, hist):
    return _histogram(u, prm, kc, kr, mb, 8, 7, hist)


@numba.njit(cache=True, nogil=True)
def _histogram_fp16(u, prm, kc, kr, mb, hist):
    return _histogram(u, prm, kc, kr, mb, 5, 10, hist)


@numba.njit(cache=True, nogil=True)
def _histogram_fp32(u, prm, kc, kr, mb, hist):
    return _histogram(u, prm, kc, kr, mb, 8, 23, hist)


def histogram(fmt: int, u: A, prm: A, kc: A, kr: A, mb: A, hist: A) -> int:
    """Count (fine context, sign, exponent slot, top mantissa bits) over the tensor;
    returns the OR of all mantissas."""
    return (_histogram_bf16, _histogram_fp16, _histogram_fp32)[fmt](u, prm, kc, kr, mb, hist)


@numba.njit(inline="always", nogil=True)
def _encode(u, prm, kc, kr, mb, ctxmap, ebits, mbits, et, words, bits):
    rows, chans, cm, rm = prm[P_ROWS], prm[P_CHANS], prm[P_CM], prm[P_RM]
    lo, w, tz, rb = prm[P_LO], prm[P_W], prm[P_TZ], prm[P_RB]
    xs = np.full(LANES, RANS_L, np.int64)
    tab = np.empty(kc.size, np.int64)
    off = np.empty(kc.size, np.int64)
    emax = (1 << ebits) - 1
    sshift = ebits + mbits
    mmask = (np.int64(1) << mbits) - 1
    rbmask = (np.int64(1) << rb) - 1
    tshift = mbits - MTOP
    pos = words.size
    acc = np.int64(0)
    nacc = 0
    wi = 0
    nb = bits.size
    for r in range(rows - 1, -1, -1):
        krr = kr[np.uintp(r & rm)]
        for c in range(kc.size):  # each channel's table and window start in this row
            k = kc[c] + krr
            tab[c] = ctxmap[((k & 3) << 3) | mb[c]]
            off[c] = (k >> 2) + lo
        for j in range(chans - 1, -1, -1):
            i = r * chans + j
            jj = np.uintp(j & cm)
            v = np.int64(u[np.uintp(i)])
            e = (v >> mbits) & emax
            m = v & mmask
            if e == 0 and m == 0:
                c = 0
            else:
                rel = e - off[jj]
                c = rel + 2 if e != 0 and e != emax and 0 <= rel < w else 1
                acc |= ((v >> tz) & rbmask) << nacc
                nacc += rb
                if c == 1:
                    acc |= e << nacc
                    nacc += ebits
                if wi >= nb:
                    return 0, 0, FULL
                bits[np.uintp(wi)] = acc & 0xFFFFFFFF
                full = nacc >> 5  # 0 or 1
                wi += full
                acc >>= full << 5
                nacc -= full << 5
            s = (((v >> sshift) * (w + 2) + c) << MTOP) | (m >> tshift)
            idx = np.uintp(((tab[jj] << 8) | s) << 1)
            a = et[idx]
            b = et[idx + np.uintp(1)]
            lane = np.uintp(i & (LANES - 1))
            x = xs[lane]
            # Branch-free renormalisation: the word is always written, kept only if needed.
            if pos <= 0:
                return 0, 0, FULL
            words[np.uintp(pos - 1)] = x & 0xFFFF
            big = np.int64(x >= ((b & 0xFFFF) << ENC_SHIFT))
            pos -= big
            x >>= big << 4
            q = (x * (a & 0xFFFFFFFF)) >> (a >> 32)  # x // freq
            xs[lane] = x + ((b >> 16) & 0xFFFF) + q * (b >> 32)
    if pos < 2 * LANES:
        return 0, 0, FULL
    for lane in range(LANES - 1, -1, -1):
        pos -= 1
        words[pos] = xs[lane] & 0xFFFF
        pos -= 1
        words[pos] = xs[lane] >> 16
    nbits = 32 * wi + nacc
    if nacc:
        if wi >= nb:
            return 0, 0, FULL
        bits[wi] = acc
    return pos, nbits, OK


@numba.njit(cache=True, nogil=True)
def _encode_bf16(u, prm, kc, kr, mb, ctxmap, et, words, bits):
    return _encode(u, prm, kc, kr, mb, ctxmap, 8, 7, et, words, bits)


@numba.njit(cache=True, nogil=True)
def _encode_fp16(u, prm, kc, kr, mb, ctxmap, et, words, bits):
    return _encode(u, prm, kc, kr, mb, ctxmap, 5, 10, et, words, bits)


@numba.njit(cache=True, nogil=True)
def _encode_fp32(u, prm, kc, kr, mb, ctxmap, et, words, bits):
    return _encode(u, prm, kc, kr, mb, ctxmap, 8, 23, et, words, bits)


def encode(
    fmt: int, u: A, prm: A, kc: A, kr: A, mb: A, ctxmap: A, et: A, words: A, bits: A
) -> tuple[int, int, int]:
    """rANS-code the tensor backwards into `words` (filled from the end) and push raw bits.

    Value i goes to lane i % LANES; et holds two entries per (table << 8 | symbol).
    Returns (first word, number of raw bits, status).
    """
    kernel = (_encode_bf16, _encode_fp16, _encode_fp32)[fmt]
    return kernel(u, prm, kc, kr, mb, ctxmap, et, words, bits)


@numba.njit(inline="always", nogil=True)
def _decode(src, streams, prm, kc, kr, mb, ctxmap, ebits, mbits, slots, scls, out):
    rows, chans, cm, rm = prm[P_ROWS], prm[P_CHANS], prm[P_CM], prm[P_RM]
    lo, w, tz, rb = prm[P_LO], prm[P_W], prm[P_TZ], prm[P_RB]
    wpos, nwords = streams[S_WPOS], streams[S_NWORDS]
    bpos, nbits = streams[S_BPOS], streams[S_NBITS]
    if nwords < 2 * LANES:
        return CORRUPT
    emax = (1 << ebits) - 1
    sshift = ebits + mbits
    tshift = mbits - MTOP
    wend = wpos + 2 * nwords
    wp = wpos
    xs = np.empty(LANES, np.int64)
    for lane in range(LANES):
        x = (np.int64(src[wp]) << 16) | (np.int64(src[wp + 1]) << 24)
        x |= np.int64(src[wp + 2]) | (np.int64(src[wp + 3]) << 8)
        wp += 4
        if x < RANS_L or x >= np.int64(1) << 31:
            return CORRUPT
        xs[lane] = x
    nw = (nbits + 31) >> 5
    wi = 0
    acc = np.int64(0)
    nacc = 0
    if nbits:
        wi = nw - 1
        nacc = nbits - 32 * wi
        p = bpos + 4 * wi
        acc = np.int64(src[p]) | (np.int64(src[p + 1]) << 8) | (np.int64(src[p + 2]) << 16)
        acc |= np.int64(src[p + 3]) << 24
        if nacc < 32 and acc >> nacc:
            return CORRUPT
    tab = np.empty(kc.size, np.int64)
    off = np.empty(kc.size, np.int64)
    for r in range(rows):
        krr = kr[np.uintp(r & rm)]
        for c in range(kc.size):  # each channel's table and window start in this row
            k = kc[c] + krr
            tab[c] = ctxmap[((k & 3) << 3) | mb[c]]
            off[c] = (k >> 2) + lo
        base = r * chans
        for j in range(chans):
            i = base + j
            jj = np.uintp(j & cm)
            lane = np.uintp(i & (LANES - 1))
            x = xs[lane]
            ent = np.int64(slots[np.uintp((tab[jj] << PREC) | (x & (TOTAL - 1)))])
            s = ent & 0xFF
            x = (((ent >> 8) & 0xFFF) + 1) * (x >> PREC) + (ent >> 20)
            # Branch-free renormalisation: read the next word (the payload goes on past
            # the words), keep it only if the state fell below RANS_L.
            small = np.int64(x < RANS_L)
            word = np.int64(src[np.uintp(wp)]) | (np.int64(src[np.uintp(wp + 1)]) << 8)
            xs[lane] = (x << (small << 4)) | (word & -small)
            wp += small << 1
            if wp > wend:
                return CORRUPT
            c = np.int64(scls[np.uintp(s)])
            mt = s & 3
            val = np.int64(scls[np.uintp(256 + s)]) << sshift
            if c == 0:
                if mt != 0:
                    return CORRUPT
            else:
                need = rb + (ebits if c == 1 else 0)
                if nacc < need:
                    if wi == 0:
                        return CORRUPT
                    wi -= 1
                    p = np.uintp(bpos + 4 * wi)
                    acc = (acc << 32) | np.int64(src[p]) | (np.int64(src[p + np.uintp(1)]) << 8)
                    acc |= np.int64(src[p + np.uintp(2)]) << 16
                    acc |= np.int64(src[p + np.uintp(3)]) << 24
                    nacc += 32
                if c == 1:
                    nacc -= ebits
                    e = acc >> nacc
                    acc &= (np.int64(1) << nacc) - 1
                    if e != 0 and e != emax and 0 <= e - off[jj] < w:
                        return CORRUPT  # an escape the encoder would not make
                elif c <= w + 1:
                    e = c - 2 + off[jj]
                    if e < 1 or e >= emax:
                        return CORRUPT
                else:
                    return CORRUPT
                nacc -= rb
                m = (mt << tshift) | ((acc >> nacc) << tz)
                acc &= (np.int64(1) << nacc) - 1
                if e == 0 and m == 0:
                    return CORRUPT
                val |= (e << mbits) | m
            out[np.uintp(i)] = val
    for lane in range(LANES):
        if xs[lane] != RANS_L:
            return CORRUPT
    if wp != wend or nacc != 0 or wi != 0:
        return CORRUPT
    return OK


@numba.njit(cache=True, nogil=True)
def _decode_bf16(src, streams, prm, kc, kr, mb, ctxmap, slots, scls, out):
    return _decode(src, streams, prm, kc, kr, mb, ctxmap, 8, 7, slots, scls, out)


@numba.njit(cache=True, nogil=True)
def _decode_fp16(src, streams, prm, kc, kr, mb, ctxmap, slots, scls, out):
    return _decode(src, streams, prm, kc, kr, mb, ctxmap, 5, 10, slots, scls, out)


@numba.njit(cache=True, nogil=True)
def _decode_fp32(src, streams, prm, kc, kr, mb, ctxmap, slots, scls, out):
    return _decode(src, streams, prm, kc, kr, mb, ctxmap, 8, 23, slots, scls, out)


def decode(
    fmt: int, src: A, streams: A, prm: A, kc: A, kr: A, mb: A, ctxmap: A, slots: A, scls: A, out: A
) -> int:
    """Inverse of encode: fill out (uint16 or uint32 bit patterns); returns a status.

    src is the payload (see S_* for where the streams lie). The states must come back to
    their start and every word and raw bit must be used.
    """
    kernel = (_decode_bf16, _decode_fp16, _decode_fp32)[fmt]
    return kernel(src, streams, prm, kc, kr, mb, ctxmap, slots, scls, out)


@numba.njit(cache=True, nogil=True)
def slot_tables(freq, slots):
    """Fill TOTAL slots per table row of freq (each row sums to TOTAL): symbol |
    (freq - 1) << 8 | (slot - start) << 20."""
    for t in range(freq.shape[0]):
        p = t * TOTAL
        for s in range(freq.shape[1]):
            f = freq[t, s]
            for o in range(f):
                slots[p + o] = s | ((f - 1) << 8) | (o << 20)
            p += f


# ----------------------------------------------------------------------------- fast mode
# fp16/fp32 byte planes of the bits rotated left by one (sign at the bottom, exponent at
# the top), one plane at a time so no whole-tensor temporary exists on either side.


@numba.njit(cache=True, nogil=True)
def rotated_plane(u, total, shift, out):
    """out[i] = byte `shift // 8` of u[i] rotated left by one bit within `total` bits."""
    mask = (np.int64(1) << total) - 1
    for i in range(u.size):
        v = np.int64(u[i])
        out[i] = (((v << 1) | (v >> (total - 1))) & mask) >> shift


@numba.njit(cache=True, nogil=True)
def or_plane(out, plane, shift):
    """out[i] |= plane[i] << shift (rebuilding rotated values plane by plane)."""
    for i in range(out.size):
        out[i] |= np.int64(plane[i]) << shift


@numba.njit(cache=True, nogil=True)
def unrotate(out, total):
    """Undo the rotation in place: the bottom bit goes back to the sign."""
    for i in range(out.size):
        v = np.int64(out[i])
        out[i] = (v >> 1) | ((v & 1) << (total - 1))
