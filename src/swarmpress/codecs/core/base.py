"""The Codec base class and the tensor roles codecs can specialise on.

Modelled on numcodecs (codec_id, get_config/from_config, a registry) and hivemind's
compression (tensor roles): a codec turns one tensor into one self-describing frame.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

import numpy as np

from swarmpress.codecs.core import frame as _frame
from swarmpress.codecs.core.errors import CodecError
from swarmpress.codecs.core.limits import check_decode_size, check_expansion
from swarmpress.codecs.core.tensors import (
    Container,
    DType,
    TensorInfo,
    from_numpy,
    on_accelerator,
    to_numpy,
    torch_info,
)


class Role(StrEnum):
    """What a tensor is; the best compression method differs by role."""

    ACTIVATION = "activation"
    GRADIENT = "gradient"
    WEIGHT_DELTA = "weight-delta"
    WEIGHTS = "weights"  # full parameters (a newcomer's copy, a checkpoint)
    OPTIMIZER_STATE = "optimizer-state"  # moments, outer momentum: travel with the weights
    UNSPECIFIED = "unspecified"


@dataclass(frozen=True)
class Param:
    """One constructor parameter of a codec, as listed by `swarmpress codecs`."""

    name: str
    type: type
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None

    def check(self, codec_id: str, value: Any) -> Any:
        """Coerce and validate a value; raise CodecError naming codec, parameter and rule."""
        if self.type is bool:
            if not isinstance(value, bool | np.bool_):
                raise CodecError(f"{codec_id}: parameter {self.name} must be true or false")
            value = bool(value)
        elif self.type is int:
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise CodecError(f"{codec_id}: parameter {self.name} must be an integer")
            value = int(value)
        elif self.type is float:
            if isinstance(value, bool) or not isinstance(value, int | float | np.number):
                raise CodecError(f"{codec_id}: parameter {self.name} must be a number")
            try:
                value = float(value)
            except OverflowError:
                raise CodecError(f"{codec_id}: parameter {self.name} is too large") from None
            if not np.isfinite(value):
                raise CodecError(f"{codec_id}: parameter {self.name} must be finite")
        elif self.type is str and not isinstance(value, str):
            raise CodecError(f"{codec_id}: parameter {self.name} must be a string")
        if self.choices is not None and value not in self.choices:
            allowed = ", ".join(map(str, self.choices))
            raise CodecError(f"{codec_id}: parameter {self.name}={value!r}; allowed: {allowed}")
        if self.minimum is not None and value < self.minimum:
            raise CodecError(f"{codec_id}: parameter {self.name}={value} is below {self.minimum}")
        if self.maximum is not None and value > self.maximum:
            raise CodecError(f"{codec_id}: parameter {self.name}={value} is above {self.maximum}")
        return value

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "type": self.type.__name__,
            "default": self.default,
            "help": self.help,
        }
        if self.choices is not None:
            out["choices"] = list(self.choices)
        if self.minimum is not None:
            out["minimum"] = self.minimum
        if self.maximum is not None:
            out["maximum"] = self.maximum
        return out


class Codec(ABC):
    """Encode a float tensor (numpy or torch) into a frame and back.

    Subclasses set codec_id, lossless, summary and params, and implement encode_array /
    decode_array on C-contiguous numpy arrays of float32, float16 or bfloat16.
    """

    codec_id: ClassVar[str]
    summary: ClassVar[str]
    lossless: ClassVar[bool]
    stateful: ClassVar[bool] = False  # an instance keeps state between frames
    #: The decoder keeps state carried from earlier frames (a basis learnt from the stream),
    #: so a receiver must see every frame of the stream, in order. False for codecs whose
    #: state lives on the sending side only (topk's error feedback): their frames decode on
    #: their own with the frame's parameters.
    decoder_state: ClassVar[bool] = False
    params: ClassVar[tuple[Param, ...]] = ()
    #: Most decoded bytes one payload byte can stand for, where the format bounds it (raw 1,
    #: zstd 32768); None where it cannot (an entropy coder turns a constant tensor into a
    #: few bytes), and decode_array then checks each stream against the shape itself.
    max_expansion: ClassVar[float | None] = None
    #: Parameters that belong to the process running the codec (e.g. threads), never read
    #: from a frame: a sender must not decide how a receiver spends its machine.
    local_params: ClassVar[tuple[str, ...]] = ()

    def __init__(self, **params: Any) -> None:
        known = {p.name: p for p in self.params}
        unknown = sorted(set(params) - set(known))
        if unknown:
            names = ", ".join(known) or "none"
            raise CodecError(
                f"{self.codec_id}: unknown parameter(s) {', '.join(unknown)}; known: {names}"
            )
        self.config: dict[str, Any] = {}
        for p in self.params:
            value = params.get(p.name, p.default)
            self.config[p.name] = p.check(self.codec_id, value)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config.items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.config == other.config  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((self.codec_id, tuple(sorted(self.config.items()))))

    # -- config round trip (numcodecs style) ------------------------------------------
    def get_config(self) -> dict[str, Any]:
        """The codec id and parameters: enough to rebuild an equal codec."""
        return {"id": self.codec_id, **self.config}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Codec:
        """Rebuild a codec from get_config() output."""
        config = dict(config)
        cid = config.pop("id", cls.codec_id)
        if cid != cls.codec_id:
            raise CodecError(f"config is for codec {cid!r}, not {cls.codec_id!r}")
        return cls(**config)

    # -- the public contract --------------------------------------------------------
    def encode(self, tensor: Any, role: Role | str = Role.UNSPECIFIED) -> bytes:
        """Compress one tensor into a self-describing, checksummed frame.

        A torch tensor on an accelerator goes to encode_on_device first, so codecs that can
        quantize there do; the others (or a None from it) work on a host copy.
        """
        try:
            role = Role(role)
        except ValueError:
            allowed = ", ".join(r.value for r in Role)
            raise CodecError(f"unknown tensor role {role!r}; allowed: {allowed}") from None
        payload = None
        if on_accelerator(tensor):
            info = torch_info(tensor)
            self._check_ndim(len(info.shape))
            payload = self.encode_on_device(tensor, info, role)
        if payload is None:
            arr, info = to_numpy(tensor)
            self._check_ndim(arr.ndim)
            payload = self.encode_array(arr, role)
        return _frame.pack(
            self.codec_id,
            self.frame_params(),
            info.dtype,
            info.container,
            info.shape,
            payload,
            flags=_frame.FLAG_STATEFUL if self.stateful else 0,
        )

    def decode(self, blob: bytes | bytearray | memoryview, device: Any = None) -> Any:
        """Decode a frame made by this codec; same dtype, shape and container as encoded."""
        fr = _frame.unpack(blob)
        if fr.codec_id != self.codec_id:
            raise CodecError(
                f"frame was made by codec {fr.codec_id!r}, not {self.codec_id!r}; "
                "use swarmpress.decode() for any frame"
            )
        return self.decode_frame(fr, device)

    @staticmethod
    def _check_ndim(ndim: int) -> None:
        if ndim > _frame.MAX_NDIM:
            raise CodecError(f"tensor has {ndim} dimensions; frames hold at most {_frame.MAX_NDIM}")

    def decode_frame(self, fr: _frame.Frame, device: Any = None) -> Any:
        """Decode an unpacked frame (frame.unpack) with this codec instance: the size checks
        that need no payload parsing, then the codec's decoder.

        A MemoryError (a tensor within the cap that this machine cannot hold, or a decoder
        bug) surfaces as CodecError, so a caller handles bad frames with one except clause.
        """
        nbytes = fr.numel * fr.dtype.itemsize
        # Both before any decoder allocates: the absolute cap, then the format's ratio.
        check_decode_size(fr.numel, fr.dtype.itemsize)
        check_expansion(self.codec_id, len(fr.payload), nbytes, self.max_expansion)
        try:
            return self._decode_checked(fr, device)
        except MemoryError:
            raise CodecError(
                f"{self.codec_id}: not enough memory to decode a {nbytes}-byte tensor"
            ) from None

    def _decode_checked(self, fr: _frame.Frame, device: Any) -> Any:
        if fr.container == Container.TORCH and device is not None and str(device) != "cpu":
            out = self.decode_on_device(fr.payload, fr.dtype, fr.shape, device)
            if out is not None:
                if tuple(out.shape) != fr.shape:
                    raise CodecError(f"{self.codec_id}: decoded tensor does not match the frame")
                return out
        arr = self.decode_array(fr.payload, fr.dtype, fr.shape)
        if not arr.flags.writeable:
            arr = arr.copy()
        if arr.dtype != fr.dtype.numpy or arr.shape != fr.shape:
            raise CodecError(f"{self.codec_id}: decoded tensor does not match the frame header")
        return from_numpy(arr, fr.container, device)

    def frame_params(self) -> dict[str, Any]:
        """Parameters written into each frame: what a receiver needs to rebuild the decoder."""
        return dict(self.config)

    def encode_on_device(self, tensor: Any, info: TensorInfo, role: Role) -> bytes | None:
        """Payload computed where an accelerator tensor lives, or None to use the host path."""
        return None

    def decode_on_device(
        self, payload: bytes | memoryview, dtype: DType, shape: tuple[int, ...], device: Any
    ) -> Any | None:
        """Tensor decoded onto an accelerator device, or None to decode on the host and move."""
        return None

    @abstractmethod
    def encode_array(self, arr: np.ndarray, role: Role) -> bytes:
        """Compress a C-contiguous float array into payload bytes."""

    @abstractmethod
    def decode_array(
        self, payload: bytes | memoryview, dtype: DType, shape: tuple[int, ...]
    ) -> np.ndarray:
        """Rebuild the array from payload bytes; never trust the payload."""

    # -- registry listing -----------------------------------------------------------
    @classmethod
    def describe(cls) -> dict[str, Any]:
        """Machine-readable description of the codec for `swarmpress codecs --json`."""
        return {
            "id": cls.codec_id,
            "summary": cls.summary,
            "lossless": cls.lossless,
            "stateful": cls.stateful,
            "decoder_state": cls.decoder_state,
            "params": [p.describe() for p in cls.params],
            "doc": inspect.cleandoc(cls.__doc__ or ""),
        }


__all__ = ["Codec", "CodecError", "Param", "Role", "TensorInfo"]
