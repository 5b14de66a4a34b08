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
from dataclasses import dataclass

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


def row_codes(energy: np.ndarray, chans: int) -> np.ndarray | None:
    """Quarter-octave row scale codes (median 0) from per-row normalised energies, or None
    when rows are alike enough that row scales would cost more than they save."""
    if energy.size < 2 or chans < 8:
        return None
    codes = _log4(np.sqrt(np.where(energy > 0, energy, 2.0 ** (K_RANGE[0] / 2))))
    codes -= int(np.median(codes))
    return None if np.abs(codes).mean() < 0.5 else codes


class NumbaBackend:
    """Statistics and measurement passes over a host array, by the compiled kernels."""

    def __init__(self, arr: np.ndarray, dtype: DType, rows: int, chans: int) -> None:
        self.src, self.is_bf16 = _source(arr, dtype)
        self.dtype, self.rows, self.chans = dtype, rows, chans
        self.chan_acc = np.zeros(chans)

    def stats(self) -> tuple[np.ndarray, np.ndarray]:
        return fk.channel_stats(self.src, self.is_bf16, self.rows, self.chans)

    def row_energy(self, mean: np.ndarray, inv_var: np.ndarray) -> np.ndarray:
        return fk.row_energy(self.src, self.is_bf16, self.rows, self.chans, mean, inv_var)

    def measure(self, step: float, mu: np.ndarray, row_w: np.ndarray):
        """(dot, |x|^2, |y|^2, |x-y|^2, max |x-y|, max |code|, channel accumulators)."""
        args = (self.src, self.is_bf16, self.rows, self.chans, step, mu, row_w, self.chan_acc)
        if self.dtype is not DType.FLOAT16:
            return (*fk.measure(*args, self.is_bf16), self.chan_acc)
        *_, rmax = fk.measure(*args, False)  # channel statistics and the largest code only
        x = self.src.astype(np.float64)
        y = dequantize_f16(self.src, self.rows, self.chans, step, mu).astype(np.float64)
        d = x - y
        return x @ y, x @ x, y @ y, d @ d, float(np.abs(d).max()), rmax, self.chan_acc

    def codes(self, step: float, mu: np.ndarray) -> None:
        return None  # the encode kernel quantizes on the fly from the source


class Search:
    """Proportional rate control: the largest step meeting the target, in a few passes."""

    def __init__(self, backend, target: str, value: float) -> None:
        self.backend = backend
        self.dtype, self.rows, self.chans = backend.dtype, backend.rows, backend.chans
        self.target, self.value = target, value
        s1, s2 = backend.stats()
        self.mean = s1 / self.rows
        var = np.maximum(s2 / self.rows - self.mean**2, 0.0)
        self.xx = float(s2.sum())
        inv = np.where(var > 0, 1.0 / np.where(var > 0, var, 1.0), 0.0)
        rc = row_codes(backend.row_energy(self.mean, inv), self.chans)
        self.rc = rc if rc is not None else np.zeros(self.rows, dtype=np.int64)
        self.use_rows = rc is not None
        self.row_w = np.exp2(-self.rc / 2.0)  # 1 / f_r^2 with f_r = 2**(code / 4)

    def goal(self) -> float:
        return 1.0 - self.value if self.target == "similarity" else self.value

    def first_step(self) -> float:
        if self.target == "max_abs":
            return max(2.0 * self.value, 1e-30)
        rms = math.sqrt(self.xx / max(self.rows * self.chans, 1))
        return max(math.sqrt(12.0) * max(self.goal(), 1e-12) * rms, 1e-30)

    def error(self, step: float) -> tuple[float, bool, np.ndarray, float, np.ndarray]:
        """(error in the target's measure, meets, means, largest code, channel sums) at step."""
        mu = np.rint(self.mean / step)
        dot, xx, yy, ee, emax, rmax, acc = self.backend.measure(step, mu, self.row_w)
        return (*self._judge(dot, xx, yy, ee, emax), mu, rmax, acc)

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
            err, ok, mu, rmax, acc = self.error(step)
            if ok and rmax < 2.0**50:
                if lo is None or step > lo:
                    lo, best = step, (step, mu, np.array(acc, copy=True))
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
            err, ok, mu, rmax, acc = self.error(step)
            if ok and rmax < 2.0**50:
                return step, mu, np.array(acc, copy=True)
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
    # code + mean = rint(x / step), exactly (integers below 2**53), as in the kernels
    q = ((src.astype(np.float64) * inv + magic) - magic).reshape(rows, chans)
    np.copyto(out.reshape(rows, chans), (q * step).astype(np.float32))
    return out


