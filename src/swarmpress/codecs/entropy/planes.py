"""Bit-plane helpers shared by the lossless codecs: field layouts and byte-plane packing.

A float's bits split into a sign+exponent field (a few bits, skewed: the compressible
part) and a mantissa (close to uniform). Byte planes that a general-purpose compressor
cannot shrink are stored raw, so incompressible data costs one byte of flag per plane.
"""

from __future__ import annotations

import struct

import numpy as np
import zstandard

from swarmpress.codecs.core.errors import CodecError
from swarmpress.codecs.core.tensors import DType
from swarmpress.codecs.entropy.zstdio import decompress_exact

# dtype -> (total bits, mantissa bits)
LAYOUT = {DType.BFLOAT16: (16, 7), DType.FLOAT16: (16, 10), DType.FLOAT32: (32, 23)}
RAW, ZSTD = 0, 1
_PLANE = struct.Struct("<BI")
_PROBE = 1 << 16


def bits_u32(arr: np.ndarray) -> np.ndarray:
    """The float bit patterns widened to uint32 (flattened)."""
    u = arr.reshape(-1).view(np.uint32 if arr.dtype.itemsize == 4 else np.uint16)
    return u.astype(np.uint32, copy=False)


def pack_plane(data: np.ndarray, cctx: zstandard.ZstdCompressor, probe: bool = False) -> bytes:
    """One byte plane: zstd when that is smaller, raw otherwise.

    With probe, a 64 KiB sample decides first, so a near-random plane (a mantissa) costs a
    copy instead of a full compression attempt.
    """
    return b"".join(plane_parts(data, cctx, probe))


def plane_parts(
    data: np.ndarray, cctx: zstandard.ZstdCompressor, probe: bool = False
) -> list[bytes | memoryview]:
    """pack_plane as a list of bytes-like parts; a raw plane is a view of `data` (not
    copied), so the caller joins the parts before changing `data`."""
    data = np.ascontiguousarray(data)
    raw = memoryview(data).cast("B")
    if probe and len(raw) > 4 * _PROBE:
        half = len(raw) // 2
        sample = b"".join([raw[: _PROBE // 2], raw[half : half + _PROBE // 2]])
        if len(cctx.compress(sample)) > 0.97 * len(sample):
            return [_PLANE.pack(RAW, len(raw)), raw]
    packed = cctx.compress(raw)
    if len(packed) < len(raw):
        return [_PLANE.pack(ZSTD, len(packed)), packed]
    return [_PLANE.pack(RAW, len(raw)), raw]


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
        data = decompress_exact(body, want, "byte plane")
    else:
        raise CodecError(f"byte plane has unknown kind {kind}")
    if len(data) != want:
        raise CodecError(f"byte plane holds {len(data)} bytes, expected {want}")
    dtype = {1: np.uint8, 2: np.uint16, 4: np.uint32}[itemsize]
    return np.frombuffer(data, dtype=dtype), pos + length


def check_planes(mv: memoryview, pos: int, count: int, n: int) -> None:
    """Check that `count` planes of n bytes each fill mv from pos exactly, from their
    headers alone (a Zstandard plane must declare its size): nothing is decompressed or
    allocated, so a short payload cannot make the caller allocate for a huge shape."""
    for i in range(count):
        if len(mv) - pos < _PLANE.size:
            raise CodecError(f"byte plane {i} truncated: header missing")
        kind, length = _PLANE.unpack_from(mv, pos)
        pos += _PLANE.size
        if length > len(mv) - pos:
            raise CodecError(f"byte plane {i} runs past the end of the payload")
        if kind == RAW:
            if length != n:
                raise CodecError(f"byte plane {i} holds {length} raw bytes, expected {n}")
        elif kind == ZSTD:
            try:
                declared = zstandard.frame_content_size(mv[pos : pos + length])
            except zstandard.ZstdError as exc:
                raise CodecError(f"byte plane {i} is not a Zstandard frame: {exc}") from None
            if declared != n:
                raise CodecError(f"byte plane {i} declares {declared} bytes, expected {n}")
        else:
            raise CodecError(f"byte plane {i} has unknown kind {kind}")
        pos += length
    if pos != len(mv):
        raise CodecError("byte planes are followed by trailing bytes")


_BITS_CHUNK = 1024  # values per step (a multiple of 8 keeps every chunk byte-aligned)


def pack_bits(values: np.ndarray, width: int) -> bytes:
    """Pack non-negative integers < 2**width (width <= 64) into a dense little-endian string."""
    if width == 0 or values.size == 0:
        return b""
    out = []
    for i in range(0, values.size, _BITS_CHUNK):  # bit matrices are 64 bytes per value
        v = values[i : i + _BITS_CHUNK].astype("<u8").view(np.uint8).reshape(-1, 8)
        bits = np.unpackbits(v, axis=1, bitorder="little")[:, :width]
        out.append(np.packbits(bits.reshape(-1), bitorder="little").tobytes())
    return b"".join(out)


def unpack_bits(data: bytes | memoryview, n: int, width: int) -> np.ndarray:
    """Inverse of pack_bits: n integers of width bits (int64; width <= 63)."""
    if width == 0 or n == 0:
        return np.zeros(n, dtype=np.int64)
    if width > 63:
        raise CodecError(f"bit-packed stream declares {width}-bit values; at most 63 fit")
    need = (n * width + 7) // 8
    if len(data) != need:
        raise CodecError(f"bit-packed stream holds {len(data)} bytes, expected {need}")
    raw = np.frombuffer(data, dtype=np.uint8)
    out = np.empty(n, dtype=np.int64)
    step = _BITS_CHUNK * width // 8  # bytes per full chunk
    for c, i in enumerate(range(0, n, _BITS_CHUNK)):
        m = min(_BITS_CHUNK, n - i)
        bits = np.unpackbits(raw[c * step : c * step + (m * width + 7) // 8], bitorder="little")
        full = np.zeros((m, 64), dtype=np.uint8)
        full[:, :width] = bits[: m * width].reshape(m, width)
        out[i : i + m] = np.packbits(full, axis=1, bitorder="little").view("<u8").reshape(-1)
    return out
