"""Resource limits a decoder enforces before it allocates, so hostile frames cannot exhaust memory.

A frame may legitimately expand a lot (an all-zero tensor compresses to almost nothing),
so the guard is an absolute cap on the decoded size, set by SWARMPRESS_MAX_DECODE_BYTES
(default 8 GiB) or set_max_decode_bytes().
"""

from __future__ import annotations

import os

from swarmpress.codecs.errors import CodecError

_DEFAULT = 8 << 30
_max_decode_bytes = int(os.environ.get("SWARMPRESS_MAX_DECODE_BYTES", _DEFAULT))


def set_max_decode_bytes(n: int) -> None:
    """Change the largest tensor (in bytes) any decoder will materialize."""
    global _max_decode_bytes
    if n <= 0:
        raise CodecError("max decode bytes must be positive")
    _max_decode_bytes = int(n)


def max_decode_bytes() -> int:
    """The current cap on a decoded tensor's size in bytes."""
    return _max_decode_bytes


def check_decode_size(numel: int, itemsize: int) -> None:
    """Refuse a frame whose declared tensor exceeds the cap."""
    nbytes = numel * itemsize
    if nbytes > _max_decode_bytes:
        raise CodecError(
            f"frame declares a {nbytes}-byte tensor, above the {_max_decode_bytes}-byte decode "
            "limit (raise it with SWARMPRESS_MAX_DECODE_BYTES if this is intended)"
        )
