"""Resource limits a decoder enforces before it allocates, so hostile frames cannot exhaust memory.

Two guards run before a decoder allocates anything per element:

* an absolute cap on the decoded size, set by SWARMPRESS_MAX_DECODE_BYTES (default 8 GiB)
  or set_max_decode_bytes(): some formats legitimately expand a lot (an all-zero tensor
  through an entropy coder compresses to almost nothing), and this bounds them;
* check_expansion(): a codec whose format cannot expand past a fixed ratio (raw 1:1,
  Zstandard 32768:1) refuses a payload too short for the declared tensor at once.

Codecs whose format can expand without bound check their own structure against the shape
instead (every stream must be able to hold the symbols its tables declare) and decode in
bounded pieces, so a hostile frame costs at most a few times its declared output.
"""

from __future__ import annotations

import os

from swarmpress.codecs.core.errors import CodecError

_DEFAULT = 8 << 30
_ENV = "SWARMPRESS_MAX_DECODE_BYTES"
_override: int | None = None  # set_max_decode_bytes(); else the environment, read per call


def set_max_decode_bytes(n: int) -> None:
    """Change the largest tensor (in bytes) any decoder will materialize."""
    global _override
    if n <= 0:
        raise CodecError("max decode bytes must be positive")
    _override = int(n)


def max_decode_bytes() -> int:
    """The current cap on a decoded tensor's size in bytes: set_max_decode_bytes(), else
    SWARMPRESS_MAX_DECODE_BYTES as it is now (not when swarmpress was imported), else 8 GiB."""
    if _override is not None:
        return _override
    raw = os.environ.get(_ENV)
    if raw is None:
        return _DEFAULT
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise CodecError(f"{_ENV} must be a positive number of bytes, got {raw!r}")
    return value


def check_decode_size(numel: int, itemsize: int) -> None:
    """Refuse a frame whose declared tensor exceeds the cap."""
    nbytes = numel * itemsize
    cap = max_decode_bytes()
    if nbytes > cap:
        raise CodecError(
            f"frame declares a {nbytes}-byte tensor, above the {cap}-byte decode "
            f"limit (raise it with {_ENV} if this is intended)"
        )


def check_expansion(what: str, payload_len: int, nbytes: int, max_ratio: float | None) -> None:
    """Refuse a payload that cannot hold nbytes decoded bytes at its format's best ratio."""
    if max_ratio is not None and nbytes > max_ratio * payload_len:
        raise CodecError(
            f"{what} payload holds {payload_len} bytes, too few for a {nbytes}-byte tensor "
            f"(the format expands at most {max_ratio:g} times)"
        )
