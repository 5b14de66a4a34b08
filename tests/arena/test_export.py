"""Apex solution export: standalone files under 20 KB that round-trip in a bare environment.

The subprocess check runs each exported file under `python -I` with an import blocker
that refuses every module outside the standard library and the Apex environment (numpy,
torch, zstandard, brotli, lz4), so a stray `import swarmpress` or `import constriction`
(both installed here) fails the test.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import ml_dtypes
import numpy as np
import pytest
import zstandard
from typer.testing import CliRunner

from swarmpress.arena import export as E
from swarmpress.cli import app
from swarmpress.codecs import similarity

runner = CliRunner(env={"COLUMNS": "1000"})
APEX_ENV = {"numpy", "torch", "zstandard", "brotli", "lz4"}
SPECIALS = np.array(
    [0x0000, 0x8000, 0x7F80, 0xFF80, 0x7FC0, 0xFFC1, 0x7F81, 0x0001, 0x8001, 0x007F, 0x7F7F],
    dtype="<u2",
)


# ----------------------------------------------------------------------------- data
def bf16_bytes(x: np.ndarray) -> bytes:
    return np.asarray(x, dtype=np.float32).astype(ml_dtypes.bfloat16).view("<u2").tobytes()


def to_f64(data: bytes) -> np.ndarray:
    u = np.frombuffer(data, dtype="<u2", count=len(data) // 2)
    return (u.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


def activations(rows: int = 256, width: int = 384, seed: int = 0) -> np.ndarray:
    """Low rank plus noise with per-channel scales and a few massive channels."""
    rng = np.random.default_rng(seed)
    scale = np.exp(0.6 * rng.standard_normal(width))
    scale[rng.choice(width, 3, replace=False)] *= 30
    low = rng.standard_normal((rows, 8)) @ rng.standard_normal((8, width))
    return ((low + rng.standard_normal((rows, width))) * scale).astype(np.float32)


def random_bits(n: int, seed: int = 1) -> bytes:
    rng = np.random.default_rng(seed)
    u = rng.integers(0, 1 << 16, n, dtype=np.uint16).astype("<u2")
    u[: SPECIALS.size] = SPECIALS
    return u.tobytes()


def lossless_inputs() -> dict[str, bytes]:
    real = bf16_bytes(activations(64, 384))
    return {
        "empty": b"",
        "one-byte": b"\x7f",
        "one-value": b"\x80\x3f",
        "three-bytes": b"\x01\x02\x03",
        "specials": SPECIALS.tobytes(),
        "random-bits": random_bits(50_001),
        "random-bits-odd": random_bits(4097) + b"\xa5",
        "zeros": bytes(8192),
        "real": real,
        "real-odd": real + b"\x17",
        "real-nan": real[:1000] + SPECIALS.tobytes() + real[1000 + SPECIALS.nbytes :],
    }


def load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"sol_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("solutions")
    return {c: E.export_solution(c, d / f"{c}.py") for c in E.supported_codecs()}


# ----------------------------------------------------------------------------- files
def test_supported_codecs():
    assert E.supported_codecs() == ["lossless", "lossy", "zstd"]


@pytest.mark.parametrize("codec", ["lossless", "lossy", "zstd"])
def test_exported_file_is_small_and_imports_only_the_apex_environment(exported, codec):
    path = exported[codec]
    assert path.stat().st_size < E.MAX_SOLUTION_BYTES <= 20_480
    tree = ast.parse(path.read_text())
    tops = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            tops |= {a.name.partition(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import in a standalone file"
            tops.add(node.module.partition(".")[0])
    assert tops <= set(sys.stdlib_module_names) | APEX_ENV, tops
    assert not tops & {"swarmpress", "constriction", "scipy", "ml_dtypes"}
    names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert {"compress_data", "decompress_data"} <= names


def test_templates_share_the_width_detector():
    lossless = load(Path(E._TEMPLATES / "lossless_solution.py"))
    lossy = load(Path(E._TEMPLATES / "lossy_solution.py"))
    assert inspect.getsource(lossless.detect_width) == inspect.getsource(lossy.detect_width)
    assert lossless.WIDTHS == lossy.WIDTHS


def test_options_are_substituted(tmp_path: Path):
    path = E.export_solution("lossy", tmp_path / "s.py", target=0.995, steps="2048")
    module = load(path)
    assert module.CONFIG["target"] == 0.995 and module.CONFIG["steps"] == 2048
    assert E.solution_config("lossless", detect="false")["detect"] is False
    assert E.default_config("zstd") == {"level": 3}


@pytest.mark.parametrize(
    "codec, options, needle",
    [
        ("nope", {}, "supported: lossless, lossy, zstd"),
        ("lossy", {"bogus": 1}, "unknown option 'bogus'"),
        ("lossy", {"target": 0.98}, "above 0.99"),
        ("lossy", {"target": "high"}, "must be a float"),
        ("lossy", {"steps": 1.5}, "must be a int"),
        ("lossy", {"max_rank": -1}, "between 0 .no low-rank part. and 1024"),
        ("lossy", {"max_rank": 100000}, "between 0 .no low-rank part. and 1024"),
        ("lossless", {"detect": "maybe"}, "must be a bool"),
        ("zstd", {"level": 99}, "zstd level"),
    ],
)
def test_bad_codec_or_option(tmp_path: Path, codec, options, needle):
    with pytest.raises(E.ExportError, match=needle):
        E.export_solution(codec, tmp_path / "s.py", **options)
    assert not (tmp_path / "s.py").exists()


def test_size_limit_is_enforced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(E, "MAX_SOLUTION_BYTES", 1000)
    with pytest.raises(E.ExportError, match="over the Apex limit of 1000"):
        E.export_solution("lossy", tmp_path / "s.py")
    with pytest.raises(E.ExportError, match="is a directory"):
        monkeypatch.setattr(E, "MAX_SOLUTION_BYTES", 20_000)
        E.export_solution("zstd", tmp_path)


# ----------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("name", list(lossless_inputs()))
def test_lossless_is_bit_exact(exported, name):
    sol = load(exported["lossless"])
    data = lossless_inputs()[name]
    blob = sol.compress_data(data)
    assert isinstance(blob, bytes)
    assert sol.decompress_data(blob) == data


def test_lossless_beats_zstd_on_real_like_data(exported):
    sol = load(exported["lossless"])
    data = bf16_bytes(activations(512, 768))
    blob = sol.compress_data(data)
    assert sol.decompress_data(blob) == data
    assert len(blob) < 0.95 * len(zstandard.ZstdCompressor(level=3).compress(data))


@pytest.mark.parametrize("width", [384, 768, 2048])
def test_width_detection_finds_the_channel_axis(exported, width):
    x = activations(131072 // width, width, seed=width)
    for codec in ("lossless", "lossy"):
        sol = load(exported[codec])
        a = np.log2(np.abs(x.reshape(-1)) + 1e-30).astype(np.float32)
        assert sol.detect_width(a, 0, a.size, 65536) == width


@pytest.mark.parametrize("shape", [(256, 384), (64, 2048), (3001,)])
def test_lossy_meets_the_similarity_target(exported, shape):
    sol = load(exported["lossy"])
    x = activations(shape[0], shape[1]) if len(shape) == 2 else activations(8, 384)[0][:3001]
    if len(shape) == 1:
        x = np.random.default_rng(3).standard_normal(3001).astype(np.float32) * np.linspace(
            0.1, 3, 3001, dtype=np.float32
        )
    data = bf16_bytes(x)
    blob = sol.compress_data(data)
    out = sol.decompress_data(blob)
    assert len(out) == len(data)
    sim = similarity(to_f64(data), to_f64(out))
    assert 0.99 < sim < 1.0
    assert sim > sol.CONFIG["target"]
    assert len(blob) < 0.7 * len(zstandard.ZstdCompressor(level=3).compress(data))


@pytest.mark.parametrize("name", list(lossless_inputs()))
def test_lossy_falls_back_to_exact_when_it_must(exported, name):
    """Odd lengths, NaN/inf, zeros and tiny inputs take the lossless path (exact)."""
    sol = load(exported["lossy"])
    data = lossless_inputs()[name]
    out = sol.decompress_data(sol.compress_data(data))
    if name == "real":
        assert similarity(to_f64(data), to_f64(out)) > 0.99
    else:
        assert out == data


def test_lossy_handles_gradient_scale_and_constant_values(exported):
    sol = load(exported["lossy"])
    for x in (activations(128, 384) * 1e-6, np.full(4096, 3.25, np.float32)):
        data = bf16_bytes(x)
        out = sol.decompress_data(sol.compress_data(data))
        assert similarity(to_f64(data), to_f64(out)) > 0.99


def test_corrupt_streams_raise_value_error(exported):
    for codec in ("lossless", "lossy"):
        sol = load(exported[codec])
        blob = sol.compress_data(bf16_bytes(activations(32, 384)))
        for bad in (b"", b"\x00" * 3, b"Z" + blob[1:], blob[:20]):
            with pytest.raises(ValueError):
                sol.decompress_data(bad)


# ----------------------------------------------------------------------------- isolation
ISOLATED = textwrap.dedent(
    """
    import importlib.abc, importlib.util, json, pathlib, sys
    BEFORE = set(sys.modules)  # what site imported at startup (e.g. _distutils_hack)
    ALLOWED = set(sys.stdlib_module_names) | {"numpy", "torch", "zstandard", "brotli", "lz4"}

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] not in ALLOWED:
                raise ImportError(f"{name} is not installed in the Apex environment")
            return None

    sys.meta_path.insert(0, Blocker())
    for banned in ("swarmpress", "constriction"):
        try:
            __import__(banned)
        except ImportError:
            pass
        else:
            raise SystemExit(f"the blocker let {banned} through")
    sol_path, data_dir = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    spec = importlib.util.spec_from_file_location("solution", sol_path)
    sol = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sol)
    sizes = {}
    for f in sorted(data_dir.glob("*.in")):
        blob = sol.compress_data(f.read_bytes())
        f.with_suffix(".out").write_bytes(sol.decompress_data(blob))
        sizes[f.stem] = len(blob)
    new = set(sys.modules) - BEFORE - {"solution"}
    leaked = sorted(m for m in new if m.partition(".")[0] not in ALLOWED)
    print(json.dumps({"sizes": sizes, "leaked": leaked}))
    """
)


@pytest.mark.parametrize("codec", ["lossless", "lossy", "zstd"])
def test_solution_runs_without_swarmpress_or_constriction(exported, codec, tmp_path: Path):
    inputs = lossless_inputs()
    inputs["act"] = bf16_bytes(activations(128, 384))
    for name, data in inputs.items():
        (tmp_path / f"{name}.in").write_bytes(data)
    proc = subprocess.run(
        [sys.executable, "-I", "-c", ISOLATED, str(exported[codec]), str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["leaked"] == []
    assert set(report["sizes"]) == set(inputs)
    for name, data in inputs.items():
        out = (tmp_path / f"{name}.out").read_bytes()
        if codec == "lossy" and name in ("act", "real"):
            assert similarity(to_f64(data), to_f64(out)) > 0.99
        else:
            assert out == data, name


def test_blocker_catches_a_solution_that_imports_swarmpress(tmp_path: Path):
    bad = tmp_path / "bad.py"
    bad.write_text("import swarmpress\n\ndef compress_data(d):\n    return d\n")
    (tmp_path / "x.in").write_bytes(b"ab")
    proc = subprocess.run(
        [sys.executable, "-I", "-c", ISOLATED, str(bad), str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "not installed in the Apex environment" in proc.stderr


# ----------------------------------------------------------------------------- CLI
def _one_line_error(result) -> str:
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:")
    return lines[0]


def test_cli_export(tmp_path: Path):
    out = tmp_path / "sub" / "lossless.py"
    res = runner.invoke(app, ["arena", "export-solution", "--codec", "lossless", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert str(out) in res.stdout and "lossless" in res.stdout
    assert str(out.stat().st_size) in res.stdout
    args = ["arena", "export-solution", "--codec", "lossy", "--out", str(out), "--json"]
    res = runner.invoke(app, [*args, "--set", "target=0.995"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert info["codec"] == "lossy" and info["bytes"] == out.stat().st_size < 20_000
    assert info["config"]["target"] == 0.995
    assert load(out).CONFIG["target"] == 0.995


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--codec", "nope"], "supported: lossless, lossy, zstd"),
        (["--codec", "lossy", "--set", "target"], "NAME=VALUE"),
        (["--codec", "lossy", "--set", "target=2"], "target"),
        (["--codec", "lossy", "--set", "nope=1"], "unknown option"),
        (["--codec", "lossy", "--set", "max_rank=-1"], "max_rank=-1"),
    ],
)
def test_cli_errors_exit_2_with_one_line(tmp_path: Path, extra, needle):
    res = runner.invoke(app, ["arena", "export-solution", *extra, "--out", str(tmp_path / "s.py")])
    assert res.exit_code == 2
    assert needle in _one_line_error(res)
