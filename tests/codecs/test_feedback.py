"""ErrorFeedback: the sender keeps what a frame did not carry, over any stateless codec.

The frames stay the wrapped codec's own stateless frames (swarmpress.decode reads them);
the residual, its saved state and the stream's shape live in the ErrorFeedback object.
"""

import hashlib
import io
import json
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import swarmpress as sp
from swarmpress.codecs import ErrorFeedback
from swarmpress.codecs.core import frame
from tests.codecs.strategies import (
    BF16,
    DTYPES,
    as_f64,
    heavy_tailed,
    small_shapes,
    topk_configs,
)

GOLDEN = Path(__file__).with_name("golden") / "frames.npz"
DENSE = ["lossy", "blockq:bits=2"]  # codecs that take the general (dense) encode_sum path


def _run(feedback: ErrorFeedback, xs) -> tuple[np.ndarray, np.ndarray, list[bytes]]:
    """Encode xs through feedback; (sum of x, sum of what a receiver decodes, frames)."""
    total_x = np.zeros(np.shape(xs[0]))
    total_y = np.zeros(np.shape(xs[0]))
    frames = []
    for x in xs:
        blob = feedback.encode(x)
        y = sp.decode(blob)
        assert y.dtype == x.dtype and y.shape == x.shape
        total_x += as_f64(x)
        total_y += as_f64(y)
        frames.append(blob)
    return total_x, total_y, frames


# ---------------------------------------------------------------------- the identity
@settings(max_examples=60, deadline=None)
@given(
    topk_configs,
    small_shapes,
    st.sampled_from(DTYPES),
    st.integers(1, 6),
    st.integers(0, 2**32 - 1),
)
def test_topk_feedback_accumulates_exactly_what_was_not_sent(cfg, shape, dtype, calls, seed):
    """sum(decoded_i) + final residual == sum(x_i): nothing is ever lost, only delayed."""
    feedback = ErrorFeedback(sp.get_codec("topk", **cfg))
    xs = [heavy_tailed(seed + i, shape, dtype, scale=10.0 ** (i % 3 - 1)) for i in range(calls)]
    total_x, total_y, _ = _run(feedback, xs)
    scale = max(float(np.abs(as_f64(x)).max(initial=0.0)) for x in xs)
    residual = feedback.residual
    assert residual.dtype == np.float32 and residual.shape == shape
    assert feedback.steps == calls
    np.testing.assert_allclose(
        total_y + residual.astype(np.float64), total_x, rtol=0, atol=1e-5 * calls * scale
    )


@settings(max_examples=25, deadline=None)
@given(
    st.sampled_from(DENSE),
    small_shapes,
    st.sampled_from(DTYPES),
    st.integers(1, 4),
    st.integers(0, 2**32 - 1),
)
def test_dense_codec_feedback_keeps_the_identity(spec, shape, dtype, calls, seed):
    """The general encode_sum path: the identity holds up to float32 rounding."""
    feedback = ErrorFeedback(spec)
    xs = [heavy_tailed(seed + i, shape, dtype, scale=10.0 ** (i % 3 - 1)) for i in range(calls)]
    total_x, total_y, _ = _run(feedback, xs)
    scale = max(float(np.abs(as_f64(x)).max(initial=0.0)) for x in xs)
    residual = feedback.residual.astype(np.float64)
    assert residual.shape == shape and feedback.steps == calls
    np.testing.assert_allclose(total_y + residual, total_x, rtol=0, atol=1e-5 * calls * scale)


@pytest.mark.parametrize("codec_id", [c["id"] for c in sp.list_codecs() if not c["stream"]])
def test_every_stateless_codec_can_be_wrapped(codec_id):
    x = np.random.default_rng(10).standard_normal((24, 40)).astype(BF16)
    feedback = ErrorFeedback(codec_id)
    assert feedback.codec.codec_id == codec_id and feedback.residual is None
    total_x, total_y, frames = _run(feedback, [x, x, x])
    assert all(not frame.unpack(b).stream for b in frames)
    residual = feedback.residual.astype(np.float64)
    np.testing.assert_allclose(total_y + residual, total_x, rtol=0, atol=1e-4)
    if feedback.codec.lossless:  # nothing to carry
        assert not np.any(residual) and total_y.tobytes() == total_x.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, BF16], ids=str)
