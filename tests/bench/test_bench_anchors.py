"""Every anchor is the real library and round-trips: lossless ones bit-exact on bf16, fp16
and fp32 (NaN payloads, infinities, -0.0 and subnormals included), lossy ones at the
similarity target after tuning. An anchor whose package is missing is skipped, with the
reason, here and in the bench."""

from __future__ import annotations

import sys

import ml_dtypes
import numpy as np
import pytest

from swarmpress.bench.anchors import (
    ANCHOR_NAMES,
    ANCHOR_TYPES,
    LOSSY_ANCHOR_NAMES,
    AnchorError,
    ApexStyleAnchor,
    ErrorBoundAnchor,
    LossyAnchor,
    library_versions,
    load_anchors,
    raw_view,
)
from swarmpress.codecs.core.metrics import similarity

DTYPES = [np.dtype(ml_dtypes.bfloat16), np.dtype(np.float16), np.dtype(np.float32)]
# NaN payloads, infinities, -0.0, subnormals, extremes
SPECIAL_BITS = {
    2: [0x7FC1, 0xFFA5, 0x7F80, 0xFF80, 0x8000, 0x0001, 0x807F, 0x7F7F, 0x7E01, 0x0000],
    4: [0x7FC00001, 0xFFC12345, 0x7F800000, 0xFF800000, 0x80000000, 0x00000001, 0x807FFFFF],
}
#: the PyPI package behind each anchor that needs one beyond the core dependencies
PACKAGE = {
    "lz4": "lz4.frame",
    "brotli-5": "brotli",
    "blosc2-bitshuffle-zstd": "blosc2",
    "zipnn": "zipnn",
    "pcodec": "pcodec",
    "sz3": "pysz",
    "zfp": "zfpy",
    "apex-style-int8": "brotli",
}
LOSSLESS = [n for n in ANCHOR_NAMES if n not in LOSSY_ANCHOR_NAMES]


def _anchor(name: str):
    if name in PACKAGE:
        pytest.importorskip(PACKAGE[name], reason=f"anchor {name} needs {PACKAGE[name]}")
    aset = load_anchors([name])
    assert not aset.skipped, aset.skipped
    return aset.available[0]


