"""`swarmpress bench --apex`: solution files on an Apex-layout directory, scored the Apex way."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from swarmpress.bench import apex as A
from swarmpress.cli import app
from tests.bench.conftest import make_corpus

runner = CliRunner(env={"COLUMNS": "1000"})


@pytest.fixture(scope="module")
def apex_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Apex export of a small corpus: 4 bf16 tensors of 256 x 384 values."""
    from swarmpress.corpus.apex import export_apex

    root = tmp_path_factory.mktemp("apex")
    corpus = make_corpus(root / "corpus", rows=256, hidden=384, seed=3)
    export_apex(corpus, root / "apex")
    return root / "apex"


@pytest.fixture(scope="module")
def solutions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from swarmpress.arena.export import export_solution

    d = tmp_path_factory.mktemp("sols")
    return {c: export_solution(c, d / f"{c}.py") for c in ("lossless", "lossy")}


@pytest.fixture(scope="module")
def result(apex_dir: Path, solutions: dict[str, Path]) -> A.ApexResult:
    return A.run_apex_bench(apex_dir, [solutions["lossless"], solutions["lossy"]], quick=True)


def _one_line_error(res) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error:")
    return lines[0]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------- loading
def test_load_apex_dir_reads_the_manifest(apex_dir: Path):
    files = A.load_apex_dir(apex_dir)
    assert len(files) == 4
    assert {f.role for f in files} == {"activation", "gradient"}
    assert all(f.nbytes == 2 * f.numel == 2 * 256 * 384 for f in files)


def test_load_apex_dir_without_manifest(tmp_path: Path):
    (tmp_path / "a.bin").write_bytes(bytes(64))
    (tmp_path / "b.bin").write_bytes(bytes(32))
    files = A.load_apex_dir(tmp_path)
    assert [(f.file, f.numel) for f in files] == [("a.bin", 32), ("b.bin", 16)]


@pytest.mark.parametrize(
    "setup, needle",
    [
        (lambda d: None, "has no .bin files"),
        (lambda d: (d / "x.bin").write_bytes(b"abc"), "not a whole number of bf16"),
        (lambda d: (d / "manifest.csv").write_text("file,numel\nx.bin,4\n"), "x.bin is missing"),
        (
            lambda d: (
                (d / "x.bin").write_bytes(bytes(6)),
                _write(d / "manifest.csv", "file,numel\nx.bin,4\n"),
            ),
            "manifest says 4 bf16 values",
        ),
        (lambda d: (d / "manifest.csv").write_text("file,numel\n../x.bin,4\n"), "outside"),
        (lambda d: (d / "manifest.csv").write_text("file,numel\nx.bin,many\n"), "numel"),
    ],
)
def test_load_apex_dir_rejects_bad_layouts(tmp_path: Path, setup, needle):
    setup(tmp_path)
    with pytest.raises(A.ApexError, match=needle):
        A.load_apex_dir(tmp_path)


def test_load_apex_dir_missing(tmp_path: Path):
    with pytest.raises(A.ApexError, match="does not exist"):
        A.load_apex_dir(tmp_path / "nope")


@pytest.mark.parametrize(
    "text, needle",
    [
        ("raise RuntimeError('boom')\n", "cannot import solution"),
        ("import sys\nsys.exit(3)\n", "cannot import solution"),
        ("def compress_data(d):\n    return d\n", "must define compress_data"),
        ("def compress_data(:\n", "SyntaxError"),
    ],
)
def test_load_solution_rejects_bad_files(tmp_path: Path, text, needle):
    with pytest.raises(A.ApexError, match=needle):
        A.load_solution(_write(tmp_path / "s.py", text))
    with pytest.raises(A.ApexError, match="does not exist"):
        A.load_solution(tmp_path / "missing.py")


# ----------------------------------------------------------------------------- scores
def test_both_solutions_beat_zstd_on_their_track(result: A.ApexResult):
    base = result.summary("zstd-3")
    lossless = result.summary("lossless")
    lossy = result.summary("lossy")
    assert base.bit_exact and lossless.bit_exact and lossless.n_errors == 0
    assert lossless.mean_ratio < base.mean_ratio - 0.05
    assert lossless.mean_lossless_score > base.mean_lossless_score
    assert lossy.n_errors == 0 and lossy.min_similarity > 0.99
    assert lossy.mean_lossy_score > base.mean_lossy_score + 0.2
    assert lossy.mean_lossless_score == 0.0  # not bit-exact: no lossless-track score


def test_scores_follow_the_apex_formulas(result: A.ApexResult):
    from swarmpress.codecs.core.metrics import lossless_score, lossy_score

    assert len(result.measurements) == 4 * 3
    for m in result.measurements:
        assert m.error is None
        assert math.isclose(m.ratio, m.compressed_bytes / m.original_bytes)
        expect = lossless_score(m.ratio, m.compress_s + m.decompress_s) if m.bit_exact else 0.0
        assert math.isclose(m.lossless_score, expect)
        assert math.isclose(m.lossy_score, lossy_score(m.ratio, m.similarity))


