"""`raw`: the tensor's bytes as they are, in a checked frame: the uncompressed baseline.

The swarm's `none` codec; it still carries dtype, shape and checksum, so a receiver can
tell a damaged or foreign message from a tensor.
"""

from __future__ import annotations

import math

import numpy as np

from swarmpress.codecs.core.base import Codec, Role
from swarmpress.codecs.core.errors import CodecError
from swarmpress.codecs.core.limits import check_decode_size
from swarmpress.codecs.core.registry import register
from swarmpress.codecs.core.tensors import DType


@register
class RawCodec(Codec):
    """No compression: little-endian tensor bytes."""

    codec_id = "raw"
    summary = "no compression (the tensor's bytes in a checked frame); the baseline"
    lossless = True
    params = ()
    max_expansion = 1

    def frame_params(self) -> dict:
        return {}

    def encode_array(self, arr: np.ndarray, role: Role) -> bytes:
        return np.ascontiguousarray(arr).tobytes()

    def decode_array(self, payload, dtype: DType, shape: tuple[int, ...]) -> np.ndarray:
        numel = math.prod(shape)
        check_decode_size(numel, dtype.itemsize)
        if len(payload) != numel * dtype.itemsize:
            raise CodecError(
                f"raw payload holds {len(payload)} bytes, the frame's shape needs "
                f"{numel * dtype.itemsize}"
            )
        out = np.empty(numel, dtype=dtype.numpy)  # one writeable copy, not two
        out.view(np.uint8)[:] = np.frombuffer(payload, dtype=np.uint8)
        return out.reshape(shape)
