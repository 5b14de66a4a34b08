"""Round trips through the public contract: zstd bit-exact, blockq within its stated error."""

import ml_dtypes
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import swarmpress as sp
from tests.codecs.strategies import BF16, UINT, any_bits_tensor, finite_tensor

SPECIALS = {
    np.dtype(np.float32): [
        0x7FC00001,
        0xFFC12345,
        0x7F800000,
        0xFF800000,
        0x80000000,
        0x00000001,
        0x807FFFFF,
        0x7F7FFFFF,
        0x7FA00000,
    ],
    np.dtype(np.float16): [0x7E01, 0xFE55, 0x7C00, 0xFC00, 0x8000, 0x0001, 0x83FF, 0x7BFF, 0x7D00],
    BF16: [0x7FC1, 0xFFA5, 0x7F80, 0xFF80, 0x8000, 0x0001, 0x807F, 0x7F7F, 0x7F81],
}


def bits(a):
    return np.ascontiguousarray(a).view(UINT[a.dtype])


@pytest.mark.parametrize("spec", ["zstd", "lossless", "lossless:fast"])
@pytest.mark.parametrize("dtype", list(SPECIALS))
def test_special_values_bit_exact(dtype, spec):
    name, _, mode = spec.partition(":")
    codec = sp.get_codec(name, **({"mode": mode} if mode else {}))
    pattern = np.array(SPECIALS[dtype], dtype=UINT[dtype]).view(dtype)
    x = np.tile(pattern, 50).reshape(9, 50)
    y = sp.decode(codec.encode(x))
    assert y.dtype == x.dtype and y.shape == x.shape
    np.testing.assert_array_equal(bits(y), bits(x))


LOSSLESS = [
    ("zstd", {"level": 1}),
    ("zstd", {"level": 19}),
    ("lossless", {}),
    ("lossless", {"mode": "fast"}),
]


@given(any_bits_tensor(), st.sampled_from(LOSSLESS))
def test_lossless_codecs_bit_exact_any_bits(x, spec):
    blob = sp.get_codec(spec[0], **spec[1]).encode(x)
    y = sp.decode(blob)
    assert y.dtype == x.dtype and y.shape == x.shape
    np.testing.assert_array_equal(bits(y), bits(x))


@pytest.mark.parametrize("tdtype", [torch.float32, torch.float16, torch.bfloat16])
def test_torch_container_dtype_and_shape_survive(tdtype):
    g = torch.Generator().manual_seed(0)
    t = torch.randn(3, 4, 5, generator=g).to(tdtype)
    t[0, 0, 0] = float("nan")
    t[0, 0, 1] = float("-inf")
    t[0, 0, 2] = -0.0
    for name in ("zstd", "lossless"):
        out = sp.decode(sp.get_codec(name).encode(t))
        assert isinstance(out, torch.Tensor)
        assert out.dtype == tdtype and out.shape == t.shape
        assert torch.equal(
            out.view(torch.int16 if tdtype != torch.float32 else torch.int32),
            t.view(torch.int16 if tdtype != torch.float32 else torch.int32),
        )
    out = sp.get_codec("blockq").decode(sp.get_codec("blockq").encode(torch.nan_to_num(t)))
    assert isinstance(out, torch.Tensor) and out.dtype == tdtype


def test_non_contiguous_views_and_zero_d():
    x = np.arange(60, dtype=np.float32).reshape(6, 10)
    for view in (x[:, ::3], x.T, x[::-1], np.float32(2.5), np.array(7.0, np.float16)):
        for name in ("zstd", "blockq", "lossless"):
            y = sp.decode(sp.get_codec(name).encode(view))
            assert y.shape == np.shape(view)
            if name != "blockq":
                np.testing.assert_array_equal(y, view)
    t = torch.arange(24, dtype=torch.float32).reshape(4, 6).t()
    assert torch.equal(sp.decode(sp.get_codec("zstd").encode(t)), t)


def test_decoded_numpy_is_writable():
    y = sp.decode(sp.get_codec("zstd").encode(np.ones(5, np.float32)))
    y[0] = 3.0
    assert y[0] == 3.0


@given(finite_tensor(), st.sampled_from([2, 4, 8]), st.sampled_from([1, 7, 64, 256]))
def test_blockq_meets_its_stated_error_everywhere(x, bits_, block):
    codec = sp.get_codec("blockq", bits=bits_, block=block)
    y = sp.decode(codec.encode(x))
    assert y.dtype == x.dtype and y.shape == x.shape
    err = np.abs(x.astype(np.float64) - y.astype(np.float64)).reshape(-1)
    assert (err <= codec.error_bound(x, y)).all()


@pytest.mark.parametrize(
    "x",
    [
        np.zeros((8, 16), np.float32),
        np.full((5, 7), 3.25, np.float16),
        np.r_[np.ones(999, np.float32) * 1e-3, np.float32(5e3)].astype(BF16),
        np.array([1e-30, -1e-35, 3e-38], np.float32),
        np.array([65504.0, -65504.0, 6e-8], np.float16),
    ],
    ids=["zeros", "constant", "one-outlier", "tiny", "fp16-extremes"],
)
def test_blockq_adversarial(x):
    codec = sp.get_codec("blockq", bits=8, block=64)
    y = sp.decode(codec.encode(x))
    err = np.abs(x.astype(np.float64) - y.astype(np.float64)).reshape(-1)
    assert np.isfinite(y.astype(np.float64)).all()
    assert (err <= codec.error_bound(x, y)).all()


def test_blockq_int8_quality_on_gaussian():
    x = np.random.default_rng(1).standard_normal((64, 384)).astype(ml_dtypes.bfloat16)
    y = sp.decode(sp.get_codec("blockq").encode(x))
    assert sp.similarity(x, y) > 0.99
    assert sp.similarity(x, y) < 1.0


def test_blockq_refuses_non_finite_with_clear_message():
    x = np.array([1.0, np.nan], np.float32)
    with pytest.raises(sp.CodecError, match="NaN or infinite"):
        sp.get_codec("blockq").encode(x)


def test_blockq_codes_are_entropy_coded():
    # Mostly-zero codes must cost far less than one byte each.
    x = np.zeros(100_000, np.float32)
    x[::1000] = 1.0
    blob = sp.get_codec("blockq", block=100_000 // 4).encode(x)
    assert len(blob) < 0.05 * x.size


def test_lossless_max_models_channel_scales():
    # Channels with log-normal scales, as in real hidden states: the per-channel-group
    # exponent model must beat both raw zstd and the byte-plane fast mode.
    rng = np.random.default_rng(5)
    scales = np.exp(rng.normal(0, 1.5, 256))
    x = (rng.standard_normal((512, 256)) * scales).astype(BF16)
    sizes = {
        spec: len(sp.get_codec(name, **params).encode(x))
        for spec, (name, params) in {
            "max": ("lossless", {}),
            "fast": ("lossless", {"mode": "fast"}),
            "zstd": ("zstd", {}),
        }.items()
    }
    assert sizes["max"] < sizes["fast"] < sizes["zstd"]
