"""Per-model groups: two real models of one family never mix, quick runs keep both, the
synthetic family is labelled a stress case, and the report names the sweep tensors."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from swarmpress.bench import report as rep
from swarmpress.bench import runner as R
from swarmpress.bench.console import headline_table, print_table
from swarmpress.bench.results import BenchResult, group_label
from swarmpress.corpus.store import load_corpus

MODELS = ("model-test", "llama-test", "synthetic-test")


def test_quick_selection_keeps_every_model(two_model_corpus: Path):
    corpus = load_corpus(two_model_corpus)
    picked = R.select_entries(corpus, quick=True)
    per: dict[tuple[str, str, str], int] = {}
    for e in picked:
        k = (e.model, e.role, e.dtype)
        per[k] = per.get(k, 0) + 1
    # 3 models x 2 roles x 2 dtypes, at most QUICK_TENSORS_PER_GROUP (of 3) each
    assert len(per) == 12 and set(per.values()) == {R.QUICK_TENSORS_PER_GROUP}
    assert {e.model for e in picked} == set(MODELS)


def test_aggregates_and_bounds_are_per_model(two_model_result: BenchResult):
    r = two_model_result
    keys = [(a.codec, a.family, a.model, a.role, a.dtype) for a in r.aggregates]
    assert len(keys) == len(set(keys))
    zstd = [a for a in r.aggregates if a.codec == "zstd"]
    assert {a.model for a in zstd} == set(MODELS)
    assert len(zstd) == 12 and all(a.n_tensors == 2 for a in zstd)
    assert {(b.model, b.role, b.dtype) for b in r.bound_aggregates} == {
        (m, role, dt)
        for m in MODELS
        for role in ("activation", "gradient")
        for dt in ("bfloat16", "float32")
    }
    assert all(m.model in MODELS for m in r.measurements)
    assert all(b.model in MODELS for b in r.bounds)
    # report order: bf16 activation of each model side by side, corpus order, synthetic last
    first = list(dict.fromkeys((a.dtype, a.role, a.model) for a in r.aggregates))[:3]
    assert first == [("bfloat16", "activation", m) for m in MODELS]


def test_group_label_marks_the_stress_case():
    assert group_label("model", "SmolLM2-135M-Instruct") == "SmolLM2-135M-Instruct"
    assert group_label("synthetic", "synthetic-llama-like") == (
        "synthetic-llama-like (synthetic stress case)"
    )
    assert group_label("model", "") == "model"


def test_headline_rows_have_a_group_per_model(two_model_result: BenchResult):
    rows = rep.headline_rows(two_model_result)
    groups = list(dict.fromkeys((r["dtype"], r["role"], r["model"]) for r in rows))
    assert len(groups) == 12
    assert groups[:3] == [
        ("bfloat16", "activation", "model-test"),
        ("bfloat16", "activation", "llama-test"),
        ("bfloat16", "activation", "synthetic-test (synthetic stress case)"),
    ]
    llama = [r for r in rows if r["model"] == "llama-test" and r["codec"] == "zstd"]
    assert len(llama) == 4 and all(r["n"] == "2" for r in llama)
    for r in llama:  # every figure shown for the second model too
        for c in ("ratio", "bits/val", "min sim", "comp MB/s", "dec MB/s", "break-even"):
            assert r[c] not in ("", "-"), c
        assert r["lossless score"] not in ("", "-")


def test_console_sections_are_headed_by_model(two_model_result: BenchResult):
    out = io.StringIO()
    print_table(headline_table(two_model_result), Console(file=out, width=100))
    text = out.getvalue()
    lines = [ln.strip() for ln in text.splitlines()]
    for model in ("model-test", "llama-test", "synthetic-test"):
        at = lines.index(model)  # a header line of its own, under "dtype · role"
        assert lines[at - 1] == "bfloat16 · activation"
    assert lines[lines.index("synthetic-test") + 1] == "(synthetic stress case)"
    assert text.count("bfloat16 · activation") == 3


def test_report_compares_models_and_names_sweep_tensors(two_model_result: BenchResult):
    r = two_model_result
    text = rep.render_markdown(r, {}, None)
    assert "| dtype | role | family | model | codec |" in text
    assert "## Models side by side (bfloat16)" in text
    assert "| model-test ratio | llama-test ratio | synthetic-test (stress) ratio |" in text
    assert "synthetic stress case" in text
    cols, rows = rep.model_rows(r, "bfloat16")
    assert cols[:3] == ["role", "codec", "kind"] and len(cols) == 3 + 2 * len(MODELS)
    zstd = next(row for row in rows if row[1] == "zstd" and row[0] == "activation")
    assert all(cell not in ("", "-") for cell in zstd[3:])
    assert any(row[1] == "bound: field entropy" for row in rows)
    for role, tensor in r.meta["sweep_tensors"].items():
        assert f"{role}: `{tensor}`" in text
    assert "`llama-test` (family `model`): 8 tensors" in text  # quick: 2 of 3 per group


def test_sweep_picks_the_median_bf16_tensor_over_every_model(two_model_corpus: Path):
    entries = load_corpus(two_model_corpus).entries
    picks = R.sweep_entries(entries)
    assert all(e.dtype == "bfloat16" for e in picks.values())
    # equal sizes: the median by name among 9 bf16 tensors of the role
    acts = sorted(e.name for e in entries if e.role == "activation" and e.dtype == "bfloat16")
    assert picks["activation"].name == acts[len(acts) // 2]


def test_no_references_skips_memcpy_and_zstd1(two_model_corpus: Path):
    r = R.run_bench(
        two_model_corpus, ["zstd"], anchors=False, references=False, quick=True, sweep=False
    )
    assert {m.kind for m in r.measurements} == {"codec"}
    assert r.meta["references"] == {} and "no-references" in r.meta["references_skipped"]
    assert "Skipped: disabled (--no-references)" in rep.render_markdown(r, {}, None)
