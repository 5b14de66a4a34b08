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

import ml_dtypes
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
    to_float32,
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


class BaseCodec(ABC):
    """What every registered codec has: an id, checked parameters, a config round trip.

    Two kinds derive from it: `Codec` (stateless: any frame decodes on its own) and
    `StreamCodec` (stream.py: encoder and decoder state objects that follow one stream).
    """

    codec_id: ClassVar[str]
    summary: ClassVar[str]
    lossless: ClassVar[bool]
    #: Frames decode only in order, by a decoder that followed the whole stream.
    stream: ClassVar[bool] = False
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
    def from_frame_params(
        cls, params: dict[str, Any], local: dict[str, Any] | None = None
    ) -> BaseCodec:
        """The codec a frame's parameters describe: the sender's local parameters (threads)
        dropped, this process's (`local`) used instead; CodecError naming the codec."""
        merged = {k: v for k, v in params.items() if k not in cls.local_params}
        merged.update(local or {})
        try:
            return cls.from_config(merged)
        except CodecError as exc:
            raise CodecError(
                f"frame carries invalid parameters for {cls.codec_id!r}: {exc}"
            ) from None

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> BaseCodec:
        """Rebuild a codec from get_config() output."""
        config = dict(config)
        cid = config.pop("id", cls.codec_id)
        if cid != cls.codec_id:
            raise CodecError(f"config is for codec {cid!r}, not {cls.codec_id!r}")
        return cls(**config)

    def frame_params(self) -> dict[str, Any]:
        """Parameters written into each frame: what a receiver needs to rebuild the decoder."""
        return dict(self.config)

    def pack(self, info: TensorInfo, payload: bytes) -> bytes:
        """One frame of this codec around a payload for a tensor described by `info`."""
        return _frame.pack(
            self.codec_id,
            self.frame_params(),
            info.dtype,
            info.container,
            info.shape,
            payload,
            flags=_frame.FLAG_STREAM if self.stream else 0,
        )

    def check_frame(self, fr: _frame.Frame) -> None:
        """Refuse a frame of another codec, or of the other kind (stream or stateless), and
        one that declares more than the decode limits allow, before any decoder allocates."""
        if fr.codec_id != self.codec_id:
            raise CodecError(
                f"frame was made by codec {fr.codec_id!r}, not {self.codec_id!r}; "
                "use swarmpress.decode() for any frame"
            )
        if fr.stream != self.stream:
            kind = "a stream codec's" if fr.stream else "a stateless"
            raise CodecError(f"{self.codec_id}: this is {kind} frame; its flags are forged")
        # Both before any decoder allocates: the absolute cap, then the format's ratio.
        check_decode_size(fr.numel, fr.dtype.itemsize)
        check_expansion(
            self.codec_id, len(fr.payload), fr.numel * fr.dtype.itemsize, self.max_expansion
        )

    # -- registry listing -----------------------------------------------------------
    @classmethod
    def describe(cls) -> dict[str, Any]:
        """Machine-readable description of the codec for `swarmpress codecs --json`."""
        return {
            "id": cls.codec_id,
            "summary": cls.summary,
            "lossless": cls.lossless,
            "stream": cls.stream,
            "params": [p.describe() for p in cls.params],
            "doc": inspect.cleandoc(cls.__doc__ or ""),
        }


