"""The fast mode's low-rank part: a few directions every row shares, sent; the rest quantized.

Some tensors keep most of their energy in a handful of directions common to all rows
(MiniLM's last gradients, Llama-like hidden states). Per-channel scales cannot see that;
a basis can. A held-out check on 64 sampled rows (directions learnt on 32, judged on the
other 32; about 0.2 ms) estimates the bits a rank-4 or rank-8 basis would save at high
rate, basis and coefficients charged; only where that pays is the rank chosen the same way
on 256 sampled rows (learnt on 192, judged on 64), the basis learnt on up to 512 rows, and
every row projected.

The basis is int16 fixed point and the coefficients integers, so the projection is an
integer-valued float64 product, exact in any summation order, rounded once to float32:
encoder and decoder reproduce it bit for bit on any BLAS. The quantizer then codes
x - projection, and the decoder adds the projection back before rounding to the dtype.

Section (after the fast payload's side information): `coefficient step f64 | rank u16 |
flags u8 | basis (zstd int16, rank x channels) | coefficient scale codes (zstd int16, one
per rank) | [row scale codes (zstd int16, one per row), flag bit 0] | the rows x rank
coefficients as a chunked rANS field (entropy/rans_field.py)`.
"""

from __future__ import annotations

import functools
import math
import struct
from dataclasses import dataclass, field

import numpy as np

from swarmpress.codecs.core.errors import CodecError
from swarmpress.codecs.entropy import rans_field
from swarmpress.codecs.entropy import rans_lanes as lanes
from swarmpress.codecs.entropy.fieldcode import pack_blob, unpack_blob

FIX = 1 << 15  # basis fixed point: entries are n / 2**15, |n| < 2**15
RANKS = (4, 8, 16, 32, 64)
MAX_RANK = max(RANKS)
MIN_ROWS = 256  # fewer rows and a basis costs more per value than it can save
MIN_CHANS = 32
GATE_ROWS = 64  # the held-out check: a basis from 32 rows judged on 32 others
GATE_RANKS = (4, 8)  # the ranks the held-out check tries
RMS_RANGE = (1e-30, 1e30)  # rows whose RMS lies outside are sent without a basis
PEAK_OVER_RMS = 1e15  # a sampled value this far above the gate's RMS: no basis is tried
CHOICE_ROWS = 256  # the rank choice: learnt on 192 rows, judged on 64
BASIS_ROWS = 512  # the basis sent: learnt on this many rows at most,
BASIS_VALUES = 1 << 19  # or fewer for wide rows (the Gram matrix costs rows^2 * channels)
MIN_GAIN_BITS = 0.1  # estimated bits per value a basis must save (0.006 in bf16 ratio)
COEFF_STEP = 8.0  # coefficient step / the residual's expected step: the residual absorbs the
# coarse coefficients' error at little cost (measured best from 4x to 16x on MiniLM and the
# synthetic family), and coarse coefficients take a few bits fewer each
BLOCK_VALUES = 1 << 15  # rows are projected this many values at a time (bounded temporaries)
_HEAD = struct.Struct("<dHB")  # coefficient step, rank, flags


@dataclass(frozen=True)
class LowRank:
    """A tensor's low-rank part: what travels and the projection both sides add."""

    step: float  # coefficient quantization step
    basis: np.ndarray  # int16, (rank, channels)
    coeffs: np.ndarray  # integer-valued (int64 or float64), (rows, rank)
    proj: np.ndarray | None  # float32, rows * channels, flat (None: it lives on a device)

    @property
    def rank(self) -> int:
        return self.basis.shape[0]


