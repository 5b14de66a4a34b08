"""`lossy-stream`: the `lossy` codec plus a channel basis learned from the stream.

A pipeline boundary sends a long run of tensors with the same channel statistics. The
sender accumulates their channel covariance and, at refresh frames (1, 4, 16, 64, ... by
default), sends the leading eigenvectors inside that frame; every later frame codes its
rows' coordinates in that basis (the KLT) and the remainder in the channel domain, exactly
as `lossy` codes a low-rank part, but without paying for the basis each time.

The receiver follows from the frames alone: a basis is only ever taken from a frame, never
recomputed from decoded floats (which would drift between machines). Each frame names the
basis it needs; a decoder holding another one (a lost or reordered frame) refuses it.
"""

from __future__ import annotations

import math
import os
import struct
from typing import Any

import constriction
import numpy as np

from swarmpress.codecs.core import statedict as sd
from swarmpress.codecs.core.base import Param, Role
from swarmpress.codecs.core.errors import CodecError
from swarmpress.codecs.core.limits import check_decode_size
from swarmpress.codecs.core.registry import register
from swarmpress.codecs.core.stream import StreamCodec, StreamDecoder, StreamEncoder
from swarmpress.codecs.core.tensors import DType, all_finite
from swarmpress.codecs.entropy.fieldcode import (
    decode_field_into,
    encode_field,
    estimate_bits,
    pack_blob,
    read_field,
    skip_blob,
    unpack_blob,
)
from swarmpress.codecs.entropy.order0 import check_room, range_decoder
from swarmpress.codecs.families.lossy.codec import (
    LossyCodec,
    as_rows,
    channels_rows,
    check_range,
)
from swarmpress.codecs.families.lossy.lowrank import FIX
from swarmpress.codecs.families.lossy.target import QualityTarget

_HEAD = struct.Struct("<dBIHIQ")  # step, flags, basis id, rank, channels, stream id
_USES_BASIS, _HAS_BASIS = 0x01, 0x02
_COARSE = 1 << 8  # stream bases travel as int8 with 7 fractional bits: n * 2**8 on 2**15
STATE_VERSION = 3  # 2: encoder and decoder states apart; 3: stream ids


_BLOCK = 1 << 14  # values per block of rows of a channels^2 matrix (bounds the temporaries)
_WIDE = 1 << 31


