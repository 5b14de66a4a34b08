"""`swarmpress bench`: JSON that parses, a report directory, exit 2 with one line on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from swarmpress.cli import app

# rich wraps the one-line error at the console width; a wide COLUMNS keeps long paths on one line
runner = CliRunner(env={"COLUMNS": "1000"})


def _one_line_error(result) -> str:
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:")
    return lines[0]


def test_json_file_parses(tiny_corpus: Path, tmp_path: Path):
    out = tmp_path / "b.json"
    args = ["bench", "--corpus", str(tiny_corpus), "--codecs", "zstd,blockq:bits=4"]
    res = runner.invoke(app, [*args, "--quick", "--json", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert data["meta"]["codecs"] == ["zstd", "blockq:bits=4"]
    assert data["meta"]["command"].startswith("swarmpress bench --corpus")
    assert {m["codec"] for m in data["measurements"]} >= {"zstd", "blockq:bits=4", "zstd-3"}
    assert "zstd" in res.stdout and "Gaussian RD" in res.stdout  # the headline table


def test_json_to_stdout_and_no_anchors(tiny_corpus: Path):
    args = ["bench", "--corpus", str(tiny_corpus), "--codecs", "zstd", "--no-anchors"]
    res = runner.invoke(app, [*args, "--quick", "--json", "-"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    # no anchors; the physical references (memcpy, zstd-1) still run
    assert {m["kind"] for m in data["measurements"]} == {"codec", "reference"}
    assert {m["codec"] for m in data["measurements"] if m["kind"] == "reference"} == {
        "memcpy",
        "zstd-1",
    }


def test_no_references_skips_memcpy_and_zstd1(tiny_corpus: Path):
    args = ["bench", "--corpus", str(tiny_corpus), "--codecs", "zstd", "--no-anchors"]
    res = runner.invoke(app, [*args, "--no-references", "--quick", "--json", "-"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert {m["kind"] for m in data["measurements"]} == {"codec"}
    assert data["meta"]["command"].endswith("--no-anchors --no-references --quick")


def test_help_explains_every_option():
    import re

    res = runner.invoke(app, ["bench", "--help"])
    assert res.exit_code == 0, res.output
    text = re.sub(r"\x1b\[[0-9;]*m", "", res.output)
    for opt in (
        "--corpus",
        "--codecs",
        "--no-anchors",
        "--no-references",
        "--target-similarity",
        "--json",
        "--report",
        "--quick",
        "--apex",
        "--solution",
    ):
        assert opt in text, opt
    assert "memcpy" in text and "zstd-1" in text
    res = runner.invoke(app, ["corpus", "build", "--help"])
    text = re.sub(r"\x1b\[[0-9;]*m", "", res.output)
    assert "smollm2" in text and ".gguf" in text and "stress-case" in text


def test_report_directory(tiny_corpus: Path, tmp_path: Path):
    rdir = tmp_path / "rep"
    args = ["bench", "--corpus", str(tiny_corpus), "--codecs", "zstd,blockq:bits=4"]
    res = runner.invoke(app, [*args, "--quick", "--report", str(rdir)])
    assert res.exit_code == 0, res.output
    for name in ("report.md", "bench.json", "ratio_vs_similarity.png", "transfer_time.png"):
        assert (rdir / name).is_file(), name


def test_default_corpus_is_used_without_corpus(tiny_corpus: Path, monkeypatch: pytest.MonkeyPatch):
    import swarmpress.corpus.build as build

    monkeypatch.setattr(build, "default_corpus", lambda *a, **k: tiny_corpus)
    res = runner.invoke(
        app, ["bench", "--codecs", "zstd", "--no-anchors", "--quick", "--json", "-"]
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["meta"]["corpus"]["root"] == str(tiny_corpus)


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--codecs", "nope"], "unknown codec"),
        (["--codecs", "blockq:bits"], "expected name=value"),
        (["--codecs", "blockq:bits=99"], "bits"),
        (["--target-similarity", "1.5"], "--target-similarity"),
    ],
)
def test_bad_codec_or_option_exits_2_with_one_line(tiny_corpus: Path, extra, needle):
    res = runner.invoke(app, ["bench", "--corpus", str(tiny_corpus), *extra])
    assert res.exit_code == 2
    assert needle in _one_line_error(res)


def test_missing_or_malformed_corpus_exits_2_with_one_line(tmp_path: Path):
    res = runner.invoke(app, ["bench", "--corpus", str(tmp_path / "missing")])
    assert res.exit_code == 2
    assert "does not exist" in _one_line_error(res)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "manifest.json").write_text("{not json")
    res = runner.invoke(app, ["bench", "--corpus", str(bad)])
    assert res.exit_code == 2
    assert "not valid JSON" in _one_line_error(res)


def test_lossless_failure_exits_1(tiny_corpus: Path, monkeypatch: pytest.MonkeyPatch):
    import swarmpress.bench.runner as R
    import swarmpress.bench.specs as S
    from tests.bench.test_bench_runner import LiarCodec

    real = S.build_codec

    def build(spec: str):
        return LiarCodec() if spec == "liar" else real(spec)

    monkeypatch.setattr(S, "build_codec", build)
    monkeypatch.setattr(R, "build_codec", build)
    res = runner.invoke(
        app, ["bench", "--corpus", str(tiny_corpus), "--codecs", "liar", "--no-anchors", "--quick"]
    )
    assert res.exit_code == 1, res.output
    assert "LOSSLESS CHECK FAILED" in res.stderr


def test_unexpected_errors_exit_3_with_one_line(monkeypatch, capsys):
    import pytest

    import swarmpress.cli as cli

    def boom() -> None:
        raise RuntimeError("kaboom")

    monkeypatch.setattr(cli, "app", boom)
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code == 3
    err = capsys.readouterr().err
    assert "internal error" in err and "kaboom" in err and "Traceback" not in err
