"""The `lossy` fast mode: one global step by rate control on a sample, rANS lanes in chunks.

Same quantizer family as the max mode (per-channel integer means, one uniform step chosen
so the decoded tensor meets the target); tensors whose rows share a few directions first
lose them (lowrank.py: a cheap held-out check decides, on every tensor). The step comes from
a few passes over an evenly spaced sample of rows, then one full pass quantizes every value
and checks the target on exactly what the decoder will produce (another pass only when the
check fails or lands far inside the target). Each residual's model is the Gaussian bucket
of its channel scale plus its row scale (small static tables, entropy/rans.py); bucket
scales above MAX_TABLE_SCALE send their low bits raw. The values are coded in fixed chunks
of 2**chunk_log, each by four interleaved rANS states (entropy/rans_lanes.py), so chunks
code and decode on any number of threads and the frame never depends on how many. The
compiled quantization passes are kernels.py's.

Payload: `step f64 | family u8 | flags u8 | chunk_log u8 | lanes u8 | means | channel
codes | [row codes] | per chunk (words u32, bits u32) | every chunk's rANS words (u16) |
every chunk's raw-bit words (u32)`, with `[low-rank part]` before the chunk table when flag
bit 1 is set (docs/frame-format.md).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np

from swarmpress.codecs.core.errors import CodecError
from swarmpress.codecs.core.tensors import DType
from swarmpress.codecs.core.workers import map_items, scratch
from swarmpress.codecs.entropy import rans_lanes, scalemodel
from swarmpress.codecs.entropy.fieldcode import pack_blob, unpack_blob
from swarmpress.codecs.entropy.rans_field import (
    CHUNK_LOG,
    CHUNK_LOG_RANGE,
    FAMILY,
    ROW_SCALES_FROM,
    Streams,
    Tables,
    check_scale_codes,
    codable,
    decode_values,
    encode_values,
    log4,
    min_bytes,
    read_streams,
    row_codes,
)
from swarmpress.codecs.families.lossy import kernels
from swarmpress.codecs.families.lossy import lowrank as lossy_lowrank

_HEAD = struct.Struct("<dBBBB")
_ROWS = 0x01
_LOWRANK = 0x02
_NO_PROJ = np.zeros(0, dtype=np.float32)
LIGHT_PASS_VALUES = 1 << 22  # statistics passes use the threads from this many values on
GROUPS = 16  # fixed partial-sum groups of rows: sums never depend on the thread count
SAMPLE_VALUES = 1 << 15  # rows sampled for the step search
ENERGY_STRIDE_FROM = 64  # row energies look at every 4th channel from this many on
_SAMPLE_PASSES = 4
_FULL_PASSES = 6
_CLOSE = 0.97  # accept a verified step whose error is within 3 % of the target's
_AIM = 0.985  # the sample search aims this far inside the target (one full pass, mostly)


def _source(arr: np.ndarray, dtype: DType) -> tuple[np.ndarray, int]:
    """Flat kernel input and its kind: fp32 as is, bf16 and fp16 as their uint16 bits (the
    kernels widen a row at a time, so an fp16 tensor costs no float32 copy)."""
    flat = arr.reshape(-1)
    if dtype is DType.BFLOAT16:
        return flat.view(np.uint16), kernels.SRC_BF16
    if dtype is DType.FLOAT16:
        return flat.view(np.uint16), kernels.SRC_F16
    return flat.astype(np.float32, copy=False), kernels.SRC_F32


# ---------------------------------------------------------------------------- threads
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
        self.src, self.src_kind = _source(arr, dtype)
        self.proj = _NO_PROJ if proj is None else proj  # the low-rank projection, flat
        self.dtype, self.rows, self.chans, self.threads = dtype, rows, chans, threads
        self.out_bf16 = dtype is DType.BFLOAT16
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
            xx = kernels.channel_stats(
                self.src, self.src_kind, r0, r1, self.chans, s1, s2, self.proj
            )
            return s1, s2, xx

        parts = map_items(part, len(self.groups), self._light_threads())
        with np.errstate(invalid="ignore", over="ignore"):  # NaN or inf: the caller says so
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
            kernels.row_energy(self.src, self.src_kind, r0, r1, self.chans, mean, inv_var,
                          stride, out, self.proj)  # fmt: skip

        map_items(part, len(self.groups), self._light_threads())
        return out

    def sample(self, step: float, mu: np.ndarray):
        """(dot, |x|^2, |y|^2, |x-y|^2, max |x-y|, max |code|, share) on the row sample;
        None when the sample would be most of the tensor."""
        if self.sample_rows is None:
            return None
        res = kernels.measure_rows(self.src, self.src_kind, self.sample_rows, self.chans, step, mu,
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
                return kernels.quantize_block(self.src, self.src_kind, r0, r1, self.chans, step, mu,
                                         row_w, self.out_bf16, q, acc[i], self.proj)  # fmt: skip

            res = map_items(part, len(self.groups), self.threads)
            vmax = max(r[4] for r in res)
            if vmax <= kernels.CODE_LIMIT or dtype is np.int64:
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
            with np.errstate(over="ignore"):  # a step that overflows float16 fails the check
                y = y.astype(np.float32).astype(np.float16).astype(np.float64)
            x = self.src[sl].view(np.float16).astype(np.float64).reshape(r1 - r0, self.chans)
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
           threads: int = 1, max_rank: int = lossy_lowrank.MAX_RANK) -> bytes | None:  # fmt: skip
    """Fast-mode payload of one non-empty finite host tensor, or None when out of range;
    a low-rank part of at most max_rank directions where one pays (0: none)."""
    lowrank = lossy_lowrank.plan(arr.reshape(rows, chans), target, value, max_rank)
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
    cc = log4(np.sqrt(acc / rows))
    rc = search.rc
    if not codable(cc, rc):
        return None  # codes too wide for the kernels' raw-bit fields: the max mode takes it
    q = backend.codes(step, mu)
    coded = encode_values(q, rows, chans, Tables(cc, rc), threads)
    section = b"" if lowrank is None else lossy_lowrank.pack(lowrank, threads)
    flags = (_ROWS if search.use_rows else 0) | (_LOWRANK if section else 0)
    parts = [
        _HEAD.pack(step, scalemodel.FAMILIES.index(FAMILY), flags, CHUNK_LOG, rans_lanes.LANES),
        pack_blob(mu.astype("<i8").tobytes()),
        pack_blob(cc.astype("<i2").tobytes()),
        pack_blob(rc.astype("<i2").tobytes()) if search.use_rows else b"",
        section,
        coded,
    ]
    return b"".join(parts)


@dataclass(frozen=True)
class Parsed:
    """A fast-mode payload's header, side information and chunk streams, all checked."""

    step: float
    mu: np.ndarray
    cc: np.ndarray
    rc: np.ndarray
    streams: Streams
    lowrank: lossy_lowrank.Section | None  # the low-rank part, if any


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
    if lanes != rans_lanes.LANES or not CHUNK_LOG_RANGE[0] <= chunk_log <= CHUNK_LOG_RANGE[1]:
        raise CodecError(f"lossy fast payload declares {lanes} lanes, chunks of 2**{chunk_log}")
    # Every chunk costs at least 8 table bytes and 16 state bytes: the payload must hold them
    # before the side information (sized by the shape) is even unpacked.
    if len(mv) - _HEAD.size < min_bytes(rows * chans, chunk_log):
        raise CodecError(
            f"lossy fast payload of {len(mv)} bytes cannot hold the chunks of a "
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
    check_scale_codes(cc, rc, "lossy fast payload")
    section = None
    if flags & _LOWRANK:
        if rows < lossy_lowrank.MIN_ROWS or chans < lossy_lowrank.MIN_CHANS:
            raise CodecError(f"lossy fast payload has a low-rank part for a {rows}x{chans} tensor")
        section, pos = lossy_lowrank.read(mv, pos, rows, chans, chunk_log)
    streams, _end = read_streams(mv, pos, rows * chans, chunk_log, "lossy fast payload", True)
    return Parsed(step, mu, cc, rc, streams, section)


DECODE_BLOCK_VALUES = 1 << 16  # with a low-rank part: values decoded per projected block
NARROW_BLOCK_VALUES = 1 << 17  # fp16 output: values decoded as float32 per block, then cast


def _run_decoder(p: Parsed, rows: int, chans: int, out: np.ndarray, mode: int,
                 threads: int = 1) -> None:  # fmt: skip
    """Decode every chunk into out. With a low-rank part, or into a float16 out (decoded as
    float32, then narrowed), a block of chunks at a time: each block after the projection
    of the rows it covers, through a float32 buffer of one block (bounded memory, early
    failure)."""
    what = "lossy fast entropy-coded stream"
    tables = Tables(p.cc, p.rc)
    narrow = out.dtype == np.float16
    if (p.lowrank is None and not narrow) or mode == rans_lanes.OUT_CODES:
        decode_values(p.streams, tables, rows, chans, out, mode, p.step, p.mu, None, threads,
                      what)  # fmt: skip
        return
    n, size = rows * chans, 1 << p.streams.chunk_log
    block = DECODE_BLOCK_VALUES if p.lowrank is not None else NARROW_BLOCK_VALUES
    # a block spans at least a row, so a row wider than a block is projected at most twice
    per = max(1, block // size, -(-chans // size))
    # one BLAS context for the whole tensor: entering it per block cost about 10 %
    with lossy_lowrank.one_blas_thread():
        for k0 in range(0, len(p.streams.woff), per):
            k1 = min(len(p.streams.woff), k0 + per)
            v0, v1 = k0 * size, min(n, k1 * size)
            r0, r1 = v0 // chans, -(-v1 // chans)
            proj = None if p.lowrank is None else p.lowrank.projection(r0, r1)
            dest, base = (scratch("narrow", v1 - v0, np.float32), v0) if narrow else (out, 0)
            decode_values(p.streams, tables, rows, chans, dest, mode, p.step, p.mu, proj, threads,
                          what, chunks=(k0, k1), out_base=base, proj_base=r0 * chans)  # fmt: skip
            if narrow:
                with np.errstate(over="ignore", under="ignore"):
                    out[v0:v1] = dest
                # an encoder checks the target on these very float16 values, so a frame whose
                # values overflow float16 was not made by one
                if not np.isfinite(out[v0:v1]).all():
                    raise CodecError("lossy fast payload decodes to values beyond float16")


def decode(mv: memoryview, dtype: DType, rows: int, chans: int, threads: int = 1) -> np.ndarray:
    """Flat decoded host array of a fast-mode payload."""
    p = parse(mv, rows, chans)
    n = rows * chans
    if dtype is DType.BFLOAT16:
        out = np.empty(n, dtype=np.uint16)
        _run_decoder(p, rows, chans, out, rans_lanes.OUT_BF16, threads)
        return out.view(dtype.numpy)
    out = np.empty(n, dtype=np.float16 if dtype is DType.FLOAT16 else np.float32)
    _run_decoder(p, rows, chans, out, rans_lanes.OUT_F32, threads)
    return out


def decode_codes(mv: memoryview, rows: int, chans: int) -> tuple[np.ndarray, Parsed]:
    """The integer residual codes (int64, flat) and the parsed payload, for a device-side
    dequantizer: x = float32((code + mu[channel]) * step), then rounded to the dtype."""
    p = parse(mv, rows, chans)
    out = np.empty(rows * chans, dtype=np.int64)
    _run_decoder(p, rows, chans, out, rans_lanes.OUT_CODES)
    return out, p