def test_topk_identity_across_the_in_place_update_batches(dtype):
    """A tensor of several 64 Ki-value batches: the residual is updated in place a batch at a
    time, and each value's carry still comes out right (values differ per batch)."""
    rng = np.random.default_rng(13)
    shape = (300, 700)  # 210 000 values: three full batches and a partial one
    feedback = ErrorFeedback(sp.get_codec("topk", density=0.05, bits=2, chunk=1000))
    xs = [
        (rng.standard_normal(shape) * np.linspace(0.1, 10, shape[0])[:, None]).astype(dtype)
        for _ in range(3)
    ]
    total_x, total_y, _ = _run(feedback, xs)
    scale = max(float(np.abs(as_f64(x)).max()) for x in xs)
    np.testing.assert_allclose(
        total_y + feedback.residual, total_x, rtol=0, atol=1e-6 * len(xs) * scale
    )
    assert np.count_nonzero(total_y) > 0.1 * total_y.size


# ---------------------------------------------------------------------- delivery over time
def test_topk_feedback_delivers_the_signal_over_time():
    x = np.random.default_rng(1).standard_normal((32, 50)).astype(np.float32)
    feedback = ErrorFeedback(sp.get_codec("topk", density=0.05, chunk=64))
    total = np.zeros(x.shape)
    norms = []
    for _ in range(100):
        total += sp.decode(feedback.encode(x))
        norms.append(np.linalg.norm(feedback.residual))
    assert sp.rel_l2(x, total / 100) < 0.1  # the running mean converges to x
    assert max(norms) < 10 * np.linalg.norm(x)  # the residual stays bounded
    # without feedback the same codec sends the same top-k every time: no convergence
    plain = sp.decode(sp.get_codec("topk", density=0.05, chunk=64).encode(x))
    assert sp.rel_l2(x, plain) > 0.5


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("spec", DENSE)
def test_dense_codec_feedback_averages_closer_than_one_frame(spec, dtype):
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((64, 96)) * np.exp(rng.standard_normal(96))).astype(dtype)
    feedback = ErrorFeedback(spec)
    n = 20
    first = sp.decode(feedback.encode(x))
    total = as_f64(first)
    for _ in range(n - 1):
        total += as_f64(sp.decode(feedback.encode(x)))
        assert np.linalg.norm(feedback.residual) < 3 * np.linalg.norm(as_f64(x))
    one = sp.rel_l2(x, first)
    assert one > 0  # a lossy frame
    assert sp.rel_l2(x, total / n) < one / 5
    # the identity, and the plain codec alone gives one frame's error however often it runs
    np.testing.assert_allclose(
        total + feedback.residual, n * as_f64(x), rtol=0, atol=1e-5 * n * np.abs(as_f64(x)).max()
    )
    assert sp.rel_l2(x, sp.decode(sp.get_codec(spec).encode(x))) == pytest.approx(one)


# ---------------------------------------------------------------------- the frames
@pytest.mark.parametrize("spec", ["topk", "topk:density=0.1:bits=1:chunk=64", *DENSE, "zstd"])
def test_frames_are_the_wrapped_codecs_own(spec):
    """The first frame of a stream is the plain codec's frame; every frame decodes alone."""
    x = np.random.default_rng(12).standard_normal((16, 70)).astype(np.float16)
    codec = sp.codecs.build_codec(spec)
    feedback = ErrorFeedback(codec)
    assert feedback.codec is codec
    blob = feedback.encode(x, role="gradient")
    assert blob == codec.encode(x, role="gradient")
    second = feedback.encode(x)
    for b in (blob, second):
        fr = frame.unpack(b)
        assert fr.flags == 0 and fr.codec_id == codec.codec_id and fr.params == codec.frame_params()
        y = sp.decode(b)
        assert y.dtype == x.dtype and y.shape == x.shape
    if not codec.lossless:  # the second frame carries the first one's residual too
        assert second != blob


def test_the_first_frame_matches_the_old_stateful_topk():
    """golden/frames.npz holds topk-fp32 as the old stateful topk made it (its payload did not
    change when topk became stateless); ErrorFeedback(topk) must make the same payload."""
    golden = np.load(GOLDEN)
    x = golden["in/act_fp32"]
    old = frame.unpack(bytes(golden["frame/topk-fp32"]))
    new = frame.unpack(ErrorFeedback("topk").encode(x))
    assert new.payload == old.payload
    assert (new.shape, new.dtype, new.container) == (old.shape, old.dtype, old.container)
    assert not new.stream


