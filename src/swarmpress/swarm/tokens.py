"""Token blocks on the wire: token ids (integers, not tensors) as zstd-compressed int32.

unpack_tokens checks the block before it allocates anything and the ids against the
vocabulary; anything malformed is a WireError.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import zstandard

from swarmpress.swarm.framing import WireError

_ZC = zstandard.ZstdCompressor(level=3)


def pack_tokens(tokens: torch.Tensor) -> bytes:
    arr = tokens.to(torch.int32).numpy()
    head = np.array(arr.shape, dtype=np.int32).tobytes()
    return bytes([arr.ndim]) + head + _ZC.compress(arr.tobytes())


MAX_TOKEN_BYTES = 1 << 26


def unpack_tokens(blob: bytes, vocab: int) -> torch.Tensor:
    """Token ids from pack_tokens; WireError if malformed or outside the vocabulary."""
    if not blob or blob[0] > 4 or len(blob) < 1 + 4 * blob[0]:
        raise WireError("bad token block: truncated or more than 4 dimensions")
    ndim = blob[0]
    shape = tuple(int(v) for v in np.frombuffer(blob[1 : 1 + 4 * ndim], dtype=np.int32))
    if any(v < 0 for v in shape) or 4 * math.prod(shape) > MAX_TOKEN_BYTES:
        raise WireError(f"bad token block: shape {shape}")
    body = blob[1 + 4 * ndim :]
    try:
        # The frame's own size claim must match the shape before anything is allocated.
        claimed = zstandard.frame_content_size(body)
        if claimed not in (4 * math.prod(shape), -1, zstandard.CONTENTSIZE_UNKNOWN):
            raise WireError(f"{claimed} bytes for shape {shape}")
        raw = zstandard.ZstdDecompressor().decompress(body, max_output_size=MAX_TOKEN_BYTES)
        arr = np.frombuffer(raw, dtype=np.int32).reshape(shape)
    except WireError as exc:
        raise WireError(f"bad token block: {exc}") from None
    except (ValueError, zstandard.ZstdError) as exc:
        raise WireError(f"bad token block: {exc}") from None
    if arr.size and (arr.min() < 0 or arr.max() >= vocab):
        raise WireError(f"token ids outside the vocabulary of {vocab}")
    return torch.from_numpy(arr.astype(np.int64))
