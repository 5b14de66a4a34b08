"""Checked reading of state dicts: what load_state_dict() may trust and what it must refuse.

A state dict may come from np.savez, torch.save, JSON or a stranger; every value is read
strictly (an integer is an integer, not a float, a string or a bool), bounded, and turned
into a fresh array the caller owns, and every problem is a CodecError naming the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from swarmpress.codecs.core.errors import CodecError


def _scalar(value: Any) -> Any:
    """A 0-d numpy array (how np.savez keeps a Python scalar) as its item."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value.item()
    return value


def is_none(value: Any) -> bool:
    """None, or None as np.savez keeps it (a 0-d object array holding None)."""
    return _scalar(value) is None


def mapping(state: Any, what: str) -> Mapping[str, Any]:
    """The state itself when it is a mapping, else CodecError."""
    if not isinstance(state, Mapping):
        raise CodecError(f"{what} state must be a mapping (from state_dict())")
    return state


def integer(state: Mapping[str, Any], key: str, what: str, lo: int = 0, hi: int = 1 << 62) -> int:
    """state[key] as an int in [lo, hi]: Python or numpy integers only (not bool or float)."""
    if key not in state:
        raise CodecError(f"{what} state lacks {key}")
    v = _scalar(state[key])
    if isinstance(v, bool | np.bool_) or not isinstance(v, int | np.integer):
        raise CodecError(f"{what} state: {key} must be an integer, got {type(v).__name__}")
    if not lo <= int(v) <= hi:
        raise CodecError(f"{what} state: {key}={int(v)} is outside [{lo}, {hi}]")
    return int(v)


def flag(state: Mapping[str, Any], key: str, what: str) -> bool:
    """state[key] as a bool: True/False (Python or numpy) only."""
    if key not in state:
        raise CodecError(f"{what} state lacks {key}")
    v = _scalar(state[key])
    if not isinstance(v, bool | np.bool_):
        raise CodecError(f"{what} state: {key} must be true or false, got {type(v).__name__}")
    return bool(v)


def float_array(
    state: Mapping[str, Any], key: str, what: str, shape: tuple[int, ...] | None = None,
    limit: float = np.inf, kinds: str = "fiu",
) -> np.ndarray:  # fmt: skip
    """state[key] as a new C-contiguous float64 array (of `shape` when given), every value
    finite and within +-limit; `kinds` are the numpy dtype kinds accepted ("f": floats)."""
    if key not in state:
        raise CodecError(f"{what} state lacks {key}")
    try:
        arr = np.asarray(state[key])
    except (ValueError, TypeError):
        raise CodecError(f"{what} state: {key} is not an array") from None
    if arr.dtype.kind not in kinds:
        kind = "a float" if kinds == "f" else "a numeric"
        raise CodecError(f"{what} state: {key} must be {kind} array, got {arr.dtype}")
    if shape is not None and arr.shape != shape:
        raise CodecError(f"{what} state: {key} has shape {arr.shape}, expected {shape}")
    out = np.array(arr, dtype=np.float64, order="C", copy=True)
    with np.errstate(invalid="ignore"):
        bad = out.size and not (np.isfinite(out).all() and np.abs(out).max() <= limit)
    if bad:
        raise CodecError(f"{what} state: {key} holds NaN, infinite or too large values")
    return out


def dims(state: Mapping[str, Any], key: str, what: str, max_ndim: int) -> tuple[int, ...]:
    """state[key] as a shape: up to max_ndim non-negative integers."""
    if key not in state:
        raise CodecError(f"{what} state lacks {key}")
    try:
        arr = np.asarray(state[key])
    except (ValueError, TypeError):
        raise CodecError(f"{what} state: {key} is not a list of integers") from None
    if arr.ndim > 1 or (arr.size and arr.dtype.kind not in "iu") or arr.size > max_ndim:
        raise CodecError(f"{what} state: {key} must be at most {max_ndim} integers")
    out = tuple(int(v) for v in arr.reshape(-1))
    if any(d < 0 for d in out):
        raise CodecError(f"{what} state: {key} has a negative dimension")
    return out


__all__ = ["dims", "flag", "float_array", "integer", "is_none", "mapping"]
