"""Swarm run configuration: presets, TOML files, flag overrides and one-line errors."""

import pytest

from swarmpress.swarm.config import (
    CONSUMER_UPLINK,
    PRESETS,
    UPLINK_CODEC,
    ConfigError,
    SwarmConfig,
    build_config,
)
from swarmpress.swarm.links import LinkSpec
from swarmpress.swarm.role_codecs import WIRE_DTYPES, codec_spec


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds_with_its_own_values(name):
    cfg = build_config(name)
    assert isinstance(cfg, SwarmConfig)
    for key, value in PRESETS[name].items():
        assert getattr(cfg, key) == value
    assert cfg.stages <= cfg.layers
    assert cfg.dim % cfg.heads == 0


def test_small_preset_differs_from_tiny_and_no_preset_is_the_defaults():
    assert build_config("small").dim == 256
    assert build_config("small").seq_len == 256
    assert build_config("tiny") == SwarmConfig()
    assert build_config(None) == SwarmConfig()


def test_uplink_preset_is_a_consumer_uplink_with_bf16_and_a_lossy_codec():
    cfg = build_config("uplink")
    assert CONSUMER_UPLINK == "20mbit:50ms"
    assert cfg.link_spec == LinkSpec(20e6, 0.05)
    assert cfg.wire_dtype == "bfloat16" and cfg.wire_dtype in WIRE_DTYPES
    assert cfg.codec_activation == cfg.codec_gradient == UPLINK_CODEC
    assert codec_spec(UPLINK_CODEC).startswith("lossy")  # compressed, not `none`
    # one replica per stage: the same path for every micro-batch, whatever the codec
    assert cfg.replicas == 1 and cfg.stages == cfg.layers == 3
    # flags still override it, and the field defaults stay as they were (link none)
    assert build_config("uplink", codec_activation="none").codec_activation == "none"
    assert SwarmConfig().link == "none" and SwarmConfig().wire_dtype == "float32"


def test_link_spec_is_parsed_from_the_link_field():
    cfg = build_config(link="10mbit:50ms")
    assert cfg.link_spec == LinkSpec(10e6, 0.05)
    assert build_config().link_spec.unlimited


def test_a_toml_file_with_a_swarm_table(tmp_path):
    p = tmp_path / "run.toml"
    p.write_text(
        '[swarm]\nstages = 4\nreplicas = 3\nlink = "100mbit:20ms"\ncodec_activation = "none"\n'
    )
    cfg = build_config("tiny", p)
    assert (cfg.stages, cfg.replicas, cfg.link, cfg.codec_activation) == (
        4,
        3,
        "100mbit:20ms",
        "none",
    )


def test_a_toml_file_with_top_level_keys(tmp_path):
    p = tmp_path / "run.toml"
    p.write_text('steps = 7\nlr = 0.01\nrouter = "round-robin"\n')
    cfg = build_config(path=str(p))
    assert (cfg.steps, cfg.lr, cfg.router) == (7, 0.01, "round-robin")


def test_the_file_overrides_the_preset_and_flags_override_the_file(tmp_path):
    p = tmp_path / "run.toml"
    p.write_text("[swarm]\ndim = 64\nsteps = 7\nseed = 3\n")
    cfg = build_config("small", p, steps=11, seed=None)
    assert cfg.dim == 64  # file beats preset (small sets 256)
    assert cfg.ffn == PRESETS["small"]["ffn"]  # the preset's other fields stay
    assert cfg.steps == 11  # flag beats file
    assert cfg.seed == 3  # a None flag is "not given"


@pytest.mark.parametrize(
    ("overrides", "field", "detail"),
    [
        ({"bogus": 1}, "bogus", "extra"),
        ({"stages": 5, "layers": 4}, "stages", "layers"),
        ({"dim": 130, "heads": 4}, "dim", "heads"),
        ({"bottleneck": 3}, "bottleneck", "dim"),
        ({"codec_activation": "nosuch"}, "codec_activation", "nosuch"),
        ({"codec_gradient": "nosuch"}, "codec_gradient", "nosuch"),
        ({"codec_delta": "nosuch:x=1"}, "codec_delta", "nosuch"),
        ({"link": "fast"}, "link", "fast"),
        ({"link": "100mbit:soon"}, "link", "soon"),
        ({"router": "nosuch"}, "router", "pending"),  # the message lists the known ones
        ({"wire_dtype": "int8"}, "wire_dtype", "float32"),
        ({"steps": 0}, "steps", "greater"),
        ({"outer_momentum": 1.0}, "outer_momentum", "less"),
    ],
)
def test_bad_values_raise_config_error_naming_the_field(overrides, field, detail):
    with pytest.raises(ConfigError) as info:
        build_config(**overrides)
    msg = str(info.value)
    assert field in msg
    assert detail.lower() in msg.lower()
    assert "\n" not in msg