def _data(dtype: np.dtype, rows: int = 40, hidden: int = 24) -> np.ndarray:
    rng = np.random.default_rng(3)
    low = rng.standard_normal((rows, 3)) @ rng.standard_normal((3, hidden))
    x = (low + 0.2 * rng.standard_normal((rows, hidden))) * np.exp(rng.standard_normal(hidden))
    return x.astype(np.float32).reshape(2, rows // 2, hidden).astype(dtype)


def _bits(a: np.ndarray) -> np.ndarray:
    return a.reshape(-1).view(np.uint16 if a.dtype.itemsize == 2 else np.uint32)


def test_the_anchors_are_the_real_libraries():
    assert {"zipnn", "pcodec", "sz3", "zfp", "blosc2-bitshuffle-zstd"} <= set(ANCHOR_NAMES)
    assert "zipnn-style" not in ANCHOR_NAMES  # the look-alike is gone
    lib = {t.name: t.library for t in ANCHOR_TYPES}
    assert lib["zipnn"] == "zipnn" and lib["pcodec"] == "pcodec"
    assert lib["sz3"] == "pysz" and lib["zfp"] == "zfpy" and lib["apex-style-int8"] == "brotli"
    versions = library_versions()
    assert set(lib.values()) <= set(versions)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", LOSSLESS)
def test_lossless_anchor_is_bit_exact(name: str, dtype: np.dtype):
    anchor = _anchor(name)
    assert anchor.lossless and anchor.setting
    x = _data(dtype)
    flat = _bits(x).copy()
    flat[: len(SPECIAL_BITS[dtype.itemsize])] = SPECIAL_BITS[dtype.itemsize]
    x = flat.view(dtype).reshape(x.shape)
    before = x.copy()
    blob = anchor.compress(x)
    np.testing.assert_array_equal(_bits(x), _bits(before))  # the input is left alone
    y = anchor.decompress(blob, x.dtype, x.shape)
    assert y.dtype == x.dtype and y.shape == x.shape
    np.testing.assert_array_equal(_bits(y), _bits(x))
    assert anchor.decompress(blob, x.dtype, x.shape).tobytes() == x.tobytes()  # again


@pytest.mark.parametrize("name", LOSSLESS)
def test_lossless_anchor_handles_empty_and_scalar_like(name: str):
    anchor = _anchor(name)
    for x in (np.zeros((0, 4), dtype=np.float32), np.array([1.5], dtype=np.float32)):
        y = anchor.decompress(anchor.compress(x), x.dtype, x.shape)
        np.testing.assert_array_equal(y, x)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", LOSSY_ANCHOR_NAMES)
def test_lossy_anchor_meets_target_after_tuning(name: str, dtype: np.dtype):
    anchor = _anchor(name)
    assert isinstance(anchor, LossyAnchor) and not anchor.lossless
    x = _data(dtype, rows=200, hidden=64)
    tuned = anchor.tune(x, 0.99, max_evals=12)
    assert tuned.met and tuned.evals <= 12
    blob = tuned.anchor.compress(x)
    y = tuned.anchor.decompress(blob, x.dtype, x.shape)
    assert y.dtype == x.dtype and y.shape == x.shape  # rounded back to the input dtype
    sim = similarity(x, y)
    assert sim > 0.99 and sim == pytest.approx(tuned.similarity)
    assert len(blob) == tuned.compressed_bytes < x.nbytes  # counted against the original dtype
    # "just above": a setting twice as loose misses the target
    if isinstance(anchor, ErrorBoundAnchor):
        loose = anchor.with_bound(tuned.knob * 2 * (2 if name == "zfp" else 1))
    else:
        loose = anchor.with_knob(max(1.0, tuned.knob // 2))
    assert similarity(x, loose.decompress(loose.compress(x), x.dtype, x.shape)) <= 0.995


@pytest.mark.parametrize("name", LOSSY_ANCHOR_NAMES)
def test_lossy_anchor_tuning_is_bounded_and_rejects_nan(name: str):
    anchor = _anchor(name)
    x = _data(np.dtype(np.float32))
    assert anchor.tune(x, 0.999999, max_evals=3).evals <= 3
    bad = x.copy()
    bad.flat[0] = np.nan
    with pytest.raises(AnchorError):
        anchor.tune(bad, 0.99)
    with pytest.raises(AnchorError):
        anchor.compress(x)  # no setting yet
    assert anchor.sweep(x, quick=True)  # the plot's quality sweep


def test_apex_style_tuning_finds_the_fewest_levels():
    anchor = _anchor("apex-style-int8")
    x = _data(np.dtype(ml_dtypes.bfloat16), rows=200, hidden=64)
    tuned = anchor.tune(x, 0.99, max_evals=12)
    assert tuned.evals <= 8 and tuned.met
    lv = int(tuned.knob)
    assert 1 <= lv <= ApexStyleAnchor.max_levels and f"L = {lv}" in tuned.anchor.setting
    fewer = anchor.with_knob(lv - 1) if lv > 1 else None
    if fewer is not None:
        assert similarity(x, fewer.decompress(fewer.compress(x), x.dtype, x.shape)) <= 0.99
    # byte planes: header, then three Brotli streams; a cut or foreign blob is refused
    blob = tuned.anchor.compress(x)
    with pytest.raises(AnchorError):
        tuned.anchor.decompress(blob[:-3], x.dtype, x.shape)
    with pytest.raises(AnchorError):
        tuned.anchor.decompress(blob, x.dtype, (3, 5))
    big = np.array([3.4e38, -3.4e38, 1.0], dtype=np.float32)  # scale rounds past bf16 max
    y = anchor.with_knob(127).decompress(anchor.with_knob(127).compress(big), big.dtype, (3,))
    assert np.isfinite(y).all() and similarity(big, y) > 0.99
    top = np.array([65504.0, -65504.0, 1.0], dtype=np.float16)  # scale rounds to 65536 in bf16
    y = anchor.with_knob(127).decompress(anchor.with_knob(127).compress(top), top.dtype, (3,))
    assert np.isfinite(y).all() and similarity(top, y) > 0.99


def test_zipnn_runs_one_thread_and_refuses_foreign_blobs():
    anchor = _anchor("zipnn")
    assert anchor.threads == 1 and "threads=1" in anchor.setting
    x = _data(np.dtype(ml_dtypes.bfloat16))
    blob = anchor.compress(x)
    assert blob[:2] == b"ZN"
    with pytest.raises(AnchorError):
        anchor.decompress(blob[: len(blob) // 2], x.dtype, x.shape)  # cut: refused, no crash
    with pytest.raises(AnchorError):
        anchor.decompress(blob, np.dtype(np.float16), x.shape)  # another dtype
    with pytest.raises(AnchorError):
        anchor.decompress(b"garbage" * 10, x.dtype, x.shape)


def test_pcodec_codes_bf16_as_uint16_bits():
    anchor = _anchor("pcodec")
    assert "uint16" in anchor.setting
    x = _data(np.dtype(ml_dtypes.bfloat16))
    blob = anchor.compress(x)
    from pcodec import standalone

    assert standalone.simple_decompress(blob).dtype == np.uint16
    with pytest.raises(AnchorError):
        anchor.decompress(blob[:-4], x.dtype, x.shape)
    with pytest.raises(AnchorError):
        anchor.decompress(blob, x.dtype, (7,))


def test_raw_view_does_not_copy():
    x = _data(np.dtype(np.float32))
    mv = raw_view(x)
    assert mv.nbytes == x.nbytes and np.shares_memory(np.frombuffer(mv, np.uint8), x)


def test_missing_library_is_skipped_with_a_reason(monkeypatch: pytest.MonkeyPatch):
    for mod in ("pysz", "zfpy", "zipnn", "pcodec"):
        monkeypatch.setitem(sys.modules, mod, None)  # import mod -> ImportError
    aset = load_anchors()
    assert "pysz" in aset.skipped["sz3"] and "zfpy" in aset.skipped["zfp"]
    assert "zipnn" in aset.skipped["zipnn"] and "pcodec" in aset.skipped["pcodec"]
    gone = {"sz3", "zfp", "zipnn", "pcodec"}
    assert {a.name for a in aset.available} <= set(ANCHOR_NAMES) - gone


def test_unknown_anchor():
    with pytest.raises(AnchorError, match="unknown anchor"):
        load_anchors(["nope"])