def encode(arr: np.ndarray, dtype: DType, rows: int, chans: int, target: str, value: float):
    """Fast-mode payload of one non-empty finite host tensor, or None when out of range."""
    return encode_with(NumbaBackend(arr, dtype, rows, chans), target, value)


def encode_with(backend, target: str, value: float) -> bytes | None:
    """Fast-mode payload from a measurement backend (host kernels or a torch device)."""
    search = Search(backend, target, value)
    rows, chans = search.rows, search.chans
    step, mu, acc = search.run()
    cc = _log4(np.sqrt(acc / rows))
    rc = search.rc
    if int(cc.max()) + int(rc.max()) > K_FAST_MAX:
        return None  # codes too wide for the kernels' raw-bit fields: the max mode takes it
    codes = backend.codes(step, mu)  # None: quantize on the fly from the host source
    src, is_bf16 = (
        (backend.src, backend.is_bf16) if codes is None else (np.zeros(1, np.float32), False)
    )
    from_codes = codes is not None
    codes = codes if from_codes else np.zeros(1, np.int64)
    tables = _Tables(cc, rc)
    n = rows * chans
    buf = np.empty(n + 2, dtype=np.uint16)
    cap = _raw_bits(tables, cc, rc) + 64 * (n // 256) + 1024
    enc = tables.encoder()
    while True:
        bits = np.zeros((cap + 31) // 32 + 1, dtype=np.int64)
        start, nbits, status = fk.encode(
            src, is_bf16, codes, from_codes, rows, chans, step, mu, cc, rc, tables.kmin,
            tables.kmax, tables.slot_of_k, tables.lb, tables.m, enc, buf, bits,
        )  # fmt: skip
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


@dataclass(frozen=True)
class Parsed:
    """A fast-mode payload's header, side information and streams, all checked."""

    step: float
    mu: np.ndarray
    cc: np.ndarray
    rc: np.ndarray
    words: np.ndarray
    bits: np.ndarray
    nbits: int


def parse(mv: memoryview, rows: int, chans: int) -> Parsed:
    """Read a fast-mode payload; every count and length is checked against the shape."""
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
    return Parsed(step, mu, cc, rc, np.frombuffer(words, dtype="<u2"), bits, nbits)


def _run_decoder(p: Parsed, rows: int, chans: int, out: np.ndarray, mode: int) -> None:
    tables = _Tables(p.cc, p.rc)
    status = fk.decode(
        p.words, p.bits, p.nbits, rows, chans, p.step, p.mu, p.cc, p.rc, tables.kmin,
        tables.kmax, tables.slot_of_k, tables.lb, tables.m, tables.decoder(), out, mode,
    )  # fmt: skip
    if status != fk.OK:
        raise CodecError("lossy fast entropy-coded stream is corrupt")


def decode(mv: memoryview, dtype: DType, rows: int, chans: int) -> np.ndarray:
    """Flat decoded host array of a fast-mode payload."""
    p = parse(mv, rows, chans)
    bf16 = dtype is DType.BFLOAT16
    out = np.empty(rows * chans, dtype=np.uint16 if bf16 else np.float32)
    _run_decoder(p, rows, chans, out, fk.OUT_BF16 if bf16 else fk.OUT_F32)
    if bf16:
        return out.view(dtype.numpy)
    return out.astype(np.float16) if dtype is DType.FLOAT16 else out


def decode_codes(mv: memoryview, rows: int, chans: int) -> tuple[np.ndarray, Parsed]:
    """The integer residual codes (int64, flat) and the parsed payload, for a device-side
    dequantizer: x = float32((code + mu[channel]) * step), then rounded to the dtype."""
    p = parse(mv, rows, chans)
    out = np.empty(rows * chans, dtype=np.int64)
    _run_decoder(p, rows, chans, out, fk.OUT_CODES)
    return out, p


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