def _rows_per(nchan: int) -> int:
    return max(16, _BLOCK // max(nchan, 1))


def _compact(codes: np.ndarray) -> np.ndarray:
    """Integer-valued float64 codes as int32 when every one fits (and so does its magnitude),
    else unchanged (codes that large fail check_range)."""
    if float(codes.min(initial=0)) > -_WIDE and float(codes.max(initial=0)) < _WIDE:
        return codes.astype(np.int32)
    return codes


class _Plain:
    """A candidate without the stream basis: channel means and residual codes.

    lossy's plain candidate, arithmetic for arithmetic, but read from the tensor itself (no
    float64 copy of it outlives a candidate), worked in place, its codes held as int32 where
    they fit and its decoded values made only when asked for (the search asks once).
    """

    coeffs = None

    def __init__(self, rows: np.ndarray, mean: np.ndarray, step: float) -> None:
        self.step = step
        self.means = np.rint(mean / step)
        r = rows.astype(np.float64)
        r -= self.means * step  # (x - base - 0.0) / step: subtracting +0.0 changes no float
        r /= step
        np.rint(r, out=r)
        self.resid = _compact(r)

    @property
    def values(self) -> np.ndarray:
        """(resid + means) * step + 0.0 (float64): what the decoder will produce."""
        v = np.add(self.resid, self.means)
        v *= self.step
        v += 0.0
        return v


class _Transformed:
    """A candidate coded entirely in a complete stream basis: coordinates, no residual."""

    def __init__(
        self,
        rows: np.ndarray,
        mean: np.ndarray,
        step: float,
        basis: np.ndarray,
        inverse: np.ndarray,
    ) -> None:
        self.step = step
        self.means = np.rint(mean / step)
        self._basis = basis
        c = rows.astype(np.float64)
        c -= self.means * step
        c = c @ inverse
        c /= step
        np.rint(c, out=c)
        self.coeffs = _compact(c)

    @property
    def values(self) -> np.ndarray:
        """base + (coeffs @ basis) * (step / 2**15) (float64): what the decoder will produce."""
        v = self.coeffs.astype(np.float64) @ self._basis
        v *= self.step / FIX
        v += self.means * self.step
        return v


class _Field:
    """A decoded integer field held as int16, filled in any order by decode_field_into.

    Values beyond int16 wait in a side list, sorted by position at the end; once they are
    more than 1/16 of the field it moves to int32 (int64 where the side information allows
    values beyond that), so memory stays near two bytes a value in every case.
    """

    def __init__(self, size: int, magnitude: int) -> None:
        self.data = np.empty(size, dtype=np.int16)
        self._wide = np.int32 if magnitude < _WIDE else np.int64
        self._at: list[np.ndarray] = []
        self._val: list[np.ndarray] = []
        self._spilled = 0
        self._limit = max(1 << 12, size // 16)
        # the side information bounds every value: below 2**15 nothing needs watching
        self._safe = magnitude < 1 << 15
        self.biggest = magnitude if self._safe else 0  # largest |value| (a bound when safe)

    def put(self, at: np.ndarray, values: np.ndarray) -> None:
        if self._safe:
            self.data[at] = values
            return
        lo, hi = int(values.min()), int(values.max())
        self.biggest = max(self.biggest, abs(lo), abs(hi))
        if self.data.dtype == np.int16 and (lo < -(1 << 15) or hi >= 1 << 15):
            big = (values < -(1 << 15)) | (values >= 1 << 15)
            self._at.append(at[big])
            self._val.append(values[big])
            self._spilled += self._at[-1].size
            if self._spilled > self._limit:
                self.data = self.data.astype(self._wide)
                self.finish()
        self.data[at] = values  # wraps beyond int16: those values are patched from the list

    def finish(self) -> None:
        """Sort the values kept aside (or write them back once the field is wide)."""
        if not self._at:
            self._at, self._val = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
            return
        at, val = np.concatenate(self._at), np.concatenate(self._val)
        if self.data.dtype != np.int16:
            self.data[at] = val
            self._at, self._val = [], []
            return
        order = np.argsort(at, kind="stable")
        self._at, self._val = at[order], val[order]

    def rows(self, lo: int, hi: int) -> np.ndarray:
        """Values lo .. hi-1 as float64."""
        v = self.data[lo:hi].astype(np.float64)
        if self.data.dtype == np.int16 and self._at.size:
            i, j = np.searchsorted(self._at, [lo, hi])
            v[self._at[i:j] - lo] = self._val[i:j]
        return v


@register
class LossyStreamCodec(StreamCodec):
    """Quality-targeted lossy coding with a KLT basis learned from earlier frames (a stream).

    `encoder()` sends one stream and `decoder()` (same parameters) follows it, in order;
    each has state_dict() / load_state_dict(). `swarmpress.decode` refuses these frames.
    """

    codec_id = "lossy-stream"
    summary = "lossy + a channel basis learned from the stream (the receiver follows in order)"
    lossless = False
    params = (
        *LossyCodec.params[:2],
        Param(
            "max_channels",
            int,
            8192,
            "largest channel count a stream accepts (the basis is channels^2)",
            minimum=1,
            maximum=1 << 16,
        ),
        Param(
            "refresh",
            int,
            16,
            "basis refresh schedule: frames 1, r, r^2, ... (>= 2)",
            minimum=2,
            maximum=1 << 20,
        ),
        Param(
            "energy_bits",
            float,
            1.0,
            "keep eigen-directions whose variance beats the noise by this many bits",
            minimum=0.0,
            maximum=16.0,
        ),
    )

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.quality = QualityTarget(self.config["target"], self.config["value"])

    def frame_params(self) -> dict:
        return {}  # the decoder needs nothing but the payload and its stream

    def encoder(self, stream_id: int | None = None) -> LossyStreamEncoder:
        """A new stream's sending end; its id (random unless given) rides in every frame, so
        a decoder refuses frames of another stream."""
        enc = LossyStreamEncoder(self)
        if stream_id is not None:
            enc.load_state_dict({**enc.state_dict(), "stream_id": stream_id})
        return enc

    def decoder(self) -> LossyStreamDecoder:
        return LossyStreamDecoder(self)


_MAX_BASIS_ID = (1 << 32) - 2  # ids are u32 on the wire; the next refresh must still fit
_MAX_STREAM_ID = (1 << 64) - 1


def _version(state: Any) -> dict[str, Any]:
    state = sd.mapping(state, "lossy-stream")
    version = sd.integer(state, "version", "lossy-stream", hi=1 << 31)
    if version != STATE_VERSION:
        raise CodecError(f"lossy-stream state version {version}; this build reads {STATE_VERSION}")
    return state


def _channels(state: Any, key: str, limit: int) -> int:
    """The channel count an optional (n,) or (n, n) array in the state declares."""
    if key not in state:
        raise CodecError(f"lossy-stream state lacks {key}")
    if sd.is_none(state[key]):
        return 0
    shape = np.shape(state[key]) if isinstance(state[key], np.ndarray | list | tuple) else ()
    n = int(shape[0]) if shape else 0
    if n > limit:
        raise CodecError(f"lossy-stream state: {key} has {n} channels, above max_channels")
    return n


def _optional(state: Any, key: str, shape: tuple[int, ...], limit: float) -> np.ndarray | None:
    if sd.is_none(state[key]):
        return None
    return sd.float_array(state, key, "lossy-stream", shape, limit)


def _basis(state: Any, n: int) -> np.ndarray | None:
    """A basis as frames carry it: integer multiples of 2**8 within +-127 * 2**8."""
    basis = _optional(state, "basis", (n, n), 127 * _COARSE)
    if basis is not None and np.any(np.mod(basis, _COARSE)):
        raise CodecError("lossy-stream state: basis entries are not in the frames' fixed point")
    return basis


def _copy(a: np.ndarray | None) -> np.ndarray | None:
    return None if a is None else a.copy()


class LossyStreamEncoder(StreamEncoder):
    """The sending end: channel statistics, the basis in use and the refresh schedule."""

    codec: LossyStreamCodec

    def reset(self) -> None:
        """Forget the stream: statistics, basis and frame count; a new stream id."""
        self.stream_id = int.from_bytes(os.urandom(8), "little")
        self._frames = 0
        self._sum: np.ndarray | None = None
        self._outer: np.ndarray | None = None
        self._rows = 0
        self._basis: np.ndarray | None = None  # (channels, channels), 2**15 fixed point
        self._inverse: np.ndarray | None = None
        self._basis_id = 0

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the stream elsewhere (copies: numpy arrays and ints)."""
        return {
            "version": STATE_VERSION,
            "stream_id": self.stream_id,
            "frames": self._frames,
            "rows": self._rows,
            "sum": _copy(self._sum),
            "outer": _copy(self._outer),
            "basis": _copy(self._basis),
            "basis_id": self._basis_id,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state_dict(); CodecError if it is malformed or from another version."""
        state = _version(state)
        n = _channels(state, "sum", self.config["max_channels"])
        stream_id = sd.integer(state, "stream_id", "lossy-stream", hi=_MAX_STREAM_ID)
        frames = sd.integer(state, "frames", "lossy-stream")
        rows = sd.integer(state, "rows", "lossy-stream", hi=1 << 53)
        basis_id = sd.integer(state, "basis_id", "lossy-stream", hi=_MAX_BASIS_ID)
        for key in ("outer", "basis"):
            if key not in state:
                raise CodecError(f"lossy-stream state lacks {key}")
        total = _optional(state, "sum", (n,), 1e150)  # its square is still finite
        outer = _optional(state, "outer", (n, n), 1e300)
        basis = _basis(state, n)
        if (total is None) != (outer is None) or (basis is not None and total is None):
            raise CodecError("lossy-stream state: sum, outer and basis do not belong together")
        inverse = None
        if basis is not None:
            try:
                inverse = np.linalg.inv(basis / FIX)
            except np.linalg.LinAlgError:
                raise CodecError("lossy-stream state: the basis is singular") from None
        self.stream_id, self._frames, self._rows = stream_id, frames, rows
        self._sum, self._outer = total, outer
        self._basis, self._basis_id, self._inverse = basis, basis_id, inverse

    def _refresh_due(self) -> bool:
        r, f = self.config["refresh"], self._frames
        if f < 1:
            return False
        while f % r == 0 and f > 1:
            f //= r
        return f == 1

    def _accumulated(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """The stream statistics with x added (new arrays: committed only on success)."""
        chans = x.shape[1]
        if chans > self.config["max_channels"]:
            raise CodecError(
                f"lossy-stream: {chans} channels exceed max_channels="
                f"{self.config['max_channels']} (the basis is channels x channels)"
            )
        if self._sum is not None and self._sum.shape[0] != chans:
            raise CodecError(
                f"lossy-stream: tensor has {chans} channels, the stream has "
                f"{self._sum.shape[0]}; call reset() to start a new stream"
            )
        total = x.sum(axis=0) + (0.0 if self._sum is None else self._sum)
        outer = x.T @ x
        outer += 0.0 if self._outer is None else self._outer  # in place: one channels^2 array
        return total, outer, self._rows + x.shape[0]

    def _new_basis(self, stats, noise: float) -> np.ndarray | None:
        # The same values as outer / rows - outer(mean, mean), eigenvectors reordered and
        # rounded, with one or two channels^2 arrays alive at a time instead of five.
        total, outer, rows = stats
        mean = total / rows
        n = mean.shape[0]
        per = _rows_per(n)
        cov = outer / rows
        for i in range(0, n, per):
            cov[i : i + per] -= mean[i : i + per, None] * mean[None, :]
        lam, vec = np.linalg.eigh(cov)
        del cov
        order = np.argsort(lam)[::-1]
        lam = lam[order]
        if not np.any(lam > noise * 4.0 ** self.config["energy_bits"]):
            return None
        coarse = np.empty((n, n))
        for i in range(0, n, per):  # row i of the result is eigenvector order[i]
            part = vec[:, order[i : i + per]].T * (FIX // _COARSE)
            np.rint(part, out=part)
            np.clip(part, -127, 127, out=part)
            coarse[i : i + per] = part
        del vec
        if np.linalg.matrix_rank(coarse) < n:
            return None
        coarse *= _COARSE
        return coarse

    def encode_array(self, arr: np.ndarray, role: Role) -> bytes:
        if arr.size == 0:
            raise CodecError("lossy-stream cannot carry an empty tensor")
        # A float64 copy of the tensor lives only for the statistics: each candidate makes its
        # own from the tensor and drops it, and the quality checks get the tensor in its own
        # dtype (they widen it to the same float64 values). Frames are bit for bit as before.
        x = as_rows(arr)
        if not all_finite(x):
            raise CodecError("lossy-stream cannot encode NaN or infinite values; use `lossless`")
        stats = self._accumulated(x)
        mean = x.mean(axis=0)
        start = self.codec.quality.initial_step(x)
        del x
        rows = arr.reshape(-1, arr.shape[-1]) if arr.ndim >= 2 else arr.reshape(-1, 1)
        search = self.codec.quality.search
        plain = search(rows, arr.dtype, lambda step: _Plain(rows, mean, step), start)
        basis, basis_id, inverse, sent = self._basis, self._basis_id, self._inverse, None
        if self._refresh_due():
            fresh = self._new_basis(stats, plain.step**2 / 12.0)
            if fresh is not None:
                basis, basis_id, sent = fresh, basis_id + 1, fresh
                inverse = np.linalg.inv(fresh / FIX)
        chosen, uses = plain, False
        if basis is not None:
            # The plain candidate is dropped while the basis is searched (a candidate is a
            # pure function of its step: it is remade should it win after all).
            plain_step = plain.step
            plain_bits = None if sent is not None else estimate_bits(plain.resid)
            chosen = plain = None
            cand = self.codec.quality.search(
                rows,
                arr.dtype,
                lambda step: _Transformed(rows, mean, step, basis, inverse),
                plain_step,
            )
            if sent is not None or estimate_bits(cand.coeffs) < plain_bits:
                chosen, uses = cand, True
            else:
                del cand
                chosen = _Plain(rows, mean, plain_step)
        del plain
        check_range(chosen)
        payload = self._pack(chosen, uses, sent, basis_id)
        # Commit the stream state only now that the frame exists.
        self._sum, self._outer, self._rows = stats
        self._basis, self._basis_id, self._inverse = basis, basis_id, inverse
        self._frames += 1
        return payload

    def _pack(self, q, uses: bool, sent: np.ndarray | None, basis_id: int) -> bytes:
        rank = q.coeffs.shape[1] if uses else 0
        flags = (_USES_BASIS if uses else 0) | (_HAS_BASIS if sent is not None else 0)
        chans = q.means.shape[0]
        parts = [_HEAD.pack(q.step, flags, basis_id, rank, chans, self.stream_id)]
        if sent is not None:
            parts.append(pack_blob((sent // _COARSE).astype("<i2").tobytes()))
        parts.append(pack_blob(q.means.astype("<i8").tobytes()))
        coder = constriction.stream.queue.RangeEncoder()
        field = q.coeffs if uses else q.resid
        # int32 codes go in as they are (encode_field widens them itself, to the same bytes)
        parts.append(
            encode_field(coder, field if field.dtype == np.int32 else field.astype(np.int64))
        )
        parts.append(coder.get_compressed().tobytes())
        return b"".join(parts)


class LossyStreamDecoder(StreamDecoder):
    """The receiving end: the basis the stream has taught so far."""

    codec: LossyStreamCodec

    def reset(self) -> None:
        """Forget the stream: the next frame may start any stream (it must use no basis)."""
        self._dec_basis: np.ndarray | None = None
        self._dec_basis_id = 0
        self._stream_id: int | None = None
        self._staged: tuple[np.ndarray | None, int, int] | None = None

    def state_dict(self) -> dict[str, Any]:
        """The stream followed, the basis it has taught and its number (copies)."""
        return {
            "version": STATE_VERSION,
            "stream_id": self._stream_id,
            "basis": _copy(self._dec_basis),
            "basis_id": self._dec_basis_id,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state_dict(); CodecError if it is malformed or from another version."""
        state = _version(state)
        n = _channels(state, "basis", self.config["max_channels"])
        basis = _basis(state, n)
        basis_id = sd.integer(state, "basis_id", "lossy-stream", hi=_MAX_BASIS_ID + 1)
        if "stream_id" not in state:
            raise CodecError("lossy-stream state lacks stream_id")
        stream_id = None
        if not sd.is_none(state["stream_id"]):
            stream_id = sd.integer(state, "stream_id", "lossy-stream", hi=_MAX_STREAM_ID)
        self._dec_basis, self._dec_basis_id, self._stream_id = basis, basis_id, stream_id
        self._staged = None

    def commit(self) -> None:
        """Take the stream id and basis the last decoded frame brought."""
        if self._staged is not None:
            self._dec_basis, self._dec_basis_id, self._stream_id = self._staged
            self._staged = None

    def decode_array(self, payload, dtype: DType, shape: tuple[int, ...]) -> np.ndarray:
        numel = math.prod(shape)
        mv = memoryview(payload)
        nrows, nchan = channels_rows(shape, numel)
        if numel == 0 or len(mv) < _HEAD.size:
            raise CodecError("lossy-stream payload truncated or empty")
        step, flags, basis_id, rank, chans, stream_id = _HEAD.unpack_from(mv, 0)
        pos = _HEAD.size
        self._staged = None
        if self._stream_id is not None and stream_id != self._stream_id:
            raise CodecError(
                f"lossy-stream frame belongs to stream {stream_id:#x}, this decoder follows "
                f"{self._stream_id:#x}: a frame of another stream"
            )
        if not (math.isfinite(step) and step > 0) or flags & ~(_USES_BASIS | _HAS_BASIS):
            raise CodecError("lossy-stream header is invalid")
        if nchan > self.config["max_channels"]:
            raise CodecError(f"lossy-stream frame has {nchan} channels, above max_channels")
        if chans != nchan or rank not in ((nchan,) if flags & _USES_BASIS else (0,)):
            raise CodecError("lossy-stream header disagrees with the tensor shape")
        basis, basis_at, new_basis = self._dec_basis, None, None
        if flags & _HAS_BASIS:
            if rank == 0 or basis_id != self._dec_basis_id + 1:
                raise CodecError("lossy-stream basis update is out of sequence")
            basis_at, pos = pos, skip_blob(mv, pos, "stream basis")  # read once the rest fits
        elif basis_id != self._dec_basis_id:
            raise CodecError(
                f"lossy-stream frame needs basis #{basis_id}, this decoder holds "
                f"#{self._dec_basis_id}: a frame was lost or reordered"
            )
        elif flags & _USES_BASIS and (basis is None or basis.shape != (rank, nchan)):
            raise CodecError("lossy-stream frame uses a basis the decoder does not have")
        raw, pos = unpack_blob(mv, pos, 8 * nchan, "channel means")
        means = np.frombuffer(raw, dtype="<i8").astype(np.float64)
        side, pos = read_field(mv, pos, nrows, nchan)
        check_room(len(mv) - pos, side.min_bits, "lossy-stream range-coded stream")
        if basis_at is not None:  # channels^2 entries: only once the field is known to fit
            check_decode_size(rank * nchan, 8)  # the float64 basis the decoder keeps
            raw, _ = unpack_blob(mv, basis_at, 2 * rank * nchan, "stream basis")
            coarse = np.frombuffer(raw, dtype="<i2").reshape(rank, nchan)
            if int(coarse.min()) < -127 or int(coarse.max()) > 127:
                raise CodecError("lossy-stream basis entries out of range")
            new_basis = coarse.astype(np.float64)
            new_basis *= _COARSE
            basis = new_basis
            del raw, coarse
        decoder = range_decoder(mv[pos:], "lossy-stream range-coded stream")
        # Values go straight into the output: a plain field as it is decoded, a field in the
        # basis (a row needs all its coefficients) from an int16 copy, a block of rows at a
        # time. Every step is the same float64 arithmetic as on whole arrays.
        out = np.empty((nrows, nchan), dtype=dtype.numpy)
        if not flags & _USES_BASIS:
            flat = out.reshape(-1)

            def put(at: np.ndarray, values: np.ndarray) -> None:
                v = (values + means[at % nchan]) * step
                with np.errstate(over="ignore", invalid="ignore"):
                    flat[at] = v

            decode_field_into(decoder, side, put)
        else:
            field = _Field(nrows * nchan, side.magnitude)
            decode_field_into(decoder, side, field.put)
            if field.biggest * rank * FIX >= 2**53:
                raise CodecError("lossy-stream coefficients are out of range")
            field.finish()
            shift = means * step
            # blocks of up to 64 Ki values (the product's efficiency) whose two float64
            # temporaries stay within 0.4x the input (1/20 of a 16-bit tensor's rows)
            per = max(16, min((1 << 16) // nchan, nrows * dtype.itemsize // 40))
            for r0 in range(0, nrows, per):
                r1 = min(nrows, r0 + per)
                p = field.rows(r0 * nchan, r1 * nchan).reshape(r1 - r0, nchan) @ basis
                p *= step / FIX
                p += shift
                with np.errstate(over="ignore", invalid="ignore"):
                    out[r0:r1] = p
        if not all_finite(out):
            raise CodecError(f"lossy-stream frame decodes to values beyond {dtype.name}")
        # committed by decode() once the tensor is delivered: a failed frame changes nothing
        self._staged = (basis, basis_id, stream_id)
        return out.reshape(shape)
