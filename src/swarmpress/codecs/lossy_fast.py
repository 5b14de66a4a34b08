"""The `lossy` fast mode: one global step by rate control on a sample, rANS lanes in chunks.

Same quantizer family as the max mode (per-channel integer means, one uniform step chosen
so the decoded tensor meets the target); tensors whose rows share a few directions first
lose them (lossy_lowrank.py: a cheap held-out check decides, on every tensor). The step comes from
a few passes over an evenly spaced sample of rows, then one full pass quantizes every value
and checks the target on exactly what the decoder will produce (another pass only when the
check fails or lands far inside the target). Each residual's model is the Gaussian bucket
of its channel scale plus its row scale (small static tables, rans.py); bucket scales above
MAX_TABLE_SCALE send their low bits raw. The values are coded in fixed chunks of
2**chunk_log, each by four interleaved rANS states (fastkernels.py), so chunks code and
decode on any number of threads and the frame never depends on how many.

Payload: `step f64 | family u8 | flags u8 | chunk_log u8 | lanes u8 | means | channel
codes | [row codes] | per chunk (words u32, bits u32) | every chunk's rANS words (u16) |
every chunk's raw-bit words (u32)`, with `[low-rank part]` before the chunk table when flag
bit 1 is set (docs/frame-format.md).
"""

from __future__ import annotations

import functools
import math
import os
import struct
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from swarmpress.codecs import fastkernels as fk
from swarmpress.codecs import lossy_lowrank, rans, scalemodel
from swarmpress.codecs.errors import CodecError
from swarmpress.codecs.fieldcode import K_RANGE, pack_blob, unpack_blob
from swarmpress.codecs.tensors import DType

_HEAD = struct.Struct("<dBBBB")
_ROWS = 0x01
_LOWRANK = 0x02
_NO_PROJ = np.zeros(0, dtype=np.float32)
FAMILY = "gaussian"
MAX_TABLE_SCALE = 4.0  # larger bucket scales keep their low bits raw (near-uniform there)
TAIL = 8.0  # modelled range |hi| <= TAIL * scale + 1; beyond: escape
RAW_BITS_MAX = 32  # a raw field must fit the kernels' 64-bit accumulator beside 31 others
CHUNK_LOG = 15  # values per coded chunk: 32768 (24 bytes of overhead each)
CHUNK_LOG_RANGE = (10, 24)
LIGHT_PASS_VALUES = 1 << 22  # statistics passes use the threads from this many values on
GROUPS = 16  # fixed partial-sum groups of rows: sums never depend on the thread count
SAMPLE_VALUES = 1 << 15  # rows sampled for the step search
ENERGY_STRIDE_FROM = 64  # row energies look at every 4th channel from this many on
_SAMPLE_PASSES = 4
_FULL_PASSES = 6
_CLOSE = 0.97  # accept a verified step whose error is within 3 % of the target's
_AIM = 0.985  # the sample search aims this far inside the target (one full pass, mostly)


def low_bits(k: int) -> int:
    """Raw low bits of bucket k: the table then models a scale of at most MAX_TABLE_SCALE."""
    s = 2.0 ** (k / scalemodel.STEPS_PER_OCTAVE)
    return math.floor(math.log2(s / MAX_TABLE_SCALE)) + 1 if s > MAX_TABLE_SCALE else 0


# the widest bucket whose raw low bits still fit RAW_BITS_MAX (wider tensors go to max mode)
K_FAST_MAX = max(k for k in range(4 * 64) if low_bits(k) <= RAW_BITS_MAX)


@functools.lru_cache(maxsize=1024)
def bucket_table(k: int) -> tuple[int, int, np.ndarray, np.ndarray, bytes]:
    """(half width m, low bits, encoder entries, compact slot table, shape key) of bucket k;
    a pure function. Buckets with the same shape key share their tables."""
    lb = low_bits(k)
    s = 2.0 ** (k / scalemodel.STEPS_PER_OCTAVE) / (1 << lb)
    m = math.ceil(TAIL * s) + 1
    edges = (np.arange(-m, m + 2, dtype=np.float64) - 0.5) / s
    p = np.append(np.maximum(np.diff(scalemodel._cdf(FAMILY, edges)), 0.0), 0.0)
    freq = rans.quantize(p)
    slots = rans.dec_entries32(freq)
    # the decoder wants the value, not the symbol: hi + 64, or 127 for the escape symbol
    sym = slots & np.uint32(0x7F)
    field = np.where(sym == 2 * m + 1, fk.ESCAPE_FIELD, sym.astype(np.int64) - m + fk.FIELD_BIAS)
    slots = (slots & ~np.uint32(0x7F)) | field.astype(np.uint32)
    key = m.to_bytes(2, "little") + freq.astype("<u2").tobytes()
    return m, lb, rans.enc_entries(freq), slots, key