def test_a_bad_field_in_a_file_is_named_too(tmp_path):
    p = tmp_path / "run.toml"
    p.write_text('[swarm]\nlink = "fast"\n')
    with pytest.raises(ConfigError, match=r"link.*fast"):
        build_config(path=p)


def test_a_missing_file(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=r"nope\.toml does not exist"):
        build_config(path=missing)


def test_a_directory_is_not_a_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        build_config(path=tmp_path)


def test_invalid_toml(tmp_path):
    p = tmp_path / "broken.toml"
    p.write_text("[swarm\nstages = \n")
    with pytest.raises(ConfigError, match=r"broken\.toml: not valid TOML"):
        build_config(path=p)


def test_a_file_that_is_not_utf8(tmp_path):
    p = tmp_path / "binary.toml"
    p.write_bytes(b"\xff\xfe\x00stages = 2")
    with pytest.raises(ConfigError, match="not valid TOML"):
        build_config(path=p)


def test_an_unknown_preset_lists_the_known_ones():
    with pytest.raises(ConfigError) as info:
        build_config("huge")
    msg = str(info.value)
    assert "'huge'" in msg
    for name in PRESETS:
        assert name in msg


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


@pytest.mark.parametrize("field", ["codec_activation", "codec_gradient"])
def test_topk_is_stateless_and_fits_any_role(field):
    """topk keeps no state (error feedback is a sender-side wrapper), so its frames decode
    alone on any role; error feedback wraps only the weight-delta stream."""
    assert getattr(build_config("tiny", **{field: "topk"}), field) == "topk"
    assert build_config("tiny", codec_delta="topk").error_feedback is True
    assert build_config("tiny", error_feedback=False).error_feedback is False


@pytest.mark.parametrize(
    "field", ["codec_delta", "codec_activation", "codec_gradient", "codec_weights"]
)
@pytest.mark.parametrize(
    "spec",
    ["lossy-stream", "lossy-stream:refresh=2", "auto:lossy-stream", "lossy-stream:energy_bits=16"],
)
def test_a_codec_whose_receiver_must_follow_the_stream_is_refused(field, spec):
    """lossy-stream's decoder keeps a basis learned from earlier frames; a swarm receiver
    decodes each frame alone (frames come from any replica, attempt by attempt), so the
    configuration refuses it, naming the field and why, before any worker starts."""
    with pytest.raises(ConfigError) as info:
        build_config("tiny", **{field: spec})
    msg = str(info.value)
    assert msg.startswith(f"{field}: {field}={spec!r} cannot be used: lossy-stream is a stream")
    assert "decode each frame on its own" in msg
    assert "\n" not in msg


def test_config_error_is_a_usage_error():
    from swarmpress.errors import SwarmpressError, UsageError

    assert issubclass(ConfigError, UsageError)
    assert issubclass(ConfigError, SwarmpressError)
    assert ConfigError("x").exit_code == 2


@pytest.mark.parametrize("spec", ["topk", "topk:density=0.05:bits=4", "auto:topk", "lossy"])
def test_any_stateless_codec_is_fine_for_deltas(spec):
    """Error feedback lives on the sender; each frame decodes alone."""
    assert build_config("tiny", codec_delta=spec).codec_delta == spec


def test_the_old_topk_feedback_parameter_is_refused_by_name():
    with pytest.raises(ConfigError, match="error_feedback"):
        build_config("tiny", codec_delta="topk:error_feedback=false")


@pytest.mark.parametrize("spec", ["none", "raw", "lossy", "lossless:mode=fast", "blockq", "zstd"])
def test_stateless_codecs_are_fine_for_every_role(spec):
    fields = ("codec_activation", "codec_gradient", "codec_delta", "codec_weights")
    cfg = build_config("tiny", **dict.fromkeys(fields, spec))
    assert all(getattr(cfg, f) == spec for f in fields)
