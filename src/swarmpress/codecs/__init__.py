"""Tensor codecs: the public API over three rooms.

- core/: the contract and its infrastructure (Codec, StreamCodec, ErrorFeedback, frame,
  registry, spec grammar, tensors, limits, metrics);
- entropy/: entropy coders apart from any codec's model;
- families/: one module or package per codec family; importing this package registers
  every codec.

Import codec things from here (`from swarmpress.codecs import get_codec`); the submodules
are the implementation.
"""

from swarmpress.codecs import families  # noqa: F401  (importing the families registers them)
from swarmpress.codecs.core.base import BaseCodec, Codec, Param, Role
from swarmpress.codecs.core.errors import CodecError
from swarmpress.codecs.core.feedback import ErrorFeedback
from swarmpress.codecs.core.frame import Frame
from swarmpress.codecs.core.frame import pack as pack_frame
from swarmpress.codecs.core.frame import unpack as unpack_frame
from swarmpress.codecs.core.limits import max_decode_bytes, set_max_decode_bytes
from swarmpress.codecs.core.metrics import (
    bits_per_value,
    break_even_bandwidth,
    cosine,
    lossless_score,
    lossy_score,
    max_abs_error,
    psnr,
    rel_l2,
    similarity,
)
from swarmpress.codecs.core.registry import (
    CODEC_ALIASES,
    codec_class,
    decode,
    get_codec,
    list_codecs,
    register,
)
from swarmpress.codecs.core.specs import build_codec, parse_codec_spec, split_codec_list
from swarmpress.codecs.core.stream import StreamCodec, StreamDecoder, StreamEncoder, StreamState

__all__ = [
    "CODEC_ALIASES",
    "BaseCodec",
    "Codec",
    "CodecError",
    "ErrorFeedback",
    "Frame",
    "Param",
    "Role",
    "StreamCodec",
    "StreamDecoder",
    "StreamEncoder",
    "StreamState",
    "bits_per_value",
    "break_even_bandwidth",
    "build_codec",
    "codec_class",
    "cosine",
    "decode",
    "get_codec",
    "list_codecs",
    "lossless_score",
    "lossy_score",
    "max_abs_error",
    "max_decode_bytes",
    "pack_frame",
    "parse_codec_spec",
    "psnr",
    "register",
    "rel_l2",
    "set_max_decode_bytes",
    "similarity",
    "split_codec_list",
    "unpack_frame",
]
