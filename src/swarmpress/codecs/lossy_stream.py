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
import struct
from typing import Any

import constriction
import numpy as np

from swarmpress.codecs.base import Param, Role
from swarmpress.codecs.entropy import check_room, range_decoder
from swarmpress.codecs.errors import CodecError
from swarmpress.codecs.fieldcode import (
    decode_field,
    encode_field,
    estimate_bits,
    pack_blob,
    read_field,
    skip_blob,
    unpack_blob,
)
from swarmpress.codecs.lossy import (
    _FIX,
    LossyCodec,
    _as_rows,
    _channels_rows,
    _project,
    check_range,
)
from swarmpress.codecs.registry import register
from swarmpress.codecs.tensors import DType

_HEAD = struct.Struct("<dBIHI")  # step, flags, basis id, rank, channels
_USES_BASIS, _HAS_BASIS = 0x01, 0x02
_COARSE = 1 << 8  # stream bases travel as int8 with 7 fractional bits: n * 2**8 on 2**15
STATE_VERSION = 1


class _Transformed:
    """A candidate coded entirely in a complete stream basis: coordinates, no residual."""

    def __init__(self, x: np.ndarray, step: float, basis: np.ndarray, inverse: np.ndarray):
        self.step = step
        self.means = np.rint(x.mean(axis=0) / step)
        base = self.means * step
        self.coeffs = np.rint(((x - base) @ inverse) / step)
        self.values = base + _project(self.coeffs, basis, step)