@functools.lru_cache(maxsize=64)
def _stacked(keys: tuple[bytes, ...], ks: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(encoder entries, slot tables) of the distinct shapes keys (from buckets ks), cached:
    consecutive tensors of one boundary use the same few tables."""
    parts = [bucket_table(k) for k in ks]
    width = max(p[2].shape[0] for p in parts)
    enc = np.zeros((len(parts), width, 5), dtype=np.int64)
    for i, p in enumerate(parts):
        enc[i, : p[2].shape[0]] = p[2]
    enc[:, :, 0] <<= rans.ENC_SHIFT  # the renormalisation bound replaces the frequency
    enc = enc.reshape(-1, 5)
    slots = np.concatenate([p[3] for p in parts])
    enc.flags.writeable = False
    slots.flags.writeable = False
    return enc, slots


def distinct_row_codes(rc: np.ndarray) -> np.ndarray:
    """Sorted distinct row codes; a zero-stride view (no row codes) is not expanded."""
    return rc[:1].copy() if rc.strides == (0,) else np.unique(rc)


class _Tables:
    """The tables of the buckets a field uses, for the kernels.

    Buckets that differ only in their raw low bits share one probability table (above
    MAX_TABLE_SCALE a bucket's table repeats every octave), so a field needs about ten
    distinct tables: small enough to stay in cache while the coder jumps between them.
    """

    def __init__(self, cc: np.ndarray, rc: np.ndarray) -> None:
        rcodes = distinct_row_codes(rc)
        used = np.unique(np.clip(np.unique(cc)[:, None] + rcodes[None, :], *K_RANGE))
        self.kmin, self.kmax = int(used[0]), int(used[-1])
        self.slot_of_k = np.zeros(self.kmax - self.kmin + 1, dtype=np.int64)
        self.slot_of_k[used - self.kmin] = np.arange(used.size)
        parts = [bucket_table(int(k)) for k in used]
        self.m = np.array([p[0] for p in parts], dtype=np.int64)
        self.lb = np.array([p[1] for p in parts], dtype=np.int64)
        shape_of: dict[bytes, int] = {}
        first: list[int] = []
        shape = []
        for k, p in zip(used.tolist(), parts, strict=True):
            if p[4] not in shape_of:
                shape_of[p[4]] = len(shape_of)
                first.append(k)
            shape.append(shape_of[p[4]])
        self.keys, self.first = tuple(shape_of), tuple(first)
        self.width = max(bucket_table(k)[2].shape[0] for k in first)
        self.shape = np.array(shape, dtype=np.int64)
        self.ebase = self.shape * self.width  # first encoder entry of each table
        self.sbase = self.shape * rans.TOTAL  # first slot of each table
        self.info = self.sbase | (self.lb << 32)  # what the decoder needs per table
        self.einfo = self.ebase | (self.m << 24) | (self.lb << 40)  # and the encoder
        # one row of table numbers per distinct row code; rows point at theirs (without row
        # codes every row points at row 0, by a zero-stride view: nothing per row is stored)
        codes = rcodes
        if codes.size == 1:
            self.rc_idx = np.broadcast_to(np.zeros(1, dtype=np.int64), rc.shape)
        else:
            self.rc_idx = np.searchsorted(codes, rc).astype(np.int64)
        k = np.clip(cc[None, :] + codes[:, None], *K_RANGE)
        self.row_tab = self.slot_of_k[k - self.kmin].astype(np.uint8)

    def encoder(self) -> np.ndarray:
        return _stacked(self.keys, self.first)[0]

    def decoder(self) -> np.ndarray:
        return _stacked(self.keys, self.first)[1]


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


ROW_SCALES_FROM = 8  # channels a row needs before it gets a scale code of its own


def row_codes(energy: np.ndarray, chans: int) -> np.ndarray | None:
    """Quarter-octave row scale codes (median 0) from per-row normalised energies, or None
    when rows are alike enough that row scales would cost more than they save."""
    if energy.size < 2 or chans < ROW_SCALES_FROM:
        return None
    codes = _log4(np.sqrt(np.where(energy > 0, energy, 2.0 ** (K_RANGE[0] / 2))))
    codes -= int(np.median(codes))
    return None if np.abs(codes).mean() < 0.5 else codes


# ---------------------------------------------------------------------------- threads
def usable_threads(threads: int) -> int:
    """Threads actually used: never more than the machine's cores (frames do not change)."""
    return max(1, min(int(threads), os.cpu_count() or 1))


@functools.lru_cache(maxsize=4)
def _pool(threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix="swarmpress-lossy")


def run_all(fn: Callable, items: Iterable, threads: int) -> list:
    """fn over items, in order; on a pool of threads when asked (the kernels drop the GIL)."""
    items = list(items)
    threads = usable_threads(threads)
    if threads <= 1 or len(items) <= 1:
        return [fn(it) for it in items]
    # the calling thread takes the first item itself: one hand-off fewer per pass
    futures = [_pool(threads - 1).submit(fn, it) for it in items[1:]]
    first = fn(items[0])
    return [first, *(f.result() for f in futures)]


_scratch = threading.local()


SCRATCH_KEEP = 64 << 20  # bytes of work arrays a thread keeps between calls, per name


def scratch(name: str, size: int, dtype) -> np.ndarray:
    """A per-thread work array of at least size elements, reused across calls: fresh
    multi-page arrays cost more in page faults than the coding itself. Arrays above
    SCRATCH_KEEP bytes are not kept. The caller must be done with it before the same
    thread asks for the same name again."""
    arr = getattr(_scratch, name, None)
    if arr is None or arr.size < size or arr.dtype != dtype:
        arr = np.empty(size, dtype=dtype)
        if arr.nbytes <= SCRATCH_KEEP:
            setattr(_scratch, name, arr)
    return arr[:size]


def map_items(fn: Callable[[int], object], count: int, threads: int) -> list:
    """[fn(0), ..., fn(count - 1)], in order; with threads, each thread takes one contiguous
    range (one pool task per thread: the items are too small to pay a task each)."""
    if threads <= 1 or count <= 1:
        return [fn(i) for i in range(count)]
    parts = run_all(lambda r: [fn(i) for i in range(*r)], _ranges(count, threads), threads)
    return [x for part in parts for x in part]


def _groups(rows: int) -> list[tuple[int, int]]:
    """Fixed row ranges for partial sums (a function of the row count only)."""
    g = min(GROUPS, max(1, rows // 64))
    edges = [rows * i // g for i in range(g + 1)]
    return [(edges[i], edges[i + 1]) for i in range(g)]


class NonFinite(CodecError):
    """The tensor holds NaN or infinity (found by the statistics pass, at no extra cost)."""


class OutOfRange(CodecError):
    """Codes or channel means beyond exact float64 arithmetic at every step that meets the
    target (a target far finer than the tensor's dynamic range)."""


class NumbaBackend:
    """Statistics and measurement passes over a host array, by the compiled kernels."""

    def __init__(self, arr: np.ndarray, dtype: DType, rows: int, chans: int, threads: int = 1,
                 proj: np.ndarray | None = None):  # fmt: skip
        self.src, self.is_bf16 = _source(arr, dtype)
        self.proj = _NO_PROJ if proj is None else proj  # the low-rank projection, flat
        self.dtype, self.rows, self.chans, self.threads = dtype, rows, chans, threads
        self.out_bf16 = self.is_bf16
        self.groups = _groups(rows)
        self.q: np.ndarray | None = None
        self.q_step: float | None = None
        ns = min(rows, max(1, -(-SAMPLE_VALUES // max(chans, 1))))
        self.sample_rows = (
            None if 2 * ns >= rows else np.unique(np.linspace(0, rows - 1, ns).astype(np.int64))
        )

    def stats(self) -> tuple[np.ndarray, np.ndarray, float]:
        """(per-channel sum, sum of squares) of what is quantized, and the tensor's |x|^2."""

        def part(i):
            s1, s2 = np.zeros(self.chans), np.zeros(self.chans)
            r0, r1 = self.groups[i]
            xx = fk.channel_stats(self.src, self.is_bf16, r0, r1, self.chans, s1, s2, self.proj)
            return s1, s2, xx

        parts = map_items(part, len(self.groups), self._light_threads())
        return sum(p[0] for p in parts), sum(p[1] for p in parts), sum(p[2] for p in parts)

    def _light_threads(self) -> int:
        """Threads for the two statistics passes: below about 4M values a pass takes less
        than handing it to the pool and back costs, so it stays on the calling thread."""
        return self.threads if self.rows * self.chans >= LIGHT_PASS_VALUES else 1

    def row_energy(self, mean: np.ndarray, inv_var: np.ndarray) -> np.ndarray:
        out = np.zeros(self.rows)
        stride = 4 if self.chans >= ENERGY_STRIDE_FROM else 1

        def part(i):
            r0, r1 = self.groups[i]
            fk.row_energy(self.src, self.is_bf16, r0, r1, self.chans, mean, inv_var,
                          stride, out, self.proj)  # fmt: skip

        map_items(part, len(self.groups), self._light_threads())
        return out

    def sample(self, step: float, mu: np.ndarray):
        """(dot, |x|^2, |y|^2, |x-y|^2, max |x-y|, max |code|, share) on the row sample;
        None when the sample would be most of the tensor."""
        if self.sample_rows is None:
            return None
        res = fk.measure_rows(self.src, self.is_bf16, self.sample_rows, self.chans, step, mu,
                              self.out_bf16, self.proj)  # fmt: skip
        return (*res, self.sample_rows.size / self.rows)

    def measure(self, step: float, mu: np.ndarray, row_w: np.ndarray):
        """Quantize everything at step (codes kept for the coder) and verify it:
        (dot, |x|^2, |y|^2, |x-y|^2, max |x-y|, max |code|, channel accumulators)."""
        n = self.rows * self.chans
        for dtype in (np.int16, np.int64):
            if self.q is None or self.q.dtype != dtype:
                self.q = scratch("codes16", n, dtype) if dtype is np.int16 else np.empty(n, dtype)
            acc = np.zeros((len(self.groups), self.chans))

            def part(i, q=self.q, acc=acc):
                r0, r1 = self.groups[i]
                return fk.quantize_block(self.src, self.is_bf16, r0, r1, self.chans, step, mu,
                                         row_w, self.out_bf16, q, acc[i], self.proj)  # fmt: skip

            res = map_items(part, len(self.groups), self.threads)
            vmax = max(r[4] for r in res)
            if vmax <= fk.CODE_LIMIT or dtype is np.int64:
                break
        self.q_step = step
        if self.dtype is DType.FLOAT16:
            dot, yy, ee, emax = self._f16_sums(step, mu)
        else:
            dot = sum(r[0] for r in res)
            yy = sum(r[1] for r in res)
            ee = sum(r[2] for r in res)
            emax = max(r[3] for r in res)
        return dot, None, yy, ee, emax, vmax, acc.sum(axis=0)

    def _f16_sums(self, step: float, mu: np.ndarray) -> tuple[float, float, float, float]:
        """Verification sums on the float16 values the decoder will produce (numpy; fp16
        tensors are rare on the wire), a group of rows at a time to bound memory."""
        dot = yy = ee = emax = 0.0
        for r0, r1 in self.groups:
            sl = slice(r0 * self.chans, r1 * self.chans)
            q = self.q[sl].astype(np.float64).reshape(r1 - r0, self.chans)
            y = (q + mu) * step
            if self.proj.size:  # as the decoder: float32(... + projection), then float16
                y += self.proj[sl].astype(np.float64).reshape(r1 - r0, self.chans)
            y = y.astype(np.float32).astype(np.float16).astype(np.float64)
            x = self.src[sl].astype(np.float64).reshape(r1 - r0, self.chans)
            d = x - y
            dot += float(np.vdot(x, y))
            yy += float(np.vdot(y, y))
            ee += float(np.vdot(d, d))
            emax = max(emax, float(np.abs(d).max(initial=0.0)))
        return dot, yy, ee, emax

    def codes(self, step: float, mu: np.ndarray) -> np.ndarray:
        if self.q is None or self.q_step != step:
            raise CodecError("internal: codes requested for a step that was not measured")
        return self.q


class Search:
    """Rate control: the largest step meeting the target, mostly on a sample of rows."""

    def __init__(self, backend, target: str, value: float) -> None:
        self.backend = backend
        self.dtype, self.rows, self.chans = backend.dtype, backend.rows, backend.chans
        self.target, self.value = target, value
        s1, s2, xx = backend.stats()
        if not (np.isfinite(s1).all() and np.isfinite(s2).all() and math.isfinite(xx)):
            raise NonFinite("lossy: the tensor holds NaN or infinite values")
        self.mean = s1 / self.rows
        var = np.maximum(s2 / self.rows - self.mean**2, 0.0)
        self.xx = float(xx)
        inv = np.where(var > 0, 1.0 / np.where(var > 0, var, 1.0), 0.0)
        rc = None
        if self.rows >= 2 and self.chans >= ROW_SCALES_FROM:
            rc = row_codes(backend.row_energy(self.mean, inv), self.chans)
        self.use_rows = rc is not None
        if rc is None:  # zero-stride views: nothing per row is stored when rows share a scale
            self.rc = np.broadcast_to(np.zeros(1, dtype=np.int64), (self.rows,))
            self.row_w = np.broadcast_to(np.ones(1), (self.rows,))
        else:
            self.rc = rc
            self.row_w = np.exp2(-rc / 2.0)  # 1 / f_r^2 with f_r = 2**(code / 4)

    def goal(self) -> float:
        return 1.0 - self.value if self.target == "similarity" else self.value

    def first_step(self) -> float:
        if self.target == "max_abs":
            return max(2.0 * self.value, 1e-30)
        rms = math.sqrt(self.xx / max(self.rows * self.chans, 1))
        return max(math.sqrt(12.0) * max(self.goal(), 1e-12) * rms, 1e-30)

    def _judge(self, dot, xx, yy, ee, emax) -> tuple[float, bool]:
        if self.target == "max_abs":
            return emax, emax <= self.value
        if self.target == "rel_l2":
            err = math.sqrt(ee / xx) if xx > 0 else (0.0 if ee == 0 else math.inf)
            return err, err <= self.value
        nx, ny = math.sqrt(xx), math.sqrt(max(yy, 0.0))
        if nx == 0.0:
            sim = 1.0 if ny == 0.0 else 0.0
        else:
            sim = (0.0 if ny == 0.0 else dot / (nx * ny)) * (1.0 - math.sqrt(ee) / nx)
        # The margin covers summation-order differences from the numpy metric.
        return 1.0 - sim, sim > self.value + 1e-12

    def _sampled_step(self, step: float) -> float:
        """A step whose whole-tensor error, predicted from the row sample, is near the aim.

        The error grows like step**p (p near 1 for similarity and rel_l2, less where small
        channels round to zero): each pass refits p from the last two and solves for the aim.
        """
        sample = getattr(self.backend, "sample", None)
        if sample is None or self.target == "max_abs":
            return step
        aim = _AIM * self.goal()
        last = None
        for _ in range(_SAMPLE_PASSES):
            res = sample(step, np.rint(self.mean / step))
            if res is None:
                return step
            dot, xx, _yy, ee, _emax, vmax, share = res
            if vmax >= 2.0**50:
                return step
            # scale the sample's error to the whole tensor; |x|^2 is known exactly
            ee_t = ee / share
            xe_t = (xx - dot) / share
            err, _ = self._judge(self.xx - xe_t, self.xx, self.xx - 2 * xe_t + ee_t, ee_t, 0.0)
            if err <= 0:
                step *= 4.0
                continue
            if 0.99 <= aim / err <= 1.005:
                return step
            p = 1.0
            if last is not None and last[0] != step and last[1] > 0:
                p = math.log(err / last[1]) / math.log(step / last[0])
                p = min(max(p, 0.3), 2.0)
            last = (step, err)
            step *= min(max((aim / err) ** (1.0 / p), 0.25), 4.0)
        return step

    def error(self, step: float):
        """(error in the target's measure, meets, means, largest code, channel sums) at step."""
        mu = np.rint(self.mean / step)
        if float(np.abs(mu).max(initial=0)) >= 2.0**50:
            raise OutOfRange("lossy: channel means beyond exact arithmetic at this step")
        dot, xx, yy, ee, emax, rmax, acc = self.backend.measure(step, mu, self.row_w)
        if rmax >= 2.0**50:  # a smaller step would only make the codes wider
            raise OutOfRange("lossy: codes beyond exact arithmetic at this step")
        xx = self.xx if xx is None else xx
        return (*self._judge(dot, xx, yy, ee, emax), mu, rmax, acc)

    def run(self) -> tuple[float, np.ndarray, np.ndarray]:
        """(step, channel means, channel accumulators) of the best verified step."""
        goal = self.goal()
        step = self._sampled_step(self.first_step())
        best = None
        lo = hi = None
        for _ in range(_FULL_PASSES):
            err, ok, mu, _rmax, acc = self.error(step)
            if ok:
                if lo is None or step > lo:
                    lo, best = step, (step, mu, np.array(acc, copy=True))
                if err >= _CLOSE * goal:
                    break
            else:
                hi = step if hi is None else min(hi, step)
            ratio = goal / err if err > 0 else 4.0
            step *= min(max(ratio * 0.995, 0.25), 4.0)
            if lo is not None and hi is not None and not lo < step < hi:
                step = math.sqrt(lo * hi)
        if best is None:
            step = hi if hi is not None else step
            for _ in range(200):
                step /= 1.5
                _err, ok, mu, _rmax, acc = self.error(step)
                if ok:
                    best = (step, mu, np.array(acc, copy=True))
                    break
            else:
                raise CodecError(
                    f"lossy: {self.target} target {self.value} is unreachable for this tensor "
                    f"in {self.dtype.numpy.name}"
                )
        kept = getattr(self.backend, "q_step", best[0])
        if kept != best[0]:
            self.error(best[0])  # the backend keeps codes: they must be the chosen step's
        return best


def encode(arr: np.ndarray, dtype: DType, rows: int, chans: int, target: str, value: float,
           threads: int = 1) -> bytes | None:  # fmt: skip
    """Fast-mode payload of one non-empty finite host tensor, or None when out of range."""
    lowrank = lossy_lowrank.plan(arr.reshape(rows, chans), target, value)
    proj = None if lowrank is None else lowrank.proj
    backend = NumbaBackend(arr, dtype, rows, chans, threads, proj)
    return encode_with(backend, target, value, threads, lowrank)


def encode_with(backend, target: str, value: float, threads: int = 1,
                lowrank: lossy_lowrank.LowRank | None = None) -> bytes | None:  # fmt: skip
    """Fast-mode payload from a measurement backend (host kernels or a torch device); with
    a low-rank part, the backend quantizes what its projection leaves."""
    search = Search(backend, target, value)
    rows, chans = search.rows, search.chans
    try:
        step, mu, acc = search.run()
    except OutOfRange:
        return None  # the max mode takes it (and names the problem if it cannot either)
    cc = _log4(np.sqrt(acc / rows))
    rc = search.rc
    if int(cc.max()) + int(distinct_row_codes(rc).max()) > K_FAST_MAX:
        return None  # codes too wide for the kernels' raw-bit fields: the max mode takes it
    q = backend.codes(step, mu)
    tables = _Tables(cc, rc)
    n = rows * chans
    size = 1 << CHUNK_LOG
    nchunks = chunk_bounds_count(n, CHUNK_LOG)
    enc = tables.encoder()
    table = np.zeros((nchunks, 2), dtype=np.int64)
    # raw bits a chunk needs besides escapes, to size the output (escapes grow it on demand)
    per_code = tables.lb[tables.row_tab].sum(axis=1)  # raw bits of a row, per row code
    raw = int(per_code @ np.bincount(tables.rc_idx, minlength=per_code.size))
    raw_words = raw // 32 + 64 * nchunks + 1024

    def code(rng):
        c0, c1 = rng
        span = min(size, n)
        buf = scratch("enc_words", span + 2 * fk.LANES + 1, np.uint16)
        tt = scratch("tables", span, np.uint8)
        bits = scratch("enc_bits", 2 * fk.ESC_HALF * span // 32 + 2, np.uint32)  # worst case
        out_w = scratch("out_words", min(n, (c1 - c0) * size) + (c1 - c0) * 9, np.uint16)
        cap = raw_words
        while True:
            out_b = scratch("out_bits", cap, np.uint32)
            nw, nb = fk.encode_range(
                q, c0, c1, n, size, chans, tables.row_tab, tables.rc_idx, tables.einfo, enc, tt,
                buf, bits, out_w, out_b, table,
            )  # fmt: skip
            if nw >= 0:
                return out_w[:nw].tobytes(), out_b[:nb].tobytes()
            cap *= 4

    coded = run_all(code, _ranges(nchunks, threads), threads)
    flags = (_ROWS if search.use_rows else 0) | (_LOWRANK if lowrank is not None else 0)
    parts = [
        _HEAD.pack(step, scalemodel.FAMILIES.index(FAMILY), flags, CHUNK_LOG, fk.LANES),
        pack_blob(mu.astype("<i8").tobytes()),
        pack_blob(cc.astype("<i2").tobytes()),
        pack_blob(rc.astype("<i2").tobytes()) if search.use_rows else b"",
        lossy_lowrank.pack(lowrank) if lowrank is not None else b"",
        table.astype("<u4").tobytes(),
        *(w for w, _ in coded),
        *(b for _, b in coded),
    ]
    return b"".join(parts)


@dataclass(frozen=True)
class Parsed:
    """A fast-mode payload's header, side information and chunk streams, all checked."""

    step: float
    mu: np.ndarray
    cc: np.ndarray
    rc: np.ndarray
    chunk_log: int
    streams: np.ndarray  # every chunk's words then raw-bit words, as aligned uint16
    woff: np.ndarray  # per chunk: first rANS word in streams
    nwords: np.ndarray
    boff: np.ndarray  # per chunk: first raw-bit word (as uint16 pairs) in streams
    nbits: np.ndarray
    proj: np.ndarray  # the low-rank projection (float32, flat), or empty


def parse(mv: memoryview, rows: int, chans: int) -> Parsed:
    """Read a fast-mode payload; every count and length is checked before anything is sized
    by the declared shape."""
    if len(mv) < _HEAD.size:
        raise CodecError("lossy fast payload truncated: header missing")
    step, fam, flags, chunk_log, lanes = _HEAD.unpack_from(mv, 0)
    if not (math.isfinite(step) and step > 0):
        raise CodecError("lossy payload declares an invalid quantization step")
    if fam != scalemodel.FAMILIES.index(FAMILY) or flags & ~(_ROWS | _LOWRANK):
        raise CodecError("lossy fast payload has an unknown model or flags")
    if lanes != fk.LANES or not CHUNK_LOG_RANGE[0] <= chunk_log <= CHUNK_LOG_RANGE[1]:
        raise CodecError(f"lossy fast payload declares {lanes} lanes, chunks of 2**{chunk_log}")
    n = rows * chans
    bounds = chunk_bounds_count(n, chunk_log)
    # Every chunk costs at least 8 table bytes and 16 state bytes: the payload must hold them
    # before the side information (sized by the shape) is even unpacked.
    if len(mv) - _HEAD.size < 24 * bounds:
        raise CodecError(
            f"lossy fast payload of {len(mv)} bytes cannot hold {bounds} chunks of a "
            f"{rows}x{chans} tensor"
        )
    raw, pos = unpack_blob(mv, _HEAD.size, 8 * chans, "channel means")
    mu = np.frombuffer(raw, dtype="<i8").astype(np.float64)
    if np.abs(mu).max(initial=0) >= 2.0**50:
        raise CodecError("lossy channel means are out of range")
    raw, pos = unpack_blob(mv, pos, 2 * chans, "channel scales")
    cc = np.frombuffer(raw, dtype="<i2").astype(np.int64)
    rc = np.broadcast_to(np.zeros(1, dtype=np.int64), (rows,))  # no per-row storage
    if flags & _ROWS:
        raw, pos = unpack_blob(mv, pos, 2 * rows, "row scales")
        rc = np.frombuffer(raw, dtype="<i2").astype(np.int64)
    rcodes = distinct_row_codes(rc)
    if not (
        np.all((K_RANGE[0] <= cc) & (cc <= K_RANGE[1]))
        and np.all(np.abs(rcodes) <= K_RANGE[1] - K_RANGE[0])
    ):
        raise CodecError("lossy fast payload declares scale codes out of range")
    if int(cc.max()) + int(rcodes.max()) > K_FAST_MAX:
        raise CodecError("lossy fast payload declares scales beyond the fast mode's range")
    proj = _NO_PROJ
    if flags & _LOWRANK:
        if rows < lossy_lowrank.MIN_ROWS or chans < lossy_lowrank.MIN_CHANS:
            raise CodecError(f"lossy fast payload has a low-rank part for a {rows}x{chans} tensor")
        lowrank, pos = lossy_lowrank.parse(mv, pos, rows, chans)
        proj = lowrank.proj
    if len(mv) - pos < 8 * bounds:
        raise CodecError("lossy fast payload truncated: chunk table runs past the end")
    table = np.frombuffer(mv[pos : pos + 8 * bounds], dtype="<u4").reshape(-1, 2).astype(np.int64)
    pos += 8 * bounds
    size = 1 << chunk_log
    if np.any(table[:, 0] < 2 * fk.LANES) or np.any(table[:, 0] > size + 2 * fk.LANES):
        raise CodecError("lossy fast payload declares an impossible rANS word count")
    if np.any(table[:, 1] > size * 2 * fk.ESC_HALF):
        raise CodecError("lossy fast payload declares more raw bits than values can carry")
    need = int((2 * table[:, 0] + 4 * ((table[:, 1] + 31) // 32)).sum())
    if len(mv) - pos != need:
        raise CodecError(
            f"lossy fast payload: chunk streams take {len(mv) - pos} bytes, the table says {need}"
        )
    streams = np.empty(need // 2, dtype=np.uint16)  # an aligned copy the kernels can index
    streams.view(np.uint8)[:] = np.frombuffer(mv, dtype=np.uint8, count=need, offset=pos)
    if streams.dtype.byteorder == ">":  # pragma: no cover - big-endian hosts
        streams.byteswap(inplace=True)
    woff = np.concatenate([[0], np.cumsum(table[:, 0])[:-1]]).astype(np.int64)
    bsize = 2 * ((table[:, 1] + 31) // 32)  # raw-bit words, in uint16 units
    boff = int(table[:, 0].sum()) + np.concatenate([[0], np.cumsum(bsize)[:-1]]).astype(np.int64)
    return Parsed(step, mu, cc, rc, chunk_log, streams, woff, table[:, 0].copy(), boff,
                  table[:, 1].copy(), proj)  # fmt: skip


def chunk_bounds_count(n: int, chunk_log: int) -> int:
    """Number of chunks of 2**chunk_log values in n values."""
    return -(-n // (1 << chunk_log))


def _ranges(count: int, threads: int) -> list[tuple[int, int]]:
    """Contiguous ranges of chunk indices, one per thread (results never depend on them)."""
    t = max(1, min(usable_threads(threads), count))
    edges = [count * i // t for i in range(t + 1)]
    return [(edges[i], edges[i + 1]) for i in range(t)]


def _run_decoder(p: Parsed, rows: int, chans: int, out: np.ndarray, mode: int,
                 threads: int = 1) -> None:  # fmt: skip
    tables = _Tables(p.cc, p.rc)
    slots = tables.decoder()
    n = rows * chans
    size = 1 << p.chunk_log

    def run(rng):
        tt = scratch("tables", min(size, n), np.uint8)
        codes = scratch("codes", min(size, n), np.int64)
        return fk.decode_range(
            p.streams, p.woff, p.nwords, p.boff, p.nbits, rng[0], rng[1], n, size, chans,
            tables.row_tab, tables.rc_idx, tables.info, slots, p.step, p.mu, out, mode,
            tt, codes, p.proj,
        )  # fmt: skip

    bad = [c for c in run_all(run, _ranges(len(p.woff), threads), threads) if c >= 0]
    if bad:
        raise CodecError(f"lossy fast entropy-coded stream is corrupt (chunk {bad[0]})")


def decode(mv: memoryview, dtype: DType, rows: int, chans: int, threads: int = 1) -> np.ndarray:
    """Flat decoded host array of a fast-mode payload."""
    p = parse(mv, rows, chans)
    bf16 = dtype is DType.BFLOAT16
    out = np.empty(rows * chans, dtype=np.uint16 if bf16 else np.float32)
    _run_decoder(p, rows, chans, out, fk.OUT_BF16 if bf16 else fk.OUT_F32, threads)
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
