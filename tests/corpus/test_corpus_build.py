"""build_corpus writes a manifest that round-trips; default_corpus caches and rebuilds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import swarmpress
from swarmpress.corpus import build as build_mod
from swarmpress.corpus.build import (
    ModelSource,
    build_corpus,
    default_corpus,
    is_valid_corpus,
    summarize,
)
from swarmpress.corpus.store import MANIFEST, CorpusError, load_corpus
from swarmpress.corpus.synthetic import SyntheticConfig

SMALL_SYN = SyntheticConfig(hidden=128, seq=32, dtypes=("bfloat16", "float32"))


def test_manifest_round_trip(minilm_corpus: Path) -> None:
    corpus = load_corpus(minilm_corpus)
    raw = json.loads((minilm_corpus / MANIFEST).read_text())
    assert [e.to_json() for e in corpus.entries] == raw["tensors"]
    src = corpus.source
    assert src["seed"] == 0 and src["text_source"] == "pydoc_data.topics"
    assert src["versions"]["swarmpress"] == swarmpress.__version__
    (model,) = src["models"]
    assert model["name"] == "all-MiniLM-L6-v2" and model["layers"] == [0, 3, 6]
    assert model["format"] == "hf" and model["dtypes"] == ["bfloat16", "float32"]
    (setting,) = src["settings"]["models"]
    assert setting["seqs"] == 2 and setting["seq_len"] == 64 and setting["model"] == "minilm"
    assert src["synthetic"]["config"]["hidden"] == 2048
    files = {e.file for e in corpus.entries}
    assert files == {f"all-MiniLM-L6-v2.L0{i}.safetensors" for i in (0, 3, 6)} | {
        "synthetic-llama-like.safetensors"
    }
    for e, arr in corpus:
        assert arr.shape == e.shape
        assert e.extra  # provenance details per entry
    syn = corpus.select(family="synthetic")
    assert {(e.role, e.dtype) for e in syn} == {
        ("activation", "bfloat16"),
        ("gradient", "bfloat16"),
    }
    assert is_valid_corpus(minilm_corpus)
    rows = summarize(minilm_corpus)
    assert len(rows) == len(corpus.entries) and all(r["finite"] for r in rows)


def test_synthetic_only_and_rebuild_over_existing(tmp_path: Path) -> None:
    out = tmp_path / "syn"
    calls = []
    build_corpus(out, model=None, synthetic_config=SMALL_SYN, progress=lambda *a: calls.append(a))
    assert calls[-1] == ("done", 2, 2)
    first = load_corpus(out)
    assert len(first.entries) == 4 and {e.family for e in first.entries} == {"synthetic"}
    build_corpus(out, model=None, seed=5, synthetic_config=SMALL_SYN)  # replaces the corpus
    second = load_corpus(out)
    assert second.source["seed"] == 5
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temp leftovers


def test_refuses_to_clobber_and_empty_request(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(CorpusError, match="not a corpus"):
        build_corpus(tmp_path, model=None, synthetic_config=SMALL_SYN)
    assert (tmp_path / "precious.txt").read_text() == "keep me"
    with pytest.raises(CorpusError, match="nothing to build"):
        build_corpus(tmp_path / "x", model=None, synthetic=False)
    with pytest.raises(CorpusError, match="not a directory"):
        build_corpus(tmp_path / "precious.txt", model=None, synthetic_config=SMALL_SYN)


def test_missing_corpus_dir() -> None:
    with pytest.raises(CorpusError, match="does not exist"):
        load_corpus("/nonexistent/corpus")


def test_default_settings_include_minilm_and_smollm2() -> None:
    models = [ModelSource.from_json(m) for m in build_mod.DEFAULT_SETTINGS["models"]]
    assert [m.model for m in models] == ["all-MiniLM-L6-v2", "SmolLM2-135M-Instruct"]
    minilm, smol = models
    assert minilm.layers == (1, 2, 3, 4, 5) and (minilm.seqs, minilm.seq_len) == (4, 256)
    assert minilm.dtypes == ("bfloat16", "float32")
    # what a pipeline boundary of a Llama-architecture model ships: bf16, 800 tokens (IOTA)
    assert smol.layers == (5, 10, 15, 20, 25) and (smol.seqs, smol.seq_len) == (1, 800)
    assert smol.dtypes == ("bfloat16",)
    assert all(ModelSource.from_json(m.to_json()) == m for m in models)


def test_several_models_in_one_corpus(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    models = [
        ModelSource(str(tiny_models["llama"]), layers=(1,), seqs=1, seq_len=16),
        ModelSource(
            str(tiny_models["bert"]), layers=(0, 2), seqs=2, seq_len=8, dtypes=("bfloat16",)
        ),
    ]
    calls = []
    out = build_corpus(
        tmp_path / "c", models=models, synthetic=False, progress=lambda *a: calls.append(a)
    )
    assert calls[-1] == ("done", 7, 7)  # 3 stages per model, writing, done
    corpus = load_corpus(out)
    llama = corpus.select(model=str(tiny_models["llama"]))
    bert = corpus.select(model=str(tiny_models["bert"]))
    assert {(e.layer, e.dtype) for e in llama} == {(1, "bfloat16"), (1, "float32")}
    assert all(e.shape == (1, 16, 64) and "twin" in e.extra for e in llama)
    assert {(e.layer, e.dtype) for e in bert} == {(0, "bfloat16"), (2, "bfloat16")}
    assert all(e.shape == (2, 8, 64) and "twin" not in e.extra for e in bert)
    assert [m["kind"] for m in corpus.source["models"]] == ["causal-lm", "masked-lm"]
    assert [m["seq_len"] for m in corpus.source["models"]] == [16, 8]
    with pytest.raises(CorpusError, match="share the tensor names"):
        build_corpus(tmp_path / "d", models=[models[0], models[0]], synthetic=False)
    with pytest.raises(CorpusError, match="stored dtypes"):
        bad = ModelSource(str(tiny_models["llama"]), dtypes=("float16",))
        build_corpus(tmp_path / "e", models=[bad], synthetic=False)


def test_default_corpus_is_cached_and_rebuilt(
    tiny_models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real default (MiniLM 4 x 256 and SmolLM2 1 x 800) is checked in
    # test_corpus_smollm2.py; here tiny stand-ins keep the test fast while going through the
    # same caching code, two models and all.
    models = [
        {"model": str(tiny_models["llama"]), "layers": [0, 2], "seqs": 1, "seq_len": 16},
        {"model": str(tiny_models["bert"]), "layers": [1], "seqs": 1, "seq_len": 8},
    ]
    models[1]["dtypes"] = ["bfloat16"]
    settings = {**build_mod.DEFAULT_SETTINGS, "models": models}
    monkeypatch.setattr(build_mod, "DEFAULT_SETTINGS", settings)
    monkeypatch.setattr(build_mod, "DEFAULT_SYNTHETIC", SMALL_SYN)
    monkeypatch.setenv("SWARMPRESS_CACHE", str(tmp_path / "cache"))
    path = default_corpus()
    assert path.parent == tmp_path / "cache" and path.name.startswith("corpus-default-")
    corpus = load_corpus(path)
    assert corpus.source["settings_hash"] == build_mod.default_settings_hash()
    assert {e.model for e in corpus.select(family="model")} == {m["model"] for m in models}
    assert corpus.source["synthetic"]["purpose"].startswith("stress case")
    assert all(e.extra["purpose"] == "stress case" for e in corpus.select(family="synthetic"))
    stamp = (path / MANIFEST).stat().st_mtime_ns
    assert default_corpus() == path and (path / MANIFEST).stat().st_mtime_ns == stamp
    # a damaged cache entry is rebuilt
    next(path.glob("*.safetensors")).unlink()
    assert not is_valid_corpus(path)
    assert default_corpus() == path and is_valid_corpus(path, build_mod.default_settings_hash())
    # other settings -> another cache key
    monkeypatch.setattr(build_mod, "DEFAULT_SETTINGS", {**settings, "seed": 1})
    other = default_corpus(cache_dir=tmp_path / "elsewhere")
    assert other.parent == tmp_path / "elsewhere" and other.name != path.name
    a = load_corpus(path).load(load_corpus(path).entries[0])
    b = load_corpus(other).load(load_corpus(other).entries[0])
    assert not np.array_equal(a.view(np.uint8), b.view(np.uint8))
