"""The stateless `topk` codec: params, density per chunk, frames, containers, hostile payloads.

Error feedback (the residual a sender keeps between calls) is ErrorFeedback's, tested in
test_feedback.py; here every encode sends the top-k of exactly the tensor it is given.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import swarmpress as sp
from swarmpress.codecs import ErrorFeedback
from swarmpress.codecs.core import frame
from swarmpress.codecs.families.topk import MAX_CHUNK, chunk_budget, chunk_sizes
from tests.codecs.strategies import (
    BF16,
    DTYPES,
    as_f64,
    heavy_tailed,
    small_shapes,
    topk_configs,
)


def _bits(y) -> bytes:
    return np.ascontiguousarray(np.asarray(y)).tobytes()


# ---------------------------------------------------------------------- registry and params
def test_registered_as_a_stateless_codec_with_its_params():
    desc = {c["id"]: c for c in sp.list_codecs()}["topk"]
    assert desc["stream"] is False and not desc["lossless"]
    assert {p["name"] for p in desc["params"]} == {"density", "bits", "chunk"}
    c = sp.get_codec("topk")
    assert isinstance(c, sp.codecs.Codec) and not c.stream
    assert c.config == {"density": 0.02, "bits": 2, "chunk": 4096}
    # the error-feedback state moved to ErrorFeedback: the codec keeps none
    for gone in ("reset", "state_dict", "load_state_dict", "residual"):
        assert not hasattr(c, gone), gone
    assert sp.codecs.build_codec("topk:density=0.1:bits=3:chunk=64").config == {
        "density": 0.1,
        "bits": 3,
        "chunk": 64,
    }


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"density": 0.0}, "density must be above 0"),
        ({"density": -0.5}, "density=-0.5 is below 0"),
        ({"density": 1.5}, "density=1.5 is above 1.0"),
        ({"bits": 0}, "bits=0; allowed"),
        ({"bits": 9}, "bits=9; allowed"),
        ({"chunk": 0}, "chunk=0 is below 1"),
        ({"chunk": MAX_CHUNK + 1}, f"chunk={MAX_CHUNK + 1} is above"),
        ({"error_feedback": True}, "unknown parameter.*error_feedback"),
    ],
)
def test_bad_params_are_named(params, message):
    with pytest.raises(sp.CodecError, match=message):
        sp.get_codec("topk", **params)


# ---------------------------------------------------------------------- stateless
@settings(max_examples=30, deadline=None)
@given(topk_configs, small_shapes, st.sampled_from(DTYPES), st.integers(0, 2**32 - 1))
def test_each_encode_depends_only_on_its_tensor(cfg, shape, dtype, seed):
    """No state between calls: a tensor's frame is the same before and after other tensors."""
    codec = sp.get_codec("topk", **cfg)
    x, other = heavy_tailed(seed, shape, dtype), heavy_tailed(seed + 1, shape, dtype, scale=100.0)
    first = codec.encode(x)
    codec.encode(other)
    assert codec.encode(x) == first == sp.get_codec("topk", **cfg).encode(x)
    # what it sends are x's own values, with their signs
    y = as_f64(sp.decode(first))
    kept = y != 0
    assert np.all(np.sign(y[kept]) == np.sign(as_f64(x)[kept]))


# ---------------------------------------------------------------------- density and fidelity
@settings(max_examples=60, deadline=None)
@given(topk_configs, small_shapes, st.sampled_from(DTYPES), st.integers(0, 2**32 - 1))
def test_density_is_respected_per_chunk(cfg, shape, dtype, seed):
    codec = sp.get_codec("topk", **cfg)
    for i in range(3):
        x = heavy_tailed(seed + i, shape, dtype)
        y = sp.decode(codec.encode(x))
        assert y.dtype == x.dtype and y.shape == x.shape
        y = as_f64(y).reshape(-1)
        chunk = cfg["chunk"]
        for start in range(0, y.size, chunk):
            part = y[start : start + chunk]
            assert np.count_nonzero(part) <= math.ceil(cfg["density"] * part.size)
        assert np.count_nonzero(y) <= codec.max_nonzeros(y.size)
        # a value is sent only where x has one (exact zeros are never sent)
        assert not np.any(y[as_f64(x).reshape(-1) == 0])


