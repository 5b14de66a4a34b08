"""Device-side quantize and dequantize for the `lossy` fast mode, in torch on any device.

When a tensor lives on an accelerator, the passes that touch every value (channel
statistics, measuring a candidate step, producing the integer codes, the low-rank
coefficients and projection) run there; only the integer codes and a few hundred sampled
rows (for the low-rank gate and basis) cross to the host, where the rANS coder of
fast.py packs them. Frames decode on the host, fused with the rANS decoder, and the
tensor moves: on an H200 that measured faster than decoding codes on the host and
dequantizing on the device (codes cross at 8 bytes a value, a bf16 tensor at 2;
docs/results/gpu). decode() below is that device dequantizer, kept as the encoder's model
of the decoder and held to the host's bits by the tests. The arithmetic is the host
kernels' to the bit: float64 products, round-half-even, float32, then the output dtype
(round-to-nearest-even), so a frame encoded on either side decodes to the same bits.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from swarmpress.codecs.core.tensors import DType
from swarmpress.codecs.families.lossy import fast as lossy_fast
from swarmpress.codecs.families.lossy import lowrank as lossy_lowrank


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

    def __init__(self, tensor: Any, dtype: DType, rows: int, chans: int, proj: Any = None):
        torch = _torch()
        self.dtype, self.rows, self.chans = dtype, rows, chans
        self.device = tensor.device
        self.out_dtype = torch_dtype(dtype)
        x32 = tensor.detach().reshape(rows, chans).to(torch.float32)
        self.x = x32.to(torch.float64)
        self.proj = proj  # float32 (rows, chans) low-rank projection on the device, or None
        # what is quantized: float32(x - projection), as the host kernels' _sub_proj
        self.r = self.x if proj is None else (x32 - proj).to(torch.float64)

    def _vec(self, a: np.ndarray) -> Any:
        # a copy: `a` may be a read-only broadcast view, which torch.from_numpy warns about
        return _torch().from_numpy(np.array(a, dtype=np.float64)).to(self.device)

    def stats(self) -> tuple[np.ndarray, np.ndarray, float]:
        """(per-channel sum, sum of squares) of what is quantized, and the tensor's |x|^2."""
        s2 = (self.r * self.r).sum(0).cpu().numpy()
        xx = float(s2.sum()) if self.proj is None else float((self.x * self.x).sum())
        return self.r.sum(0).cpu().numpy(), s2, xx

    def row_energy(self, mean: np.ndarray, inv_var: np.ndarray) -> np.ndarray:
        d = self.r - self._vec(mean)
        return ((d * d) * self._vec(inv_var)).sum(1).cpu().numpy() / self.chans

    def _codes(self, step: float, mu: np.ndarray) -> Any:
        return _torch().round(self.r * (1.0 / step)) - self._vec(mu)

    def measure(self, step: float, mu: np.ndarray, row_w: np.ndarray):
        """(dot, |x|^2, |y|^2, |x-y|^2, max |x-y|, max |code|, channel accumulators)."""
        torch = _torch()
        q = self._codes(step, mu)
        y = dequantize(q, mu, step, self.out_dtype, self.device, self.proj).to(torch.float64)
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
        """The residual codes at step, as a flat host array for the rANS coder: int16 when
        they fit (2 bytes a value cross, as many as the bf16 input), else int64."""
        torch = _torch()
        q = self._codes(step, mu)
        narrow = bool(q.abs().max() <= np.iinfo(np.int16).max)
        return q.to(torch.int16 if narrow else torch.int64).reshape(-1).cpu().numpy()


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


def encode(tensor: Any, dtype: DType, rows: int, chans: int, target: str, value: float,
           threads: int = 1, max_rank: int = lossy_lowrank.MAX_RANK):  # fmt: skip
    """Fast-mode payload with the per-value passes on the tensor's device, the rANS coder on
    `threads` host threads (None: out of range)."""
    torch = _torch()
    if not bool(torch.isfinite(tensor).all()):
        return None  # the host path sends such a tensor bit-exact (codec.py)
    lowrank, proj = plan_lowrank(tensor.detach().reshape(rows, chans), target, value, max_rank)
    backend = TorchBackend(tensor, dtype, rows, chans, proj)
    return lossy_fast.encode_with(backend, target, value, threads, lowrank)


class _SampledRows:
    """Rows of a device tensor fetched to the host on demand (float32), so the low-rank gate
    and basis (lowrank.py, a few hundred rows) run there unchanged."""

    dtype = np.dtype(np.float32)

    def __init__(self, x: Any) -> None:
        self.x, self.shape = x, tuple(x.shape)

    def __getitem__(self, idx: np.ndarray) -> np.ndarray:
        torch = _torch()
        rows = self.x[torch.from_numpy(np.asarray(idx, dtype=np.int64)).to(self.x.device)]
        return rows.to(torch.float32).cpu().numpy()


def plan_lowrank(x: Any, target: str, value: float, max_rank: int = lossy_lowrank.MAX_RANK):
    """(low-rank part, its float32 projection on the device) for the (rows, channels) device
    tensor x, or (None, None): gate and basis from sampled rows on the host, coefficients and
    projection on the device; only the integer coefficients come back."""
    torch = _torch()
    rows_src = _SampledRows(x)
    with lossy_lowrank.one_blas_thread():
        rank, step = lossy_lowrank.choose(rows_src, target, value, max_rank)
        learnt = lossy_lowrank.basis_for(rows_src, rank) if rank else None
        if learnt is None:
            return None, None
        basis, m = learnt
    bt, shift = lossy_lowrank.coefficient_map(basis, m, step)
    dev = x.device
    c = torch.round(
        x.to(torch.float32) @ torch.from_numpy(bt).to(dev) - torch.from_numpy(shift).to(dev)
    )
    coeffs = c.to(torch.float64).cpu().numpy()
    if not lossy_lowrank.admissible(coeffs):
        return None, None
    basis16 = basis.astype(np.int16)
    proj = project(c.to(torch.float64), basis16, step, dev)
    return lossy_lowrank.LowRank(step, basis16, coeffs, None), proj


def project(coeffs: Any, basis: np.ndarray, step: float, device: Any) -> Any:
    """float32(coeffs @ basis * step / FIX) on the device: integer products summed exactly in
    float64 (in any order), one rounding for the scale, so it matches the host's bits."""
    torch = _torch()
    b = torch.from_numpy(basis.astype(np.float64)).to(device)
    t = coeffs.to(device=device, dtype=torch.float64) @ b
    t *= step / lossy_lowrank.FIX
    return t.to(torch.float32)


def decode(
    payload: memoryview, dtype: DType, shape: tuple[int, ...], rows: int, chans: int, device: Any
) -> Any:
    """Decode a fast-mode payload: rANS on the host, dequantization on the device (the
    arithmetic the encoder's measure() assumes; tests hold it to the host decoder's bits)."""
    torch = _torch()
    codes, parsed = lossy_fast.decode_codes(payload, rows, chans)
    q = torch.from_numpy(codes).to(device).reshape(rows, chans)
    proj = None
    if parsed.lowrank is not None:  # the projection, added before the rounding as on the host
        sec = parsed.lowrank  # the integer coefficients cross; the projection is made there
        coeffs = torch.from_numpy(sec.coefficients(0, rows))
        proj = project(coeffs, sec.basis, sec.step, device)
    return dequantize(q, parsed.mu, parsed.step, torch_dtype(dtype), device, proj).reshape(shape)
