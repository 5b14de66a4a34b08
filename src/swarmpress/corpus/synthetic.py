"""A seeded generator of Llama-like hidden states and gradients: a stress case for codecs.

This is not a reference for what a real Llama boundary carries; the corpus has a real one
for that (SmolLM2-135M, Llama architecture, captured by capture.py). The synthetic family
is a stress case at a width real small models lack (2048, IOTA's smallest stage), with the
published Llama statistics in an idealized form (a clean factor model, massive values
placed exactly), so codecs meet them at scale and under control:

- massive activations (Sun et al. 2024, "Massive Activations in Large Language Models"):
  a few fixed channels take values hundreds to thousands of times the median magnitude,
  only at the first token and at the first delimiter token ("." or newline), where the rest
  of the hidden state is small and nearly constant;
- outlier features (Dettmers et al. 2022, LLM.int8()): per-channel scales are log-normal,
  so a handful of channels are systematically several times larger than the median;
- low effective rank and anisotropy: tokens live near a low-dimensional subspace plus a
  common mean direction (a factor model Z @ W + mean, plus small isotropic noise);
- heavy-ish tails: Student-t factor loadings and log-normal per-token norms;
- gradients of the same boundary: much smaller scale, lower rank, heavier per-token
  spread (a few tokens with high loss dominate), their own channel scales, and almost
  nothing on the massive channels or at the massive tokens (an RMSNorm over a huge vector
  passes little gradient back).

Every parameter is a field of SyntheticConfig with its default documented there and in
docs/corpus.md. Output depends only on (config, seed): a numpy Generator seeded with both.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from swarmpress.codecs.core.tensors import BF16
from swarmpress.corpus.store import CorpusError

GENERATOR = "llama-like"
GENERATOR_VERSION = 1


@dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of the Llama-like stress generator; defaults: a 2048-wide mid-stack layer."""

    hidden: int = 2048  # channels (Llama-3.2-1B / IOTA's smallest stage width)
    seq: int = 512  # tokens per sequence
    batch: int = 1  # sequences per tensor
    layer: int = 8  # the boundary this imitates (mid-stack of a 16-block model); manifest only

    # --- activations
    act_std: float = 0.5  # typical channel standard deviation (median channel scale)
    rank: int = 32  # latent factors of the token subspace
    factor_decay: float = 0.5  # strength of factor k is (k+1)**-decay: a decaying spectrum
    noise: float = 0.1  # isotropic noise std, relative to a unit-strength factor
    mean_shift: float = 0.4  # per-channel mean offset std (anisotropy), in channel-scale units
    scale_sigma: float = 0.5  # sigma of the log-normal per-channel scales (median 1)
    outliers: int = 6  # outlier-feature channels, systematically larger on every token
    outlier_gain: float = 5.0  # their extra scale factor
    tail_df: float = 5.0  # Student-t degrees of freedom of the factor loadings (lower: heavier)
    token_sigma: float = 0.25  # sigma of the log-normal per-token norm

    # --- massive activations
    massive: int = 2  # number of massive channels (LLaMA2-7B has 2: dims 1415 and 2533)
    massive_ratio: float = 500.0  # massive value / median |activation| of ordinary tokens
    massive_jitter: float = 0.02  # relative spread of the massive values between tokens
    massive_delimiters: int = 1  # delimiter tokens after the first that also carry them
    delimiter_rate: float = 0.04  # probability that a token is a delimiter ("." or newline)
    massive_token_damp: float = 0.1  # other channels at massive tokens, relative to normal

    # --- gradients
    grad_std: float = 1e-3  # typical gradient channel std (a mean LM loss over ~1k tokens)
    grad_rank: int = 16  # latent factors of the gradient subspace
    grad_noise: float = 0.15  # isotropic noise, relative to a unit-strength factor
    grad_scale_sigma: float = 0.8  # sigma of the log-normal per-channel gradient scales
    grad_tail_df: float = 4.0  # Student-t degrees of freedom of gradient loadings
    grad_token_sigma: float = 0.6  # sigma of the log-normal per-token gradient norm
    grad_massive_channel_damp: float = 0.05  # gradient on the massive channels, relative
    grad_massive_token_damp: float = 0.02  # gradient at the massive tokens, relative

    dtypes: tuple[str, ...] = field(default=("bfloat16",))  # stored dtypes (bfloat16, float32)

    def validate(self) -> None:
        """Raise CorpusError naming the first parameter out of range."""
        ints = {"hidden": 8, "seq": 2, "batch": 1, "rank": 1, "grad_rank": 1}
        for name, low in ints.items():
            if getattr(self, name) < low:
                raise CorpusError(f"synthetic {name} must be at least {low}")
        if not 0 <= self.massive <= self.hidden // 4:
            raise CorpusError("synthetic massive must be between 0 and hidden/4")
        if not 0 <= self.outliers <= self.hidden // 4:
            raise CorpusError("synthetic outliers must be between 0 and hidden/4")
        if self.tail_df <= 2 or self.grad_tail_df <= 2:
            raise CorpusError("synthetic tail_df and grad_tail_df must exceed 2 (finite variance)")
        if not self.dtypes or any(d not in ("bfloat16", "float32") for d in self.dtypes):
            raise CorpusError("synthetic dtypes must be a non-empty subset of bfloat16, float32")

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["dtypes"] = list(self.dtypes)
        return d

    def digest(self) -> str:
        """Short hash of the parameters (cache keys, manifests)."""
        blob = json.dumps(self.to_json(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


@dataclass
class SyntheticSample:
    """One generated boundary: float32 activation and gradient, (batch, seq, hidden)."""

    activation: np.ndarray
    gradient: np.ndarray
    massive_channels: list[int]
    outlier_channels: list[int]
    massive_tokens: list[list[int]]  # per sequence: token positions carrying massive values


def _factor_model(
    rng: np.random.Generator,
    rows: int,
    hidden: int,
    rank: int,
    decay: float,
    df: float,
    noise: float,
) -> np.ndarray:
    """rows x hidden: Student-t loadings on decaying factors plus isotropic Gaussian noise."""
    strength = (np.arange(rank) + 1.0) ** -decay
    strength /= np.sqrt(np.sum(strength**2))  # unit total variance per channel
    w = rng.standard_normal((rank, hidden))
    z = rng.standard_t(df, (rows, rank)) * np.sqrt((df - 2.0) / df)
    return (z * strength) @ w + noise * rng.standard_normal((rows, hidden))


def _lognormal_scales(rng: np.random.Generator, n: int, sigma: float) -> np.ndarray:
    s = np.exp(sigma * rng.standard_normal(n))
    return s / np.median(s)


def generate(config: SyntheticConfig | None = None, seed: int = 0) -> SyntheticSample:
    """One Llama-like stress-case activation and its gradient, deterministic in (config, seed)."""
    cfg = config or SyntheticConfig()
    cfg.validate()
    rng = np.random.default_rng([seed, GENERATOR_VERSION, 0x51A7])
    h, t = cfg.hidden, cfg.seq

    # Fixed structure shared by every token and sequence of this boundary.
    chans = rng.permutation(h)
    massive = sorted(int(c) for c in chans[: cfg.massive])
    outliers = sorted(int(c) for c in chans[cfg.massive : cfg.massive + cfg.outliers])
    scale = _lognormal_scales(rng, h, cfg.scale_sigma)
    scale[outliers] *= cfg.outlier_gain
    mean = cfg.mean_shift * rng.standard_normal(h)
    signs = np.where(rng.random(h) < 0.5, -1.0, 1.0)
    gscale = _lognormal_scales(rng, h, cfg.grad_scale_sigma)
    gscale[massive] *= cfg.grad_massive_channel_damp

    acts = np.empty((cfg.batch, t, h), dtype=np.float32)
    grads = np.empty((cfg.batch, t, h), dtype=np.float32)
    mtokens: list[list[int]] = []
    for b in range(cfg.batch):
        x = _factor_model(rng, t, h, cfg.rank, cfg.factor_decay, cfg.tail_df, cfg.noise)
        x = (x + mean) * scale * cfg.act_std
        x *= np.exp(cfg.token_sigma * rng.standard_normal((t, 1)))
        delims = np.flatnonzero(rng.random(t) < cfg.delimiter_rate)
        delims = delims[delims > 0][: cfg.massive_delimiters]
        where = [0, *(int(d) for d in delims)] if cfg.massive else []
        ordinary = np.ones(t, dtype=bool)
        ordinary[where] = False
        med = float(np.median(np.abs(x[ordinary]))) if ordinary.any() else cfg.act_std
        base = rng.standard_normal(h) * scale * cfg.act_std  # the near-constant massive-token state
        for pos in where:
            x[pos] = cfg.massive_token_damp * (base + 0.1 * rng.standard_normal(h) * cfg.act_std)
            jitter = 1.0 + cfg.massive_jitter * rng.standard_normal(len(massive))
            x[pos, massive] = signs[massive] * cfg.massive_ratio * med * jitter
        acts[b] = x

        g = _factor_model(
            rng, t, h, cfg.grad_rank, cfg.factor_decay, cfg.grad_tail_df, cfg.grad_noise
        )
        g *= gscale * cfg.grad_std
        g *= np.exp(cfg.grad_token_sigma * rng.standard_normal((t, 1)))
        g[where] *= cfg.grad_massive_token_damp
        grads[b] = g
        mtokens.append(where)
    return SyntheticSample(acts, grads, massive, outliers, mtokens)


def as_dtype(x: np.ndarray, dtype: str) -> np.ndarray:
    """float32 array in a stored dtype ("bfloat16" rounds to nearest even via ml_dtypes)."""
    if dtype == "bfloat16":
        return x.astype(BF16)
    if dtype == "float32":
        return x.astype(np.float32)
    raise CorpusError(f"unsupported synthetic dtype {dtype!r}")


def effective_rank(x: np.ndarray) -> float:
    """Roy & Vetterli (2007) effective rank of a tokens x channels matrix: exp(H(σ/Σσ))."""
    m = np.asarray(x, dtype=np.float64).reshape(-1, np.shape(x)[-1])
    s = np.linalg.svd(m, compute_uv=False)
    if s.sum() == 0:
        return 0.0
    p = s / s.sum()
    p = p[p > 0]
    return float(np.exp(-np.sum(p * np.log(p))))