@register
class StreamLossyCodec(LossyCodec):
    """Quality-targeted lossy coding with a KLT basis learned from earlier frames (stateful).

    One instance encodes one stream and another instance (same parameters) decodes it, in
    order. `swarmpress.decode` refuses these frames: decode with `codec.decode(blob)`.
    """

    codec_id = "lossy-stream"
    summary = "lossy + a channel basis learned from the stream (stateful, receiver follows)"
    stateful = True
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
        self.reset()

    def reset(self) -> None:
        """Forget the stream: statistics, basis and frame count (both directions)."""
        self._frames = 0
        self._sum: np.ndarray | None = None
        self._outer: np.ndarray | None = None
        self._rows = 0
        self._basis: np.ndarray | None = None  # (channels, channels), 2**15 fixed point
        self._inverse: np.ndarray | None = None
        self._basis_id = 0
        self._dec_basis: np.ndarray | None = None
        self._dec_basis_id = 0

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the stream elsewhere (numpy arrays and ints)."""
        return {
            "version": STATE_VERSION,
            "frames": self._frames,
            "rows": self._rows,
            "sum": self._sum,
            "outer": self._outer,
            "basis": self._basis,
            "basis_id": self._basis_id,
            "dec_basis": self._dec_basis,
            "dec_basis_id": self._dec_basis_id,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state_dict(); CodecError if it is from another version."""
        if state.get("version") != STATE_VERSION:
            raise CodecError(f"lossy-stream state version {state.get('version')!r} unsupported")
        self._frames = int(state["frames"])
        self._rows = int(state["rows"])
        self._sum, self._outer = state["sum"], state["outer"]
        self._basis, self._basis_id = state["basis"], int(state["basis_id"])
        self._inverse = None if self._basis is None else np.linalg.inv(self._basis / _FIX)
        self._dec_basis, self._dec_basis_id = state["dec_basis"], int(state["dec_basis_id"])

    # ------------------------------------------------------------------ encode
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
        outer = x.T @ x + (0.0 if self._outer is None else self._outer)
        return total, outer, self._rows + x.shape[0]

    def _new_basis(self, stats, noise: float) -> np.ndarray | None:
        total, outer, rows = stats
        mean = total / rows
        cov = outer / rows - np.outer(mean, mean)
        lam, vec = np.linalg.eigh(cov)
        order = np.argsort(lam)[::-1]
        lam, vec = lam[order], vec[:, order]
        if not np.any(lam > noise * 4.0 ** self.config["energy_bits"]):
            return None
        coarse = np.clip(np.rint(vec.T * (_FIX // _COARSE)), -127, 127)
        if np.linalg.matrix_rank(coarse) < coarse.shape[0]:
            return None
        return coarse * _COARSE

    def encode_array(self, arr: np.ndarray, role: Role) -> bytes:
        if arr.size == 0:
            raise CodecError("lossy-stream cannot carry an empty tensor")
        x = _as_rows(arr)
        if not np.isfinite(x).all():
            raise CodecError("lossy-stream cannot encode NaN or infinite values; use `lossless`")
        stats = self._accumulated(x)
        plain = self._search(x, arr.dtype, self._plain(x), self._initial_step(x))
        basis, basis_id, inverse, sent = self._basis, self._basis_id, self._inverse, None
        if self._refresh_due():
            fresh = self._new_basis(stats, plain.step**2 / 12.0)
            if fresh is not None:
                basis, basis_id, sent = fresh, basis_id + 1, fresh
                inverse = np.linalg.inv(fresh / _FIX)
        chosen, uses = plain, False
        if basis is not None:
            cand = self._search(
                x, arr.dtype, lambda step: _Transformed(x, step, basis, inverse), plain.step
            )
            if sent is not None or estimate_bits(cand.coeffs) < estimate_bits(plain.resid):
                chosen, uses = cand, True
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
        parts = [_HEAD.pack(q.step, flags, basis_id, rank, chans)]
        if sent is not None:
            parts.append(pack_blob((sent // _COARSE).astype("<i2").tobytes()))
        parts.append(pack_blob(q.means.astype("<i8").tobytes()))
        coder = constriction.stream.queue.RangeEncoder()
        field = q.coeffs if uses else q.resid
        parts.append(encode_field(coder, field.astype(np.int64)))
        parts.append(coder.get_compressed().tobytes())
        return b"".join(parts)

    # ------------------------------------------------------------------ decode
    def decode_array(self, payload, dtype: DType, shape: tuple[int, ...]) -> np.ndarray:
        numel = math.prod(shape)
        mv = memoryview(payload)
        nrows, nchan = _channels_rows(shape, numel)
        if numel == 0 or len(mv) < _HEAD.size:
            raise CodecError("lossy-stream payload truncated or empty")
        step, flags, basis_id, rank, chans = _HEAD.unpack_from(mv, 0)
        pos = _HEAD.size
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
            raw, _ = unpack_blob(mv, basis_at, 2 * rank * nchan, "stream basis")
            new_basis = np.frombuffer(raw, dtype="<i2").astype(np.float64).reshape(rank, nchan)
            if np.abs(new_basis).max() > 127:
                raise CodecError("lossy-stream basis entries out of range")
            basis = new_basis * _COARSE
        decoder = range_decoder(mv[pos:], "lossy-stream range-coded stream")
        field = decode_field(decoder, side)  # int32 where the values fit
        if flags & _USES_BASIS:
            biggest = max(abs(int(field.min())), abs(int(field.max())))
            if biggest * rank * _FIX >= 2**53:
                raise CodecError("lossy-stream coefficients are out of range")
        out = np.empty((nrows, nchan), dtype=dtype.numpy)
        rows_per = max(1, (1 << 16) // nchan)
        for r0 in range(0, nrows, rows_per):  # the same float64 steps, a block of rows at a time
            part = field[r0 : r0 + rows_per]
            if flags & _USES_BASIS:
                values = means[None, :] * step + _project(part.astype(np.float64), basis, step)
            else:
                values = (part + means[None, :]) * step
            with np.errstate(over="ignore", invalid="ignore"):
                out[r0 : r0 + rows_per] = values.astype(dtype.numpy)
        if new_basis is not None:  # commit state only once the whole frame decoded
            self._dec_basis, self._dec_basis_id = basis, basis_id
        return out.reshape(shape)
