"""Codec specs from the command line: splitting, typed parameters, clear errors."""

from __future__ import annotations

import pytest

from swarmpress.bench.specs import (
    build_codec,
    default_codec_specs,
    parse_codec_spec,
    split_codec_list,
)
from swarmpress.codecs import CodecError, list_codecs


def test_split_and_parse():
    assert split_codec_list("zstd, blockq:bits=4,block=32") == ["zstd", "blockq:bits=4:block=32"]
    assert parse_codec_spec("blockq:bits=4:block=32") == ("blockq", {"bits": 4, "block": 32})
    assert parse_codec_spec("zstd") == ("zstd", {})
    codec = build_codec("blockq:bits=4")
    assert codec.config["bits"] == 4


@pytest.mark.parametrize(
    "spec, message",
    [
        ("nope", "unknown codec"),
        ("blockq:bits", "expected name=value"),
        ("blockq:bits=x", "must be an integer"),
        ("blockq:bits=4:bits=5", "twice"),
        ("blockq:bits=9", "bits"),
        ("blockq:colour=red", "unknown parameter"),
        (":bits=4", "no codec name"),
    ],
)
def test_bad_specs_raise_codec_error(spec: str, message: str):
    with pytest.raises(CodecError, match=message):
        build_codec(spec)


def test_bad_lists():
    with pytest.raises(CodecError):
        split_codec_list(" , ")
    with pytest.raises(CodecError, match="no codec"):
        split_codec_list("bits=4,zstd")


def test_default_specs_cover_every_registered_codec():
    specs = default_codec_specs()
    # every codec but the swarm's uncompressed `raw` baseline gets a row
    assert {c["id"] for c in list_codecs()} - {"raw"} <= set(specs)
    assert "raw" not in specs
    assert "blockq:bits=4" in specs
    for s in specs:
        build_codec(s)
