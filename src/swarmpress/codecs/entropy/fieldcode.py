"""Entropy coding of a 2-D integer field (rows x channels) with a scale-conditioned model.

The field's per-channel and per-row log-scales (quarter octaves) are estimated by the
encoder and sent; each symbol's model is the scalemodel bucket at channel + row scale. The
side information of a field is written before the range-coded words, which are shared by
every field of a payload (one coder, fields appended in order).
"""

from __future__ import annotations

import math
import struct
import threading
from dataclasses import dataclass

import constriction
import numpy as np
import zstandard

from swarmpress.codecs.core.errors import CodecError
from swarmpress.codecs.entropy import scalemodel
from swarmpress.codecs.entropy.order0 import SLACK_BITS, min_code_bits
from swarmpress.codecs.entropy.planes import pack_bits
from swarmpress.codecs.entropy.zstdio import decompress_exact

K_RANGE = (-64, 191)
_HEAD = struct.Struct("<BBhhI")  # family, flags, k_min, k_max, escape count
_ROW_SCALES = 0x01


_local = threading.local()


def pack_blob(data: bytes) -> bytes:
    """A length-prefixed zstd frame (one compressor per thread: making one costs more than
    compressing a few kilobytes of side information)."""
    comp = getattr(_local, "zstd", None)
    if comp is None:
        comp = _local.zstd = zstandard.ZstdCompressor(level=3)
    body = comp.compress(data)
    return struct.pack("<I", len(body)) + body


def unpack_blob(mv: memoryview, pos: int, size: int, what: str) -> tuple[bytes, int]:
    """Read a pack_blob section that must decompress to exactly size bytes."""
    if len(mv) - pos < 4:
        raise CodecError(f"lossy payload truncated: {what} missing")
    (n,) = struct.unpack_from("<I", mv, pos)
    pos += 4
    if n > len(mv) - pos:
        raise CodecError(f"lossy payload truncated: {what} runs past the end")
    return decompress_exact(mv[pos : pos + n], size, f"lossy {what}"), pos + n


def skip_blob(mv: memoryview, pos: int, what: str) -> int:
    """Position after a pack_blob section: its length is checked, nothing is decompressed."""
    if len(mv) - pos < 4:
        raise CodecError(f"lossy payload truncated: {what} missing")
    (n,) = struct.unpack_from("<I", mv, pos)
    if n > len(mv) - pos - 4:
        raise CodecError(f"lossy payload truncated: {what} runs past the end")
    return pos + 4 + n


