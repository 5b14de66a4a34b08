"""The `lossless` max mode: a static model fitted to each tensor, coded by compiled rANS.

Model. A value's expected binade is its channel's mean log-magnitude plus its row's
deviation from the channel means, both in quarter binades (k = kc[channel] + kr[row]).
The symbol of a value joins its sign, its exponent relative to k // 4 (a window of at most
29 binades, plus "zero" and "escape" classes) and its top two mantissa bits; the table is
chosen by k % 4 (where the binade boundary falls) and the channel's sign balance (fraction
of negatives, up to five bins). Tables are merged when the side information costs more
than it saves. The remaining mantissa bits are raw, minus trailing bits that are zero in
every value. Frequencies travel as one byte each (a 4-bit-mantissa float), and both sides
turn those bytes into the same 12-bit rANS tables with integer arithmetic.

Passes over the tensor: statistics (sampled on big tensors), histogram, encode
(backwards); decoding is one pass. Peak memory stays near the output size on both sides.
Compiled loops live in model_kernels.py; this module fits the model and lays out bytes.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np
import zstandard

from swarmpress.codecs.core.errors import CodecError
from swarmpress.codecs.core.tensors import DType
from swarmpress.codecs.entropy.zstdio import decompress_exact
from swarmpress.codecs.families.lossless import model_kernels as K

MIN_ROWS = 32  # a per-channel model needs this many rows
MIN_CHANS = 32  # a per-row model needs this many channels
STAT_SAMPLE = 512  # rows (channels) sampled for the channel (row) offsets
SIGN_BINS = (0.3, 0.4, 0.6, 0.7)  # fraction of negatives: five fine bins
_QMAP = {4: (0, 1, 2, 3), 2: (0, 0, 1, 1), 1: (0, 0, 0, 0)}
_MBMAP = {5: (0, 1, 2, 3, 4), 3: (0, 0, 1, 2, 2), 1: (0, 0, 0, 0, 0)}
_CODE_MAX = 240  # frequency codes 1..240: (16 + m) << e, e < 15
_TABLE_BITS = 5.0  # estimated side cost of one nonzero table entry (model choice)
_SIDE_LEVEL = 6  # higher levels save ~2% of ~1.5 KB and cost 0.3 ms
_HEAD = struct.Struct("<BBbBBBhBhBII")
# flags, tz, lo, w, q, nmb, kc min, kc width, kr min, kr width, table and offset lengths
_U64 = struct.Struct("<Q")


@dataclass(frozen=True)
class Layout:
    """Field widths of one dtype and the (rows, chans) view with its model switches."""

    fmt: int  # lossless_kernels.BF16 / FP16 / FP32
    ebits: int
    mbits: int
    rows: int
    chans: int
    flags: int  # bit 0: per-channel model, bit 1: per-row model

    @classmethod
    def of(cls, dtype: DType, shape: tuple[int, ...]) -> Layout:
        fmt = {DType.BFLOAT16: K.BF16, DType.FLOAT16: K.FP16, DType.FLOAT32: K.FP32}[dtype]
        ebits, mbits = K.FIELDS[fmt]
        chans = shape[-1] if shape else 1
        rows = math.prod(shape[:-1]) if shape else 1
        flags = (rows >= MIN_ROWS) | ((chans >= MIN_CHANS and rows > 1) << 1)
        return cls(fmt, ebits, mbits, rows, chans, flags)

    @property
    def nc(self) -> int:
        return self.chans if self.flags & 1 else 1

    @property
    def nr(self) -> int:
        return self.rows if self.flags & 2 else 1

    @property
    def cm(self) -> int:
        return -1 if self.flags & 1 else 0

    @property
    def rm(self) -> int:
        return -1 if self.flags & 2 else 0

    @property
    def emax(self) -> int:
        return (1 << self.ebits) - 1

    def prm(self, lo: int = 0, w: int = 0, tz: int = 0) -> np.ndarray:
        """The kernels' parameter vector (lossless_kernels.P_*)."""
        rb = self.mbits - K.MTOP - tz
        return np.array([self.rows, self.chans, self.cm, self.rm, lo, w, tz, rb], np.int64)