def same_params(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """The same parameters, value and type alike (3 and 3.0, 1 and True differ)."""
    return a.keys() == b.keys() and all(type(v) is type(b[k]) and v == b[k] for k, v in a.items())


def parse_role(role: Role | str) -> Role:
    """A Role from a Role or its value; CodecError listing the roles otherwise."""
    try:
        return Role(role)
    except ValueError:
        allowed = ", ".join(r.value for r in Role)
        raise CodecError(f"unknown tensor role {role!r}; allowed: {allowed}") from None


def host_array(tensor: Any) -> tuple[np.ndarray, TensorInfo]:
    """A numpy or torch tensor as a C-contiguous host array and its facts; CodecError when
    the tensor has more dimensions than a frame holds."""
    arr, info = to_numpy(tensor)
    check_ndim(arr.ndim)
    return arr, info


def check_ndim(ndim: int) -> None:
    """CodecError when a tensor has more dimensions than a frame holds."""
    if ndim > _frame.MAX_NDIM:
        raise CodecError(f"tensor has {ndim} dimensions; frames hold at most {_frame.MAX_NDIM}")


def out_of_memory(codec_id: str, fr: _frame.Frame) -> CodecError:
    """The error for a tensor within the cap that this machine cannot hold (or a decoder bug),
    so a caller handles bad frames with one except clause."""
    return CodecError(
        f"{codec_id}: not enough memory to decode a {fr.numel * fr.dtype.itemsize}-byte tensor"
    )


def checked_output(codec_id: str, arr: np.ndarray, fr: _frame.Frame, device: Any) -> Any:
    """A decoded array as the frame's container (numpy or torch on `device`), refused when it
    is not the dtype and shape the header promised."""
    if not arr.flags.writeable:
        arr = arr.copy()
    if arr.dtype != fr.dtype.numpy or arr.shape != fr.shape:
        raise CodecError(f"{codec_id}: decoded tensor does not match the frame header")
    try:
        return from_numpy(arr, fr.container, device)
    except (RuntimeError, AssertionError, TypeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CodecError(
            f"{codec_id}: cannot place the tensor on device {device!r}: {first}"
        ) from None


def check_residual(arr: np.ndarray, residual: np.ndarray | None) -> None:
    """CodecError unless residual is None or a flat float32 array with arr's element count."""
    if residual is None:
        return
    if (
        not isinstance(residual, np.ndarray) or residual.dtype != np.float32
        or residual.ndim != 1 or residual.size != arr.size
    ):  # fmt: skip
        raise CodecError(f"an error-feedback residual must be flat float32 with {arr.size} values")


class Codec(BaseCodec):
    """A stateless codec: encode a float tensor (numpy or torch) into a frame that decodes on
    its own, anywhere, with `swarmpress.decode`.

    Subclasses set codec_id, lossless, summary and params, and implement encode_array /
    decode_array on C-contiguous numpy arrays of float32, float16 or bfloat16.
    """

    # -- the public contract --------------------------------------------------------
    def encode(self, tensor: Any, role: Role | str = Role.UNSPECIFIED) -> bytes:
        """Compress one tensor into a self-describing, checksummed frame.

        A torch tensor on an accelerator goes to encode_on_device first, so codecs that can
        quantize there do; the others (or a None from it) work on a host copy.
        """
        role = parse_role(role)
        payload = None
        if on_accelerator(tensor):
            info = torch_info(tensor)
            check_ndim(len(info.shape))
            payload = self.encode_on_device(tensor, info, role)
        if payload is None:
            arr, info = host_array(tensor)
            payload = self.encode_array(arr, role)
        return self.pack(info, payload)

    def decode(self, blob: bytes | bytearray | memoryview, device: Any = None) -> Any:
        """Decode a frame made by this codec; same dtype, shape and container as encoded."""
        return self.decode_frame(_frame.unpack(blob), device)

    def decode_frame(self, fr: _frame.Frame, device: Any = None) -> Any:
        """Decode an unpacked frame (frame.unpack): the checks that need no payload parsing,
        then the decoder for the parameters the frame carries (this instance's local
        parameters, such as threads, kept)."""
        self.check_frame(fr)
        codec = self.for_params(fr.params)
        try:
            return codec._decode_checked(fr, device)
        except MemoryError:
            raise out_of_memory(self.codec_id, fr) from None

    def for_params(self, params: dict[str, Any]) -> Codec:
        """This codec, or one rebuilt with a frame's parameters where they differ from this
        instance's (a frame decodes the same whichever instance reads it)."""
        if same_params(params, self.frame_params()):
            return self
        local = {k: self.config[k] for k in self.local_params if k in self.config}
        return self.from_frame_params(params, local)  # type: ignore[return-value]

    def _decode_checked(self, fr: _frame.Frame, device: Any) -> Any:
        if fr.container == Container.TORCH and device is not None and str(device) != "cpu":
            out = self.decode_on_device(fr.payload, fr.dtype, fr.shape, device)
            if out is not None:
                if tuple(out.shape) != fr.shape:
                    raise CodecError(f"{self.codec_id}: decoded tensor does not match the frame")
                return out
        arr = self.decode_array(fr.payload, fr.dtype, fr.shape)
        return checked_output(self.codec_id, arr, fr, device)

    def encode_on_device(self, tensor: Any, info: TensorInfo, role: Role) -> bytes | None:
        """Payload computed where an accelerator tensor lives, or None to use the host path."""
        return None

    def decode_on_device(
        self, payload: bytes | memoryview, dtype: DType, shape: tuple[int, ...], device: Any
    ) -> Any | None:
        """Tensor decoded onto an accelerator device, or None to decode on the host and move."""
        return None

    def encode_sum(
        self, arr: np.ndarray, residual: np.ndarray | None, role: Role
    ) -> tuple[bytes, Sent]:
        """Payload for arr + residual (float32, as error feedback adds them) and what its
        receiver will decode, so ErrorFeedback can carry the difference to the next call.

        This general path forms the sum, encodes it in arr's dtype and decodes the payload;
        a codec that knows what it sent more cheaply (topk: its positions and values)
        overrides it. residual is flat (C order) float32, or None for zeros.
        """
        check_residual(arr, residual)
        total = to_float32(arr)
        if residual is not None:
            with np.errstate(over="ignore", invalid="ignore"):
                total.reshape(-1)[:] += residual
        if arr.dtype != np.float32:  # the sum may pass the dtype's largest value: clamp it
            top = float(ml_dtypes.finfo(arr.dtype).max)
            np.clip(total, -top, top, out=total)
        sent = total.astype(arr.dtype, copy=False)
        payload = self.encode_array(np.ascontiguousarray(sent), role)
        dtype = DType.of(arr.dtype)
        back = self.decode_array(payload, dtype, arr.shape)
        return payload, Sent(dense=np.asarray(back, dtype=np.float32).reshape(-1))

    @abstractmethod
    def encode_array(self, arr: np.ndarray, role: Role) -> bytes:
        """Compress a C-contiguous float array into payload bytes."""

    @abstractmethod
    def decode_array(
        self, payload: bytes | memoryview, dtype: DType, shape: tuple[int, ...]
    ) -> np.ndarray:
        """Rebuild the array from payload bytes; never trust the payload."""


@dataclass(frozen=True)
class Sent:
    """What a receiver decodes from a frame, as error feedback needs it: dense float32 values
    (C order, flattened), or float32 values at flat positions with zeros elsewhere."""

    dense: np.ndarray | None = None
    positions: np.ndarray | None = None
    values: np.ndarray | None = None


__all__ = ["BaseCodec", "Codec", "CodecError", "Param", "Role", "Sent", "TensorInfo"]
