"""The `lossy` fast mode: one global step by proportional rate control, numba rANS coding.

Same quantizer family as the max mode (per-channel integer means, one uniform step chosen
so the decoded tensor meets the target) without the low-rank search, and coded by the
compiled loops of fastkernels.py: each residual's model is the Gaussian bucket of its
channel scale plus its row scale, with small static tables (rans.py) instead of
constriction's per-call models. Bucket scales above 8 steps send their low bits raw.

Payload: `step f64 | family u8 | flags u8 | means | channel codes | [row codes] |
words u32 + rANS words (u16) | bits u32 + raw bit words (u32)`.
"""

from __future__ import annotations

import functools
import math
import struct

import numpy as np

from swarmpress.codecs import fastkernels as fk
from swarmpress.codecs import rans, scalemodel
from swarmpress.codecs.errors import CodecError
from swarmpress.codecs.fieldcode import K_RANGE, pack_blob, unpack_blob
from swarmpress.codecs.tensors import DType

_HEAD = struct.Struct("<dBB")
_ROWS = 0x01
FAMILY = "gaussian"
MAX_TABLE_SCALE = 4.0  # larger bucket scales keep their low bits raw (near-uniform there)
TAIL = 8.0  # modelled range |hi| <= TAIL * scale + 1; beyond: escape
K_FAST_MAX = int(4 * math.log2(MAX_TABLE_SCALE * 2.0**32))  # raw bits stay <= 32
_PASSES = 6
_CLOSE = 0.99  # accept a step whose error is within 1 % of the target's


def low_bits(k: int) -> int:
    """Raw low bits of bucket k: the table then models a scale of at most MAX_TABLE_SCALE."""
    s = 2.0 ** (k / scalemodel.STEPS_PER_OCTAVE)
    return math.floor(math.log2(s / MAX_TABLE_SCALE)) + 1 if s > MAX_TABLE_SCALE else 0


@functools.lru_cache(maxsize=1024)
def bucket_table(k: int) -> tuple[int, int, np.ndarray, np.ndarray]:
    """(half width m, low bits, encoder entries, slot table) of bucket k; a pure function."""
    lb = low_bits(k)
    s = 2.0 ** (k / scalemodel.STEPS_PER_OCTAVE) / (1 << lb)
    m = math.ceil(TAIL * s) + 1
    edges = (np.arange(-m, m + 2, dtype=np.float64) - 0.5) / s
    p = np.append(np.maximum(np.diff(scalemodel._cdf(FAMILY, edges)), 0.0), 0.0)
    freq = rans.quantize(p)
    return m, lb, rans.enc_entries(freq), rans.dec_entries(freq)


class _Tables:
    """The tables of the buckets a field uses, stacked for the kernels."""

    def __init__(self, cc: np.ndarray, rc: np.ndarray) -> None:
        used = np.unique(np.clip(np.unique(cc)[:, None] + np.unique(rc)[None, :], *K_RANGE))
        self.kmin, self.kmax = int(used[0]), int(used[-1])
        self.slot_of_k = np.zeros(self.kmax - self.kmin + 1, dtype=np.int64)
        self.slot_of_k[used - self.kmin] = np.arange(used.size)
        parts = [bucket_table(int(k)) for k in used]
        width = max(p[2].shape[0] for p in parts)
        self.m = np.array([p[0] for p in parts], dtype=np.int64)
        self.lb = np.array([p[1] for p in parts], dtype=np.int64)
        self.parts, self.width = parts, width

    def encoder(self) -> np.ndarray:
        enc = np.zeros((len(self.parts), self.width, 5), dtype=np.int64)
        for i, p in enumerate(self.parts):
            enc[i, : p[2].shape[0]] = p[2]
        return enc

    def decoder(self) -> np.ndarray:
        return np.stack([p[3] for p in self.parts])


def _raw_bits(tables: _Tables, cc: np.ndarray, rc: np.ndarray) -> int:
    """Raw low bits the field needs, escapes aside (sized per distinct row code)."""
    if not tables.lb.any():
        return 0
    codes, counts = np.unique(rc, return_counts=True)
    total = 0
    for u, cnt in zip(codes, counts, strict=True):
        k = np.clip(cc + u, *K_RANGE)
        total += int(cnt) * int(tables.lb[tables.slot_of_k[k - tables.kmin]].sum())
    return total