def _rows(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Rows idx of x as contiguous float32 (bf16 by its bits: no slow element casts)."""
    if x.dtype.name == "bfloat16":
        return (x[idx].view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    return np.ascontiguousarray(x[idx], dtype=np.float32)


def _mean_square(a: np.ndarray) -> float:
    """Mean square of rows, summed in float64 (in float32 it overflowed above an RMS of
    about 1e17 and underflowed below about 1e-24, and the basis was then never tried)."""
    return float(np.einsum("ij,ij->", a, a, dtype=np.float64)) / max(a.size, 1)


def _fits(a: np.ndarray, ms: float) -> bool:
    """Whether every sampled value is a number within PEAK_OVER_RMS of the RMS sqrt(ms):
    the estimates run in float32 on values scaled to that RMS, and a row 1e20 times larger
    overflowed their squares (numpy then failed on the NaN it left)."""
    peak = float(np.abs(a).max(initial=0.0))  # NaN propagates: it fails the test below
    return peak <= PEAK_OVER_RMS * math.sqrt(ms)


def _split_sample(x: np.ndarray, count: int, every: int) -> tuple[np.ndarray, np.ndarray]:
    """Evenly spaced rows (at most count): every `every`-th held out, the rest to learn on."""
    idx = np.unique(np.linspace(0, x.shape[0] - 1, min(count, x.shape[0])).astype(np.int64))
    held = np.arange(idx.size) % every == every - 1
    return _rows(x, idx[~held]), _rows(x, idx[held])


@functools.lru_cache(maxsize=16)
def _probes(rows: int, count: int) -> np.ndarray:
    """Fixed random start vectors for the subspace iteration (a pure function of the shape)."""
    return np.random.default_rng(0).standard_normal((rows, count)).astype(np.float32)


def _directions(a: np.ndarray, rank: int) -> np.ndarray:
    """Top `rank` unit directions (rank, channels) of the centred rows a, by a subspace
    iteration on the smaller of the Gram matrix (rows x rows) and the covariance
    (channels x channels)."""
    by_rows = a.shape[0] <= a.shape[1]
    g = a @ a.T if by_rows else a.T @ a
    q = _probes(g.shape[0], min(rank + 8, g.shape[0]))
    for _ in range(2):
        q, _r = np.linalg.qr(g @ q)
    _w, u = np.linalg.eigh(q.T @ g @ q)
    top = q @ u[:, ::-1][:, :rank]
    vt = top.T @ a if by_rows else top.T
    norms = np.sqrt(np.einsum("ij,ij->i", vt, vt))
    return vt / np.where(norms > 0, norms, 1.0)[:, None]


def _gains(a: np.ndarray, b: np.ndarray, ranks: tuple[int, ...], dist: float, rows: int):
    """Estimated bits per value saved by each rank: directions learnt on rows a, judged on
    the held-out rows b (both centred here, in place). Bits of a Gaussian channel at
    distortion D: log2(1 + var/D)/2."""
    m = a.mean(axis=0)
    a -= m
    b -= m
    vt = _directions(a, max(ranks))
    chans = a.shape[1]

    def bits(v: np.ndarray, d: float) -> float:
        # float64: var / d in float32 overflowed for a max_abs target far below the values
        var = np.einsum("ij,ij->j", v, v, dtype=np.float64) / v.shape[0]  # centred, near enough
        return 0.5 * float(np.log2(1.0 + var / d).sum())

    plain = bits(b, dist)
    coef = b @ vt.T
    out = {}
    for k in ranks:
        resid = b - coef[:, :k] @ vt[:k]
        cost = bits(resid, dist) + bits(coef[:, :k], COEFF_STEP**2 * dist) + 16.0 * k * chans / rows
        out[k] = (plain - cost) / chans
    return out


def distortion(xx: float, target: str, value: float) -> float:
    """The per-value squared error the target allows on values of mean square xx, roughly
    (for the estimates only)."""
    if target == "max_abs":
        return max(value * value / 3.0, 1e-30)  # uniform error within +-value
    goal = 1.0 - value if target == "similarity" else value
    return max(goal * goal * xx, 1e-30)


@functools.lru_cache(maxsize=1)
def _blas_pools():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()  # finds the loaded BLAS libraries once (about 1 ms)


def one_blas_thread():
    """A context that keeps BLAS on the calling thread (about 6 us to enter and leave). The
    products here are small, and a BLAS pool's threads spin for a while after each call:
    they took the second core from the codec's own threads (2-thread encode 1.26x -> 0.97x
    on 2 cores, measured)."""
    return _blas_pools().limit(limits=1, user_api="blas")


def plan(x: np.ndarray, target: str, value: float, max_rank: int = MAX_RANK) -> LowRank | None:
    """The low-rank part worth sending for the (rows, channels) tensor x, or None."""
    with one_blas_thread():
        rank, step = choose(x, target, value, max_rank)
        return build(x, rank, step) if rank else None


def choose(x: np.ndarray, target: str, value: float, max_rank: int = MAX_RANK) -> tuple[int, float]:
    """(rank worth sending, coefficient step) for the (rows, channels) tensor x; rank 0
    when no basis of at most max_rank directions pays. The held-out gate first, then the
    rank on more rows."""
    rows, chans = x.shape
    gate = tuple(k for k in GATE_RANKS if k <= max_rank)
    if rows < MIN_ROWS or chans < MIN_CHANS or not gate:
        return 0, 0.0
    a, b = _split_sample(x, GATE_ROWS, 2)
    ms = _mean_square(a)
    if not (math.isfinite(ms) and ms > 0 and _fits(b, ms)):
        return 0, 0.0  # NaN, infinity, all zeros or wild scales: no basis to find
    if not RMS_RANGE[0] <= math.sqrt(ms) <= RMS_RANGE[1]:
        return 0, 0.0  # the scaled estimates and the float32 coefficient map need this
    # estimates on values of mean square 1
    scale = np.float32(1.0 / math.sqrt(ms))
    dist = distortion(1.0, target, value * float(scale) if target == "max_abs" else value)
    a *= scale
    b *= scale
    if max(_gains(a, b, gate, dist, rows).values()) < MIN_GAIN_BITS:
        return 0, 0.0
    a, b = _split_sample(x, CHOICE_ROWS, 4)
    if not (_fits(a, ms) and _fits(b, ms)):
        return 0, 0.0  # the quantizer finds a NaN or infinity and sends the tensor exact
    a *= scale
    b *= scale
    limit = min(a.shape[0] // 4, chans // 4, max_rank)
    ranks = tuple(k for k in RANKS if k <= limit)
    gains = _gains(a, b, ranks, dist, rows)
    best = max(gains, key=gains.get)
    if gains[best] < MIN_GAIN_BITS:
        return 0, 0.0
    # coefficients coarser than the residual's step: the residual absorbs their error
    return best, COEFF_STEP * math.sqrt(12.0 * dist) / float(scale)


def basis_for(x, rank: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(int16-valued basis (rank, channels), channel means) learnt on sampled rows of x (a
    host array, or any object whose x[idx] gives those rows), or None when those rows hold
    NaN or infinity; its temporaries end with it."""
    chans = x.shape[1]
    count = min(BASIS_ROWS, max(CHOICE_ROWS, BASIS_VALUES // chans))
    a, _none = _split_sample(x, count, count + 1)  # nothing held out
    ms = _mean_square(a)
    if not math.isfinite(ms):
        return None
    # float32 is safe here: scaled to their own RMS, no sampled value exceeds sqrt(count)
    scale = np.float32(1.0 / max(math.sqrt(ms), RMS_RANGE[0]))
    a *= scale
    m = a.mean(axis=0)
    a -= m
    basis = np.clip(np.rint(_directions(a, rank) * FIX), -(FIX - 1), FIX - 1)
    return basis, m / scale


def coefficient_map(basis: np.ndarray, m: np.ndarray, step: float):
    """(float32 (channels, rank) matrix, float32 shift): coefficients = rint(row @ matrix -
    shift). Any rounding of this product is fine: only the integers travel."""
    with np.errstate(over="ignore", invalid="ignore"):  # infinite or NaN: admissible() says no
        bt = (basis.T / (FIX * step)).astype(np.float32)
        return bt, (m @ bt).astype(np.float32)


def admissible(coeffs: np.ndarray) -> bool:
    """Whether integer coefficients keep the projection in exact float64 arithmetic and fit
    the coder's raw-bit fields."""
    rank = coeffs.shape[1]
    if not np.isfinite(coeffs).all() or np.abs(coeffs).max() * rank * FIX >= 2.0**53:
        return False
    cc, rc = _coefficient_scales(coeffs)
    return rans_field.codable(cc, np.zeros(1, dtype=np.int64) if rc is None else rc)


def build(x: np.ndarray, rank: int, step: float) -> LowRank | None:
    """The low-rank part of rank `rank` with coefficients at `step`, or None when its
    integers would leave exact float64 arithmetic."""
    rows, chans = x.shape
    learnt = basis_for(x, rank)
    if learnt is None:
        return None
    basis, m = learnt
    bt, shift = coefficient_map(basis, m, step)
    coeffs = np.empty((rows, rank), dtype=np.float64)
    per = max(1, BLOCK_VALUES // chans)
    with np.errstate(over="ignore", invalid="ignore"):  # a row of infinities: NaN, refused
        for r0 in range(0, rows, per):
            block = _rows(x, np.arange(r0, min(rows, r0 + per)))
            coeffs[r0 : r0 + per] = np.rint(block @ bt - shift)
    if not admissible(coeffs):
        return None
    return LowRank(step, basis.astype(np.int16), coeffs, project(coeffs, basis, step))


def project(coeffs: np.ndarray, basis: np.ndarray, step: float) -> np.ndarray:
    """float32(coeffs @ basis * step / FIX), flat; exact integer products in float64, a block
    of rows at a time (integer coefficients are widened a block at a time too), so every
    machine gets the same bits. Callers hold one_blas_thread() around a whole tensor's
    projections (entering it per block cost about 10 % of a decode)."""
    rows, chans = coeffs.shape[0], basis.shape[1]
    basis = basis.astype(np.float64, copy=False)
    out = np.empty(rows * chans, dtype=np.float32).reshape(rows, chans)
    per = max(1, BLOCK_VALUES // max(chans, 1))
    scale = step / FIX
    tmp = np.empty((min(per, rows), chans))
    for r0 in range(0, rows, per):
        block = coeffs[r0 : r0 + per].astype(np.float64, copy=False)
        t = tmp[: block.shape[0]]
        np.matmul(block, basis, out=t)
        t *= scale
        out[r0 : r0 + per] = t
    return out.reshape(-1)


_ROWS = 0x01  # section flag: the coefficients carry row scale codes


def _coefficient_scales(coeffs: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(per-rank scale codes, per-row scale codes or None) of the coefficients, in quarter
    octaves, as the fast mode models its residuals: rows whose coefficients are all large
    (high-norm tokens) get a row scale, the ranks a scale net of it."""
    rows, rank = coeffs.shape
    sq = coeffs * coeffs
    var = sq.mean(axis=0)
    inv = np.where(var > 0, 1.0 / np.where(var > 0, var, 1.0), 0.0)
    rc = rans_field.row_codes(sq @ inv / rank, rank)
    if rc is None:
        return rans_field.log4(np.sqrt(var)), None
    return rans_field.log4(np.sqrt(np.exp2(-rc / 2.0) @ sq / rows)), rc


def _tables(cc: np.ndarray, rc: np.ndarray | None, rows: int) -> rans_field.Tables:
    if rc is None:
        rc = np.broadcast_to(np.zeros(1, dtype=np.int64), (rows,))
    return rans_field.Tables(cc, rc)


def pack(lr: LowRank, threads: int = 1) -> bytes:
    """The low-rank section of a fast-mode payload."""
    rows = lr.coeffs.shape[0]
    q = lr.coeffs.astype(np.int64).reshape(-1)
    cc, rc = _coefficient_scales(lr.coeffs)
    return b"".join(
        [
            _HEAD.pack(lr.step, lr.rank, _ROWS if rc is not None else 0),
            pack_blob(lr.basis.astype("<i2").tobytes()),
            pack_blob(cc.astype("<i2").tobytes()),
            pack_blob(rc.astype("<i2").tobytes()) if rc is not None else b"",
            rans_field.encode_values(q, rows, lr.rank, _tables(cc, rc, rows), threads),
        ]
    )


@dataclass(frozen=True)
class Section:
    """A low-rank section read and checked; its coefficients decode a block of rows at a
    time, so a decoder never holds more than a block of projection and a damaged payload
    costs no more than the rows before the damage."""

    step: float
    basis: np.ndarray  # int16-valued float64, (rank, channels)
    tables: rans_field.Tables
    streams: rans_field.Streams
    rows: int
    # the coefficient chunks last decoded (k0, k1, values): row blocks are far smaller than a
    # chunk, so consecutive blocks reuse them instead of decoding the same chunk again
    _last: list = field(default_factory=list, compare=False, repr=False)

    @property
    def rank(self) -> int:
        return self.basis.shape[0]

    def coefficients(self, r0: int, r1: int) -> np.ndarray:
        """The int64 coefficients of rows r0..r1, (r1 - r0, rank); CodecError when damaged
        or too large for exact arithmetic."""
        what = "lossy low-rank coefficients"
        rank, size = self.rank, 1 << self.streams.chunk_log
        v0, v1 = r0 * rank, r1 * rank
        k0, k1 = v0 // size, -(-v1 // size)
        if self._last and self._last[0] <= k0 and k1 <= self._last[1]:
            k0, buf = self._last[0], self._last[2]
        else:
            k1 = min(len(self.streams.woff), max(k1, k0 + 2))  # the next block's chunk too
            buf = np.empty(min(self.rows * rank, k1 * size) - k0 * size, dtype=np.int64)
            self._last[:] = []  # a damaged chunk leaves nothing behind to reuse
            rans_field.decode_values(self.streams, self.tables, self.rows, rank, buf,
                                     lanes.OUT_CODES, what=what, chunks=(k0, k1),
                                     out_base=k0 * size)  # fmt: skip
            self._last[:] = [k0, k1, buf]
        q = buf[v0 - k0 * size : v1 - k0 * size]
        biggest = max(abs(int(q.min())), abs(int(q.max()))) if q.size else 0
        if biggest * rank * FIX >= 2**53:
            raise CodecError(f"{what} are out of range")
        # |projection| <= biggest * rank * step: beyond float32, values would be infinite
        if biggest * rank * self.step >= float(np.finfo(np.float32).max):
            raise CodecError(f"{what} make values beyond float32 (step {self.step:.3g})")
        return q.reshape(r1 - r0, rank)

    def projection(self, r0: int = 0, r1: int | None = None) -> np.ndarray:
        """float32 projection of rows r0..r1 (all rows by default), flat."""
        r1 = self.rows if r1 is None else r1
        return project(self.coefficients(r0, r1), self.basis, self.step)


def read(mv: memoryview, pos: int, rows: int, chans: int, chunk_log: int) -> tuple[Section, int]:
    """Read a low-rank section at pos: every size is checked, nothing sized by the declared
    shape is allocated beyond what the section's own bytes hold (the caller checks the rest
    of the payload before the coefficients are decoded)."""
    what = "lossy low-rank coefficients"
    if len(mv) - pos < _HEAD.size:
        raise CodecError("lossy fast payload truncated: low-rank header missing")
    step, rank, flags = _HEAD.unpack_from(mv, pos)
    pos += _HEAD.size
    if flags & ~_ROWS:
        raise CodecError("lossy low-rank part has unknown flags")
    if not (math.isfinite(step) and step > 0):
        raise CodecError("lossy low-rank part declares an invalid coefficient step")
    if not 1 <= rank <= min(MAX_RANK, chans // 4, rows):
        raise CodecError(f"lossy low-rank part declares rank {rank} for a {rows}x{chans} tensor")
    if len(mv) - pos < rans_field.min_bytes(rows * rank, chunk_log):
        raise CodecError(f"{what}: the payload cannot hold {rows}x{rank} of them")
    raw, pos = unpack_blob(mv, pos, 2 * rank * chans, "low-rank basis")
    basis = np.frombuffer(raw, dtype="<i2").astype(np.float64).reshape(rank, chans)
    raw, pos = unpack_blob(mv, pos, 2 * rank, "low-rank coefficient scales")
    cc = np.frombuffer(raw, dtype="<i2").astype(np.int64)
    rc = None
    if flags & _ROWS:
        raw, pos = unpack_blob(mv, pos, 2 * rows, "low-rank coefficient row scales")
        rc = np.frombuffer(raw, dtype="<i2").astype(np.int64)
    rans_field.check_scale_codes(cc, np.zeros(1, dtype=np.int64) if rc is None else rc, what)
    tables = _tables(cc, rc, rows)
    streams, pos = rans_field.read_streams(mv, pos, rows * rank, chunk_log, what, False)
    return Section(step, basis, tables, streams, rows), pos
