"""`swarmpress corpus build` and `swarmpress corpus export-apex` through the CLI."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from swarmpress.cli import app

runner = CliRunner()


def _one_line_error(result) -> str:
    """The error message, after checking exit code 2, a single error and no traceback."""
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert err.startswith("error:") and err.count("error:") == 1, err
    assert "Traceback" not in result.output
    # rich wraps long lines at the console width (80 under CliRunner); unwrap before matching
    return " ".join(err.split())


def test_build_json_and_apex(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    out, apex = tmp_path / "corpus", tmp_path / "apex"
    args = ["corpus", "build", "--model", str(tiny_models["llama"]), "--out", str(out)]
    args += ["--layers", "0,2", "--seqs", "2", "--seq-len", "32", "--seed", "1"]
    result = runner.invoke(app, [*args, "--apex", str(apex), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["out"] == str(out) and info["apex_manifest"] == str(apex / "manifest.csv")
    model_rows = [t for t in info["tensors"] if t["family"] == "model"]
    assert len(model_rows) == 2 * 2 * 2
    assert all(t["shape"] == [2, 32, 64] and t["finite"] for t in model_rows)
    assert sum(t["bytes"] for t in info["tensors"]) == info["total_bytes"]
    with (apex / "manifest.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        assert (apex / r["file"]).stat().st_size == 2 * int(r["numel"])

    again = runner.invoke(app, ["corpus", "export-apex", str(out), str(tmp_path / "apex2")])
    assert again.exit_code == 0, again.output
    assert "wrote" in again.stdout
    assert (tmp_path / "apex2" / "manifest.csv").read_text() == (apex / "manifest.csv").read_text()


def test_build_table_no_synthetic(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            *("corpus", "build", "--model", str(tiny_models["bert"]), "--out", str(tmp_path / "c")),
            *("--seqs", "1", "--seq-len", "16", "--no-synthetic"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "4 tensors" in result.stdout and "synthetic-llama-like" not in result.stdout


def test_unknown_model(tmp_path: Path) -> None:
    result = runner.invoke(app, ["corpus", "build", "--model", "gpt-17", "--out", str(tmp_path)])
    assert "unknown model 'gpt-17'" in _one_line_error(result)


def test_directory_without_config(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    result = runner.invoke(
        app, ["corpus", "build", "--model", str(tmp_path / "m"), "--out", str(tmp_path / "c")]
    )
    assert "no config.json" in _one_line_error(result)


def test_unloadable_model_weights(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_models["llama"], broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    result = runner.invoke(
        app, ["corpus", "build", "--model", str(broken), "--out", str(tmp_path / "c")]
    )
    assert "cannot load model" in _one_line_error(result)


def test_bad_layers_and_missing_text(tmp_path: Path) -> None:
    base = ["corpus", "build", "--out", str(tmp_path / "c")]
    assert "--layers" in _one_line_error(runner.invoke(app, [*base, "--layers", "a,b"]))
    result = runner.invoke(app, [*base, "--text", str(tmp_path / "none.txt")])
    assert "does not exist" in _one_line_error(result)


def test_export_apex_missing_corpus(tmp_path: Path) -> None:
    result = runner.invoke(app, ["corpus", "export-apex", str(tmp_path / "nope"), str(tmp_path)])
    assert "does not exist" in _one_line_error(result)


def test_manifest_with_bad_source_is_a_corpus_error(tmp_path: Path) -> None:
    import json

    from swarmpress.corpus.store import CorpusError, load_corpus

    entry = {
        "name": "a",
        "file": "a.safetensors",
        "family": "model",
        "model": "m",
        "layer": 0,
        "role": "activation",
        "dtype": "float32",
        "shape": [2],
        "text_source": "t",
        "seed": 0,
    }
    (tmp_path / "manifest.json").write_text(
        json.dumps(
            {"format": "swarmpress-corpus", "version": 1, "source": [1, 2], "tensors": [entry]}
        )
    )
    import pytest

    with pytest.raises(CorpusError, match="source"):
        load_corpus(tmp_path)
