"""The stateful `topk` codec: error feedback, density, stream state, hostile payloads."""

import io
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import swarmpress as sp
from swarmpress.codecs.core import frame
from swarmpress.codecs.families.topk import chunk_budget, chunk_sizes
from tests.codecs.strategies import BF16, DTYPES

small_shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=12)
configs = st.fixed_dictionaries(
    {
        "density": st.sampled_from([0.01, 0.05, 0.3, 1.0]),
        "bits": st.integers(1, 8),
        "chunk": st.sampled_from([1, 7, 64, 4096]),
    }
)


def _draw(seed: int, shape, dtype, scale: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.asarray(rng.standard_t(3, shape) * scale)
    x[rng.random(shape) < 0.1] = 0.0  # exact zeros too
    return x.astype(dtype)


def _f64(t) -> np.ndarray:
    return np.asarray(t.float() if isinstance(t, torch.Tensor) else t, dtype=np.float64)


# ---------------------------------------------------------------------- registry and params
def test_registered_as_stateful_with_its_params():
    desc = {c["id"]: c for c in sp.list_codecs()}["topk"]
    assert desc["stateful"] and not desc["lossless"]
    assert {p["name"] for p in desc["params"]} == {"density", "bits", "chunk", "error_feedback"}
    c = sp.get_codec("topk")
    assert c.config == {"density": 0.02, "bits": 2, "chunk": 4096, "error_feedback": True}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"density": 0.0}, "above 0"),
        ({"density": 1.5}, "above 1.0"),
        ({"bits": 0}, "allowed"),
        ({"bits": 9}, "allowed"),
        ({"chunk": 0}, "below 1"),
        ({"error_feedback": 1}, "true or false"),
    ],
)
def test_bad_params_are_named(params, message):
    with pytest.raises(sp.CodecError, match=message):
        sp.get_codec("topk", **params)


# ---------------------------------------------------------------------- error feedback
@settings(max_examples=60, deadline=None)
@given(
    configs,
    small_shapes,
    st.sampled_from(DTYPES),
    st.integers(1, 6),
    st.integers(0, 2**32 - 1),
)
def test_error_feedback_accumulates_exactly_what_was_not_sent(cfg, shape, dtype, calls, seed):
    """sum(decoded_i) + final residual == sum(x_i): nothing is ever lost, only delayed."""
    codec = sp.get_codec("topk", **cfg)
    receiver = sp.get_codec("topk")  # a fresh instance with other params: frames carry theirs
    total_x = np.zeros(shape)
    total_y = np.zeros(shape)
    scale = 0.0
    for i in range(calls):
        x = _draw(seed + i, shape, dtype, scale=10.0 ** (i % 3 - 1))
        y = receiver.decode(codec.encode(x))
        assert y.dtype == x.dtype and y.shape == x.shape
        total_x += _f64(x)
        total_y += _f64(y)
        scale = max(scale, float(np.abs(_f64(x)).max(initial=0.0)))
    residual = codec.state_dict()["residual"].astype(np.float64)
    np.testing.assert_allclose(total_y + residual, total_x, rtol=0, atol=1e-5 * calls * scale)


@settings(max_examples=20, deadline=None)
@given(configs, small_shapes, st.integers(0, 2**32 - 1))
def test_without_error_feedback_the_residual_stays_zero(cfg, shape, seed):
    codec = sp.get_codec("topk", error_feedback=False, **cfg)
    for i in range(3):
        codec.encode(_draw(seed + i, shape, np.float32))
        state = codec.state_dict()
        assert state["shape"] == list(shape)
        assert not np.any(state["residual"])


def test_error_feedback_delivers_the_signal_over_time():
    x = np.random.default_rng(1).standard_normal((32, 50)).astype(np.float32)
    codec = sp.get_codec("topk", density=0.05, chunk=64)
    total = np.zeros(x.shape)
    norms = []
    for _ in range(100):
        total += codec.decode(codec.encode(x))
        norms.append(np.linalg.norm(codec.residual))
    assert sp.rel_l2(x, total / 100) < 0.1  # the running mean converges to x
    assert max(norms) < 10 * np.linalg.norm(x)  # the residual stays bounded


