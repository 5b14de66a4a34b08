"""`zstd`: the raw tensor bytes through Zstandard (level 3 by default): the Apex baseline.

Lossless for every dtype, bit for bit (NaN payloads, infinities, -0.0, subnormals), because
it never looks at the values.
"""

from __future__ import annotations

import math

import numpy as np
import zstandard

from swarmpress.codecs.core.base import Codec, Param, Role
from swarmpress.codecs.core.limits import check_decode_size
from swarmpress.codecs.core.registry import register
from swarmpress.codecs.core.tensors import DType
from swarmpress.codecs.entropy.zstdio import MAX_RATIO, decompress_exact


@register
class ZstdCodec(Codec):
    """Zstandard over the raw little-endian bytes of the tensor."""

    codec_id = "zstd"
    summary = "raw bytes through Zstandard; the Apex lossless baseline"
    lossless = True
    max_expansion = MAX_RATIO
    local_params = ("threads",)  # the sender's machine, never read from a frame
    params = (
        Param("level", int, 3, "Zstandard compression level", minimum=-7, maximum=22),
        Param(
            "threads", int, 0, "worker threads for compression (0: inline)", minimum=0, maximum=64
        ),
    )

    def frame_params(self) -> dict:
        return {"level": self.config["level"]}

    def encode_array(self, arr: np.ndarray, role: Role) -> bytes:
        cctx = zstandard.ZstdCompressor(
            level=self.config["level"], threads=self.config["threads"], write_content_size=True
        )
        return cctx.compress(arr.tobytes())

    def decode_array(self, payload, dtype: DType, shape: tuple[int, ...]) -> np.ndarray:
        numel = math.prod(shape)
        expected = numel * dtype.itemsize
        check_decode_size(numel, dtype.itemsize)
        raw = decompress_exact(payload, expected, "zstd payload")
        return np.frombuffer(raw, dtype=dtype.numpy).reshape(shape)
