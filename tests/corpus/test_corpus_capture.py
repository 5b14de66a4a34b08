"""Real-model capture: MiniLM (contrastive), a tiny Llama (LM loss) and a tiny BERT (MLM loss)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from swarmpress.codecs.core.tensors import BF16
from swarmpress.corpus.build import build_corpus
from swarmpress.corpus.capture import (
    KIND_CAUSAL,
    KIND_CONTRASTIVE,
    KIND_MASKED,
    capture,
    default_layers,
    resolve_model,
)
from swarmpress.corpus.store import CorpusError, load_corpus


def test_minilm_corpus_has_both_dtypes_shapes_and_real_values(minilm_corpus: Path) -> None:
    corpus = load_corpus(minilm_corpus)
    model = corpus.select(family="model")
    assert len(model) == 3 * 2 * 2  # layers x roles x dtypes
    assert {e.model for e in model} == {"all-MiniLM-L6-v2"}
    assert corpus.source["models"][0]["kind"] == KIND_CONTRASTIVE
    for layer in (0, 3, 6):
        for role in ("activation", "gradient"):
            (e32,) = corpus.select(family="model", layer=layer, role=role, dtype="float32")
            (e16,) = corpus.select(family="model", layer=layer, role=role, dtype="bfloat16")
            x32, x16 = corpus.load(e32), corpus.load(e16)
            assert x32.shape == x16.shape == (2, 64, 384)
            assert x32.dtype == np.float32 and x16.dtype == BF16
            assert np.isfinite(x32).all()
            assert np.abs(x32).max() > 0
            assert np.count_nonzero(x32) > 0.9 * x32.size
            # the bf16 entry is exactly the fp32 capture rounded to bf16
            np.testing.assert_array_equal(x32.astype(BF16).view(np.uint16), x16.view(np.uint16))
    act = corpus.load(corpus.select(layer=3, role="activation", dtype="float32")[0])
    grad = corpus.load(corpus.select(layer=3, role="gradient", dtype="float32")[0])
    assert np.sqrt(np.mean(grad**2)) < 0.1 * np.sqrt(np.mean(act**2))  # gradients are small


def test_minilm_same_seed_gives_identical_bytes(
    minilm_corpus: Path, minilm_args: dict, tmp_path: Path
) -> None:
    again = build_corpus(tmp_path / "again", **minilm_args, synthetic=False)
    a, b = load_corpus(minilm_corpus), load_corpus(again)
    for e in b.entries:
        np.testing.assert_array_equal(
            a.load(e).view(np.uint8), b.load(e).view(np.uint8), err_msg=e.name
        )
    assert a.source["models"][0]["token_sha256"] == b.source["models"][0]["token_sha256"]


def test_tiny_llama_lm_loss_gradients(tiny_models: dict[str, Path]) -> None:
    spec = resolve_model(str(tiny_models["llama"]))
    assert spec.kind == KIND_CAUSAL and spec.num_layers == 2 and spec.hidden_size == 64
    assert default_layers(2) == [1] and default_layers(6) == [1, 2, 3, 4, 5]
    cap = capture(str(tiny_models["llama"]), layers=[0, 1, 2], seqs=2, seq_len=48, seed=1)
    assert cap.layers == [0, 1, 2]
    assert 3.0 < cap.loss_value < 10.0  # near ln(vocab) for random weights
    for layer in cap.layers:
        a, g = cap.activations[layer].numpy(), cap.gradients[layer].numpy()
        assert a.shape == g.shape == (2, 48, 64)
        assert np.isfinite(a).all() and np.isfinite(g).all()
        assert np.abs(g).max() > 0 and np.count_nonzero(g) > 0.5 * g.size


def test_tiny_bert_masked_lm_loss(tiny_models: dict[str, Path]) -> None:
    cap = capture(str(tiny_models["bert"]), layers=[0, 2], seqs=2, seq_len=32, seed=0)
    assert cap.spec.kind == KIND_MASKED
    assert cap.extra["masked_tokens"] > 0
    for layer in (0, 2):
        g = cap.gradients[layer].numpy()
        assert g.shape == (2, 32, 64) and np.isfinite(g).all() and np.abs(g).max() > 0


def test_determinism_and_seed_sensitivity_on_a_full_build(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    args = {"model": str(tiny_models["llama"]), "seqs": 2, "seq_len": 32}
    a = load_corpus(build_corpus(tmp_path / "a", seed=3, **args))
    b = load_corpus(build_corpus(tmp_path / "b", seed=3, **args))
    c = load_corpus(build_corpus(tmp_path / "c", seed=4, **args))
    assert [e.name for e in a.entries] == [e.name for e in b.entries] == [e.name for e in c.entries]
    for e in a.entries:
        same = a.load(e).view(np.uint8)
        np.testing.assert_array_equal(same, b.load(e).view(np.uint8), err_msg=e.name)
        assert not np.array_equal(same, c.load(e).view(np.uint8)), e.name


def test_unknown_model_and_bad_directories(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="unknown model 'no-such-model'"):
        resolve_model("no-such-model")
    with pytest.raises(CorpusError, match=r"has no config\.json"):
        resolve_model(str(tmp_path))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CorpusError) as info:
        resolve_model(str(tmp_path))
    assert "\n" not in str(info.value)
    (tmp_path / "config.json").write_text('{"model_type": "llama", "hidden_size": 8}')
    with pytest.raises(CorpusError, match="cannot read the config") as info:
        resolve_model(str(tmp_path))
    assert "not a multiple" in str(info.value) and "\n" not in str(info.value)
    config = '{"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4}'
    (tmp_path / "config.json").write_text(config)
    with pytest.raises(CorpusError, match="cannot load") as info:
        capture(str(tmp_path), seqs=1, seq_len=16)
    assert "\n" not in str(info.value)


def test_bad_layers_and_too_little_text(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="out of range"):
        capture(str(tiny_models["llama"]), layers=[0, 3], seqs=1, seq_len=16)
    small = tmp_path / "small.txt"
    small.write_text("A few words only. " * 5)
    with pytest.raises(CorpusError, match="too small"):
        capture(str(tiny_models["llama"]), text=small, seqs=2, seq_len=64)
    with pytest.raises(CorpusError, match="exceeds"):
        capture(str(tiny_models["llama"]), seqs=1, seq_len=1024)