# ---------------------------------------------------------------------- density and fidelity
@settings(max_examples=60, deadline=None)
@given(configs, small_shapes, st.sampled_from(DTYPES), st.integers(0, 2**32 - 1))
def test_density_is_respected_per_chunk(cfg, shape, dtype, seed):
    codec = sp.get_codec("topk", **cfg)
    for i in range(3):
        y = _f64(codec.decode(codec.encode(_draw(seed + i, shape, dtype)))).reshape(-1)
        chunk = cfg["chunk"]
        for start in range(0, y.size, chunk):
            part = y[start : start + chunk]
            assert np.count_nonzero(part) <= math.ceil(cfg["density"] * part.size)
        assert np.count_nonzero(y) <= codec.max_nonzeros(y.size)


def test_budget_is_used_in_full_on_distinct_values():
    x = np.random.default_rng(2).standard_normal((33, 100)).astype(np.float32)
    codec = sp.get_codec("topk", density=0.03, chunk=256)
    y = codec.decode(codec.encode(x))
    lens = chunk_sizes(x.size, 256)
    assert np.count_nonzero(y) == int(chunk_budget(lens, 0.03).sum()) == codec.max_nonzeros(x.size)
    # the kept values are the largest magnitudes of their chunk
    flat, yf = np.abs(x.reshape(-1)), y.reshape(-1)
    for start in range(0, x.size, 256):
        kept = yf[start : start + 256] != 0
        assert flat[start : start + 256][kept].min() >= flat[start : start + 256][~kept].max()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_eight_bits_at_full_density_is_close(dtype):
    x = np.random.default_rng(3).standard_normal((40, 70)).astype(dtype)
    codec = sp.get_codec("topk", bits=8, density=1.0, error_feedback=False)
    y = codec.decode(codec.encode(x))
    assert sp.rel_l2(x, y) < 0.02
    assert np.all(np.sign(_f64(y)) == np.sign(_f64(x)))


def test_ties_and_constant_tensors_keep_the_budget():
    x = np.ones((10, 10), np.float32)
    codec = sp.get_codec("topk", density=0.1, chunk=50)
    y = codec.decode(codec.encode(x))
    assert np.count_nonzero(y) == 10
    np.testing.assert_array_equal(y[y != 0], 1.0)  # one level, exactly the value


# ---------------------------------------------------------------------- frames and decoding
def test_frames_decode_with_a_fresh_instance_but_not_with_swarmpress_decode():
    x = np.random.default_rng(4).standard_normal((8, 300)).astype(BF16)
    codec = sp.get_codec("topk", density=0.05, bits=3, chunk=128)
    blob = codec.encode(x)
    fr = frame.unpack(blob)
    assert fr.stateful and fr.params["density"] == 0.05
    expected = codec.decode(blob)
    for other in (sp.get_codec("topk"), sp.get_codec("topk", density=0.05, bits=3, chunk=128)):
        y = other.decode(blob)
        assert y.dtype == x.dtype and y.shape == x.shape
        np.testing.assert_array_equal(y.view(np.uint16), expected.view(np.uint16))
    with pytest.raises(sp.CodecError, match="stateful"):
        sp.decode(blob)
    with pytest.raises(sp.CodecError, match="made by codec 'zstd'"):
        codec.decode(sp.get_codec("zstd").encode(x))


def test_decoding_does_not_touch_the_encoder_state():
    x = np.random.default_rng(5).standard_normal(500).astype(np.float32)
    codec = sp.get_codec("topk")
    blob = codec.encode(x)
    before = codec.state_dict()
    codec.decode(blob)
    after = codec.state_dict()
    np.testing.assert_array_equal(before["residual"], after["residual"])
    assert before["steps"] == after["steps"] == 1


# ---------------------------------------------------------------------- state
def _stream(n: int = 6):
    rng = np.random.default_rng(6)
    return [rng.standard_normal((5, 77)).astype(np.float32) for _ in range(n)]


def _save(state: dict) -> tuple[bytes, str]:
    buf = io.BytesIO()
    np.savez(buf, residual=state["residual"])
    meta = json.dumps({k: v for k, v in state.items() if k != "residual"})
    return buf.getvalue(), meta


def _load(npz: bytes, meta: str) -> dict:
    state = json.loads(meta)
    state["residual"] = np.load(io.BytesIO(npz))["residual"]
    return state


