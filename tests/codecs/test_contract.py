"""Codec contract: registry, parameters, configs, and clear errors for bad requests."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import swarmpress as sp
from swarmpress.cli import app


def test_registry_lists_builtins_with_params():
    ids = {c["id"]: c for c in sp.list_codecs()}
    assert {"zstd", "blockq"} <= set(ids)
    assert ids["zstd"]["lossless"] and not ids["blockq"]["lossless"]
    assert {p["name"] for p in ids["blockq"]["params"]} == {"bits", "block"}


def test_unknown_codec_names_the_alternatives():
    with pytest.raises(sp.CodecError, match=r"unknown codec 'nope'.*blockq.*zstd"):
        sp.get_codec("nope")


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("zstd", {"level": 99}, "above 22"),
        ("zstd", {"level": "3"}, "integer"),
        ("zstd", {"speed": 1}, "unknown parameter"),
        ("blockq", {"bits": 9}, "allowed"),
        ("blockq", {"block": 0}, "below 1"),
    ],
)
def test_bad_params_are_named(name, params, message):
    with pytest.raises(sp.CodecError, match=message):
        sp.get_codec(name, **params)


def test_config_roundtrip_and_equality():
    c = sp.get_codec("blockq", bits=4, block=32)
    cfg = c.get_config()
    assert cfg == {"id": "blockq", "bits": 4, "block": 32}
    assert type(c).from_config(json.loads(json.dumps(cfg))) == c
    with pytest.raises(sp.CodecError, match="not 'blockq'"):
        type(c).from_config({"id": "zstd"})


@pytest.mark.parametrize(
    "bad",
    [
        np.arange(4),
        np.ones(3, np.float64),
        np.ones(2, np.complex64),
        [1.0, 2.0],
        "x",
        torch.arange(3),
        torch.ones(2, dtype=torch.float64),
    ],
    ids=["int", "float64", "complex", "list", "str", "torch-int", "torch-float64"],
)
def test_unsupported_inputs_raise_codec_error(bad):
    with pytest.raises(sp.CodecError):
        sp.get_codec("zstd").encode(bad)


def test_decoding_with_the_wrong_codec_is_refused():
    blob = sp.get_codec("zstd").encode(np.ones(3, np.float32))
    with pytest.raises(sp.CodecError, match="made by codec 'zstd'"):
        sp.get_codec("blockq").decode(blob)


def test_frame_is_self_describing():
    blob = sp.get_codec("blockq", bits=4, block=16).encode(
        np.linspace(-1, 1, 100, dtype=np.float32)
    )
    y = sp.decode(blob)  # no codec given: the frame names it and its params
    assert y.shape == (100,)
    assert sp.max_abs_error(np.linspace(-1, 1, 100), y) < 0.1


def test_role_is_accepted_and_validated():
    c = sp.get_codec("zstd")
    c.encode(np.ones(2, np.float32), role="gradient")
    c.encode(np.ones(2, np.float32), role=sp.Role.WEIGHT_DELTA)
    with pytest.raises(sp.CodecError, match="unknown tensor role"):
        c.encode(np.ones(2, np.float32), role="banana")


def test_cli_codecs_json_and_table():
    runner = CliRunner()
    res = runner.invoke(app, ["codecs", "--json"])
    assert res.exit_code == 0
    assert {c["id"] for c in json.loads(res.stdout)} >= {"zstd", "blockq"}
    res = runner.invoke(app, ["codecs"])
    assert res.exit_code == 0 and "blockq" in res.stdout


def test_none_means_the_raw_codec_wherever_a_codec_is_named():
    # one alias table (codecs.CODEC_ALIASES) for the library, the CLI and the swarm
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    for codec in (sp.get_codec("none"), sp.codecs.build_codec("none")):
        assert codec.codec_id == "raw"
        assert np.array_equal(sp.decode(codec.encode(x)), x)


@pytest.mark.parametrize(
    ("spec", "other"),
    [("blockq:bits=2", "blockq"), ("topk:density=0.05:bits=3:chunk=128", "topk"),
     ("lossless:mode=fast", "lossless"), ("zstd:level=9", "zstd")],
)  # fmt: skip
def test_an_instance_decodes_a_frame_with_the_frames_own_parameters(spec, other):
    """codec.decode(frame) gives what swarmpress.decode gives, whatever the instance's own
    settings: the frame carries the parameters its decoder needs."""
    x = np.random.default_rng(4).standard_normal((8, 300)).astype(np.float32)
    blob = sp.get_codec(spec).encode(x)
    np.testing.assert_array_equal(sp.get_codec(other).decode(blob), sp.decode(blob))
