"""`blockq`: block absmax quantization to int8/int4 with entropy-coded streams.

The common community method (and the shape of most Apex lossy submissions): split the
flattened tensor into blocks, scale each block by its largest magnitude, round to a signed
b-bit grid, then range-code the integer codes and zstd the block maxima. The maxima are
sent exactly (float32 holds every input value) and the grid step is derived from them in
float64, so subnormal blocks and values near the dtype's maximum stay within the bound.

Stated error, per element: |x - x_hat| <= step/2 + half an ulp of the output dtype at x_hat,
where step = block_absmax / (2**(bits-1) - 1). `error_bound()` returns it.
"""

from __future__ import annotations

import math
import struct

import ml_dtypes
import numpy as np
import zstandard

from swarmpress.codecs.core.base import Codec, Param, Role
from swarmpress.codecs.core.errors import CodecError
from swarmpress.codecs.core.registry import register
from swarmpress.codecs.core.tensors import DType
from swarmpress.codecs.entropy.order0 import encode_symbols, iter_symbols
from swarmpress.codecs.entropy.zstdio import decompress_exact

_SCALES = struct.Struct("<I")
_CHUNK = 1 << 14  # values per processing chunk


@register
class BlockQuantCodec(Codec):
    """Block absmax int8/int4 quantization, codes range-coded, scales zstd-packed."""

    codec_id = "blockq"
    summary = "block absmax int8/int4 + entropy coding; the common community lossy method"
    lossless = False
    params = (
        Param(
            "bits", int, 8, "bits per code (signed, symmetric grid)", choices=(2, 3, 4, 5, 6, 7, 8)
        ),
        Param("block", int, 64, "values per scale block", minimum=1, maximum=1 << 16),
    )

    @property
    def qmax(self) -> int:
        return (1 << (self.config["bits"] - 1)) - 1

    def _blocks(self, flat: np.ndarray) -> np.ndarray:
        block = self.config["block"]
        nblocks = -(-flat.size // block)
        padded = np.zeros(nblocks * block, dtype=np.float64)
        padded[: flat.size] = flat
        return padded.reshape(nblocks, block)

    def _absmax(self, blocks: np.ndarray) -> np.ndarray:
        return np.abs(blocks).max(axis=1).astype(np.float32)  # exact: inputs are float32-valued

    def _span(self) -> int:
        """Values per processing chunk: whole blocks, about _CHUNK values."""
        block = self.config["block"]
        return block * max(1, _CHUNK // block)

    def encode_array(self, arr: np.ndarray, role: Role) -> bytes:
        flat = arr.reshape(-1)
        block, span = self.config["block"], self._span()
        absmax = np.empty(-(-flat.size // block), dtype=np.float32)
        codes = np.empty(flat.size, dtype=np.uint8)  # 2 * qmax + 1 <= 255 levels
        for start in range(0, flat.size, span):  # chunks keep the float64 work small
            part = flat[start : start + span].astype(np.float32)
            if not np.isfinite(part).all():
                raise CodecError(
                    "blockq cannot encode NaN or infinite values; use a lossless codec"
                )
            blocks = self._blocks(part)
            amax = self._absmax(blocks)
            absmax[start // block : start // block + amax.size] = amax
            step = amax.astype(np.float64) / self.qmax
            safe = np.where(step > 0, step, 1.0)[:, None]
            q = np.clip(np.rint(blocks / safe), -self.qmax, self.qmax)
            codes[start : start + part.size] = q.reshape(-1)[: part.size] + self.qmax
        packed_scales = zstandard.ZstdCompressor(level=3).compress(absmax.tobytes())
        return b"".join([_SCALES.pack(len(packed_scales)), packed_scales, encode_symbols(codes)])

    def decode_array(self, payload, dtype: DType, shape: tuple[int, ...]) -> np.ndarray:
        numel = math.prod(shape)
        mv = memoryview(payload)
        block = self.config["block"]
        nblocks = -(-numel // block)
        if len(mv) < _SCALES.size:
            raise CodecError("blockq payload truncated: scale section missing")
        (slen,) = _SCALES.unpack_from(mv, 0)
        if slen > len(mv) - _SCALES.size:
            raise CodecError("blockq payload truncated: scale section runs past the end")
        # The code stream's header, table and length are checked before anything per block
        # or per element is decompressed or allocated.
        chunks = iter_symbols(mv[_SCALES.size + slen :], numel, self._span())
        raw = decompress_exact(
            mv[_SCALES.size : _SCALES.size + slen], nblocks * 4, "blockq block maxima"
        )
        absmax = np.frombuffer(raw, dtype=np.float32)
        if not (np.isfinite(absmax).all() and (absmax >= 0).all()):
            raise CodecError("blockq block maxima must be finite and non-negative")
        out = np.empty(numel, dtype=dtype.numpy)
        start = 0
        for codes in chunks:
            if codes.size and (codes.min() < 0 or codes.max() > 2 * self.qmax):
                raise CodecError("blockq codes fall outside the quantization grid")
            n = codes.size
            nb = -(-n // block)
            q = np.zeros(nb * block, dtype=np.float64)
            q[:n] = codes - self.qmax
            lim = absmax[start // block : start // block + nb].astype(np.float64)[:, None]
            vals = np.clip(q.reshape(nb, block) * (lim / self.qmax), -lim, lim)
            out[start : start + n] = vals.reshape(-1)[:n].astype(dtype.numpy)
            start += n
        return out.reshape(shape)

    def error_bound(self, tensor: np.ndarray, decoded: np.ndarray) -> np.ndarray:
        """Per-element error this codec promises for tensor (float64, flattened)."""
        flat = np.asarray(tensor).reshape(-1).astype(np.float32)
        step = self._absmax(self._blocks(flat)).astype(np.float64) / self.qmax
        per_elem = np.repeat(step, self.config["block"])[: flat.size]
        out = np.asarray(decoded).reshape(-1)
        return per_elem / 2 * (1 + 2.0**-40) + half_ulp(out)


def half_ulp(values: np.ndarray) -> np.ndarray:
    """Half a unit in the last place of each value in its own dtype (its rounding error bound)."""
    info = ml_dtypes.finfo(values.dtype)
    mag = np.abs(values.astype(np.float64))
    _, exp = np.frexp(mag)  # mag = m * 2**exp with m in [0.5, 1)
    exp = np.maximum(exp - 1, info.minexp)
    return np.ldexp(0.5, exp - info.nmant)