def _log4(v: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        codes = np.rint(scalemodel.STEPS_PER_OCTAVE * np.log2(v))
    return np.clip(np.nan_to_num(codes, neginf=K_RANGE[0]), *K_RANGE).astype(np.int64)


def _source(arr: np.ndarray, dtype: DType) -> tuple[np.ndarray, bool]:
    """Flat kernel input: bf16 as its uint16 bits, fp32 as is, fp16 widened to fp32."""
    flat = arr.reshape(-1)
    if dtype is DType.BFLOAT16:
        return flat.view(np.uint16), True
    return flat.astype(np.float32, copy=False), False


def _row_codes(src, is_bf16, rows, chans, mean, var) -> np.ndarray | None:
    if rows < 2 or chans < 8:
        return None
    inv = np.where(var > 0, 1.0 / np.where(var > 0, var, 1.0), 0.0)
    e = fk.row_energy(src, is_bf16, rows, chans, mean, inv)
    codes = _log4(np.sqrt(np.where(e > 0, e, 2.0 ** (K_RANGE[0] / 2))))
    codes -= int(np.median(codes))
    return None if np.abs(codes).mean() < 0.5 else codes


class Search:
    """Proportional rate control: the largest step meeting the target, in a few passes."""

    def __init__(self, arr: np.ndarray, dtype: DType, rows: int, chans: int, target, value):
        self.src, self.is_bf16 = _source(arr, dtype)
        self.dtype, self.rows, self.chans = dtype, rows, chans
        self.target, self.value = target, value
        s1, s2 = fk.channel_stats(self.src, self.is_bf16, rows, chans)
        self.mean = s1 / rows
        self.var = np.maximum(s2 / rows - self.mean**2, 0.0)
        self.xx = float(s2.sum())
        rc = _row_codes(self.src, self.is_bf16, rows, chans, self.mean, self.var)
        self.rc = rc if rc is not None else np.zeros(rows, dtype=np.int64)
        self.use_rows = rc is not None
        self.row_w = np.exp2(-self.rc / 2.0)  # 1 / f_r^2 with f_r = 2**(code / 4)
        self.chan_acc = np.zeros(chans)

    def goal(self) -> float:
        return 1.0 - self.value if self.target == "similarity" else self.value

    def first_step(self) -> float:
        if self.target == "max_abs":
            return max(2.0 * self.value, 1e-30)
        rms = math.sqrt(self.xx / max(self.rows * self.chans, 1))
        return max(math.sqrt(12.0) * max(self.goal(), 1e-12) * rms, 1e-30)

    def error(self, step: float) -> tuple[float, bool, np.ndarray, float]:
        """(error in the target's measure, meets, channel means, largest code) at step."""
        mu = np.rint(self.mean / step)
        if self.dtype is DType.FLOAT16:
            return self._error_f16(step, mu)
        dot, xx, yy, ee, emax, rmax = fk.measure(
            self.src,
            self.is_bf16,
            self.rows,
            self.chans,
            step,
            mu,
            self.row_w,
            self.chan_acc,
            self.is_bf16,
        )
        return (*self._judge(dot, xx, yy, ee, emax), mu, rmax)

    def _error_f16(self, step, mu):
        *_, rmax = fk.measure(  # channel statistics and the largest code only
            self.src, False, self.rows, self.chans, step, mu, self.row_w, self.chan_acc, False
        )
        x = self.src.astype(np.float64)
        y = dequantize_f16(self.src, self.rows, self.chans, step, mu).astype(np.float64)
        d = x - y
        return (*self._judge(x @ y, x @ x, y @ y, d @ d, float(np.abs(d).max())), mu, rmax)

    def _judge(self, dot, xx, yy, ee, emax) -> tuple[float, bool]:
        if self.target == "max_abs":
            return emax, emax <= self.value
        if self.target == "rel_l2":
            err = math.sqrt(ee / xx) if xx > 0 else (0.0 if ee == 0 else math.inf)
            return err, err <= self.value
        nx, ny = math.sqrt(xx), math.sqrt(yy)
        if nx == 0.0:
            sim = 1.0 if ny == 0.0 else 0.0
        else:
            sim = (0.0 if ny == 0.0 else dot / (nx * ny)) * (1.0 - math.sqrt(ee) / nx)
        # The margin covers summation-order differences from the numpy metric.
        return 1.0 - sim, sim > self.value + 1e-12

    def run(self) -> tuple[float, np.ndarray, np.ndarray]:
        """(step, channel means, channel accumulators) of the best step found."""
        goal = self.goal()
        step = self.first_step()
        best = None
        lo = hi = None
        for _ in range(_PASSES):
            err, ok, mu, rmax = self.error(step)
            if ok and rmax < 2.0**50:
                if lo is None or step > lo:
                    lo, best = step, (step, mu, self.chan_acc.copy())
                if err >= _CLOSE * goal:
                    return best
            else:
                hi = step if hi is None else min(hi, step)
            ratio = goal / err if err > 0 else 4.0
            step *= min(max(ratio * 0.998, 0.25), 4.0)
            if lo is not None and hi is not None and not lo < step < hi:
                step = math.sqrt(lo * hi)
        if best is not None:
            return best
        step = hi if hi is not None else step
        for _ in range(200):
            step /= 1.5
            err, ok, mu, rmax = self.error(step)
            if ok and rmax < 2.0**50:
                return step, mu, self.chan_acc.copy()
        raise CodecError(
            f"lossy: {self.target} target {self.value} is unreachable for this tensor "
            f"in {self.dtype.numpy.name}"
        )


def dequantize_f16(src, rows, chans, step, mu) -> np.ndarray:
    """float16 output of the fp32 dequantizer path (used for fp16 tensors on both sides)."""
    return _dequant_f32(src, rows, chans, step, mu).astype(np.float16)


def _dequant_f32(src, rows, chans, step, mu) -> np.ndarray:
    out = np.empty(rows * chans, dtype=np.float32)
    inv = 1.0 / step
    magic = 6755399441055744.0  # the kernels' round-half-even, to the bit
    q = ((src.astype(np.float64) * inv + magic) - magic).reshape(rows, chans) - mu[None, :]
    np.copyto(out.reshape(rows, chans), ((q + mu[None, :]) * step).astype(np.float32))
    return out


def encode(arr: np.ndarray, dtype: DType, rows: int, chans: int, target: str, value: float):
    """Fast-mode payload of one non-empty finite tensor, or None when out of fast range."""
    search = Search(arr, dtype, rows, chans, target, value)
    step, mu, acc = search.run()
    cc = _log4(np.sqrt(acc / rows))
    rc = search.rc
    if int(cc.max()) + int(rc.max()) > K_FAST_MAX:
        return None  # codes too wide for the kernels' raw-bit fields: the max mode takes it
    tables = _Tables(cc, rc)
    n = rows * chans
    buf = np.empty(n + 2, dtype=np.uint16)
    cap = _raw_bits(tables, cc, rc) + 64 * (n // 256) + 1024
    enc = tables.encoder()
    while True:
        bits = np.zeros((cap + 31) // 32 + 1, dtype=np.int64)
        start, nbits, status = fk.encode(
            search.src,
            search.is_bf16,
            rows,
            chans,
            step,
            mu,
            cc,
            rc,
            tables.kmin,
            tables.kmax,
            tables.slot_of_k,
            tables.lb,
            tables.m,
            enc,
            buf,
            bits,
        )
        if status == fk.OK:
            break
        cap *= 4
    words = buf[start:]
    nwords_bits = (nbits + 31) // 32
    flags = _ROWS if search.use_rows else 0
    parts = [
        _HEAD.pack(step, scalemodel.FAMILIES.index(FAMILY), flags),
        pack_blob(mu.astype("<i8").tobytes()),
        pack_blob(cc.astype("<i2").tobytes()),
        pack_blob(rc.astype("<i2").tobytes()) if search.use_rows else b"",
        struct.pack("<I", words.size),
        words.astype("<u2").tobytes(),
        struct.pack("<I", nbits),
        bits[:nwords_bits].astype("<u4").tobytes(),
    ]
    return b"".join(parts)


def decode(mv: memoryview, dtype: DType, rows: int, chans: int) -> np.ndarray:
    """Flat decoded array of a fast-mode payload; every length is checked first."""
    if len(mv) < _HEAD.size:
        raise CodecError("lossy fast payload truncated: header missing")
    step, fam, flags = _HEAD.unpack_from(mv, 0)
    if not (math.isfinite(step) and step > 0):
        raise CodecError("lossy payload declares an invalid quantization step")
    if fam != scalemodel.FAMILIES.index(FAMILY) or flags & ~_ROWS:
        raise CodecError("lossy fast payload has an unknown model or flags")
    raw, pos = unpack_blob(mv, _HEAD.size, 8 * chans, "channel means")
    mu = np.frombuffer(raw, dtype="<i8").astype(np.float64)
    if np.abs(mu).max(initial=0) >= 2.0**50:
        raise CodecError("lossy channel means are out of range")
    raw, pos = unpack_blob(mv, pos, 2 * chans, "channel scales")
    cc = np.frombuffer(raw, dtype="<i2").astype(np.int64)
    rc = np.zeros(rows, dtype=np.int64)
    if flags & _ROWS:
        raw, pos = unpack_blob(mv, pos, 2 * rows, "row scales")
        rc = np.frombuffer(raw, dtype="<i2").astype(np.int64)
    if not (
        np.all((K_RANGE[0] <= cc) & (cc <= K_RANGE[1]))
        and np.all(np.abs(rc) <= K_RANGE[1] - K_RANGE[0])
    ):
        raise CodecError("lossy fast payload declares scale codes out of range")
    if int(cc.max()) + int(rc.max()) > K_FAST_MAX:
        raise CodecError("lossy fast payload declares scales beyond the fast mode's range")
    words, pos = _section(mv, pos, 2, rows * chans + 2, "rANS words")
    (nbits,) = _count(mv, pos, "raw bits")
    pos += 4
    if nbits > rows * chans * 2 * fk.ESC_HALF:
        raise CodecError("lossy fast payload declares more raw bits than values can carry")
    nb = (nbits + 31) // 32
    if len(mv) - pos != 4 * nb:
        raise CodecError("lossy fast payload: raw bit section does not match its length")
    bits = np.zeros(nb + 1, dtype=np.int64)
    bits[:nb] = np.frombuffer(mv[pos:], dtype="<u4")
    tables = _Tables(cc, rc)
    slots = tables.decoder()
    n = rows * chans
    bf16 = dtype is DType.BFLOAT16
    out = np.empty(n, dtype=np.uint16 if bf16 else np.float32)
    status = fk.decode(
        np.frombuffer(words, dtype="<u2"),
        bits,
        nbits,
        rows,
        chans,
        step,
        mu,
        cc,
        rc,
        tables.kmin,
        tables.kmax,
        tables.slot_of_k,
        tables.lb,
        tables.m,
        slots,
        out,
        bf16,
    )
    if status != fk.OK:
        raise CodecError("lossy fast entropy-coded stream is corrupt")
    if bf16:
        return out.view(dtype.numpy)
    return out.astype(np.float16) if dtype is DType.FLOAT16 else out


def _count(mv: memoryview, pos: int, what: str) -> tuple[int]:
    if len(mv) - pos < 4:
        raise CodecError(f"lossy fast payload truncated: {what} count missing")
    return struct.unpack_from("<I", mv, pos)


def _section(mv: memoryview, pos: int, item: int, most: int, what: str) -> tuple[bytes, int]:
    (n,) = _count(mv, pos, what)
    pos += 4
    if n > most:
        raise CodecError(f"lossy fast payload declares {n} {what}, more than possible")
    if len(mv) - pos < item * n:
        raise CodecError(f"lossy fast payload truncated: {what} run past the end")
    return bytes(mv[pos : pos + item * n]), pos + item * n
