"""Tensors off the wire: a codec frame decoded to a float32 torch tensor, checked.

Every tensor part of a swarm message is a swarmpress codec frame (self-describing and
checksummed), so a receiver needs nothing but the bytes; anything that does not decode,
has another shape than expected or holds NaN or infinities is a WireError.
"""

from __future__ import annotations

import numpy as np
import torch

from swarmpress.codecs import CodecError, codec_class, unpack_frame
from swarmpress.swarm.framing import WireError


def decode_tensor(blob: bytes, shape: tuple[int, ...] | None = None) -> torch.Tensor:
    """A float32 torch tensor from a codec frame; WireError if the frame is bad or the
    shape is not the one expected."""
    try:
        fr = unpack_frame(blob)
        if shape is not None and tuple(fr.shape) != tuple(shape):  # before any allocation
            raise WireError(f"tensor of shape {tuple(fr.shape)} where {tuple(shape)} was expected")
        # Stateful encoders (topk's error feedback) write frames that the frame's own
        # parameters decode; the state lives on the sending side only.
        out = codec_class(fr.codec_id).from_config(fr.params).decode_frame(fr)
    except CodecError as exc:
        raise WireError(f"bad tensor frame: {exc}") from None
    t = out if isinstance(out, torch.Tensor) else torch.from_numpy(np.asarray(out, np.float32))
    if shape is not None and tuple(t.shape) != tuple(shape):
        raise WireError(f"tensor of shape {tuple(t.shape)} where {tuple(shape)} was expected")
    t = t.float()
    if not torch.isfinite(t).all():
        raise WireError("tensor frame holds NaN or infinite values")
    return t