def test_json_and_report(result: A.ApexResult, tmp_path: Path):
    data = json.loads(json.dumps(result.to_json(), allow_nan=False))
    assert {s["solution"] for s in data["summaries"]} == {"zstd-3", "lossless", "lossy"}
    assert data["meta"]["machine"]["cores_usable"] >= 1
    path = A.write_apex_report(result, tmp_path / "rep")
    text = path.read_text()
    assert "## Means over every file" in text and "| mean | lossy |" in text
    assert (tmp_path / "rep" / "apex.json").is_file()


# ----------------------------------------------------------------------------- failures
BROKEN = {
    "raises": "def compress_data(d):\n    raise RuntimeError('nope')\n\n"
    "def decompress_data(d):\n    return d\n",
    "wrong_type": "def compress_data(d):\n    return 'text'\n\n"
    "def decompress_data(d):\n    return d\n",
    "short": "def compress_data(d):\n    return d\n\ndef decompress_data(d):\n    return d[:-2]\n",
    "noisy": "import dataclasses\n\n@dataclasses.dataclass\nclass S:\n    x: int = 0\n\n"
    "print('hello')\n\ndef compress_data(d):\n    print('x')\n    return bytes(d)\n\n"
    "def decompress_data(d):\n    return bytearray(d)\n",
}


def test_broken_solutions_are_recorded_not_fatal(apex_dir: Path, tmp_path: Path):
    paths = [_write(tmp_path / f"{k}.py", v) for k, v in BROKEN.items()]
    res = A.run_apex_bench(apex_dir, paths, quick=True, baseline=False)
    by = {s.solution: s for s in res.summaries}
    for name, needle in (("raises", "RuntimeError"), ("wrong_type", "not bytes"), ("short", "")):
        assert by[name].n_errors == 4 and by[name].mean_lossy_score == 0.0
        errors = {m.error for m in res.measurements if m.solution == name}
        assert all(needle in e for e in errors), errors
    assert by["noisy"].n_errors == 0 and by["noisy"].bit_exact  # identity: ratio 1
    assert by["noisy"].mean_lossless_score == 0.0


def test_duplicate_solution_names_are_kept_apart(apex_dir: Path, tmp_path: Path):
    paths = []
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        paths.append(_write(tmp_path / sub / "s.py", BROKEN["noisy"]))
    res = A.run_apex_bench(apex_dir, paths, quick=True, baseline=False)
    assert [s.solution for s in res.summaries] == ["s", "s-2"]


# ----------------------------------------------------------------------------- CLI
def test_cli_json_and_report(apex_dir: Path, solutions: dict[str, Path], tmp_path: Path):
    args = ["bench", "--apex", str(apex_dir), "--solution", str(solutions["lossless"])]
    res = runner.invoke(app, [*args, "--quick", "--json", "-"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert [s["solution"] for s in data["summaries"]] == ["zstd-3", "lossless"]
    assert data["meta"]["command"].startswith("swarmpress bench --apex")
    rdir = tmp_path / "rep"
    res = runner.invoke(app, [*args, "--quick", "--report", str(rdir)])
    assert res.exit_code == 0, res.output
    assert "lossless" in res.stdout and "zstd-3" in res.stdout and "mean" in res.stdout
    assert (rdir / "report.md").is_file() and (rdir / "apex.json").is_file()


def test_cli_failing_solution_still_exits_0(apex_dir: Path, tmp_path: Path):
    bad = _write(tmp_path / "bad.py", BROKEN["raises"])
    res = runner.invoke(app, ["bench", "--apex", str(apex_dir), "--solution", str(bad), "--quick"])
    assert res.exit_code == 0, res.output
    assert "FAILED" in res.stdout and "failed on 4 of 4 files" in res.stderr


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--apex", "{missing}"], "does not exist"),
        (["--apex", "{apex}", "--solution", "{missing}"], "does not exist"),
        (["--solution", "{apex}/x.py"], "--solution needs --apex"),
        (["--apex", "{apex}", "--codecs", "zstd"], "--codecs does not apply"),
        (["--apex", "{apex}", "--corpus", "{apex}"], "--corpus does not apply"),
        (["--apex", "{apex}", "--solution", "{bad}"], "cannot import solution"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(apex_dir: Path, tmp_path: Path, args, needle):
    bad = _write(tmp_path / "bad.py", "import nonexistent_module_xyz\n")
    fill = {"missing": str(tmp_path / "missing"), "apex": str(apex_dir), "bad": str(bad)}
    res = runner.invoke(app, ["bench", *(a.format(**fill) for a in args)])
    assert res.exit_code == 2, res.output
    assert needle in _one_line_error(res)