def test_budget_is_used_in_full_on_distinct_values():
    x = np.random.default_rng(2).standard_normal((33, 100)).astype(np.float32)
    codec = sp.get_codec("topk", density=0.03, chunk=256)
    y = sp.decode(codec.encode(x))
    lens = chunk_sizes(x.size, 256)
    assert lens.sum() == x.size and lens[-1] == x.size - 256 * (lens.size - 1)
    assert np.count_nonzero(y) == int(chunk_budget(lens, 0.03).sum()) == codec.max_nonzeros(x.size)
    # the kept values are the largest magnitudes of their chunk
    flat, yf = np.abs(x.reshape(-1)), y.reshape(-1)
    for start in range(0, x.size, 256):
        kept = yf[start : start + 256] != 0
        assert flat[start : start + 256][kept].min() >= flat[start : start + 256][~kept].max()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_eight_bits_at_full_density_is_close(dtype):
    x = np.random.default_rng(3).standard_normal((40, 70)).astype(dtype)
    codec = sp.get_codec("topk", bits=8, density=1.0)
    y = sp.decode(codec.encode(x))
    assert sp.rel_l2(x, y) < 0.02
    assert np.all(np.sign(as_f64(y)) == np.sign(as_f64(x)))


def test_ties_and_constant_tensors_keep_the_budget():
    x = np.ones((10, 10), np.float32)
    codec = sp.get_codec("topk", density=0.1, chunk=50)
    y = sp.decode(codec.encode(x))
    assert np.count_nonzero(y) == 10
    np.testing.assert_array_equal(y[y != 0], 1.0)  # one level, exactly the value
    # ties at the threshold go to the earliest positions of each chunk
    np.testing.assert_array_equal(
        np.flatnonzero(y.reshape(-1)), [0, 1, 2, 3, 4, 50, 51, 52, 53, 54]
    )


def test_non_finite_input_is_refused():
    x = np.linspace(-1, 1, 50, dtype=np.float32)
    codec = sp.get_codec("topk")
    for bad in (np.nan, np.inf, -np.inf):
        y = x.copy()
        y[7] = bad
        with pytest.raises(sp.CodecError, match="NaN or infinite"):
            codec.encode(y)
    for bad in (np.array([1.0, np.nan], BF16), torch.tensor([float("inf"), 1.0], dtype=torch.half)):
        with pytest.raises(sp.CodecError, match="NaN or infinite"):
            codec.encode(bad)
    # the refusals left nothing behind: the next frame is what a fresh codec makes
    assert codec.encode(x) == sp.get_codec("topk").encode(x)


# ---------------------------------------------------------------------- frames and decoding
def test_frames_decode_with_swarmpress_decode_and_a_topk_instance():
    x = np.random.default_rng(4).standard_normal((8, 300)).astype(BF16)
    params = {"density": 0.05, "bits": 3, "chunk": 128}
    codec = sp.get_codec("topk", **params)
    blob = codec.encode(x)
    fr = frame.unpack(blob)
    assert not fr.stream and fr.flags == 0 and fr.params == params
    expected = sp.decode(blob)
    assert expected.dtype == x.dtype and expected.shape == x.shape
    assert 0 < np.count_nonzero(expected) <= codec.max_nonzeros(x.size)
    for other in (codec, sp.get_codec("topk", **params)):
        y = other.decode(blob)
        assert y.dtype == x.dtype and y.shape == x.shape
        np.testing.assert_array_equal(y.view(np.uint16), expected.view(np.uint16))
    with pytest.raises(sp.CodecError, match="made by codec 'zstd'"):
        codec.decode(sp.get_codec("zstd").encode(x))


def test_any_topk_instance_decodes_with_the_frames_params():
    x = np.random.default_rng(4).standard_normal((8, 300)).astype(np.float32)
    blob = sp.get_codec("topk", density=0.05, bits=3, chunk=128).encode(x)
    np.testing.assert_array_equal(sp.get_codec("topk").decode(blob), sp.decode(blob))