@pytest.mark.parametrize("via", ["json+npz", "savez-all"])
def test_saved_state_continues_the_stream_byte_for_byte(via):
    xs = _stream()
    params = {"density": 0.05, "bits": 2, "chunk": 64}
    straight = sp.get_codec("topk", **params)
    expected = [straight.encode(x) for x in xs]

    first = sp.get_codec("topk", **params)
    got = [first.encode(x) for x in xs[:3]]
    state = first.state_dict()
    if via == "json+npz":
        state = _load(*_save(state))
    else:
        buf = io.BytesIO()
        np.savez(buf, **state)
        state = dict(np.load(io.BytesIO(buf.getvalue())))
    second = sp.get_codec("topk", **params)
    second.load_state_dict(state)
    got += [second.encode(x) for x in xs[3:]]
    assert got == expected
    assert second.state_dict()["steps"] == 6


def test_state_of_a_fresh_codec_round_trips():
    codec = sp.get_codec("topk")
    state = codec.state_dict()
    assert state["active"] is False and state["residual"].size == 0
    other = sp.get_codec("topk")
    other.load_state_dict(_load(*_save(state)))
    other.encode(np.ones(3, np.float32))  # any shape: no stream yet


def test_bad_states_are_refused():
    codec = sp.get_codec("topk")
    codec.encode(np.ones((2, 3), np.float32))
    good = codec.state_dict()
    bad = [
        ({**good, "version": 99}, "version 99"),
        ({**good, "residual": np.zeros((3, 2), np.float32)}, "shape"),
        ({**good, "residual": np.full((2, 3), np.nan, np.float32)}, "NaN"),
        ({**good, "residual": np.zeros((2, 3), np.int32)}, "float"),
        ({k: v for k, v in good.items() if k != "residual"}, "lacks residual"),
        ({**good, "shape": "x"}, "malformed"),
        ([1, 2], "mapping"),
    ]
    for state, message in bad:
        with pytest.raises(sp.CodecError, match=message):
            sp.get_codec("topk").load_state_dict(state)
    # a state for another shape does not fit a running stream until reset()
    other = sp.get_codec("topk")
    other.encode(np.ones(4, np.float32))
    with pytest.raises(sp.CodecError, match=r"\(2, 3\).*\(4,\)"):
        other.load_state_dict(good)
    other.reset()
    other.load_state_dict(good)
    with pytest.raises(sp.CodecError, match="error feedback is off"):
        sp.get_codec("topk", error_feedback=False).load_state_dict(
            {**good, "residual": np.ones((2, 3), np.float32)}
        )


def test_shape_change_needs_reset():
    codec = sp.get_codec("topk")
    codec.encode(np.ones((4, 5), np.float32))
    with pytest.raises(sp.CodecError, match=r"\(4, 5\).*\(20,\)"):
        codec.encode(np.ones(20, np.float32))
    codec.reset()
    y = codec.decode(codec.encode(np.ones(20, np.float32)))
    assert y.shape == (20,)


def test_non_finite_input_is_refused_and_state_kept():
    codec = sp.get_codec("topk")
    x = np.linspace(-1, 1, 50, dtype=np.float32)
    codec.encode(x)
    before = codec.state_dict()
    for bad in (np.nan, np.inf, -np.inf):
        y = x.copy()
        y[7] = bad
        with pytest.raises(sp.CodecError, match="NaN or infinite"):
            codec.encode(y)
    after = codec.state_dict()
    np.testing.assert_array_equal(before["residual"], after["residual"])
    assert after["steps"] == 1
    for bad in (np.array([1.0, np.nan], BF16), torch.tensor([float("inf"), 1.0], dtype=torch.half)):
        with pytest.raises(sp.CodecError, match="NaN or infinite"):
            sp.get_codec("topk").encode(bad)


def test_values_near_the_dtype_maximum_stay_finite():
    x = np.full(64, 65504.0, np.float16)
    x[::2] = -65504.0
    codec = sp.get_codec("topk", density=0.1, bits=1)
    for _ in range(5):
        y = codec.decode(codec.encode(x))
        assert np.isfinite(y.astype(np.float32)).all()
        assert np.isfinite(codec.residual).all()


