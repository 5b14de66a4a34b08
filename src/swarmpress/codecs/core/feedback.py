"""Error feedback over any codec: the sender keeps what a frame did not carry.

Gradients and DiLoCo pseudo-gradients tolerate very lossy codecs when nothing is lost for
good (Seide et al. 2014, "1-bit SGD"; Karimireddy et al. 2019, "EF-SGD"; SparseLoCo): the
sender adds to each tensor the residual e of the calls before it, encodes the sum, and
keeps e = sum - decoded. The state lives only on the sending side, so the frames are the
wrapped codec's own, stateless frames: any receiver decodes them with `swarmpress.decode`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from swarmpress.codecs.core import statedict as sd
from swarmpress.codecs.core.base import Codec, Role, Sent, host_array, parse_role
from swarmpress.codecs.core.errors import CodecError
from swarmpress.codecs.core.frame import MAX_NDIM
from swarmpress.codecs.core.tensors import all_finite, to_float32

STATE_VERSION = 1
_BATCH = 1 << 16  # values added at a time when the residual is updated in place
_F32_MAX = float(np.finfo(np.float32).max)


class ErrorFeedback:
    """One stream of same-shaped tensors through `codec`, with an error-feedback residual.

    encode() adds the float32 residual to the tensor, encodes the sum with the codec and
    keeps what the receiver will not get; a tensor of another shape raises CodecError until
    reset(). state_dict() / load_state_dict() save and restore the residual (numpy array plus
    JSON-able metadata, e.g. through np.savez), so a restarted sender continues the stream
    with byte-identical frames. A failed call changes nothing.
    """

    def __init__(self, codec: Codec | str) -> None:
        if isinstance(codec, str):
            from swarmpress.codecs.core.specs import build_codec

            codec = build_codec(codec)
        if not isinstance(codec, Codec):
            raise CodecError(f"error feedback wraps a stateless codec, not {type(codec).__name__}")
        self.codec = codec
        self.reset()

    def __repr__(self) -> str:
        return f"ErrorFeedback({self.codec!r}, steps={self._steps})"

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget the stream: drop the residual; the next tensor may have any shape."""
        self._shape: tuple[int, ...] | None = None
        self._residual: np.ndarray | None = None  # flat float32; None before the first call
        self._steps = 0

    @property
    def steps(self) -> int:
        """Tensors encoded since the stream started."""
        return self._steps

    @property
    def residual(self) -> np.ndarray | None:
        """A copy of the residual in the stream's shape (None before the first tensor)."""
        if self._residual is None:
            return None
        return self._residual.reshape(self._shape).copy()

    def state_dict(self) -> dict[str, Any]:
        """{"version", "active", "shape", "steps"} (JSON-able) + "residual" (float32 array of
        the stream's shape, empty when not active); np.savez(f, **state) keeps it."""
        active = self._shape is not None
        return {
            "version": STATE_VERSION,
            "active": active,
            "shape": list(self._shape) if active else [],
            "steps": self._steps,
            "residual": self.residual if active else np.zeros(0, dtype=np.float32),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a state_dict(); CodecError if it is malformed or does not fit this stream."""
        state = sd.mapping(state, "error-feedback")
        version = sd.integer(state, "version", "error-feedback", hi=1 << 31)
        if version != STATE_VERSION:
            raise CodecError(
                f"error-feedback state version {version}; this build reads {STATE_VERSION}"
            )
        active = sd.flag(state, "active", "error-feedback")
        shape = sd.dims(state, "shape", "error-feedback", MAX_NDIM)
        steps = sd.integer(state, "steps", "error-feedback")
        if "residual" not in state:
            raise CodecError("error-feedback state lacks residual")
        if not active:
            self.reset()
            return
        res = sd.float_array(state, "residual", "error-feedback", shape, _F32_MAX, kinds="f")
        if self._shape is not None and self._shape != shape:
            raise CodecError(
                f"error-feedback state is for shape {shape}, this stream has shape "
                f"{self._shape}; call reset() first to switch streams"
            )
        self._shape, self._residual = shape, res.astype(np.float32).reshape(-1)
        self._steps = steps

    # ------------------------------------------------------------------ encode
    def encode(self, tensor: Any, role: Role | str = Role.UNSPECIFIED) -> bytes:
        """A frame of the codec for tensor + residual; the residual keeps the rest."""
        role = parse_role(role)
        arr, info = host_array(tensor)
        shape = tuple(arr.shape)
        if self._shape is not None and shape != self._shape:
            raise CodecError(
                f"error-feedback stream has shape {self._shape}, got a tensor of shape "
                f"{shape}; call reset() to start a new stream"
            )
        payload, sent = self.codec.encode_sum(arr, self._residual, role)
        frame = self.codec.pack(info, payload)  # before the state changes: a failure keeps it
        self._residual = self._carry(arr.reshape(-1), sent)
        self._shape = shape
        self._steps += 1
        return frame

    def _carry(self, x: np.ndarray, sent: Sent) -> np.ndarray:
        """residual + x - sent, float32, in place where the codec sent a sparse part."""
        if sent.dense is not None:  # a new array: the old residual stays until this succeeds
            e = to_float32(x).astype(np.float64)  # float64: x - sent stays finite near the max
            with np.errstate(over="ignore", invalid="ignore"):  # non-finite: refused below
                e -= sent.dense
                if self._residual is not None:
                    e += self._residual
                e = e.astype(np.float32)
            if not all_finite(e):
                raise CodecError(
                    "error feedback: the residual would hold NaN or infinity (a non-finite "
                    "tensor, or values beyond float32); the stream is unchanged"
                )
            return e
        if self._residual is None:  # the stream's first tensor: the residual starts as x
            e = to_float32(x)
        else:
            e = self._residual
            with np.errstate(over="ignore", invalid="ignore"):
                for i in range(0, e.size, _BATCH):
                    part = e[i : i + _BATCH]
                    np.add(part, to_float32(x[i : i + _BATCH]), out=part)
        e[sent.positions] -= sent.values
        return e


__all__ = ["ErrorFeedback"]