def test_a_forged_stream_flag_is_refused():
    x = np.random.default_rng(5).standard_normal(500).astype(np.float32)
    fr = frame.unpack(sp.get_codec("topk").encode(x))
    forged = frame.pack(
        fr.codec_id,
        fr.params,
        fr.dtype,
        fr.container,
        fr.shape,
        fr.payload,
        flags=frame.FLAG_STREAM,
    )
    with pytest.raises(sp.CodecError, match="forged"):
        sp.get_codec("topk").decode(forged)
    with pytest.raises(sp.CodecError, match="stream"):
        sp.decode(forged)


# ---------------------------------------------------------------------- containers and edges
@pytest.mark.parametrize("tdtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_torch_tensors_round_trip_their_container(tdtype):
    x = torch.randn(6, 200, generator=torch.Generator().manual_seed(0)).to(tdtype)
    codec = sp.get_codec("topk", density=0.05)
    blob = codec.encode(x, role="gradient")
    for y in (sp.decode(blob), codec.decode(blob)):
        assert isinstance(y, torch.Tensor) and y.dtype == tdtype and y.shape == x.shape
        kept = y != 0
        assert 0 < int(kept.sum()) <= codec.max_nonzeros(x.numel())
        assert torch.all(torch.sign(y[kept]) == torch.sign(x[kept]))
    # the same values as numpy make the same payload
    npdtype = {torch.float32: np.float32, torch.float16: np.float16, torch.bfloat16: BF16}
    xn = x.float().numpy().astype(npdtype[tdtype])
    assert frame.unpack(codec.encode(xn)).payload == frame.unpack(blob).payload
    with pytest.raises(sp.CodecError, match="unknown tensor role"):
        codec.encode(x, role="nope")


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
    blob = codec.encode(x)
    for y in (sp.decode(blob), codec.decode(blob)):
        assert y.dtype == x.dtype and y.shape == np.shape(x)
        if x.size and not np.any(x):
            assert not np.any(y)
        if x.size == 1 and np.any(x):
            assert as_f64(y) == pytest.approx(as_f64(x), rel=1e-2)  # k = 1: the value itself
        if x.size == 3:  # the zeros are never sent; the subnormal is below bf16 scales
            assert not np.any(y[:2])


def test_all_zero_frames_are_tiny():
    codec = sp.get_codec("topk")
    blob = codec.encode(np.zeros((64, 1024), np.float32))
    assert len(frame.unpack(blob).payload) < 64
    assert not np.any(sp.decode(blob))


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
                x = rng.standard_normal(shape)
                x[rng.random(shape) < 0.05] *= 30  # clustered outliers: range-coded gaps
                out.append(codec.encode(x.astype(dtype)))
                feedback = ErrorFeedback(codec)  # a second frame with a residual added
                feedback.encode(x.astype(dtype))
                out.append(feedback.encode(x.astype(dtype)))
            out.append(codec.encode(np.zeros((16, 24), dtype)))
    return out


FRAMES = _frames()


def test_the_hostile_corpus_decodes_cleanly():
    for blob in FRAMES:
        y = sp.decode(blob)
        assert np.isfinite(y.astype(np.float32)).all()


def test_mutated_payloads_with_valid_checksum():
    rng = np.random.default_rng(8)
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
        decoder = sp.get_codec("topk", **fr.params)  # the frame's own params: only bytes lie
        try:
            y = sp.decode(blob)
        except sp.CodecError as exc:
            assert str(exc) and "\n" not in str(exc)
            with pytest.raises(sp.CodecError):
                decoder.decode(blob)
            outcomes["error"] += 1
            continue
        assert y.shape == shape and y.dtype == fr.dtype.numpy
        assert np.isfinite(y.astype(np.float32)).all()
        assert _bits(decoder.decode(blob)) == _bits(y)
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
        for decode in (sp.decode, decoder.decode):
            with pytest.raises(sp.CodecError):
                decode(bytes(blob))
    fr = frame.unpack(FRAMES[0])
    hostile = (
        {"density": 0},
        {"bits": 12},
        {"chunk": "8"},
        {"chunk": MAX_CHUNK * 2},
        {"evil": 1},
        {"error_feedback": True},  # what the old stateful topk wrote into its frames
    )
    for params in hostile:
        blob = frame.pack("topk", params, fr.dtype, fr.container, fr.shape, bytes(fr.payload))
        with pytest.raises(sp.CodecError, match="invalid parameters"):
            sp.decode(blob)
