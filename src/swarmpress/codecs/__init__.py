"""Tensor codecs: the frame format, the registry, metrics, and the built-in codecs."""

from swarmpress.codecs import blockq as _blockq  # noqa: F401  (registers the codec)
from swarmpress.codecs import lossless as _lossless  # noqa: F401  (registers the codec)
from swarmpress.codecs import lossy as _lossy  # noqa: F401  (registers the codec)
from swarmpress.codecs import lossy_stream as _lossy_stream  # noqa: F401  (registers the codec)
from swarmpress.codecs import raw as _raw  # noqa: F401  (registers the codec)
from swarmpress.codecs import topk as _topk  # noqa: F401  (registers the codec)
from swarmpress.codecs import zstd as _zstd  # noqa: F401  (registers the codec)
from swarmpress.codecs.base import Codec, Param, Role
from swarmpress.codecs.errors import CodecError
from swarmpress.codecs.frame import Frame
from swarmpress.codecs.frame import pack as pack_frame
from swarmpress.codecs.frame import unpack as unpack_frame
from swarmpress.codecs.limits import set_max_decode_bytes
from swarmpress.codecs.metrics import (
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
from swarmpress.codecs.registry import codec_class, decode, get_codec, list_codecs, register
from swarmpress.codecs.specs import build_codec, parse_codec_spec, split_codec_list

__all__ = [
    "Codec",
    "CodecError",
    "Frame",
    "Param",
    "Role",
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
