"""Bit-plane helpers shared by the lossless codecs: field layouts and byte-plane packing.

A float's bits split into a sign+exponent field (a few bits, skewed: the compressible
part) and a mantissa (close to uniform). Byte planes that a general-purpose compressor
cannot shrink are stored raw, so incompressible data costs one byte of flag per plane.
"""

from __future__ import annotations

import struct

import numpy as np
import zstandard

from swarmpress.codecs.errors import CodecError
from swarmpress.codecs.tensors import DType

# dtype -> (total bits, mantissa bits)
LAYOUT = {DType.BFLOAT16: (16, 7), DType.FLOAT16: (16, 10), DType.FLOAT32: (32, 23)}
RAW, ZSTD = 0, 1
_PLANE = struct.Struct("<BI")


def bits_u32(arr: np.ndarray) -> np.ndarray:
    """The float bit patterns widened to uint32 (flattened)."""
    u = arr.reshape(-1).view(np.uint32 if arr.dtype.itemsize == 4 else np.uint16)
    return u.astype(np.uint32, copy=False)


def pack_plane(data: np.ndarray, cctx: zstandard.ZstdCompressor) -> bytes:
    """One byte plane: zstd when that is smaller, raw otherwise."""
    raw = np.ascontiguousarray(data).tobytes()
    packed = cctx.compress(raw)
    if len(packed) < len(raw):
        return _PLANE.pack(ZSTD, len(packed)) + packed
    return _PLANE.pack(RAW, len(raw)) + raw


def unpack_plane(mv: memoryview, pos: int, n: int, itemsize: int = 1) -> tuple[np.ndarray, int]:
    """Read a plane of n items of itemsize bytes written by pack_plane."""
    if len(mv) - pos < _PLANE.size:
        raise CodecError("byte plane truncated: header missing")
    kind, length = _PLANE.unpack_from(mv, pos)
    pos += _PLANE.size
    if length > len(mv) - pos:
        raise CodecError("byte plane runs past the end of the payload")
    body = mv[pos : pos + length]
    want = n * itemsize
    if kind == RAW:
        data = bytes(body)
    elif kind == ZSTD:
        try:
            data = zstandard.ZstdDecompressor().decompress(body, max_output_size=max(want, 1))
        except zstandard.ZstdError as exc:
            raise CodecError(f"byte plane is corrupt: {exc}") from None
    else:
        raise CodecError(f"byte plane has unknown kind {kind}")
    if len(data) != want:
        raise CodecError(f"byte plane holds {len(data)} bytes, expected {want}")
    dtype = {1: np.uint8, 2: np.uint16, 4: np.uint32}[itemsize]
    return np.frombuffer(data, dtype=dtype), pos + length
