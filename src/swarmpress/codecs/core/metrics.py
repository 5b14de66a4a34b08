"""Quality, size and speed metrics, with the Apex (Subnet 1) definitions to the letter.

All error metrics flatten both tensors and compute in float64 (DESIGN.md "Metrics").
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from swarmpress.codecs.core.tensors import to_float64

APEX_LOSSY_SIMILARITY = 0.99
APEX_TIME_CONSTANT = 1.012


def _pair(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    a, b = to_float64(x), to_float64(y)
    if a.shape != b.shape:
        raise ValueError(f"metric needs tensors of equal size, got {a.size} and {b.size} values")
    return a, b


def similarity(x: Any, y: Any) -> float:
    """Apex similarity: cos(x, y) * (1 - ||x - y|| / ||x||), with the zero-norm conventions."""
    a, b = _pair(x, y)
    nx = float(np.linalg.norm(a))
    ny = float(np.linalg.norm(b))
    if nx == 0.0:
        return 1.0 if ny == 0.0 else 0.0
    cos = 0.0 if ny == 0.0 else float(np.dot(a, b)) / (nx * ny)
    return cos * (1.0 - float(np.linalg.norm(a - b)) / nx)


def cosine(x: Any, y: Any) -> float:
    """Cosine similarity of the flattened tensors (1 when both are zero, 0 when one is)."""
    a, b = _pair(x, y)
    nx, ny = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if nx == 0.0 or ny == 0.0:
        return 1.0 if nx == ny else 0.0
    return float(np.dot(a, b)) / (nx * ny)


def rel_l2(x: Any, y: Any) -> float:
    """||x - y|| / ||x|| (0 when both are zero, inf when only x is)."""
    a, b = _pair(x, y)
    err = float(np.linalg.norm(a - b))
    nx = float(np.linalg.norm(a))
    if nx == 0.0:
        return 0.0 if err == 0.0 else math.inf
    return err / nx


def max_abs_error(x: Any, y: Any) -> float:
    """Largest absolute elementwise difference."""
    a, b = _pair(x, y)
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def psnr(x: Any, y: Any) -> float:
    """Peak signal-to-noise ratio in dB, peak = max |x| (inf for an exact match)."""
    a, b = _pair(x, y)
    mse = float(np.mean((a - b) ** 2)) if a.size else 0.0
    if mse == 0.0:
        return math.inf
    peak = float(np.max(np.abs(a)))
    if peak == 0.0:
        return -math.inf
    return 10.0 * math.log10(peak * peak / mse)


def ratio(compressed_bytes: int, original_bytes: int) -> float:
    """Compressed size over original size (lower is better)."""
    if original_bytes <= 0:
        raise ValueError("original size must be positive")
    return compressed_bytes / original_bytes


def bits_per_value(compressed_bytes: int, numel: int) -> float:
    """Average number of bits on the wire per tensor element."""
    if numel <= 0:
        raise ValueError("tensor must have at least one element")
    return 8.0 * compressed_bytes / numel


def lossless_score(ratio_: float, seconds: float) -> float:
    """Apex lossless track: clip((1 - ratio) * (1 - t / 1.012), 0, 1), t = compress + decompress."""
    return float(np.clip((1.0 - ratio_) * (1.0 - seconds / APEX_TIME_CONSTANT), 0.0, 1.0))


def lossy_score(ratio_: float, sim: float) -> float:
    """Apex lossy track: clip(1 - ratio, 0, 1) if similarity > 0.99 else 0."""
    if not sim > APEX_LOSSY_SIMILARITY:
        return 0.0
    return float(np.clip(1.0 - ratio_, 0.0, 1.0))


def break_even_bandwidth(ratio_: float, original_bytes: int, seconds: float) -> float:
    """B* = (1 - ratio) * S / (t_c + t_d), bytes per second; below it the codec pays off."""
    saved = (1.0 - ratio_) * original_bytes
    if saved <= 0:
        return 0.0
    if seconds <= 0:
        return math.inf
    return saved / seconds


def transfer_time(
    original_bytes: int, bandwidth: float, latency: float, ratio_: float = 1.0, seconds: float = 0.0
) -> float:
    """End-to-end time to ship a tensor: codec time + latency + compressed bytes / bandwidth."""
    return seconds + latency + ratio_ * original_bytes / bandwidth
