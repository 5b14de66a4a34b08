"""Zstandard decompression that never trusts the frame: exact sizes, bounded allocation.

python-zstandard allocates the content size a frame header declares before any output
limit applies, so a hostile header could demand gigabytes. Every codec decompresses through
decompress_exact, which checks the declared size against what the caller expects first.
"""

from __future__ import annotations

import zstandard

from swarmpress.codecs.core.errors import CodecError

# A Zstandard block regenerates at most 128 KiB and costs at least 4 bytes (a 3-byte block
# header and one RLE byte), so no frame decompresses to more than 32768 times its size.
MAX_RATIO = 32768


def decompress_exact(data: bytes | memoryview, size: int, what: str) -> bytes:
    """Decompress a zstd frame that must hold exactly size bytes; CodecError otherwise.

    Checked before anything is allocated: the declared content size (when present) and
    Zstandard's largest possible ratio against the bytes given.
    """
    if size > MAX_RATIO * len(data):
        raise CodecError(
            f"{what} holds {len(data)} compressed bytes, too few for {size} bytes "
            f"(Zstandard expands at most {MAX_RATIO} times)"
        )
    try:
        declared = zstandard.frame_content_size(data)
    except zstandard.ZstdError as exc:
        raise CodecError(f"{what} is not a Zstandard frame: {exc}") from None
    if declared not in (-1, size):
        raise CodecError(f"{what} holds {declared} bytes, expected {size}")
    try:
        raw = zstandard.ZstdDecompressor().decompress(
            data, max_output_size=max(size, 1), allow_extra_data=False
        )
    except zstandard.ZstdError as exc:
        raise CodecError(f"{what} is corrupt: {exc}") from None
    except MemoryError:  # pragma: no cover - guarded by the size check above
        raise CodecError(f"{what} declares more data than memory allows") from None
    if len(raw) != size:
        raise CodecError(f"{what} holds {len(raw)} bytes, expected {size}")
    return raw