# sha256 over the payloads of four frames of one stream (golden inputs act_fp32, stream_0..2
# in the given dtype), as the old stateful topk (get_codec("topk", ...).encode, error feedback
# on) made them before ErrorFeedback replaced it: the residual path must not change a byte.
OLD_STATEFUL_TOPK = {
    ("topk", "float32"): "2c11e685d1c050a32c7432ea228fa1bc251aedadca1d60d7013de8f925eb28bc",
    (
        "topk:density=0.1:bits=1:chunk=100",
        "bfloat16",
    ): "9bb854cd9318141f48ee29c535560af6082c049bfeb6e1661be09f537541330b",
    (
        "topk:density=0.05:bits=3:chunk=64",
        "float16",
    ): "445e4c48948b8ceba791e27f6813210d7e05f5602f71ed226df054b7d8a72cb0",
    (
        "topk:density=1.0:bits=8:chunk=7",
        "float32",
    ): "1a027d302b2af82c896d0495e07a1407c57b4051fca8649746ec8a26de039a86",
}


@pytest.mark.parametrize(("spec", "dtype"), list(OLD_STATEFUL_TOPK), ids=lambda v: str(v))
def test_a_whole_stream_matches_the_old_stateful_topk(spec, dtype):
    golden = np.load(GOLDEN)
    xs = [golden["in/act_fp32"]] + [golden[f"in/stream_{i}"] for i in range(3)]
    feedback = ErrorFeedback(spec)
    digest = hashlib.sha256()
    for x in xs:
        digest.update(frame.unpack(feedback.encode(x.astype(np.dtype(dtype)))).payload)
    assert digest.hexdigest() == OLD_STATEFUL_TOPK[spec, dtype]


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
@pytest.mark.parametrize("spec", ["topk:density=0.05:bits=2:chunk=64", *DENSE])
def test_saved_state_continues_the_stream_byte_for_byte(spec, via):
    xs = _stream()
    straight = ErrorFeedback(spec)
    expected = [straight.encode(x) for x in xs]

    first = ErrorFeedback(spec)
    got = [first.encode(x) for x in xs[:3]]
    state = first.state_dict()
    assert set(state) == {"version", "active", "shape", "steps", "residual"}
    assert state["active"] is True and state["shape"] == [5, 77] and state["steps"] == 3
    if via == "json+npz":
        state = _load(*_save(state))
    else:
        buf = io.BytesIO()
        np.savez(buf, **state)
        state = dict(np.load(io.BytesIO(buf.getvalue())))
    second = ErrorFeedback(spec)
    second.load_state_dict(state)
    assert second.steps == 3
    np.testing.assert_array_equal(second.residual, first.residual)
    got += [second.encode(x) for x in xs[3:]]
    assert got == expected
    assert second.state_dict()["steps"] == 6 == straight.steps
    np.testing.assert_array_equal(second.residual, straight.residual)


def test_residual_and_state_are_copies():
    xs = _stream(4)
    straight = ErrorFeedback("topk:density=0.05")
    expected = [straight.encode(x) for x in xs]
    feedback = ErrorFeedback("topk:density=0.05")
    got = [feedback.encode(xs[0])]
    feedback.residual[:] = 1e6  # a copy: the stream does not see it
    feedback.state_dict()["residual"][:] = 1e6
    state = feedback.state_dict()
    got += [feedback.encode(x) for x in xs[1:]]
    assert got == expected
    # a loaded state is copied in: changing the dict afterwards changes nothing
    other = ErrorFeedback("topk:density=0.05")
    other.load_state_dict(state)
    state["residual"][:] = 1e6
    assert [other.encode(x) for x in xs[1:]] == expected[1:]


def test_state_of_a_fresh_stream_round_trips():
    feedback = ErrorFeedback("topk")
    assert feedback.residual is None and feedback.steps == 0
    state = feedback.state_dict()
    assert state["active"] is False and state["residual"].size == 0 and state["steps"] == 0
    other = ErrorFeedback("topk")
    other.load_state_dict(_load(*_save(state)))
    assert other.residual is None and other.steps == 0
    other.encode(np.ones(3, np.float32))  # any shape: no stream yet
    assert other.residual.shape == (3,) and other.steps == 1
    # an inactive state ends a running stream: any shape again
    other.load_state_dict(state)
    assert other.residual is None and other.steps == 0
    other.encode(np.ones((2, 2), np.float16))
    assert other.residual.shape == (2, 2)


