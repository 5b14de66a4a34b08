"""Every available anchor round-trips: lossless ones bit-exact, SZ3/ZFP at target after tuning."""

from __future__ import annotations

import sys

import ml_dtypes
import numpy as np
import pytest

from swarmpress.bench.anchors import (
    ANCHOR_NAMES,
    AnchorError,
    LossyAnchor,
    ZipNNStyleAnchor,
    load_anchors,
)
from swarmpress.codecs.metrics import similarity

DTYPES = [np.dtype(ml_dtypes.bfloat16), np.dtype(np.float16), np.dtype(np.float32)]
# NaN payloads, infinities, -0.0, subnormals, extremes
SPECIAL_BITS = {
    2: [0x7FC1, 0xFFA5, 0x7F80, 0xFF80, 0x8000, 0x0001, 0x807F, 0x7F7F, 0x7E01, 0x0000],
    4: [0x7FC00001, 0xFFC12345, 0x7F800000, 0xFF800000, 0x80000000, 0x00000001, 0x807FFFFF],
}


def _anchor(name: str):
    aset = load_anchors([name])
    if name in aset.skipped:
        pytest.skip(aset.skipped[name])
    return aset.available[0]


def _data(dtype: np.dtype, rows: int = 40, hidden: int = 24) -> np.ndarray:
    rng = np.random.default_rng(3)
    low = rng.standard_normal((rows, 3)) @ rng.standard_normal((3, hidden))
    x = (low + 0.2 * rng.standard_normal((rows, hidden))) * np.exp(rng.standard_normal(hidden))
    return x.astype(np.float32).reshape(2, rows // 2, hidden).astype(dtype)


def _bits(a: np.ndarray) -> np.ndarray:
    return a.reshape(-1).view(np.uint16 if a.dtype.itemsize == 2 else np.uint32)


LOSSLESS = [n for n in ANCHOR_NAMES if n not in ("sz3", "zfp")]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", LOSSLESS)
def test_lossless_anchor_is_bit_exact(name: str, dtype: np.dtype):
    anchor = _anchor(name)
    assert anchor.lossless and anchor.setting
    x = _data(dtype)
    flat = _bits(x).copy()
    flat[: len(SPECIAL_BITS[dtype.itemsize])] = SPECIAL_BITS[dtype.itemsize]
    x = flat.view(dtype).reshape(x.shape)
    blob = anchor.compress(x)
    y = anchor.decompress(blob, x.dtype, x.shape)
    assert y.dtype == x.dtype and y.shape == x.shape
    np.testing.assert_array_equal(_bits(y), _bits(x))


@pytest.mark.parametrize("name", LOSSLESS)
def test_lossless_anchor_handles_empty_and_scalar_like(name: str):
    anchor = _anchor(name)
    for x in (np.zeros((0, 4), dtype=np.float32), np.array([1.5], dtype=np.float32)):
        y = anchor.decompress(anchor.compress(x), x.dtype, x.shape)
        np.testing.assert_array_equal(y, x)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", ["sz3", "zfp"])
def test_lossy_anchor_meets_target_after_tuning(name: str, dtype: np.dtype):
    anchor = _anchor(name)
    assert isinstance(anchor, LossyAnchor) and not anchor.lossless
    x = _data(dtype, rows=200, hidden=64)
    tuned = anchor.tune(x, 0.99, max_evals=12)
    assert tuned.met and tuned.evals <= 12
    blob = tuned.anchor.compress(x)
    y = tuned.anchor.decompress(blob, x.dtype, x.shape)
    assert y.dtype == x.dtype and y.shape == x.shape
    sim = similarity(x, y)
    assert sim > 0.99 and sim == pytest.approx(tuned.similarity)
    assert len(blob) == tuned.compressed_bytes < x.nbytes  # counted against the original dtype
    # "just above": a bound twice as loose misses the target
    loose = anchor.with_bound(tuned.error_bound * 2 * (2 if name == "zfp" else 1))
    assert similarity(x, loose.decompress(loose.compress(x), x.dtype, x.shape)) <= 0.995


@pytest.mark.parametrize("name", ["sz3", "zfp"])
def test_lossy_anchor_tuning_is_bounded_and_rejects_nan(name: str):
    anchor = _anchor(name)
    x = _data(np.dtype(np.float32))
    assert anchor.tune(x, 0.999999, max_evals=3).evals <= 3
    bad = x.copy()
    bad.flat[0] = np.nan
    with pytest.raises(AnchorError):
        anchor.tune(bad, 0.99)
    with pytest.raises(AnchorError):
        anchor.compress(x)  # no bound set


def test_missing_library_is_skipped_with_a_reason(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "pysz", None)  # import pysz -> ImportError
    monkeypatch.setitem(sys.modules, "zfpy", None)
    aset = load_anchors()
    assert "pysz" in aset.skipped["sz3"] and "zfpy" in aset.skipped["zfp"]
    assert {a.name for a in aset.available} <= set(ANCHOR_NAMES) - {"sz3", "zfp"}


def test_unknown_anchor_and_corrupt_zipnn_blob():
    with pytest.raises(AnchorError, match="unknown anchor"):
        load_anchors(["nope"])
    a = ZipNNStyleAnchor()
    x = _data(np.dtype(ml_dtypes.bfloat16))
    blob = a.compress(x)
    with pytest.raises(AnchorError):
        a.decompress(blob[: len(blob) // 2], x.dtype, x.shape)
    with pytest.raises(AnchorError):
        a.decompress(blob, np.dtype(np.float32), x.shape)


def test_zipnn_style_puts_the_bf16_exponent_in_one_plane():
    x = np.array([1.0, -2.0, 0.5, 3.0], dtype=ml_dtypes.bfloat16)
    blob = ZipNNStyleAnchor(min_gain=1.0).compress(x)  # min_gain 1: every plane stored raw
    exp_plane = np.frombuffer(blob[1 + 9 : 1 + 9 + 4], dtype=np.uint8)
    expected = (x.view(np.uint16) >> 7) & 0xFF
    np.testing.assert_array_equal(exp_plane, expected)
