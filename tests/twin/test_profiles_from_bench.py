"""`profiles.from_bench`: one model's bf16 bench means become the twin's codec profiles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from swarmpress.twin.profiles import DEFAULT_BENCH_MODEL, ProfileError, from_bench


def _agg(model: str | None, role: str, ratio: float, *, family: str = "model", **kw) -> dict:
    a = {
        "codec": kw.pop("codec", "zstd"),
        "kind": "codec",
        "lossless": True,
        "family": family,
        "role": role,
        "dtype": kw.pop("dtype", "bfloat16"),
        "n_errors": 0,
        "n_below_target": 0,
        "mean_ratio": ratio,
        "compress_mbps": 100.0,
        "decompress_mbps": 200.0,
    }
    if model is not None:
        a["model"] = model
    a.update(kw)
    return a


def _write(tmp_path: Path, aggs: list[dict]) -> Path:
    path = tmp_path / "bench.json"
    meta = {"machine": {"cpu": "test CPU", "date": "today"}}
    path.write_text(json.dumps({"meta": meta, "aggregates": aggs}))
    return path


@pytest.fixture
def bench(tmp_path: Path) -> Path:
    aggs = []
    for model, family, base in (
        ("all-MiniLM-L6-v2", "model", 0.70),
        ("SmolLM2-135M-Instruct", "model", 0.60),
        ("synthetic-llama-like", "synthetic", 0.50),
    ):
        aggs += [
            _agg(model, "activation", base, family=family),
            _agg(model, "gradient", base + 0.05, family=family),
            _agg(model, "activation", 0.9, family=family, dtype="float32"),
        ]
    return _write(tmp_path, aggs)


def test_default_is_smollm2(bench: Path):
    assert DEFAULT_BENCH_MODEL == "SmolLM2-135M-Instruct"
    p = from_bench(bench)["profiles"]["zstd"]
    assert p["activation"]["ratio"] == 0.60 and p["gradient"]["ratio"] == 0.65
    assert p["weight_delta"] == p["gradient"]
    assert p["activation"]["compress_bps"] == 100e6
    assert "SmolLM2-135M-Instruct" in p["source"] and "test CPU" in p["source"]


@pytest.mark.parametrize(
    "model, ratio",
    [
        ("all-MiniLM-L6-v2", 0.70),
        ("all-minilm", 0.70),
        ("minilm", 0.70),
        ("smollm2", 0.60),
        ("synth", 0.50),
    ],
)
def test_model_by_name_or_unique_prefix(bench: Path, model: str, ratio: float):
    assert from_bench(bench, model)["profiles"]["zstd"]["activation"]["ratio"] == ratio


def test_unknown_or_ambiguous_model_raises(bench: Path, tmp_path: Path):
    with pytest.raises(ProfileError, match=r"not in it.*SmolLM2-135M-Instruct"):
        from_bench(bench, "gpt2")
    two = _write(
        tmp_path, [_agg("SmolLM2-135M", "activation", 0.6), _agg("SmolLM2-360M", "gradient", 0.6)]
    )
    with pytest.raises(ProfileError, match="ambiguous"):
        from_bench(two, "smollm2")


def test_codecs_missing_the_target_are_left_out(tmp_path: Path):
    aggs = [
        _agg(DEFAULT_BENCH_MODEL, "activation", 0.4, codec="lossy", lossless=False),
        _agg(DEFAULT_BENCH_MODEL, "gradient", 0.4, codec="lossy", lossless=False, n_below_target=1),
        _agg(DEFAULT_BENCH_MODEL, "activation", 0.6),
        _agg(DEFAULT_BENCH_MODEL, "gradient", 0.6),
    ]
    assert set(from_bench(_write(tmp_path, aggs))["profiles"]) == {"zstd"}


def test_old_bench_json_without_models_pools_the_family(tmp_path: Path):
    aggs = [
        _agg(None, "activation", 0.7),
        _agg(None, "gradient", 0.75),
        _agg(None, "activation", 0.2, family="synthetic", codec="other"),
        _agg(None, "gradient", 0.2, family="synthetic", codec="other"),
    ]
    out = from_bench(_write(tmp_path, aggs), "anything")["profiles"]
    assert set(out) == {"zstd"} and out["zstd"]["activation"]["ratio"] == 0.7
    assert "pooled" in out["zstd"]["source"]
