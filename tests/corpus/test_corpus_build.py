"""build_corpus writes a manifest that round-trips; default_corpus caches and rebuilds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import swarmpress
from swarmpress.corpus import build as build_mod
from swarmpress.corpus.build import build_corpus, default_corpus, is_valid_corpus, summarize
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
    assert src["model"]["name"] == "all-MiniLM-L6-v2" and src["model"]["layers"] == [0, 3, 6]
    assert src["settings"]["seqs"] == 2 and src["settings"]["seq_len"] == 64
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


def test_default_corpus_is_cached_and_rebuilt(
    tiny_models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real default (MiniLM 4 x 256) is exercised by the CLI run; here a tiny stand-in
    # keeps the test fast while going through the same caching code.
    settings = {**build_mod.DEFAULT_SETTINGS, "model": str(tiny_models["llama"])}
    settings.update(layers=[0, 2], seqs=1, seq_len=16)
    monkeypatch.setattr(build_mod, "DEFAULT_SETTINGS", settings)
    monkeypatch.setattr(build_mod, "DEFAULT_SYNTHETIC", SMALL_SYN)
    monkeypatch.setenv("SWARMPRESS_CACHE", str(tmp_path / "cache"))
    path = default_corpus()
    assert path.parent == tmp_path / "cache" and path.name.startswith("corpus-default-")
    assert load_corpus(path).source["settings_hash"] == build_mod.default_settings_hash()
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
