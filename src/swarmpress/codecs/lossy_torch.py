"""Device-side quantize and dequantize for the `lossy` fast mode, in torch on any device.

When a tensor lives on an accelerator, the passes that touch every value (channel
statistics, measuring a candidate step, producing the integer codes, and dequantizing on
decode) run there; only the integer codes cross to the host, where the rANS coder of
lossy_fast.py packs them. The arithmetic is the host kernels' to the bit: float64
products, round-half-even, float32, then the output dtype (round-to-nearest-even), so a
frame encoded on either side decodes to the same bits on the other.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from swarmpress.codecs import lossy_fast
from swarmpress.codecs.tensors import DType


def _torch():
    import torch

    return torch


def torch_dtype(dtype: DType) -> Any:
    torch = _torch()
    return {
        DType.FLOAT32: torch.float32,
        DType.FLOAT16: torch.float16,
        DType.BFLOAT16: torch.bfloat16,
    }[dtype]


class TorchBackend:
    """Statistics and measurement passes on the tensor's own device (lossy_fast.Search)."""

    def __init__(self, tensor: Any, dtype: DType, rows: int, chans: int) -> None:
        torch = _torch()
        self.dtype, self.rows, self.chans = dtype, rows, chans
        self.device = tensor.device
        self.out_dtype = torch_dtype(dtype)
        self.x = tensor.detach().reshape(rows, chans).to(torch.float64)

    def _vec(self, a: np.ndarray) -> Any:
        return _torch().from_numpy(np.ascontiguousarray(a, dtype=np.float64)).to(self.device)

    def stats(self) -> tuple[np.ndarray, np.ndarray, float]:
        s2 = (self.x * self.x).sum(0).cpu().numpy()
        return self.x.sum(0).cpu().numpy(), s2, float(s2.sum())

    def row_energy(self, mean: np.ndarray, inv_var: np.ndarray) -> np.ndarray:
        d = self.x - self._vec(mean)
        return ((d * d) * self._vec(inv_var)).sum(1).cpu().numpy() / self.chans

    def _codes(self, step: float, mu: np.ndarray) -> Any:
        return _torch().round(self.x * (1.0 / step)) - self._vec(mu)

    def measure(self, step: float, mu: np.ndarray, row_w: np.ndarray):
        """(dot, |x|^2, |y|^2, |x-y|^2, max |x-y|, max |code|, channel accumulators)."""
        torch = _torch()
        q = self._codes(step, mu)
        y = dequantize(q, mu, step, self.out_dtype, self.device).to(torch.float64)
        d = self.x - y
        sums = torch.stack(
            [
                (self.x * y).sum(),
                (self.x * self.x).sum(),
                (y * y).sum(),
                (d * d).sum(),
                d.abs().max(),
                q.abs().max(),
            ]
        ).cpu()
        acc = ((q * q) * self._vec(row_w)[:, None]).sum(0).cpu().numpy()
        return (*(float(v) for v in sums), acc)

    def codes(self, step: float, mu: np.ndarray) -> np.ndarray:
        """The residual codes at step, as a flat host int64 array for the rANS coder."""
        torch = _torch()
        return self._codes(step, mu).to(torch.int64).reshape(-1).cpu().numpy()


def dequantize(codes: Any, mu: np.ndarray, step: float, out_dtype: Any, device: Any,
               proj: Any = None) -> Any:  # fmt: skip
    """float32((code + mu[channel]) * step [+ projection]) rounded to out_dtype, on codes'
    device."""
    torch = _torch()
    m = torch.from_numpy(np.ascontiguousarray(mu, dtype=np.float64)).to(device)
    y = (codes.to(torch.float64) + m) * step
    if proj is not None:
        y = y + proj.to(torch.float64)
    return y.to(torch.float32).to(out_dtype)


def encode(tensor: Any, dtype: DType, rows: int, chans: int, target: str, value: float):
    """Fast-mode payload with the per-value passes on the tensor's device (None: out of range)."""
    torch = _torch()
    if not bool(torch.isfinite(tensor).all()):
        return None  # the host path sends such a tensor bit-exact (lossy.py)
    return lossy_fast.encode_with(TorchBackend(tensor, dtype, rows, chans), target, value)


def decode(
    payload: memoryview, dtype: DType, shape: tuple[int, ...], rows: int, chans: int, device: Any
) -> Any:
    """Decode a fast-mode payload: rANS on the host, dequantization on device."""
    torch = _torch()
    codes, parsed = lossy_fast.decode_codes(payload, rows, chans)
    q = torch.from_numpy(codes).to(device).reshape(rows, chans)
    proj = None
    if parsed.lowrank is not None:  # the projection, added before the rounding as on the host
        proj = torch.from_numpy(parsed.projection()).to(device).reshape(rows, chans)
    return dequantize(q, parsed.mu, parsed.step, torch_dtype(dtype), device, proj).reshape(shape)
