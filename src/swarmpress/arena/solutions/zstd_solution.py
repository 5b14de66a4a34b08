"""Apex baseline solution (swarmpress `zstd`): zstd at a fixed level on the raw bytes.

The reference every other solution has to beat: lossless, shape-blind, one library call.
Needs only zstandard.
"""

import zstandard

CONFIG = {"level": 3}

_C = zstandard.ZstdCompressor(level=CONFIG["level"])
_D = zstandard.ZstdDecompressor()


def compress_data(data: bytes) -> bytes:
    """Raw bytes -> one zstd frame (content size recorded in the frame)."""
    return _C.compress(bytes(data))


def decompress_data(data: bytes) -> bytes:
    """Inverse of compress_data."""
    return _D.decompress(bytes(data))
