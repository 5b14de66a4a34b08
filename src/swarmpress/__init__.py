"""swarmpress: shrink what crosses the wire in decentralized pipeline-parallel training."""

from swarmpress.codecs import (
    Codec,
    CodecError,
    Role,
    bits_per_value,
    break_even_bandwidth,
    cosine,
    decode,
    get_codec,
    list_codecs,
    lossless_score,
    lossy_score,
    max_abs_error,
    psnr,
    rel_l2,
    similarity,
)

__version__ = "0.1.0"

__all__ = [
    "Codec",
    "CodecError",
    "Role",
    "__version__",
    "bits_per_value",
    "break_even_bandwidth",
    "cosine",
    "decode",
    "get_codec",
    "list_codecs",
    "lossless_score",
    "lossy_score",
    "max_abs_error",
    "psnr",
    "rel_l2",
    "similarity",
]
