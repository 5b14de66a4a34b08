"""`topk`: chunked top-k sparsification, few-bit values and error feedback (SparseLoCo family).

Gradients and DiLoCo-style pseudo-gradients (role gradient / weight-delta) tolerate very
aggressive compression *if nothing is lost for good*: error feedback (Seide et al. 2014,
"1-bit SGD"; Karimireddy et al. 2019, "EF-SGD"; DeMo, Peng et al. 2024) keeps on the sender
what a message did not carry and adds it to the next tensor, so every part of the signal
is delivered eventually. SparseLoCo (Sarfi et al. 2025, "Communication-efficient
language model training scales reliably and robustly") shows that top-k at 1-3 % density
per chunk, values quantized to 2 bits, with an error-feedback buffer, matches DiLoCo on
pseudo-gradients at more than 97x compression. This codec is that recipe's compressor; the
error-feedback buffer is `ErrorFeedback` (codecs/core/feedback.py), which wraps any codec,
so topk frames are stateless and decode anywhere.

Per call, on the C-order flattened tensor:

1. a = x + e, where e is the float32 residual ErrorFeedback keeps (zero without it, and at
   the start of a stream).
2. The flattened tensor is cut into chunks of `chunk` consecutive values (the last one may
   be shorter; a chunk that is a multiple of the last axis, or divides it, lines up with
   rows). In each chunk of length n the k = ceil(density * n) largest magnitudes are kept
   (exact zeros are never sent, so a chunk may send fewer).
3. Kept magnitudes are quantized per chunk to L = 2**(bits-1) levels base + j * step,
   j in [0, L), plus one sign bit; base and step are fitted per chunk (bin centres over
   [min, max] of the kept magnitudes, then three Lloyd-style least-squares refits) and sent
   as bfloat16. bits=1 is sign only with one shared magnitude per chunk (their mean).
4. Positions go as gaps between sorted in-chunk positions, either Rice-coded (no tables,
   good for uniform scatter) or range-coded with their histogram (good for clustered
   gradients); the encoder writes whichever is smaller. Values (j, sign) are range-coded.
5. (ErrorFeedback) e = a - decoded: exactly what the receiver got is subtracted, rounding
   to the output dtype included, so sum(decoded) + e == sum(x) over the stream.

The decoder's output is dense: zeros except at the sent positions, in the input's dtype,
shape and container. The payload layout is in docs/frame-format.md.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from typing import Any

import ml_dtypes
import numpy as np
import zstandard

from swarmpress.codecs.core.base import Codec, Param, Role, Sent, check_residual
from swarmpress.codecs.core.errors import CodecError
from swarmpress.codecs.core.registry import register
from swarmpress.codecs.core.tensors import BF16, DType, all_finite, to_float32
from swarmpress.codecs.entropy.fieldcode import bit_field
from swarmpress.codecs.entropy.order0 import constant_symbol, encode_symbols, iter_symbols
from swarmpress.codecs.entropy.planes import pack_bits, pack_plane, unpack_plane

RICE, RANGE = 0, 1  # index schemes
MAX_CHUNK = 1 << 15
MAX_RICE = 15
_HEAD = struct.Struct("<BBI")  # index scheme, Rice parameter, counts stream length
_LEN = struct.Struct("<I")
_BF16_MAX = float(ml_dtypes.finfo(ml_dtypes.bfloat16).max)
_LLOYD_STEPS = 3


_SELECT_BATCH = 1 << 14  # values per selection batch (bounds the temporaries)
_ENCODE_BATCH = 1 << 16  # values per encode step (whole chunks): bounds the temporaries
_GROUP_SENT = 1 << 15  # kept values quantized together (whole chunks): bounds the temporaries


def chunk_sizes(numel: int, chunk: int) -> np.ndarray:
    """Length of each chunk of a flattened tensor of numel values (int64)."""
    nch = -(-numel // chunk)
    lens = np.full(nch, chunk, dtype=np.int64)
    if nch:
        lens[-1] = numel - (nch - 1) * chunk
    return lens


def chunk_budget(lens: np.ndarray, density: float) -> np.ndarray:
    """Values each chunk may send: ceil(density * n), at least 1 and at most n."""
    k = np.ceil(density * lens.astype(np.float64) - 1e-9).astype(np.int64)
    return np.clip(k, 1, lens) if lens.size else k


def _bf16(v: np.ndarray, up: bool = False) -> np.ndarray:
    """Round non-negative float64 scales to bfloat16 (kept finite), returned as float64.

    up=True rounds towards +inf, so a grid step never shrinks and the top level still
    reaches the largest magnitude.
    """
    q = np.minimum(v, _BF16_MAX).astype(BF16)
    if up:
        low = (q.astype(np.float64) < v) & (q.astype(np.float64) < _BF16_MAX)
        q = np.where(low, (q.view(np.uint16) + 1).view(BF16), q)
    return q.astype(np.float64)


def _rice_cost(g: np.ndarray) -> tuple[int, int]:
    """(bits, r) of the cheapest Rice code for gaps g."""
    best = None
    for r in range(MAX_RICE + 1):
        bits = int((g >> r).sum()) + g.size * (r + 1)
        if best is None or bits < best[0]:
            best = (bits, r)
    return best  # type: ignore[return-value]


def _rice_encode(g: np.ndarray, r: int) -> bytes:
    q = g >> r
    total = int(q.sum()) + g.size
    bits = np.ones(total, dtype=np.uint8)
    bits[np.cumsum(q + 1) - 1] = 0  # unary: q ones, then a zero
    unary = np.packbits(bits, bitorder="little").tobytes()
    rem = pack_bits(g & ((1 << r) - 1), r)
    return _LEN.pack(len(unary)) + unary + rem


def _take(mv: memoryview, pos: int, what: str) -> tuple[memoryview, int]:
    if len(mv) - pos < _LEN.size:
        raise CodecError(f"topk payload truncated: {what} length missing")
    (n,) = _LEN.unpack_from(mv, pos)
    pos += _LEN.size
    if n > len(mv) - pos:
        raise CodecError(f"topk payload truncated: {what} runs past the end")
    return mv[pos : pos + n], pos + n


_DECODE_BATCH = 1 << 16  # values per decode step (whole chunks): bounds the temporaries


class _Reader:
    """Exactly n values at a time from an iterator of arrays (an entropy stream's chunks)."""

    def __init__(self, parts: Iterator[np.ndarray], what: str) -> None:
        self._parts = parts
        self._what = what
        self._buf = np.zeros(0, dtype=np.int64)

    def take(self, n: int) -> np.ndarray:
        """The next n values (int64); CodecError if the stream ends first."""
        got = [self._buf]
        have = self._buf.size
        while have < n:
            part = next(self._parts, None)
            if part is None:
                raise CodecError(f"{self._what} ends early")
            got.append(part.astype(np.int64))
            have += part.size
        buf = np.concatenate(got) if len(got) > 1 else self._buf
        self._buf = buf[n:]
        return buf[:n]

    def finish(self) -> None:
        """Run the stream to its end (its own checks fire there); nothing may be left over."""
        extra = self._buf.size + sum(part.size for part in self._parts)
        if extra:
            raise CodecError(f"{self._what} holds {extra} more values than the chunks use")


class _RiceGaps:
    """Rice-coded position gaps, read a batch at a time (unary quotients, then remainders)."""

    _BLOCK = 1 << 13  # unary bytes unpacked per step

    def __init__(self, unary: memoryview, rem: memoryview, n: int, r: int) -> None:
        self._unary, self._rem, self._n, self._r = unary, rem, n, r
        self._byte = 0  # next unary byte to unpack
        self._zeros = np.zeros(0, dtype=np.int64)  # terminators found but not taken
        self._prev = -1  # bit index of the last terminator taken
        self._done = 0  # gaps taken

    @classmethod
    def open(cls, mv: memoryview, pos: int, n: int, r: int) -> tuple[_RiceGaps, int]:
        """Check both sections' lengths against n gaps; (reader, position after them)."""
        if len(mv) - pos < _LEN.size:
            raise CodecError("topk payload truncated: position stream length missing")
        (ulen,) = _LEN.unpack_from(mv, pos)
        pos += _LEN.size
        if ulen > len(mv) - pos:
            raise CodecError("topk payload truncated: position stream runs past the end")
        if 8 * ulen < n:  # every gap ends with a 0 bit
            raise CodecError(f"topk position stream of {ulen} bytes cannot hold {n} gaps")
        unary = mv[pos : pos + ulen]
        pos += ulen
        rlen = (n * r + 7) // 8
        if rlen > len(mv) - pos:
            raise CodecError("topk payload truncated: position remainders run past the end")
        return cls(unary, mv[pos : pos + rlen], n, r), pos + rlen

    def take(self, m: int) -> np.ndarray:
        """The next m gaps (int64)."""
        found = [self._zeros]
        have = self._zeros.size
        while have < m:
            if self._byte >= len(self._unary):
                raise CodecError(
                    f"topk position stream holds {self._done + have} gaps, expected {self._n}"
                )
            end = min(self._byte + self._BLOCK, len(self._unary))
            block = np.frombuffer(self._unary[self._byte : end], dtype=np.uint8)
            bits = np.unpackbits(block, bitorder="little")
            found.append(np.flatnonzero(bits == 0) + 8 * self._byte)
            have += found[-1].size
            self._byte = end
        zeros = np.concatenate(found) if len(found) > 1 else self._zeros
        z, self._zeros = zeros[:m], zeros[m:]
        q = np.diff(z, prepend=self._prev) - 1
        if m:
            self._prev = int(z[-1])
            if int(q.max()) >= MAX_CHUNK:
                raise CodecError("topk position gap is larger than any chunk")
        start, self._done = self._done, self._done + m
        return (q << self._r) | bit_field(self._rem, start, m, self._r)

    def finish(self) -> None:
        """All n gaps taken, and the unary section ends in the byte of the last terminator."""
        if self._done != self._n:
            raise CodecError(f"topk position stream: {self._done} gaps used, {self._n} declared")
        used = self._prev + 1 if self._n else 0
        if len(self._unary) != (used + 7) // 8:
            raise CodecError("topk position stream has the wrong length for its gaps")


@register
class TopKCodec(Codec):
    """Chunked top-k with few-bit values; stateless, and made for error feedback.

    Each call sends the k largest magnitudes of every chunk of the tensor it is given; the
    frame decodes on its own (swarmpress.decode) to a dense tensor: zeros except at the
    sent positions. What was not sent is lost unless the sender keeps it: wrap the codec in
    `swarmpress.codecs.ErrorFeedback` (one per stream of same-shaped tensors), which adds
    the residual to the next tensor, as SparseLoCo does. encode_sum() gives it the sent
    positions and values directly, so the residual never needs a decode of the frame.

    density: fraction of each chunk sent per call, k = ceil(density * chunk length).
    bits: 1 = sign and one shared magnitude per chunk; b > 1 = sign and 2**(b-1) magnitude
    levels base + j * step per chunk. chunk: values per top-k chunk (consecutive in C order;
    4096 as in SparseLoCo). Meant for Role.GRADIENT and Role.WEIGHT_DELTA; any role is
    accepted.
    """

    codec_id = "topk"
    summary = "top-k sparsification + few-bit values (SparseLoCo); pair it with ErrorFeedback"
    lossless = False
    params = (
        Param(
            "density",
            float,
            0.02,
            "fraction of values sent per chunk, in (0, 1]",
            minimum=0.0,
            maximum=1.0,
        ),
        Param(
            "bits",
            int,
            2,
            "bits per sent value: 1 sign only, b > 1 sign + 2**(b-1) magnitude levels",
            choices=tuple(range(1, 9)),
        ),
        Param("chunk", int, 4096, "values per top-k chunk", minimum=1, maximum=MAX_CHUNK),
    )

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        if self.config["density"] <= 0.0:
            raise CodecError("topk: parameter density must be above 0")

    # ------------------------------------------------------------------ encode
    def encode_array(self, arr: np.ndarray, role: Role) -> bytes:
        return self._encode_flat(arr.reshape(-1), None)[0]

    def encode_sum(
        self, arr: np.ndarray, residual: np.ndarray | None, role: Role
    ) -> tuple[bytes, Sent]:
        """Payload for arr + residual and the positions and values it sends.

        The sum is never made whole: the selection forms it a batch at a time (float32
        addition commutes: residual + x is x + residual, bit for bit).
        """
        check_residual(arr, residual)
        flat = residual
        payload, pos, dec = self._encode_flat(arr.reshape(-1), flat)
        return payload, Sent(positions=pos, values=dec)

    @staticmethod
    def _batch(x: np.ndarray, res: np.ndarray | None, lo: int, hi: int) -> np.ndarray:
        """a = x + residual over [lo, hi) as float32; CodecError if it is not finite."""
        if res is None:
            a = x[lo:hi].astype(np.float32, copy=False)  # read only: a float32 x is not copied
        else:
            a = to_float32(x[lo:hi])
            with np.errstate(over="ignore", invalid="ignore"):
                np.add(a, res[lo:hi], out=a)
        if not all_finite(a):
            if not np.isfinite(x).all():
                raise CodecError("topk cannot encode NaN or infinite values")
            raise CodecError(
                "topk: tensor plus error-feedback residual overflows float32; reset the feedback"
            )
        return a

    def _select(self, a: np.ndarray, lens: np.ndarray, kc: np.ndarray):
        """Chunk index and in-chunk position of every kept value, in flat order.

        A chunk keeps its kc largest magnitudes (threshold by np.partition); ties at the
        threshold go to the earliest positions, and exact zeros are never kept. Chunks are
        processed a batch at a time so the temporaries stay a small fraction of the tensor.
        """
        chunk = self.config["chunk"]
        nch = lens.size
        per_batch = max(1, _SELECT_BATCH // chunk)
        rows, cols, counts = [], [], []
        for first in range(0, nch, per_batch):
            last = min(nch, first + per_batch)
            r, c, n = self._select_batch(a, first, last, chunk, kc[first:last])
            rows.append(r + first)
            cols.append(c)
            counts.append(n)
        return np.concatenate(rows), np.concatenate(cols), np.concatenate(counts)

    @staticmethod
    def _select_batch(a: np.ndarray, first: int, last: int, chunk: int, kc: np.ndarray):
        nch = last - first
        piece = a[first * chunk : last * chunk]
        if piece.size == nch * chunk:
            mag = np.abs(piece).reshape(nch, chunk)
        else:
            mag = np.zeros((nch, chunk), dtype=np.float32)
            mag.reshape(-1)[: piece.size] = np.abs(piece)
        kmax = int(kc[0])
        thr = np.partition(mag, chunk - kmax, axis=1)[:, chunk - kmax]
        if kc[-1] != kmax:  # the short last chunk has its own budget
            thr[-1] = np.partition(mag[-1], chunk - kc[-1])[chunk - kc[-1]]
        sel = mag >= thr[:, None]
        zero = np.flatnonzero(thr == 0)
        if zero.size:  # fewer non-zeros than the budget: never send exact zeros
            sel[zero] &= mag[zero] > 0
        counts = np.count_nonzero(sel, axis=1)
        over = np.flatnonzero(counts > kc)
        if over.size:  # ties at the threshold: keep the earliest ones
            m, t = mag[over], thr[over][:, None]
            gt, eq = m > t, m == t
            need = kc[over] - np.count_nonzero(gt, axis=1)
            sel[over] = gt | (eq & (np.cumsum(eq, axis=1) <= need[:, None]))
            counts[over] = kc[over]
        rows, cols = np.nonzero(sel)
        return rows, cols, counts.astype(np.int64)

    def _quantize(self, m: np.ndarray, rows: np.ndarray, counts: np.ndarray):
        """Per-chunk (base, step) in bfloat16 and level codes j for magnitudes m (float64).

        m holds the kept magnitudes chunk after chunk; rows[i] is the chunk of m[i].
        """
        levels = 1 << (self.config["bits"] - 1)
        nch = counts.size
        n = np.maximum(counts, 1).astype(np.float64)

        def per_chunk(w: np.ndarray) -> np.ndarray:
            return np.bincount(rows, weights=w, minlength=nch)

        s_m = per_chunk(m)
        if levels == 1:
            base = _bf16(s_m / n)
            return base, np.zeros_like(base), np.zeros(m.size, dtype=np.int64)
        lo, hi = np.zeros(nch), np.zeros(nch)
        nz = counts > 0
        if m.size:
            starts = (np.cumsum(counts) - counts)[nz]
            lo[nz] = np.minimum.reduceat(m, starts)
            hi[nz] = np.maximum.reduceat(m, starts)
        step = (hi - lo) / levels
        base = lo + step / 2

        def assign(base: np.ndarray, step: np.ndarray) -> np.ndarray:
            b, s = base[rows], step[rows]
            j = np.rint((m - b) / np.where(s > 0, s, 1.0))
            return np.clip(np.where(s > 0, j, 0.0), 0, levels - 1)

        for _ in range(_LLOYD_STEPS):  # least-squares refit of base + j * step to m
            j = assign(base, step)
            s_j, s_jj, s_jm = per_chunk(j), per_chunk(j * j), per_chunk(j * m)
            det = n * s_jj - s_j * s_j
            ok = det > 0
            det = np.where(ok, det, 1.0)
            new_step = np.where(ok, (n * s_jm - s_j * s_m) / det, step)
            new_base = np.where(ok, (s_m - new_step * s_j) / n, s_m / n)
            good = (new_step >= 0) & (new_base >= 0) & np.isfinite(new_step + new_base)
            base = np.where(good, new_base, base)
            step = np.where(good, new_step, step)
        base, step = _bf16(base), _bf16(step, up=True)
        return base, step, assign(base, step).astype(np.int64)

    def _encode_flat(self, x: np.ndarray, res: np.ndarray | None):
        """Payload, flat positions sent and their decoded values (float32) for a = x + res.

        Selection and quantization work chunk by chunk, so they run on groups of whole
        chunks with the same bits as on the whole tensor: a is formed _ENCODE_BATCH values
        at a time, and the kept values are quantized a group (up to _GROUP_SENT of them) at
        a time. What outlives a group is sized by the values sent, never by the tensor.
        """
        chunk, bits = self.config["chunk"], self.config["bits"]
        dtype = x.dtype
        finfo_max = float(ml_dtypes.finfo(dtype).max)
        lens = chunk_sizes(x.size, chunk)
        kc = chunk_budget(lens, self.config["density"])
        nch = lens.size
        cap = int(kc.sum())
        pos = np.empty(cap, dtype=np.int64)
        dec = np.empty(cap, dtype=np.float32)
        gaps = np.empty(cap, dtype=np.int16)  # < chunk <= 2**15
        codes = np.empty(cap, dtype=np.uint8)  # j * 2 + sign < 2**bits <= 256
        counts = np.empty(nch, dtype=np.int64)
        bases, steps = [], []
        sub = max(1, _SELECT_BATCH // chunk)  # chunks per _select batch
        per_batch = sub * max(1, _ENCODE_BATCH // (sub * chunk))
        k_full = int(kc[0]) if nch else 1
        per_group = per_batch * max(1, _GROUP_SENT // (per_batch * k_full))
        n = 0
        for g0 in range(0, nch, per_group):
            g1 = min(nch, g0 + per_group)
            gcap = int(kc[g0:g1].sum())
            rows = np.empty(gcap, dtype=np.int64)  # chunk in the group
            cols = np.empty(gcap, dtype=np.int64)  # position in the chunk
            vals = np.empty(gcap, dtype=np.float32)
            cnt = counts[g0:g1]
            m = 0
            for first in range(g0, g1, per_batch):
                last = min(g1, first + per_batch)
                a = self._batch(x, res, first * chunk, min(x.size, last * chunk))
                r, c, k = self._select(a, lens[first:last], kc[first:last])
                cnt[first - g0 : last - g0] = k
                rows[m : m + r.size] = r + (first - g0)
                cols[m : m + r.size] = c
                vals[m : m + r.size] = a[r * chunk + c]
                m += r.size
            rows, cols, v = rows[:m], cols[:m], vals[:m].astype(np.float64)
            base, step, j = self._quantize(np.abs(v), rows, cnt)
            neg = v < 0
            mag = np.minimum(base[rows] + j * step[rows], finfo_max)
            pos[n : n + m] = rows * chunk + cols + g0 * chunk
            dec[n : n + m] = np.where(neg, -mag, mag).astype(dtype)
            # positions: gaps between sorted in-chunk positions, restarted at every chunk
            prev = np.empty_like(cols)
            prev[1:] = cols[:-1]
            starts = np.cumsum(cnt) - cnt
            prev[starts[cnt > 0]] = -1
            gaps[n : n + m] = cols - prev - 1
            codes[n : n + m] = j * 2 + neg
            nz = cnt > 0
            bases.append(base[nz])
            steps.append(step[nz])
            n += m
        pos, dec, codes = pos[:n], dec[:n], codes[:n]
        gaps = gaps[:n].astype(np.int64)

        _, r = _rice_cost(gaps)
        rice = _rice_encode(gaps, r)
        table = encode_symbols(gaps)
        if len(table) + _LEN.size < len(rice):
            scheme, r, index = RANGE, 0, _LEN.pack(len(table)) + table
        else:
            scheme, index = RICE, rice

        counts_stream = encode_symbols(kc - counts)
        scales = np.concatenate(bases if bits == 1 else bases + steps) if nch else np.zeros(0)
        scale_plane = pack_plane(
            scales.astype(BF16).view(np.uint16), zstandard.ZstdCompressor(level=3)
        )
        parts = [
            _HEAD.pack(scheme, r, len(counts_stream)),
            counts_stream,
            scale_plane,
            index,
            encode_symbols(codes),
        ]
        return b"".join(parts), pos, dec

    # ------------------------------------------------------------------ decode
    def decode_array(self, payload, dtype: DType, shape: tuple[int, ...]) -> np.ndarray:
        """Dense tensor from a payload, decoded a batch of chunks at a time.

        Every stream is checked against the counts before the output exists (each must be
        able to hold the values it declares), and nothing but the output grows with the
        tensor: per-chunk counts are read twice from their stream instead of kept, and the
        positions, scales and values of a batch are dropped once it is written.
        """
        numel = math.prod(shape)
        chunk, bits = self.config["chunk"], self.config["bits"]
        mv = memoryview(payload)
        nch = -(-numel // chunk)
        last = numel - (nch - 1) * chunk if nch else 0
        k_full, k_last = (
            int(v) for v in chunk_budget(np.array([chunk, max(last, 1)]), self.config["density"])
        )
        if len(mv) < _HEAD.size:
            raise CodecError("topk payload truncated: header missing")
        scheme, r, clen = _HEAD.unpack_from(mv, 0)
        if scheme not in (RICE, RANGE) or r > MAX_RICE or (scheme == RANGE and r):
            raise CodecError(f"topk payload declares an unknown index coding ({scheme}, {r})")
        pos = _HEAD.size
        if clen > len(mv) - pos:
            raise CodecError("topk payload truncated: chunk counts run past the end")
        shorts = mv[pos : pos + clen]
        pos += clen
        batch = max(1, _DECODE_BATCH // max(k_full, 1))  # chunks per step: <= 64 Ki values

        def counts_of(first: int, part: np.ndarray) -> np.ndarray:
            kc = np.full(part.size, k_full, dtype=np.int64)
            if first + part.size == nch:
                kc[-1] = k_last
            if part.size and (part.min() < 0 or (part > kc).any()):
                raise CodecError("topk chunk counts exceed the density budget")
            return kc - part

        # Pass 1: how many values and how many non-empty chunks, without keeping the counts
        # (in closed form when every chunk is short by the same amount).
        total = nz = first = 0
        same = constant_symbol(shorts) if nch else None
        if same is not None:
            if same > k_last or (nch > 1 and same > k_full):
                raise CodecError("topk chunk counts exceed the density budget")
            total = (nch - 1) * int(k_full - same) + int(k_last - same)
            nz = (nch - 1) * int(k_full > same) + int(k_last > same)
        else:
            for part in iter_symbols(shorts, nch, batch):
                counts = counts_of(first, part)
                total += int(counts.sum())
                nz += int(np.count_nonzero(counts))
                first += part.size
        raw, pos = unpack_plane(mv, pos, nz if bits == 1 else 2 * nz, itemsize=2)
        if raw.size and raw.max() >= 0x7F80:  # sign bit set, or an infinity / NaN exponent
            raise CodecError("topk chunk scales must be finite and non-negative")
        if scheme == RICE:
            gaps, pos = _RiceGaps.open(mv, pos, total, r)
        else:
            stream, pos = _take(mv, pos, "position stream")
            gaps = _Reader(iter_symbols(stream, total), "topk position stream")
        values = _Reader(iter_symbols(mv[pos:], total), "topk value stream")

        # Pass 2: every stream now holds what the counts declare; write the output.
        finfo_max = float(ml_dtypes.finfo(dtype.numpy).max)
        out = np.zeros(numel, dtype=dtype.numpy)
        if total == 0:  # nothing was sent: every stream must be empty, the output is zeros
            gaps.finish()
            values.finish()
            return out.reshape(shape)
        first = scale_at = 0
        for part in iter_symbols(shorts, nch, batch):
            counts = counts_of(first, part)
            n = int(counts.sum())
            g = gaps.take(n)
            sym = values.take(n)
            if g.size and g.max() >= chunk:
                raise CodecError("topk position gap is larger than the chunk")
            if sym.size and sym.max() >= 2 << (bits - 1):
                raise CodecError("topk value codes fall outside the quantization grid")
            first += part.size
            if n == 0:
                continue
            # in-chunk positions: cumulative gaps restarted at every chunk
            local = np.repeat(np.arange(part.size), counts)
            csum = np.cumsum(g + 1)
            starts = np.cumsum(counts) - counts
            before = np.where(starts > 0, csum[np.maximum(starts - 1, 0)], 0)
            inpos = csum - np.repeat(before, counts) - 1
            lens = np.full(part.size, chunk, dtype=np.int64)
            if first == nch:
                lens[-1] = last
            if (inpos >= lens[local]).any():
                raise CodecError("topk positions run past the end of their chunk")
            has = counts > 0
            k = int(np.count_nonzero(has))
            base = np.zeros(part.size)
            step = np.zeros(part.size)
            base[has] = raw[scale_at : scale_at + k].view(BF16).astype(np.float64)
            if bits > 1:
                step[has] = raw[nz + scale_at : nz + scale_at + k].view(BF16).astype(np.float64)
            scale_at += k
            mag = np.minimum(base[local] + (sym >> 1) * step[local], finfo_max)
            vals = np.where(sym & 1, -mag, mag).astype(dtype.numpy)
            out[(local + first - part.size) * chunk + inpos] = vals
        gaps.finish()
        values.finish()
        return out.reshape(shape)

    def max_nonzeros(self, numel: int) -> int:
        """The most values one frame of a numel-value tensor can carry."""
        lens = chunk_sizes(numel, self.config["chunk"])
        return int(chunk_budget(lens, self.config["density"]).sum())
