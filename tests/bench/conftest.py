"""Bench fixtures: tiny corpora written with store.write_corpus, and one shared quick run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ROWS, HIDDEN = 48, 32


def make_corpus(
    root: Path,
    rows: int = ROWS,
    hidden: int = HIDDEN,
    families: tuple[str, ...] = ("model", "synthetic"),
    seed: int = 0,
    extra_models: tuple[str, ...] = (),
    layers: int = 1,
) -> Path:
    """A corpus of low-rank-plus-noise tensors, every family x role x dtype (bf16, fp32).

    Family f is one model, "f-test" (tensors "f.L1.role.dtype"); each name in extra_models
    is one more real model of family "model" (tensors "name.L<k>.role.dtype"), so two real
    models share a family as MiniLM and SmolLM2 do in the default corpus. layers: boundaries
    per model (L1, L2, ...).
    """
    import torch

    from swarmpress.corpus.store import Entry, write_corpus

    rng = np.random.default_rng(seed)
    tensors, entries = {}, []
    sources = [(f, f"{f}-test", f) for f in families] + [("model", m, m) for m in extra_models]
    for family, model, prefix in sources:
        for layer in range(1, layers + 1):
            for role in ("activation", "gradient"):
                scale = np.exp(0.5 * rng.standard_normal(hidden))
                low = rng.standard_normal((rows, 4)) @ rng.standard_normal((4, hidden))
                x = (low + 0.3 * rng.standard_normal((rows, hidden))) * scale
                if role == "gradient":
                    x *= 1e-3
                t = torch.from_numpy(x.astype(np.float32).reshape(2, rows // 2, hidden))
                for dtype in ("bfloat16", "float32"):
                    name = f"{prefix}.L{layer}.{role}.{dtype}"
                    tensors[name] = t.to(torch.bfloat16) if dtype == "bfloat16" else t.clone()
                    entries.append(
                        Entry(
                            name=name,
                            file=f"{prefix}.safetensors",
                            family=family,
                            model=model,
                            layer=layer,
                            role=role,
                            dtype=dtype,
                            shape=tuple(t.shape),
                            text_source="synthetic",
                            seed=seed,
                        )
                    )
    return write_corpus(root, tensors, entries, {"test": True})


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("bench") / "corpus")


@pytest.fixture(scope="session")
def quick_result(tiny_corpus: Path):
    """One quick bench over the tiny corpus with the default codecs and every anchor."""
    from swarmpress.bench.runner import run_bench

    return run_bench(tiny_corpus, quick=True, command="pytest")


@pytest.fixture(scope="session")
def two_model_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two real models in family "model" (model-test, then llama-test) and the synthetic
    family, three boundaries each: the shape of the default corpus, in miniature."""
    return make_corpus(
        tmp_path_factory.mktemp("bench2") / "corpus", extra_models=("llama-test",), layers=3
    )


@pytest.fixture(scope="session")
def two_model_result(two_model_corpus: Path):
    """A quick bench over two_model_corpus: two codecs, the references, no anchors."""
    from swarmpress.bench.runner import run_bench

    return run_bench(
        two_model_corpus, ["zstd", "blockq:bits=4"], anchors=False, quick=True, command="pytest"
    )