# ---------------------------------------------------------------------- containers and edges
@pytest.mark.parametrize("tdtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_torch_tensors_round_trip_their_container(tdtype):
    x = torch.randn(6, 200, generator=torch.Generator().manual_seed(0)).to(tdtype)
    codec = sp.get_codec("topk", density=0.05)
    y = sp.get_codec("topk").decode(codec.encode(x, role="gradient"))
    assert isinstance(y, torch.Tensor) and y.dtype == tdtype and y.shape == x.shape
    kept = y != 0
    assert 0 < int(kept.sum()) <= codec.max_nonzeros(x.numel())
    assert torch.all(torch.sign(y[kept]) == torch.sign(x[kept]))


@pytest.mark.parametrize(
    "x",
    [
        np.float32(2.5),
        np.array(-3.0, BF16),
        np.array([7.0], np.float16),
        np.zeros((3, 4), np.float32),
        np.zeros((0, 5), BF16),
        np.array([-0.0, 0.0, 1e-45], np.float32),
    ],
    ids=["0-d", "0-d-bf16", "one-element", "all-zero", "empty", "tiny"],
)
def test_edge_tensors(x):
    codec = sp.get_codec("topk")
    y = codec.decode(codec.encode(x))
    assert y.dtype == x.dtype and y.shape == np.shape(x)
    if x.size and not np.any(x):
        assert not np.any(y) and not np.any(codec.residual)
    if x.size == 1 and np.any(x):
        assert _f64(y) == pytest.approx(_f64(x), rel=1e-2)  # k = 1: the value itself


def test_all_zero_frames_are_tiny():
    codec = sp.get_codec("topk")
    blob = codec.encode(np.zeros((64, 1024), np.float32))
    assert len(frame.unpack(blob).payload) < 64


# ---------------------------------------------------------------------- hostile payloads
def _frames() -> list[bytes]:
    rng = np.random.default_rng(7)
    out = []
    for dtype in (np.float32, np.float16, BF16):
        for params in (
            {},
            {"density": 0.1, "bits": 1, "chunk": 32},
            {"density": 0.3, "bits": 8, "chunk": 100},
            {"density": 1.0, "bits": 3, "chunk": 7},
        ):
            codec = sp.get_codec("topk", **params)
            for shape in ((16, 24), (5000,)):
                codec.reset()
                x = rng.standard_normal(shape)
                x[rng.random(shape) < 0.05] *= 30  # clustered outliers: range-coded gaps
                out.append(codec.encode(x.astype(dtype)))
                out.append(codec.encode(x.astype(dtype)))  # with a residual
            codec.reset()
            out.append(codec.encode(np.zeros((16, 24), dtype)))
    return out


FRAMES = _frames()


def test_mutated_payloads_with_valid_checksum():
    rng = np.random.default_rng(8)
    decoder = sp.get_codec("topk")
    outcomes = {"error": 0, "decoded": 0}
    for _ in range(400):
        fr = frame.unpack(FRAMES[rng.integers(len(FRAMES))])
        payload = bytearray(fr.payload)
        kind = rng.integers(3)
        if kind == 0 and payload:
            for _ in range(rng.integers(1, 6)):
                payload[rng.integers(len(payload))] = rng.integers(256)
        elif kind == 1:
            payload = payload[: rng.integers(len(payload) + 1)]
        else:
            i = rng.integers(len(payload) + 1)
            payload[i:i] = rng.integers(0, 256, rng.integers(1, 9), dtype=np.uint8).tobytes()
        shape = fr.shape
        if rng.integers(4) == 0:  # lie about the shape too
            shape = (int(rng.integers(0, 10_000)),)
        blob = frame.pack(
            fr.codec_id, fr.params, fr.dtype, fr.container, shape, bytes(payload), flags=fr.flags
        )
        try:
            y = decoder.decode(blob)
        except sp.CodecError as exc:
            assert str(exc) and "\n" not in str(exc)
            outcomes["error"] += 1
            continue
        assert y.shape == shape and y.dtype == fr.dtype.numpy
        assert np.isfinite(y.astype(np.float32)).all()
        outcomes["decoded"] += 1
    assert outcomes["error"] > 100


def test_corrupted_frames_and_hostile_params():
    rng = np.random.default_rng(9)
    decoder = sp.get_codec("topk")
    for _ in range(200):
        blob = bytearray(FRAMES[rng.integers(len(FRAMES))])
        if rng.integers(2):
            i = rng.integers(len(blob) * 8)
            blob[i // 8] ^= 1 << (i % 8)
        else:
            blob = blob[: rng.integers(len(blob))]
        with pytest.raises(sp.CodecError):
            decoder.decode(bytes(blob))
    fr = frame.unpack(FRAMES[0])
    for params in ({"density": 0}, {"bits": 12}, {"chunk": "8"}, {"evil": 1}):
        blob = frame.pack("topk", params, fr.dtype, fr.container, fr.shape, bytes(fr.payload))
        with pytest.raises(sp.CodecError, match="invalid parameters"):
            decoder.decode(blob)
