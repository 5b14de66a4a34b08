"""The Llama-like synthetic family has the statistics it claims, deterministically."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from swarmpress.corpus.store import CorpusError
from swarmpress.corpus.synthetic import SyntheticConfig, as_dtype, effective_rank, generate


@pytest.fixture(scope="module")
def sample():
    return generate(SyntheticConfig(), seed=0)


def test_shapes_and_dtypes(sample) -> None:
    cfg = SyntheticConfig()
    assert sample.activation.shape == sample.gradient.shape == (cfg.batch, cfg.seq, cfg.hidden)
    assert sample.activation.dtype == np.float32
    assert np.isfinite(sample.activation).all() and np.isfinite(sample.gradient).all()
    bf = as_dtype(sample.activation, "bfloat16")
    assert bf.nbytes == sample.activation.size * 2
    # default bench corpus stays small: activation + gradient in bf16
    assert 2 * bf.nbytes <= 5 * 2**20


def test_massive_channels_at_first_token(sample) -> None:
    x = sample.activation[0]
    chans = sample.massive_channels
    assert len(chans) == SyntheticConfig().massive
    first = np.abs(x[0])
    assert (first[chans] > 100 * np.median(first)).all()
    # also at the first delimiter token, and not at ordinary tokens
    tokens = sample.massive_tokens[0]
    assert tokens[0] == 0 and len(tokens) == 1 + SyntheticConfig().massive_delimiters
    for t in tokens:
        assert (np.abs(x[t, chans]) > 100 * np.median(np.abs(x))).all()
    ordinary = np.setdiff1d(np.arange(x.shape[0]), tokens)
    assert np.abs(x[ordinary][:, chans]).max() < 0.5 * np.abs(x[0, chans]).min()
    # the same channels are the top-|x| channels overall
    top = np.argsort(np.abs(x).max(axis=0))[-len(chans) :]
    assert sorted(top.tolist()) == chans


def test_low_effective_rank_and_lognormal_scales(sample) -> None:
    hidden = SyntheticConfig().hidden
    x = sample.activation[0]
    ordinary = np.setdiff1d(np.arange(x.shape[0]), sample.massive_tokens[0])
    erank_a = effective_rank(x[ordinary])
    erank_g = effective_rank(sample.gradient[0])
    assert erank_a < hidden / 8 and erank_g < hidden / 8
    assert erank_g < erank_a  # gradients live in an even smaller subspace
    iso = np.random.default_rng(0).standard_normal((len(ordinary), hidden))
    assert effective_rank(iso) > 3 * erank_a
    stds = x[ordinary].std(axis=0)
    p10, p90 = np.quantile(stds, [0.1, 0.9])
    assert p90 / p10 > 2.0  # channel scales spread (log-normal)
    kurt = ((x[ordinary] - x[ordinary].mean()) ** 4).mean() / x[ordinary].var() ** 2
    assert kurt > 4.0  # heavier tails than a Gaussian


def test_gradient_statistics(sample) -> None:
    a, g = np.abs(sample.activation), np.abs(sample.gradient)
    assert np.median(g) < np.median(a) / 100
    per_channel = g[0].mean(axis=0)
    assert (per_channel[sample.massive_channels] < np.median(per_channel)).all()
    at_massive_tokens = g[0, sample.massive_tokens[0]].mean()
    assert at_massive_tokens < 0.2 * g[0].mean()


def test_deterministic_in_seed_and_config() -> None:
    cfg = SyntheticConfig(hidden=256, seq=64, batch=2)
    a, b, c = generate(cfg, 1), generate(cfg, 1), generate(cfg, 2)
    np.testing.assert_array_equal(a.activation, b.activation)
    np.testing.assert_array_equal(a.gradient, b.gradient)
    assert not np.array_equal(a.activation, c.activation)
    assert a.activation.shape == (2, 64, 256)
    assert (
        cfg.digest()
        == SyntheticConfig(hidden=256, seq=64, batch=2).digest()
        != (SyntheticConfig().digest())
    )


def test_bad_config() -> None:
    with pytest.raises(CorpusError, match="hidden"):
        generate(replace(SyntheticConfig(), hidden=2))
    with pytest.raises(CorpusError, match="tail_df"):
        generate(replace(SyntheticConfig(), tail_df=1.5))
    with pytest.raises(CorpusError, match="dtypes"):
        generate(replace(SyntheticConfig(), dtypes=("int8",)))
