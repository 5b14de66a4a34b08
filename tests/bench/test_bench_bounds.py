"""The limits on known cases: field entropies, the similarity-error relation, water-filling."""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest

from swarmpress.bench import bounds as B
from swarmpress.codecs.core.metrics import similarity


def test_entropy_of_every_bf16_pattern_is_16_bits():
    x = np.arange(1 << 16, dtype=np.uint16).view(ml_dtypes.bfloat16)
    e = B.entropy_bound(x)
    assert [f.name for f in e.fields] == ["sign", "exponent", "mantissa"]
    assert [f.width for f in e.fields] == [1, 8, 7]
    assert [f.bits for f in e.fields] == pytest.approx([1.0, 8.0, 7.0])
    assert e.bits_per_value == pytest.approx(16.0)
    assert e.ratio == pytest.approx(1.0)


def test_entropy_of_every_fp16_pattern_is_16_bits():
    x = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    e = B.entropy_bound(x)
    assert [f.bits for f in e.fields] == pytest.approx([1.0, 5.0, 10.0])


def test_entropy_uniform_exponent_plane_fp32():
    # 256 exponents, each once: exponent plane uniform (8 bits), sign and mantissa constant
    x = (np.arange(256, dtype=np.uint32) << 23).view(np.float32)
    e = B.entropy_bound(x)
    assert e.exponent_bits == pytest.approx(8.0)
    assert e.bits_per_value == pytest.approx(8.0)
    assert e.ratio == pytest.approx(8.0 / 32.0)


def test_entropy_two_equiprobable_exponents_and_constant():
    x = np.array([1.0, 2.0] * 500, dtype=ml_dtypes.bfloat16)
    e = B.entropy_bound(x)
    assert e.exponent_bits == pytest.approx(1.0)
    assert e.bits_per_value == pytest.approx(1.0)
    assert B.entropy_bound(np.full(100, 3.0, dtype=np.float32)).bits_per_value == 0.0


def test_entropy_bits_matches_formula():
    sym = np.array([0, 0, 1, 2])
    assert B.entropy_bits(sym, 4) == pytest.approx(1.5)


def test_rel_error_inverts_similarity():
    for s in (0.5, 0.9, 0.99, 0.999):
        e = B.rel_error_for_similarity(s)
        assert B.similarity_of_rel_error(e) == pytest.approx(s, abs=1e-12)
    assert B.rel_error_for_similarity(0.99) == pytest.approx(0.009951, abs=1e-6)
    with pytest.raises(ValueError):
        B.rel_error_for_similarity(0.0)


def test_similarity_formula_matches_apex_metric_for_the_test_channel():
    # x = y + z with z orthogonal to y and ||z|| = e ||x||: the RD test-channel geometry
    rng = np.random.default_rng(1)
    y = rng.standard_normal(10_000)
    z = rng.standard_normal(10_000)
    z -= (z @ y) / (y @ y) * y
    e = 0.05
    # ||x||^2 = ||y||^2 + ||z||^2 and ||z|| = e ||x||  =>  ||z|| = e ||y|| / sqrt(1 - e^2)
    z *= e * np.linalg.norm(y) / math.sqrt(1 - e * e) / np.linalg.norm(z)
    x = y + z
    assert similarity(x, y) == pytest.approx(B.similarity_of_rel_error(e), rel=1e-9)


def test_water_fill_closed_form():
    lam = np.array([4.0, 1.0, 0.25])
    theta, rate = B.water_fill(lam, 0.75)  # theta = 0.25: every component at the water level
    assert theta == pytest.approx(0.25)
    assert rate == pytest.approx(0.5 * math.log2(16) + 0.5 * math.log2(4))
    theta, rate = B.water_fill(lam, 2.25)  # theta = 1: 1 + 1 + 0.25
    assert theta == pytest.approx(1.0)
    assert rate == pytest.approx(1.0)
    assert B.water_fill(lam, 10.0)[1] == 0.0
    assert B.water_fill(lam, 0.0)[1] == math.inf


def test_gaussian_rd_bound_on_iid_gaussian_matches_closed_form():
    rng = np.random.default_rng(0)
    lam = np.array([8.0, 4.0, 2.0, 1.0, 0.5, 0.25, 0.125, 0.0625])
    h = lam.size
    q, _ = np.linalg.qr(rng.standard_normal((h, h)))  # a random basis: covariance not diagonal
    x = (rng.standard_normal((40_000, h)) * np.sqrt(lam)) @ q.T
    bound = B.gaussian_rd_bound(B.channel_spectrum(x), 0.99, itemsize=4)
    # closed form with the true covariance: D = e^2 tr(C), theta = D / h (all components
    # above the water level), R = sum 1/2 log2(lambda_i / theta)
    e = B.rel_error_for_similarity(0.99)
    d = e * e * lam.sum()
    assert d / h < lam.min()
    rate = 0.5 * np.log2(lam / (d / h)).sum()
    assert bound.bits_per_value * h == pytest.approx(rate, abs=0.15)
    assert bound.ratio == pytest.approx(bound.bits_per_value / 32)
    assert bound.active_components == h
    assert bound.rel_error == pytest.approx(e)


def test_mean_is_free_and_gram_path_matches_covariance():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((10, 50))
    spec = B.channel_spectrum(x)  # fewer rows than channels: Gram-matrix path
    xc = x - x.mean(axis=0)
    direct = np.sort(np.clip(np.linalg.eigvalsh(xc.T @ xc / 10), 0, None))
    np.testing.assert_allclose(spec.eigenvalues, direct, atol=1e-9)
    shifted = B.channel_spectrum(x + 100.0)
    np.testing.assert_allclose(shifted.eigenvalues, spec.eigenvalues, atol=1e-6)
    assert shifted.energy_per_row > spec.energy_per_row
    rd = B.gaussian_rd_bound(spec, 0.99)
    assert any("optimistic" in n for n in rd.notes)
    assert B.gaussian_rd_bound(shifted, 0.99).bits_per_value <= rd.bits_per_value


def test_tensor_bounds_reports_non_finite_instead_of_raising():
    x = np.ones((4, 8), dtype=np.float32)
    x[0, 0] = np.nan
    tb = B.tensor_bounds(x, 0.99, tensor="t", family="model", role="activation")
    assert tb.rd is None and "NaN" in (tb.rd_error or "")
    assert tb.dtype == "float32"
