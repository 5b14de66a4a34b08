"""Codec specs on the command line; the parser lives in codecs.specs (swarm uses it too)."""

from swarmpress.codecs.specs import (
    EXTRA_SPECS,
    build_codec,
    default_codec_specs,
    parse_codec_spec,
    split_codec_list,
)

__all__ = [
    "EXTRA_SPECS",
    "build_codec",
    "default_codec_specs",
    "parse_codec_spec",
    "split_codec_list",
]