def test_bad_states_are_refused():
    feedback = ErrorFeedback("topk")
    feedback.encode(np.ones((2, 3), np.float32))
    good = feedback.state_dict()
    bad = [
        ({**good, "version": 99}, "version 99"),
        ({**good, "residual": np.zeros((3, 2), np.float32)}, r"shape \(3, 2\).*\(2, 3\)"),
        ({**good, "residual": np.full((2, 3), np.nan, np.float32)}, "NaN"),
        ({**good, "residual": np.full((2, 3), np.inf, np.float32)}, "infinite"),
        ({**good, "residual": np.zeros((2, 3), np.int32)}, "float"),
        ({k: v for k, v in good.items() if k != "residual"}, "lacks residual"),
        ({k: v for k, v in good.items() if k not in ("steps", "shape")}, "lacks shape"),
        ({**good, "shape": "x"}, "shape must be at most 32 integers"),
        ({**good, "steps": "many"}, "steps must be an integer"),
        ({**good, "steps": -1}, r"steps=-1 is outside"),
        ({**good, "shape": [-2, -3]}, "negative"),
        ([1, 2], "mapping"),
        (None, "mapping"),
    ]
    for state, message in bad:
        target = ErrorFeedback("topk")
        with pytest.raises(sp.CodecError, match=message):
            target.load_state_dict(state)
        assert target.residual is None and target.steps == 0  # a refusal changes nothing
    # a state for another shape does not fit a running stream until reset()
    other = ErrorFeedback("topk")
    other.encode(np.full(4, 3.0, np.float32))
    before = other.state_dict()
    with pytest.raises(sp.CodecError, match=r"\(2, 3\).*\(4,\).*reset"):
        other.load_state_dict(good)
    after = other.state_dict()
    np.testing.assert_array_equal(after["residual"], before["residual"])
    assert after["steps"] == 1 and after["shape"] == [4]
    other.reset()
    other.load_state_dict(good)
    np.testing.assert_array_equal(other.residual, good["residual"])


def test_shape_change_needs_reset():
    feedback = ErrorFeedback("topk")
    feedback.encode(np.ones((4, 5), np.float32))
    before = feedback.residual
    with pytest.raises(sp.CodecError, match=r"\(4, 5\).*\(20,\).*reset"):
        feedback.encode(np.ones(20, np.float32))
    np.testing.assert_array_equal(feedback.residual, before)
    assert feedback.steps == 1
    feedback.reset()
    assert feedback.residual is None and feedback.steps == 0
    y = sp.decode(feedback.encode(np.ones(20, np.float32)))
    assert y.shape == (20,) and feedback.residual.shape == (20,)


@pytest.mark.parametrize("spec", ["topk", *DENSE, "zstd"])
def test_non_finite_input_is_refused_and_state_kept(spec):
    feedback = ErrorFeedback(spec)
    x = np.linspace(-1, 1, 50, dtype=np.float32)
    feedback.encode(x)
    before = feedback.state_dict()
    for bad in (np.nan, np.inf, -np.inf):
        y = x.copy()
        y[7] = bad
        with pytest.raises(sp.CodecError, match="NaN or infinit"):
            feedback.encode(y)
    after = feedback.state_dict()
    np.testing.assert_array_equal(before["residual"], after["residual"])
    assert after["steps"] == 1
    # the stream goes on as if the refusals never happened
    straight = ErrorFeedback(spec)
    straight.encode(x)
    assert feedback.encode(x) == straight.encode(x)
    for bad in (np.array([1.0, np.nan], BF16), torch.tensor([float("inf"), 1.0], dtype=torch.half)):
        fresh = ErrorFeedback(spec)
        with pytest.raises(sp.CodecError, match="NaN or infinit"):
            fresh.encode(bad)
        assert fresh.residual is None and fresh.steps == 0


def test_a_bad_role_changes_nothing():
    feedback = ErrorFeedback("topk")
    with pytest.raises(sp.CodecError, match="unknown tensor role"):
        feedback.encode(np.ones(4, np.float32), role="nope")
    assert feedback.residual is None and feedback.steps == 0


