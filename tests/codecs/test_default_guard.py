"""The default `lossy` against the best mode, tensor by tensor, on the real default corpus.

Issue 13's guard: on no corpus tensor may the default be more than 0.02 (in ratio) above the
best mode. One bf16 tensor per (model, role) of the default corpus (MiniLM, SmolLM2, the
synthetic stress family), the deepest boundary of each.
"""

from __future__ import annotations

import pytest

import swarmpress as sp
from swarmpress.corpus.build import default_corpus
from swarmpress.corpus.store import load_corpus

GUARD = 0.02


@pytest.fixture(scope="module")
def corpus():
    return load_corpus(default_corpus())


def _cases() -> list:
    cases = []
    for model in ("all-MiniLM-L6-v2", "SmolLM2-135M-Instruct", "synthetic-llama-like"):
        for role in ("activation", "gradient"):
            cases.append(pytest.param(model, role, id=f"{model}-{role}"))
    return cases


@pytest.mark.parametrize(("model", "role"), _cases())
def test_default_is_within_the_guard_of_the_best_mode(corpus, model, role):
    entries = [
        e for e in corpus.entries if e.model == model and e.role == role and e.dtype == "bfloat16"
    ]
    assert entries, f"the default corpus has no bf16 {role} of {model}"
    layers = sorted({e.layer for e in entries})
    entry = next(e for e in entries if e.layer == layers[-1])  # the deepest boundary
    x = corpus.load(entry)
    default = sp.get_codec("lossy").encode(x)
    best = sp.get_codec("lossy", mode="max").encode(x)
    assert sp.similarity(x, sp.decode(default)) > 0.99
    gap = (len(default) - len(best)) / x.nbytes
    assert gap <= GUARD, f"{entry.name}: default is {gap:.3f} above the max mode"
