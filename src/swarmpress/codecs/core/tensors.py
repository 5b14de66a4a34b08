"""Convert between user tensors (numpy or torch) and the canonical contiguous numpy array.

Codecs work on numpy; this module remembers the container, dtype and device so decode
returns what encode was given (DESIGN.md "Codec contract").
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import ml_dtypes
import numpy as np

from swarmpress.codecs.core.errors import CodecError

BF16 = np.dtype(ml_dtypes.bfloat16)


class DType(IntEnum):
    """Wire codes of the supported element types (one byte in the frame header)."""

    FLOAT32 = 1
    FLOAT16 = 2
    BFLOAT16 = 3

    @property
    def numpy(self) -> np.dtype:
        return _NUMPY[self]

    @property
    def itemsize(self) -> int:
        return _NUMPY[self].itemsize

    @classmethod
    def of(cls, dtype: np.dtype) -> DType:
        for code, np_dtype in _NUMPY.items():
            if np_dtype == dtype:
                return code
        raise CodecError(
            f"unsupported dtype {dtype}; swarmpress codecs take float32, float16 and bfloat16"
        )


_NUMPY = {
    DType.FLOAT32: np.dtype(np.float32),
    DType.FLOAT16: np.dtype(np.float16),
    DType.BFLOAT16: BF16,
}

# Unsigned integer view of each float type: the bit patterns lossless codecs operate on.
UINT_OF = {4: np.dtype(np.uint32), 2: np.dtype(np.uint16)}


class Container(IntEnum):
    """Which library the caller used; decode hands back the same kind of tensor."""

    NUMPY = 0
    TORCH = 1


@dataclass(frozen=True)
class TensorInfo:
    """Everything about the caller's tensor that the frame and decode need."""

    dtype: DType
    container: Container
    shape: tuple[int, ...]
    device: Any = None


def _torch():
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is optional for pure-numpy users
        return None
    return torch


def is_torch(obj: Any) -> bool:
    """True when obj is a torch.Tensor (without importing torch if it is not loaded)."""
    import sys

    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.Tensor)


def on_accelerator(obj: Any) -> bool:
    """True for a torch tensor on a non-CPU device (where device-side codec paths apply)."""
    return is_torch(obj) and obj.device.type != "cpu"


def torch_info(tensor: Any) -> TensorInfo:
    """Frame facts of a torch float tensor, without moving its data off its device."""
    torch = _torch()
    codes = {torch.float32: DType.FLOAT32, torch.float16: DType.FLOAT16}
    codes[torch.bfloat16] = DType.BFLOAT16
    if tensor.dtype not in codes:
        raise CodecError(
            f"unsupported torch dtype {tensor.dtype}; expected float32, float16 or bfloat16"
        )
    return TensorInfo(codes[tensor.dtype], Container.TORCH, tuple(tensor.shape), tensor.device)


def to_numpy(tensor: Any) -> tuple[np.ndarray, TensorInfo]:
    """Return a C-contiguous numpy copy-or-view of tensor plus the facts to restore it."""
    if is_torch(tensor):
        torch = _torch()
        device = tensor.device
        t = tensor.detach()
        if t.is_complex() or not t.is_floating_point():
            raise CodecError(f"unsupported torch dtype {t.dtype}; expected a float tensor")
        if t.dtype == torch.bfloat16:
            arr = t.cpu().contiguous().view(torch.int16).numpy().view(BF16)
        elif t.dtype in (torch.float32, torch.float16):
            arr = t.cpu().contiguous().numpy()
        else:
            raise CodecError(
                f"unsupported torch dtype {t.dtype}; expected float32, float16 or bfloat16"
            )
        container = Container.TORCH
    elif isinstance(tensor, np.ndarray | np.generic):
        arr = np.asarray(tensor)
        device = None
        container = Container.NUMPY
    else:
        raise CodecError(
            f"cannot encode a {type(tensor).__name__}; pass a numpy array or a torch tensor"
        )
    if arr.dtype.kind == "f" and arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("="))
    code = DType.of(arr.dtype)
    if not arr.flags.c_contiguous:
        arr = arr.copy(order="C")  # np.ascontiguousarray would turn a 0-d array into 1-d
    return arr, TensorInfo(code, container, tuple(arr.shape), device)


def from_numpy(arr: np.ndarray, container: Container, device: Any = None) -> Any:
    """Wrap a decoded numpy array in the container it was encoded from."""
    if container == Container.NUMPY:
        return arr
    torch = _torch()
    if torch is None:
        raise CodecError("this frame holds a torch tensor but torch is not installed")
    if not arr.flags.c_contiguous:
        arr = arr.copy(order="C")
    if arr.dtype == BF16:
        out = torch.from_numpy(arr.view(np.int16)).view(torch.bfloat16)
    else:
        out = torch.from_numpy(arr)
    if device is not None and str(device) != "cpu":
        out = out.to(device)
    return out


def as_bits(arr: np.ndarray) -> np.ndarray:
    """The unsigned-integer view of a float array (bit patterns, NaN payloads intact)."""
    return arr.view(UINT_OF[arr.dtype.itemsize])


def to_float64(tensor: Any) -> np.ndarray:
    """Flattened float64 copy of a numpy or torch tensor, for metrics."""
    if is_torch(tensor):
        torch = _torch()
        return tensor.detach().cpu().to(torch.float64).numpy().reshape(-1)
    return np.asarray(tensor).astype(np.float64).reshape(-1)


def all_finite(arr: np.ndarray) -> bool:
    """True when no element is NaN or infinite, without a full-size boolean temporary."""
    if arr.size == 0:
        return True
    with np.errstate(invalid="ignore", over="ignore"):
        lo, hi = arr.min(), arr.max()  # NaN propagates through both reductions
    return bool(np.isfinite(lo) and np.isfinite(hi))


@functools.cache
def _f16_table() -> np.ndarray:
    """float32 value of every float16 bit pattern (256 KiB, made on first use)."""
    return np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float32)


def to_float32(v: np.ndarray) -> np.ndarray:
    """A new float32 array of v's values; float16 goes through a table (3x faster than a cast,
    and the same bits: the table is that cast), a block at a time (take widens its indices)."""
    if v.dtype != np.float16:
        return v.astype(np.float32)
    table, bits = _f16_table(), v.view(np.uint16).reshape(-1)
    out = np.empty(v.size, dtype=np.float32)
    step = 1 << 14  # take makes intp indices: 8 bytes a value per call
    for i in range(0, v.size, step):  # every index is in range: "clip" skips raise's copy
        np.take(table, bits[i : i + step], out=out[i : i + step], mode="clip")
    return out.reshape(v.shape)