def test_topk_values_near_the_dtype_maximum_stay_finite():
    x = np.full(64, 65504.0, np.float16)
    x[::2] = -65504.0
    feedback = ErrorFeedback(sp.get_codec("topk", density=0.1, bits=1))
    for _ in range(5):
        y = sp.decode(feedback.encode(x))
        assert np.isfinite(y.astype(np.float32)).all()
        assert np.isfinite(feedback.residual).all()
    assert feedback.steps == 5


@pytest.mark.parametrize("dtype", [np.float32, BF16], ids=str)
def test_a_residual_beyond_float32_is_refused_and_state_kept(dtype):
    big = float(ml_dtypes.finfo(dtype).max)
    x = np.full(64, big, np.float64).astype(dtype)
    feedback = ErrorFeedback(sp.get_codec("topk", density=0.1, bits=1))
    feedback.encode(x)  # 58 of 64 values stay in the residual at the dtype's maximum
    before = feedback.state_dict()
    with pytest.raises(sp.CodecError, match="overflows float32"):
        feedback.encode(x)
    after = feedback.state_dict()
    np.testing.assert_array_equal(before["residual"], after["residual"])
    assert after["steps"] == 1


# ---------------------------------------------------------------------- what it wraps
def test_refuses_a_stream_codec_and_a_non_codec():
    for codec in (sp.get_codec("lossy-stream"), "lossy-stream"):
        with pytest.raises(sp.CodecError, match="stateless codec"):
            ErrorFeedback(codec)
    for thing in (42, object(), None, np.zeros(3)):
        with pytest.raises(sp.CodecError, match="stateless codec"):
            ErrorFeedback(thing)
    with pytest.raises(sp.CodecError, match="unknown codec 'nope'"):
        ErrorFeedback("nope")
    with pytest.raises(sp.CodecError, match="density"):
        ErrorFeedback("topk:density=2")


def test_a_spec_string_builds_the_codec():
    feedback = ErrorFeedback("topk:density=0.1:bits=3:chunk=64")
    assert isinstance(feedback.codec, sp.codecs.Codec)
    assert feedback.codec.config == {"density": 0.1, "bits": 3, "chunk": 64}
    assert repr(feedback) == "ErrorFeedback(TopKCodec(density=0.1, bits=3, chunk=64), steps=0)"
    feedback.encode(np.ones(5, np.float32))
    assert repr(feedback).endswith("steps=1)")


# ---------------------------------------------------------------------- containers and edges
@pytest.mark.parametrize("tdtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_torch_tensors_keep_their_container(tdtype):
    x = torch.randn(6, 200, generator=torch.Generator().manual_seed(0)).to(tdtype)
    feedback = ErrorFeedback(sp.get_codec("topk", density=0.05))
    total = torch.zeros(x.shape, dtype=torch.float64)
    for _ in range(3):
        y = sp.decode(feedback.encode(x, role="gradient"))
        assert isinstance(y, torch.Tensor) and y.dtype == tdtype and y.shape == x.shape
        total += y.double()
    assert isinstance(feedback.residual, np.ndarray) and feedback.residual.shape == (6, 200)
    np.testing.assert_allclose(total.numpy() + feedback.residual, 3 * as_f64(x), rtol=0, atol=1e-4)


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
@pytest.mark.parametrize("spec", ["topk", *DENSE])
def test_edge_tensors(spec, x):
    feedback = ErrorFeedback(spec)
    total = np.zeros(np.shape(x))
    for _ in range(2):
        y = sp.decode(feedback.encode(x))
        assert y.dtype == x.dtype and y.shape == np.shape(x)
        total += as_f64(y)
    assert feedback.residual.shape == np.shape(x) and feedback.steps == 2
    if not np.any(x):
        assert not np.any(total) and not np.any(feedback.residual)
    np.testing.assert_allclose(total + feedback.residual, 2 * as_f64(x), rtol=1e-6, atol=1e-30)


def test_dense_feedback_near_the_float16_maximum_keeps_going():
    """x + residual may pass float16's largest value: it is clamped before the cast, the
    residual keeps the difference, and the stream goes on (it used to be stuck at inf)."""
    x = np.full(64, 65504, np.float16)
    x[::2] = -65504
    ef = ErrorFeedback("lossy")
    for _ in range(4):
        y = sp.decode(ef.encode(x))
        assert np.isfinite(y.astype(np.float32)).all()
        assert np.isfinite(ef.residual).all()
    assert ef.steps == 4