def _log4(v: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        codes = np.rint(scalemodel.STEPS_PER_OCTAVE * np.log2(v))
    return np.clip(np.nan_to_num(codes, neginf=K_RANGE[0]), *K_RANGE).astype(np.int64)


def scale_codes(r: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """Per-channel and per-row log-scale codes of the field; rows only when they differ."""
    sq = r.astype(np.float64) ** 2
    chan_rms = np.sqrt(sq.mean(axis=0))
    rows = np.zeros(r.shape[0], dtype=np.int64)
    if r.shape[0] < 2 or r.shape[1] < 8:
        return _log4(chan_rms), rows, False
    norm = np.where(chan_rms > 0, chan_rms, 1.0)
    row_rms = np.sqrt((sq / (norm * norm)[None, :]).mean(axis=1))
    rows = _log4(np.where(row_rms > 0, row_rms, 2.0 ** (K_RANGE[0] / 4)))
    rows -= int(np.median(rows))
    if np.abs(rows).mean() < 0.5:  # rows are alike: row scales would cost without paying
        return _log4(chan_rms), np.zeros_like(rows), False
    row_f = np.exp2(rows / scalemodel.STEPS_PER_OCTAVE)
    chan_rms = np.sqrt((sq / (row_f * row_f)[:, None]).mean(axis=0))
    return _log4(chan_rms), rows, True


def _buckets(chan: np.ndarray, rows: np.ndarray) -> np.ndarray:
    return np.clip(chan[None, :] + rows[:, None], *K_RANGE).reshape(-1)


def _pick_family(r: np.ndarray, k: np.ndarray) -> str:
    stride = max(1, r.size // 65536)
    rs, ks = r[::stride], k[::stride]
    costs = {f: scalemodel.ideal_bits(rs, ks, f) for f in scalemodel.FAMILIES}
    return min(costs, key=costs.get)


def estimate_bits(r: np.ndarray) -> float:
    """Ideal code length of the field (symbols only, best family, on a sample)."""
    r = r.astype(np.int64)
    chan, rows, _ = scale_codes(r)
    k = _buckets(chan, rows)
    flat = r.reshape(-1)
    stride = max(1, flat.size // 65536)
    best = min(scalemodel.ideal_bits(flat[::stride], k[::stride], f) for f in scalemodel.FAMILIES)
    return best * stride


def encode_field(coder, r: np.ndarray, family: str | None = None) -> bytes:
    """Append the field's symbols to coder; return its side information. The model family
    is the one with the fewest ideal bits unless given (the choice costs a pass per family)."""
    chan, rows, use_rows = scale_codes(r)
    k = _buckets(chan, rows)
    flat = r.reshape(-1)
    if family is None:
        family = _pick_family(flat, k)
    elif family not in scalemodel.FAMILIES:
        raise CodecError(f"unknown model family {family!r}")
    lowbits, escapes = scalemodel.encode(coder, flat, k, family)
    head = _HEAD.pack(
        scalemodel.FAMILIES.index(family),
        _ROW_SCALES if use_rows else 0,
        int(k.min()),
        int(k.max()),
        escapes.size,
    )
    return b"".join(
        [
            head,
            pack_blob(chan.astype("<i2").tobytes()),
            pack_blob(rows.astype("<i2").tobytes()) if use_rows else b"",
            pack_blob(escapes.astype("<i8").tobytes()),
            pack_blob(_pack_low(lowbits, k)),
        ]
    )


ROW_RANGE = K_RANGE[1] - K_RANGE[0]  # row codes are log-scales less their median
_PIECE = 1 << 16  # values per decode step
_BITS_STEP = 1 << 12  # values per bit-unpacking step


@dataclass(frozen=True)
class FieldSide:
    """What the decoder read about one field before the range-coded words.

    Nothing here grows with the field's size but the row codes (one per row), the escapes
    and the raw low bits, and those two are bounded by the payload: min_bits, the fewest
    bits the range coder can have spent on the field's symbols, is checked first.
    """

    shape: tuple[int, int]
    family: str
    chan: np.ndarray  # per-channel scale code (int64)
    rows: np.ndarray | None  # per-row scale code (int16), None when all rows are alike
    counts: np.ndarray  # values per bucket, index k - K_RANGE[0] (int64)
    low: bytes  # raw low bits, bucket after bucket
    escapes: np.ndarray
    min_bits: float
    magnitude: int  # no decoded value is larger in magnitude


def read_field(mv: memoryview, pos: int, nrows: int, nchan: int) -> tuple[FieldSide, int]:
    """Parse a field's side information; every count is checked against the shape.

    The bucket counts come from the scale codes' histograms (no per-value array), and the
    payload left must be able to hold the field's symbols before the escapes and the raw
    low bits (both sized by those counts) are decompressed.
    """
    if len(mv) - pos < _HEAD.size:
        raise CodecError("lossy payload truncated: field header missing")
    fam, flags, k_min, k_max, nesc = _HEAD.unpack_from(mv, pos)
    pos += _HEAD.size
    if fam >= len(scalemodel.FAMILIES) or flags & ~_ROW_SCALES:
        raise CodecError("lossy field header has an unknown model or flags")
    if not K_RANGE[0] <= k_min <= k_max <= K_RANGE[1]:
        raise CodecError("lossy field declares scale codes out of range")
    numel = nrows * nchan
    if nesc > numel:
        raise CodecError("lossy field declares more escapes than values")
    raw, pos = unpack_blob(mv, pos, 2 * nchan, "channel scales")
    chan = np.frombuffer(raw, dtype="<i2").astype(np.int64)
    if chan.size and (chan.min() < K_RANGE[0] or chan.max() > K_RANGE[1]):
        raise CodecError("lossy channel scale codes are out of range")
    rows = None
    row_hist = np.zeros(2 * ROW_RANGE + 1, dtype=np.int64)
    if flags & _ROW_SCALES:
        raw, pos = unpack_blob(mv, pos, 2 * nrows, "row scales")
        rows = np.frombuffer(raw, dtype="<i2")
        for i in range(0, nrows, _PIECE):
            part = rows[i : i + _PIECE].astype(np.int64)
            if part.min() < -ROW_RANGE or part.max() > ROW_RANGE:
                raise CodecError("lossy row scale codes are out of range")
            row_hist += np.bincount(part + ROW_RANGE, minlength=row_hist.size)
    else:
        row_hist[ROW_RANGE] = nrows
    counts = _bucket_counts(chan, row_hist)
    present = np.flatnonzero(counts)
    if present.size and (present[0] + K_RANGE[0] != k_min or present[-1] + K_RANGE[0] != k_max):
        raise CodecError("lossy scale codes disagree with the field header")
    family = scalemodel.FAMILIES[fam]
    min_bits, magnitude = _field_bounds(family, counts, nesc)
    room = len(mv) - pos
    if 8.0 * room + SLACK_BITS < min_bits:
        raise CodecError(
            f"lossy payload has {room} bytes left, too few for the {numel} values its "
            f"field declares (at least {int(min_bits // 8)} bytes)"
        )
    raw, pos = unpack_blob(mv, pos, 8 * nesc, "escapes")
    escapes = np.frombuffer(raw, dtype="<i8").astype(np.int64)
    if escapes.size:  # Python ints: |INT64_MIN| does not fit an int64
        magnitude = max(magnitude, -int(escapes.min()), int(escapes.max()))
    low_size = sum(
        (scalemodel.raw_bits(int(k) + K_RANGE[0]) * int(counts[k]) + 7) // 8 for k in present
    )
    low, pos = unpack_blob(mv, pos, low_size, "low bits")
    side = FieldSide((nrows, nchan), family, chan, rows, counts, low, escapes, min_bits, magnitude)
    return side, pos


def _bucket_counts(chan: np.ndarray, row_hist: np.ndarray) -> np.ndarray:
    """Values per bucket clip(chan + row) from the two histograms (exact integers)."""
    nb = K_RANGE[1] - K_RANGE[0] + 1
    chan_hist = np.bincount(chan - K_RANGE[0], minlength=nb)
    sums = np.convolve(chan_hist, row_hist)  # index: chan - K_RANGE[0] + row + ROW_RANGE
    k = np.clip(np.arange(sums.size) + K_RANGE[0] - ROW_RANGE, *K_RANGE) - K_RANGE[0]
    counts = np.zeros(nb, dtype=np.int64)
    np.add.at(counts, k, sums.astype(np.int64))
    return counts


def _field_bounds(family: str, counts: np.ndarray, nesc: int) -> tuple[float, int]:
    """(fewest bits the symbols can cost, largest magnitude a non-escaped value can have).

    Each bucket's values cost at least its cheapest symbol; escapes cost at least the extra
    of the cheapest escape over that.
    """
    bits = 0.0
    extra = math.inf
    magnitude = 0
    for i in np.flatnonzero(counts):
        k = int(i) + K_RANGE[0]
        m, p = scalemodel.table(family, k)
        cost = min_code_bits(p)
        cheapest = float(cost.min())
        bits += int(counts[i]) * cheapest
        extra = min(extra, float(cost[-1]) - cheapest)
        low = scalemodel.raw_bits(k)
        magnitude = max(magnitude, ((m + 1) << low) if low else m)
    if nesc:
        bits += nesc * extra
    return bits, magnitude


def decode_field(decoder, side: FieldSide) -> np.ndarray:
    """The field's integers (rows x channels), read from the shared decoder.

    int32 when every value fits (side.magnitude), else int64.
    """
    dtype = np.int32 if side.magnitude < 1 << 31 else np.int64
    out = np.empty(side.shape, dtype=dtype)
    flat = out.reshape(-1)

    def put(positions: np.ndarray, values: np.ndarray) -> None:
        flat[positions] = values

    decode_field_into(decoder, side, put)
    return out


def decode_field_into(decoder, side: FieldSide, sink) -> None:
    """Decode the field a piece at a time: sink(flat positions, int64 values), stream order.

    The coder holds the values bucket after bucket, each bucket in row-major order, so each
    piece is one bucket's values in a block of rows; nothing the size of the field is made.
    """
    nrows, nchan = side.shape
    if nrows * nchan == 0:
        return
    lookup, perm, bounds = _channel_orders(side)
    rows_per = max(1, _PIECE // nchan)
    low_at = 0
    esc_at = 0
    for i in np.flatnonzero(side.counts):
        k = int(i) + K_RANGE[0]
        m, p = scalemodel.table(side.family, k)
        model = constriction.stream.model.Categorical(p, perfect=False)
        low = scalemodel.raw_bits(k)
        n_k = int(side.counts[i])
        low_bytes = (low * n_k + 7) // 8
        low_raw = side.low[low_at : low_at + low_bytes]
        low_at += low_bytes
        done = 0
        for r0 in range(0, nrows, rows_per):
            r1 = min(nrows, r0 + rows_per)
            if side.rows is None:
                v = np.zeros(r1 - r0, dtype=np.int64)
            else:
                v = lookup[r0:r1].astype(np.int64)
            lo, hi = bounds[v, i], bounds[v, i + 1]
            lens = hi - lo
            n = int(lens.sum())
            if n == 0:
                continue
            if done + n > n_k:
                raise CodecError("lossy field holds more values in a bucket than it declares")
            starts = np.cumsum(lens) - lens
            idx = np.repeat(v * nchan + lo - starts, lens) + np.arange(n)
            positions = np.repeat(np.arange(r0, r1, dtype=np.int64) * nchan, lens) + perm[idx]
            try:
                sym = np.asarray(decoder.decode(model, n), dtype=np.int64)
            except Exception as exc:  # constriction raises plain errors on malformed streams
                raise CodecError(f"lossy entropy-coded stream is corrupt: {exc}") from None
            esc = sym == 2 * m + 1
            vals = sym - m
            if low:
                vals = (vals << low) + bit_field(low_raw, done, n, low)
            ne = int(np.count_nonzero(esc))
            if esc_at + ne > side.escapes.size:
                raise CodecError("escape stream is shorter than the escape symbols need")
            vals[esc] = side.escapes[esc_at : esc_at + ne]
            esc_at += ne
            done += n
            sink(positions, vals)
        if done != n_k:
            raise CodecError("lossy field holds fewer values in a bucket than it declares")
    if esc_at != side.escapes.size:
        raise CodecError("lossy side streams hold more values than the symbols use")


def _channel_orders(side: FieldSide) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per distinct row code: channels sorted by bucket (stable) and each bucket's bounds.

    Returns (row -> distinct index (int16), perm (distinct x channels, int32) flattened, bounds
    (distinct x buckets+1)); bucket i of row code v is perm[v, bounds[v, i]:bounds[v, i+1]].
    """
    nchan = side.shape[1]
    if side.rows is None:
        codes = np.zeros(1, dtype=np.int64)
        lookup = np.zeros(0, dtype=np.int16)
    else:
        present = np.zeros(2 * ROW_RANGE + 1, dtype=bool)
        for i in range(0, side.rows.size, _PIECE):
            present[side.rows[i : i + _PIECE].astype(np.int64) + ROW_RANGE] = True
        codes = np.flatnonzero(present) - ROW_RANGE
        where = np.zeros(present.size, dtype=np.int64)
        where[codes + ROW_RANGE] = np.arange(codes.size)
        lookup = np.empty(side.rows.size, dtype=np.int16)  # fewer than 2**15 distinct codes
        for i in range(0, side.rows.size, _PIECE):
            lookup[i : i + _PIECE] = where[side.rows[i : i + _PIECE].astype(np.int64) + ROW_RANGE]
    nb = K_RANGE[1] - K_RANGE[0] + 1
    perm = np.empty((codes.size, nchan), dtype=np.int32)
    bounds = np.empty((codes.size, nb + 1), dtype=np.int64)
    for j, v in enumerate(codes):
        b = np.clip(side.chan + int(v), *K_RANGE) - K_RANGE[0]
        perm[j] = np.argsort(b, kind="stable")
        bounds[j] = np.searchsorted(b[perm[j]], np.arange(nb + 1))
    return lookup, perm.reshape(-1), bounds


def bit_field(data: bytes | memoryview, start: int, m: int, width: int) -> np.ndarray:
    """Values start .. start+m-1 (int64) of a dense little-endian stream of width-bit ints.

    Unpacked a few thousand values at a time, so the bit matrix stays small.
    """
    out = np.zeros(m, dtype=np.int64)
    if width == 0:
        return out
    weights = np.int64(1) << np.arange(width, dtype=np.int64)
    for i in range(0, m, _BITS_STEP):
        j = min(m, i + _BITS_STEP)
        lo, hi = (start + i) * width, (start + j) * width
        raw = np.frombuffer(data[lo // 8 : (hi + 7) // 8], dtype=np.uint8)
        bits = np.unpackbits(raw, bitorder="little")[lo % 8 : lo % 8 + (j - i) * width]
        out[i:j] = bits.reshape(j - i, width) @ weights
    return out


def _low_widths(k: np.ndarray) -> list[tuple[int, int]]:
    kk, counts = np.unique(k, return_counts=True)
    return [(scalemodel.raw_bits(int(b)), int(n)) for b, n in zip(kk, counts, strict=True)]


def _pack_low(lowbits: np.ndarray, k: np.ndarray) -> bytes:
    out, pos = [], 0
    for w, n in _low_widths(k):
        if w:
            out.append(pack_bits(lowbits[pos : pos + n], w))
            pos += n
    return b"".join(out)
