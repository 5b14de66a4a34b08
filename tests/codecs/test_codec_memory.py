"""Peak memory of `topk` and `lossy-stream` (issue 13): tracemalloc, not timing.

tracemalloc sees numpy's and Python's allocations (not those inside constriction, zstd or
LAPACK), which is what benchmarks/memory.py reports. Each measured call runs after a
warm-up on another instance, so import-time and first-use caches (model tables, the float16
conversion table) are not charged to it. ALLOWANCE covers the Python-level bookkeeping of a
call (frame header, parameter dicts, payload parts, coder objects): a few tens of KiB at
most, whatever the tensor size, so it is small next to the 768 KiB of a 1024 x 384 bfloat16
tensor.
"""

import tracemalloc

import numpy as np
import pytest

import swarmpress as sp
from tests.codecs.strategies import BF16

ALLOWANCE = 64 << 10
SHAPE = (1024, 384)
DTYPES = [BF16, np.float16, np.float32]


def _activation(shape, dtype, seed=0):
    """Activation-like: per-channel scales over three decades and a few massive channels."""
    rng = np.random.default_rng(seed)
    scale = np.exp(rng.normal(0.0, 1.0, shape[-1]))
    scale[rng.choice(shape[-1], 4, replace=False)] *= 100.0
    return (rng.standard_normal(shape) * scale).astype(dtype)


def _drift(x, n, seed=1):
    """n tensors with x's channel statistics (a stream from one pipeline boundary)."""
    rng = np.random.default_rng(seed)
    x32 = x.astype(np.float32)
    return [
        (x32 * (1 + 0.05 * rng.standard_normal(x.shape[-1])) + 0.01 * rng.standard_normal(x.shape))
        .astype(np.float32)
        .astype(x.dtype)
        for _ in range(n)
    ]


def _peak(fn):
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        out = fn()
        _, top = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return out, top


def _ends(name, params):
    """(encoder, decoder) as a user holds them: topk behind its error feedback, a stream
    codec's two state objects."""
    codec = sp.get_codec(name, **params)
    if codec.stream:
        return codec.encoder(), codec.decoder()
    return sp.codecs.ErrorFeedback(codec), codec


def _warm(name, params, x):
    enc, dec = _ends(name, params)
    for t in _drift(x, 3):
        dec.decode(enc.encode(t))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("feedback", [True, False])
@pytest.mark.parametrize("params", [{}, {"density": 0.03, "bits": 3, "chunk": 1024}])
def test_topk_encode_and_decode_peaks_stay_within_three_times_the_input(dtype, params, feedback):
    """Every call, the first included (error feedback makes the float32 residual then: 2x a
    16-bit input); without feedback the codec alone."""
    x = _activation(SHAPE, dtype)
    _warm("topk", params, x)
    enc, dec = _ends("topk", params)
    if not feedback:
        enc = dec
    limit = 3 * x.nbytes + ALLOWANCE
    for i, t in enumerate(_drift(x, 3)):
        blob, enc_peak = _peak(lambda t=t: enc.encode(t))
        _, dec_peak = _peak(lambda b=blob: dec.decode(b))
        assert enc_peak <= limit, f"encode #{i}: {enc_peak / x.nbytes:.2f}x the input"
        assert dec_peak <= limit, f"decode #{i}: {dec_peak / x.nbytes:.2f}x the input"


def test_topk_keeps_its_residual_in_place_after_the_first_call():
    """Later calls update the residual where it is: well under one input of new memory."""
    x = _activation(SHAPE, BF16)
    _warm("topk", {}, x)
    enc, _ = _ends("topk", {})
    frames = _drift(x, 3)
    enc.encode(frames[0])
    for t in frames[1:]:
        _, peak = _peak(lambda t=t: enc.encode(t))
        assert peak <= 1.6 * x.nbytes + ALLOWANCE, f"{peak / x.nbytes:.2f}x the input"


@pytest.mark.parametrize("dtype", DTYPES)
def test_lossy_stream_decode_peak_stays_within_three_times_the_input(dtype):
    """Frames 0 (plain), 1 (carries the basis: refresh), 2 and 3 (coded in the basis).

    A refresh frame also leaves the new basis with the decoder: channels x channels float64,
    set by the channel count, not by the tensor (max_channels caps it), and only on frames
    1, r, r^2, ... It is allowed on top, and nothing else.
    """
    x = _activation(SHAPE, dtype)
    _warm("lossy-stream", {}, x)
    enc, dec = _ends("lossy-stream", {})
    basis_bytes = 8 * SHAPE[-1] ** 2
    for i, t in enumerate(_drift(x, 4)):
        blob = enc.encode(t)
        y, peak = _peak(lambda b=blob: dec.decode(b))
        assert sp.similarity(t, y) > 0.99
        limit = 3 * x.nbytes + ALLOWANCE + (basis_bytes if i == 1 else 0)
        assert peak <= limit, f"decode #{i}: {peak / x.nbytes:.2f}x the input"


def test_lossy_stream_encode_peak_does_not_regress():
    """A guard, not the goal: the encoder's rate control runs swarmpress.metrics.similarity
    and fieldcode.encode_field on whole float64 copies (about 12x and 17x a bfloat16 input
    inside those shared functions), and the frames must stay byte-identical, so about 25x
    is the floor here until those become blockwise. It was 49x before issue 13."""
    x = _activation(SHAPE, BF16)
    _warm("lossy-stream", {}, x)
    enc, _ = _ends("lossy-stream", {})
    for i, t in enumerate(_drift(x, 4)):
        _, peak = _peak(lambda t=t: enc.encode(t))
        assert peak <= 27 * x.nbytes, f"encode #{i}: {peak / x.nbytes:.2f}x the input"


def test_lossy_stream_decodes_coefficients_beyond_int16_exactly():
    """The decoder holds the basis coefficients as int16: a few large ones wait aside, and
    a field of many moves to int32. Both must decode to within the max_abs target."""
    rng = np.random.default_rng(3)
    for outliers, scale in ((2, 1.0), (0, 300.0)):
        enc, dec = _ends("lossy-stream", {"target": "max_abs", "value": 1e-2})
        for _ in range(4):
            x = rng.standard_normal((300, 48)) * scale
            x[rng.integers(0, 300, outliers), rng.integers(0, 48, outliers)] = 1e4
            x = x.astype(np.float32)
            assert np.abs(dec.decode(enc.encode(x)) - x).max() <= 1e-2