# ----------------------------------------------------------------------------- tables
def freq_codes(counts: np.ndarray) -> np.ndarray:
    """One byte per symbol (0 = absent): counts relative to the row maximum, as
    (16 + m) << e with a 4-bit m, so a frequency costs a byte at ~3% precision."""
    top = np.maximum(counts.max(axis=1, keepdims=True), 1).astype(np.float64)
    w = np.maximum(counts * (float(1 << 18) / top), 16.0)
    e = np.maximum(np.floor(np.log2(w)).astype(np.int64) - 4, 0)
    m = np.rint(w / np.exp2(e)).astype(np.int64) - 16
    carry = m >= 16
    code = np.minimum(1 + 16 * (e + carry) + np.where(carry, 0, m), _CODE_MAX)
    return np.where(counts > 0, code, 0).astype(np.uint8)


def freqs_from_codes(codes: np.ndarray) -> np.ndarray:
    """TOTAL-summing rANS frequencies of each table row (int64; integer arithmetic only,
    so encoder and decoder agree bit for bit). An all-zero row stays zero (empty table)."""
    c = codes.astype(np.int64)
    if int(c.max(initial=0)) > _CODE_MAX:
        raise CodecError("lossless frequency code out of range")
    w = np.where(c > 0, (16 + (c - 1) % 16) << ((c - 1) // 16), 0)
    total = w.sum(axis=1, keepdims=True)
    f = (w * K.TOTAL + total // 2) // np.maximum(total, 1)
    f[(f == 0) & (w > 0)] = 1
    diff = np.where(total[:, 0] > 0, K.TOTAL - f.sum(axis=1), 0)
    rows = np.arange(f.shape[0])
    f[rows, np.argmax(w, axis=1)] += np.maximum(diff, 0)
    for t in np.flatnonzero(diff < 0):  # rare: many rare symbols rounded up to 1
        d = int(-diff[t])
        while d:
            i = int(np.argmax(f[t]))
            take = min(d, int(f[t, i]) - 1)
            f[t, i] -= take
            d -= take
    return f


def enc_tables(freq: np.ndarray) -> np.ndarray:
    """Encoder entries, a pair per (table << 8 | symbol): a = reciprocal | shift << 32,
    b = freq | bias << 16 | (TOTAL - freq) << 32."""
    ntab, nsym = freq.shape
    f = np.zeros((ntab, 256), dtype=np.int64)
    f[:, :nsym] = freq
    start = np.cumsum(f, axis=1) - f
    fm1 = np.maximum(f - 1, 0)
    bitlen = np.frexp(fm1.astype(np.float64))[1].astype(np.int64)  # bit length of f - 1
    one = f == 1
    safe = np.maximum(f, 1)
    rcp = np.where(one, (1 << 32) - 1, ((np.int64(1) << (bitlen + 31)) + safe - 1) // safe)
    shift = np.where(one, 32, bitlen - 1 + 32)
    bias = np.where(one, start + K.TOTAL - 1, start)
    a = np.where(f > 0, rcp | (shift << 32), 0)
    b = np.where(f > 0, f | (bias << 16) | ((K.TOTAL - f) << 32), 0)
    return np.stack([a, b], axis=-1).reshape(-1)


def dec_tables(freq: np.ndarray, ctxmap: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Slot tables of the non-empty tables (TOTAL uint32 entries each, see
    lossless_kernels.slot_tables) plus one sentinel table, and ctxmap pointed at them."""
    full = np.flatnonzero(freq.sum(axis=1) > 0)
    where = np.full(freq.shape[0], full.size, dtype=np.int64)  # empty -> the sentinel
    where[full] = np.arange(full.size)
    slots = np.full((full.size + 1) * K.TOTAL, K.SENTINEL, dtype=np.uint32)
    K.slot_tables(freq[full], slots)
    return slots, where[ctxmap]


def symbol_classes(w: int) -> np.ndarray:
    """Per symbol: exponent class (first 256 bytes) and sign (next 256) for the decoder."""
    out = np.zeros(512, dtype=np.uint8)
    out[:256] = K.CLS_INVALID
    nsym = 2 * (w + 2) * 4
    sym = np.arange(nsym)
    out[:nsym] = (sym >> 2) % (w + 2)
    out[256 : 256 + nsym] = (sym >> 2) // (w + 2)
    return out


def ctx_map(q: int, nmb: int) -> np.ndarray:
    """(k & 3) << 3 | sign bin -> table index."""
    out = np.zeros(K.CTX_MAP, dtype=np.int64)
    for c in range(4):
        for b in range(nmb):
            out[(c << 3) | b] = _QMAP[q][c] * nmb + b
    return out


# ----------------------------------------------------------------------------- model fit
def _offsets(lay: Layout, u: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Channel offsets kc and row offsets kr (quarter binades) and fine sign bins.

    Channel statistics come from about STAT_SAMPLE rows, a row's scale from about
    STAT_SAMPLE of its channels: plenty for quarter-binade offsets, and cheap on big
    tensors."""
    nc, nr = lay.nc, lay.nr
    sr, sc = max(1, lay.rows // STAT_SAMPLE), max(1, lay.chans // STAT_SAMPLE)
    csum, ccnt, cneg = np.zeros(nc, np.int64), np.zeros(nc, np.int64), np.zeros(nc, np.int64)
    rsum, rcnt = np.zeros(nr, np.int64), np.zeros(nr, np.int64)
    K.stats(lay.fmt, u, lay.prm(), sr, sc, csum, ccnt, cneg, rsum, rcnt)
    total = int(ccnt.sum())
    glob = csum.sum() / total if total else float(127 * 128)
    la = np.where(ccnt > 0, csum / np.maximum(ccnt, 1), glob)  # 1/128 binade
    kc = np.clip(np.rint(la / 32.0), 0, 4 * lay.emax).astype(np.int64)
    if lay.flags & 2:
        sampled = np.arange(lay.rows) % sr == 0  # rows whose scale used every channel
        d = rsum / np.maximum(rcnt, 1) - np.where(sampled, la.mean(), la[::sc].mean())
        d = np.where(rcnt > 0, d, 0.0)
        kr = np.clip(np.rint(d / 32.0), -4 * lay.emax, 4 * lay.emax).astype(np.int64)
    else:
        kr = np.zeros(1, np.int64)
    mb = np.searchsorted(np.array(SIGN_BINS), cneg / np.maximum(ccnt, 1), side="right")
    mb = np.where(ccnt > 0, mb, 2).astype(np.int64)
    return kc, kr, mb


def _entropy_bits(counts: np.ndarray) -> float:
    """Ideal code length of the counts, one distribution per row."""
    c = counts[counts > 0].astype(np.float64)
    tot = counts.sum(axis=-1).astype(np.float64)
    tot = tot[tot > 0]
    return float((tot * np.log2(tot)).sum() - (c * np.log2(c)).sum())


@dataclass
class Model:
    """Everything both sides share: window, table layout, tables, offsets."""

    lo: int
    w: int
    q: int
    nmb: int
    codes: np.ndarray  # (tables, symbols) uint8
    kc: np.ndarray
    kr: np.ndarray
    mb: np.ndarray  # merged sign bins


def _merges(fine: np.ndarray, nc: int):
    """(q, sign bins, (q * bins, symbols) tables) of every table layout, from the
    (4, 5, symbols) fine counts."""
    by_q = {4: fine, 2: fine[0::2] + fine[1::2], 1: fine.sum(axis=0, keepdims=True)}
    for q, x in by_q.items():
        yield q, 1, x.sum(axis=1)
        if nc > 1:
            three = np.stack([x[:, 0] + x[:, 1], x[:, 2], x[:, 3] + x[:, 4]], axis=1)
            yield q, 3, three.reshape(3 * q, -1)
            yield q, 5, x.reshape(5 * q, -1)


def _fit(lay: Layout, hist: np.ndarray, kc, kr, mb) -> tuple[Model, np.ndarray]:
    """Pick the exponent window and the table merge with the smallest estimated size;
    returns the model and its (tables, symbols) counts."""
    h = hist.reshape(K.FINE_CTX, 2, K.NREL, 4)
    rel = h[:, :, 3:, :].sum(axis=(0, 1, 3))
    nz = np.flatnonzero(rel)
    if nz.size == 0:
        first, w = 0, 1
    elif nz[-1] - nz[0] < K.WMAX:
        first, w = int(nz[0]), int(nz[-1] - nz[0] + 1)
    else:
        w = K.WMAX
        cs = np.concatenate([[0], np.cumsum(rel)])
        first = int(np.argmax(cs[w:] - cs[:-w]))
    win = h[:, :, 3 + first : 3 + first + w, :]
    esc = h[:, :, 1:3, :].sum(axis=2) + h[:, :, 3:, :].sum(axis=2) - win.sum(axis=2)
    fine = np.concatenate([h[:, :, :1, :], esc[:, :, None, :], win], axis=2)
    fine = fine.reshape(4, K.SIGN_FINE, -1)  # (k & 3, sign bin, symbols)
    best = None
    for q, nmb, tabs in _merges(fine, lay.nc):
        cost = _entropy_bits(tabs) + _TABLE_BITS * np.count_nonzero(tabs)
        cost += lay.nc * math.log2(nmb)
        if best is None or cost < best[0]:
            best = (cost, q, nmb, tabs)
    _, q, nmb, tabs = best
    mbm = np.asarray(_MBMAP[nmb], dtype=np.int64)[mb]
    model = Model(first - K.REL_SPAN, w, q, nmb, freq_codes(tabs), kc, kr, mbm)
    return model, tabs


# ----------------------------------------------------------------------------- encode
def _bits_u(arr: np.ndarray) -> np.ndarray:
    return arr.reshape(-1).view(np.uint32 if arr.dtype.itemsize == 4 else np.uint16)


def _pack_ints(v: np.ndarray) -> tuple[int, int, bytes]:
    """(minimum, byte width, bytes) of small integers stored relative to their minimum."""
    lo = int(v.min())
    width = 1 if int(v.max()) - lo < 256 else 2
    return lo, width, (v - lo).astype(np.uint8 if width == 1 else "<u2").tobytes()


def encode(arr: np.ndarray, dtype: DType) -> list[bytes]:
    """Payload parts of a non-empty tensor (joined by the caller)."""
    lay = Layout.of(dtype, arr.shape)
    u = _bits_u(arr)
    kc, kr, mb = _offsets(lay, u)
    hist = np.zeros(K.FINE_CTX * 2 * K.NREL * 4, dtype=np.int64)
    orm = int(K.histogram(lay.fmt, u, lay.prm(), kc, kr, mb, hist))
    model, counts = _fit(lay, hist, kc, kr, mb)
    tz = min((orm & -orm).bit_length() - 1 if orm else lay.mbits, lay.mbits - K.MTOP)
    prm = lay.prm(model.lo, model.w, tz)
    rb = int(prm[K.P_RB])
    freq = freqs_from_codes(model.codes)
    et = enc_tables(freq)

    # Output bounds: raw bits are exact; each rANS step adds at most log2(TOTAL/f) + 0.17
    # bits (the state stays >= 8 f), plus the flushed states.
    per_sym = counts.reshape(-1, 2, model.w + 2, 4)
    nonzero = int(per_sym.sum()) - int(per_sym[:, :, 0, :].sum())
    escapes = int(per_sym[:, :, 1, :].sum())
    raw_bits = nonzero * rb + escapes * lay.ebits
    with np.errstate(divide="ignore"):
        cost = np.where(counts > 0, counts * (K.PREC - np.log2(np.maximum(freq, 1))), 0.0)
    n = u.size
    bound = int(cost.sum() + 0.17 * n) // 16 + 4 * K.LANES + 64
    bits = np.zeros(raw_bits // 32 + 2, dtype=np.uint32)
    ctxmap = ctx_map(model.q, model.nmb)
    for nwords in (min(bound, n + 4 * K.LANES), n + 4 * K.LANES):
        words = np.empty(nwords, dtype=np.uint16)
        start, nbits, status = K.encode(
            lay.fmt, u, prm, model.kc, model.kr, model.mb, ctxmap, et, words, bits
        )
        if status == K.OK:
            break
    else:  # pragma: no cover - the bounds above are proven
        raise CodecError("lossless encoder ran out of its output bound")
    kcmin, kcw, kcb = _pack_ints(model.kc)
    krmin, krw, krb = _pack_ints(model.kr)
    zc = zstandard.ZstdCompressor(level=_SIDE_LEVEL)
    tables = zc.compress(model.codes.tobytes())
    offsets = zc.compress(b"".join([kcb, model.mb.astype(np.uint8).tobytes(), krb]))
    head = _HEAD.pack(lay.flags, tz, model.lo, model.w, model.q, model.nmb,
                      kcmin, kcw, krmin, krw, len(tables), len(offsets))  # fmt: skip
    nraw = (nbits + 31) // 32
    return [
        head,
        tables,
        offsets,
        _U64.pack(nwords - start),
        memoryview(words)[start:].cast("B"),
        _U64.pack(nbits),
        memoryview(bits)[:nraw].cast("B"),
    ]


# ----------------------------------------------------------------------------- decode
def decode(mv: memoryview, dtype: DType, shape: tuple[int, ...]) -> np.ndarray:
    """Bit patterns (uint16 or uint32, flat) of the tensor in a max-mode payload.

    Everything is checked against the shape and the payload before anything of the
    tensor's size is allocated."""
    lay = Layout.of(dtype, shape)
    n = lay.rows * lay.chans
    if len(mv) < _HEAD.size:
        raise CodecError("lossless payload truncated: header missing")
    head = _HEAD.unpack_from(mv, 0)
    flags, tz, lo, w, q, nmb, kcmin, kcw, krmin, krw, tables_len, offsets_len = head
    if flags != lay.flags:
        raise CodecError(f"lossless model flags {flags} do not fit the shape {shape}")
    if not (
        tz <= lay.mbits - K.MTOP and 1 <= w <= K.WMAX and -K.REL_SPAN <= lo <= K.REL_SPAN + 1 - w
    ):
        raise CodecError("lossless header has an invalid mantissa or exponent window")
    if q not in _QMAP or nmb not in _MBMAP or (nmb > 1 and lay.nc == 1):
        raise CodecError(f"lossless header declares an invalid table layout ({q} x {nmb})")
    if kcw not in (1, 2) or krw not in (1, 2):
        raise CodecError("lossless header declares an invalid offset width")

    # Section lengths against the payload.
    pos = _HEAD.size
    if tables_len + offsets_len + 2 * _U64.size > len(mv) - pos:
        raise CodecError("lossless payload truncated: model sections run past the end")
    tables_at, offsets_at = pos, pos + tables_len
    pos = offsets_at + offsets_len
    (nwords,) = _U64.unpack_from(mv, pos)
    pos += _U64.size
    if nwords < 2 * K.LANES or 2 * nwords > len(mv) - pos - _U64.size:
        raise CodecError(f"lossless payload declares {nwords} rANS words; that does not fit")
    wpos = pos
    pos += 2 * nwords
    (nbits,) = _U64.unpack_from(mv, pos)
    pos += _U64.size
    if 4 * ((nbits + 31) // 32) != len(mv) - pos:
        raise CodecError(f"lossless raw bit stack of {nbits} bits does not match the payload")

    # The tables (a few KB), and whether the streams can hold n values at all: every
    # symbol of a table without a certain symbol costs at least log2(TOTAL / f_max).
    ntab, nsym = q * nmb, 2 * (w + 2) * 4
    raw = decompress_exact(mv[tables_at:offsets_at], ntab * nsym, "lossless frequency tables")
    freq = freqs_from_codes(np.frombuffer(raw, np.uint8).reshape(ntab, nsym))
    fmax = freq.max(axis=1)
    used = fmax[fmax > 0]
    if used.size == 0:
        raise CodecError("lossless payload has no frequency table")
    if int(used.max()) < K.TOTAL:
        floor_bits = n * float(np.min(K.PREC - np.log2(used)))
        if floor_bits > 16.0 * nwords + nbits + 64.0 * K.LANES:
            raise CodecError(f"lossless payload is too short for {n} values")

    # Offsets (per channel and row: sizes follow from the shape).
    sizes = (lay.nc * kcw, lay.nc, lay.nr * krw)
    side = decompress_exact(mv[offsets_at : wpos - _U64.size], sum(sizes), "lossless offsets")
    kc = np.frombuffer(side, np.uint8 if kcw == 1 else "<u2", lay.nc, 0) + np.int64(kcmin)
    mb = np.frombuffer(side, np.uint8, lay.nc, sizes[0]).astype(np.int64)
    kr = np.frombuffer(side, np.uint8 if krw == 1 else "<u2", lay.nr, sizes[0] + sizes[1])
    kr = kr + np.int64(krmin)
    if mb.size and int(mb.max()) >= nmb:
        raise CodecError("lossless sign bin out of range")

    slots, ctxmap = dec_tables(freq, ctx_map(q, nmb))
    out = np.empty(n, dtype=np.uint32 if dtype.itemsize == 4 else np.uint16)
    streams = np.array([wpos, nwords, pos, nbits], np.int64)
    src = np.frombuffer(mv, np.uint8)
    status = K.decode(lay.fmt, src, streams, lay.prm(lo, w, tz), kc, kr, mb, ctxmap, slots,
                      symbol_classes(w), out)  # fmt: skip
    if status != K.OK:
        raise CodecError("lossless rANS stream is corrupt")
    return out
