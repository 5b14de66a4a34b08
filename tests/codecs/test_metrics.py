"""Metrics exactly as the Apex definitions state them."""

import math

import numpy as np
import pytest
import torch

import swarmpress as sp
from swarmpress.codecs.core import metrics as m


def test_similarity_definition():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(1000)
    y = x + 0.01 * rng.standard_normal(1000)
    cos = np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y))
    expected = cos * (1 - np.linalg.norm(x - y) / np.linalg.norm(x))
    assert sp.similarity(x, y) == pytest.approx(expected, rel=1e-12)
    assert sp.similarity(x, x) == pytest.approx(1.0)


def test_similarity_zero_norm_conventions():
    z = np.zeros(5)
    assert sp.similarity(z, z) == 1.0
    assert sp.similarity(z, np.ones(5)) == 0.0
    assert sp.similarity(np.ones(5), z) == 0.0  # cosine taken as 0


def test_similarity_accepts_torch_and_bf16():
    t = torch.randn(4, 8)
    assert sp.similarity(t, t.to(torch.bfloat16)) > 0.99


def test_similarity_threshold_means_about_one_percent_error():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(100_000)
    noise = rng.standard_normal(100_000)
    noise *= 0.0099 * np.linalg.norm(x) / np.linalg.norm(noise)
    assert sp.similarity(x, x + noise) > 0.99
    assert sp.similarity(x, x + 1.2 * noise) < 0.99


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="equal size"):
        sp.similarity(np.ones(3), np.ones(4))


def test_error_metrics():
    x = np.array([1.0, -2.0, 3.0])
    y = np.array([1.0, -2.5, 3.0])
    assert sp.max_abs_error(x, y) == 0.5
    assert sp.rel_l2(x, y) == pytest.approx(0.5 / math.sqrt(14))
    assert sp.psnr(x, x) == math.inf
    assert sp.psnr(x, y) == pytest.approx(10 * math.log10(9 / (0.25 / 3)))
    assert sp.cosine(x, 2 * x) == pytest.approx(1.0)
    assert sp.bits_per_value(100, 200) == 4.0


def test_apex_scores():
    assert sp.lossless_score(0.7, 0.0) == pytest.approx(0.3)
    assert sp.lossless_score(0.7, 0.506) == pytest.approx(0.3 * (1 - 0.506 / 1.012))
    assert sp.lossless_score(0.7, 2.0) == 0.0
    assert sp.lossless_score(1.3, 0.0) == 0.0
    assert sp.lossy_score(0.3, 0.995) == pytest.approx(0.7)
    assert sp.lossy_score(0.3, 0.99) == 0.0  # strictly greater than 0.99 is required
    assert sp.lossy_score(0.3, float("nan")) == 0.0


def test_break_even_bandwidth():
    # 1 MB tensor, ratio 0.5, 10 ms total codec time: 500 KB saved / 0.01 s = 50 MB/s.
    assert sp.break_even_bandwidth(0.5, 1_000_000, 0.01) == pytest.approx(50e6)
    assert sp.break_even_bandwidth(1.1, 1_000_000, 0.01) == 0.0
    # At B*, sending compressed takes exactly as long as sending raw.
    b = sp.break_even_bandwidth(0.4, 2_000_000, 0.02)
    raw = m.transfer_time(2_000_000, b, 0.05)
    packed = m.transfer_time(2_000_000, b, 0.05, ratio_=0.4, seconds=0.02)
    assert packed == pytest.approx(raw)
