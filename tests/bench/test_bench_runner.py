"""The runner measures every field for every (tensor, codec) pair and flags lossless liars."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from swarmpress.bench import runner as R
from swarmpress.bench.anchors import ANCHOR_NAMES, LOSSY_ANCHOR_NAMES
from swarmpress.bench.references import REFERENCE_NAMES
from swarmpress.bench.results import BenchResult
from swarmpress.codecs import Codec, Role
from swarmpress.codecs.core.tensors import DType
from swarmpress.corpus.store import CorpusError, load_corpus

NUMERIC = (
    "ratio",
    "bits_per_value",
    "similarity",
    "cosine",
    "rel_l2",
    "max_abs_error",
    "compress_s",
    "decompress_s",
    "compress_mbps",
    "decompress_mbps",
    "break_even_bps",
    "lossless_score",
    "lossy_score",
)


def test_every_pair_has_every_field(quick_result: BenchResult, tiny_corpus: Path):
    r = quick_result
    corpus = load_corpus(tiny_corpus)
    specs = R.default_codec_specs()
    anchors = [n for n in ANCHOR_NAMES if n not in r.meta["anchors_skipped"]]
    assert len(r.tensors) == len(corpus.entries)
    n_each = len(specs) + len(anchors) + len(REFERENCE_NAMES)
    assert len(r.measurements) == len(corpus.entries) * n_each
    for m in r.measurements:
        assert m.ok, m.error
        for f in NUMERIC:
            v = getattr(m, f)
            assert isinstance(v, float) and not math.isnan(v), (m.codec, f)
        assert m.compressed_bytes > 0 and m.repeats >= 1
        assert m.ratio == pytest.approx(m.compressed_bytes / m.original_bytes)
        if m.lossless:
            assert m.bit_exact is True and m.similarity == pytest.approx(1.0)
            assert m.max_abs_error == 0.0
            assert m.meets_target is None
        else:
            assert m.bit_exact is None and m.meets_target is not None
        if m.codec in LOSSY_ANCHOR_NAMES:
            assert m.meets_target and m.tuning_evals >= 1
            assert any(ch.isdigit() for ch in m.setting)
    assert r.ok and not r.lossless_failures
    assert len(r.bounds) == len(corpus.entries)
    assert all(b.rd is not None and b.rd.bits_per_value > 0 for b in r.bounds)
    assert {p.method for p in r.sweep} >= {"blockq", "gaussian-rd-bound"}
    lossy_anchors = {n for n in LOSSY_ANCHOR_NAMES if n in anchors}
    assert {p.method for p in r.sweep} >= lossy_anchors
    assert set(r.meta["sweep_tensors"]) == {"activation", "gradient"}
    assert r.meta["machine"]["cpu"] and r.meta["machine"]["cores_usable"] >= 1


def test_aggregates_group_codec_family_model_role_dtype(quick_result: BenchResult):
    r = quick_result
    keys = {(a.codec, a.family, a.model, a.role, a.dtype) for a in r.aggregates}
    assert len(keys) == len(r.aggregates)
    assert r.aggregates[0].dtype == "bfloat16"  # bf16 groups first
    zstd = [a for a in r.aggregates if a.codec == "zstd"]
    assert len(zstd) == 8 and all(a.bit_exact and a.n_tensors == 1 for a in zstd)
    assert len(r.bound_aggregates) == 8
    assert all(0 < b.entropy_ratio <= 1 and b.rd_ratio > 0 for b in r.bound_aggregates)


def test_result_is_strict_json(quick_result: BenchResult, tmp_path: Path):
    def no_constants(name: str):
        raise ValueError(f"non-standard JSON constant {name}")

    path = quick_result.write_json(tmp_path / "out" / "bench.json")
    data = json.loads(path.read_text(), parse_constant=no_constants)
    assert {"meta", "tensors", "measurements", "bounds", "sweep", "aggregates"} <= set(data)
    m = data["measurements"][0]
    assert {"ratio", "similarity", "psnr", "break_even_bps", "bit_exact"} <= set(m)
    assert data["bounds"][0]["entropy"]["fields"][1]["name"] == "exponent"


class LiarCodec(Codec):
    """Claims to be lossless but flips the lowest bit of the first value."""

    codec_id = "liar-test"
    summary = "test double"
    lossless = True

    def encode_array(self, arr: np.ndarray, role: Role) -> bytes:
        return arr.tobytes()

    def decode_array(self, payload, dtype: DType, shape: tuple[int, ...]) -> np.ndarray:
        out = np.frombuffer(bytes(payload), dtype=dtype.numpy).copy()
        bits = out.view(np.uint16 if dtype.itemsize == 2 else np.uint32)
        bits[0] ^= 1
        return out.reshape(shape)


class CrashCodec(LiarCodec):
    codec_id = "crash-test"

    def encode_array(self, arr: np.ndarray, role: Role) -> bytes:
        raise RuntimeError("boom")


@pytest.fixture
def fake_codecs(monkeypatch: pytest.MonkeyPatch):
    real = R.build_codec

    def build(spec: str) -> Codec:
        return {"liar": LiarCodec, "crash": CrashCodec}.get(spec, lambda: real(spec))()

    monkeypatch.setattr(R, "build_codec", build)
    monkeypatch.setattr("swarmpress.bench.specs.build_codec", build)


@pytest.mark.usefixtures("fake_codecs")
def test_lossless_codec_that_is_not_bit_exact_is_flagged(tiny_corpus: Path):
    r = R.run_bench(tiny_corpus, ["zstd", "liar", "crash"], anchors=False, quick=True, sweep=False)
    assert not r.ok
    liars = [f for f in r.lossless_failures if "liar" in f]
    assert len(liars) == len(r.tensors) and all("NOT bit-exact" in f for f in liars)
    crashes = [f for f in r.lossless_failures if "crash" in f]
    assert len(crashes) == len(r.tensors) and all("boom" in f for f in crashes)
    assert not any("zstd" in f for f in r.lossless_failures)
    liar = [m for m in r.measurements if m.codec == "liar"]
    assert all(m.bit_exact is False and m.lossless_score == 0.0 for m in liar)
    assert all(a.bit_exact is False for a in r.aggregates if a.codec == "liar")
    assert r.meta["anchors_skipped"] and not r.sweep


def test_progress_reaches_total(tiny_corpus: Path):
    calls: list[tuple[int, int, str]] = []
    R.run_bench(
        tiny_corpus, ["zstd"], anchors=False, quick=True, progress=lambda *a: calls.append(a)
    )
    assert calls and calls[-1][0] == calls[-1][1]
    assert [c[0] for c in calls] == list(range(1, len(calls) + 1))


def test_bad_inputs_raise_before_measuring(tiny_corpus: Path, tmp_path: Path):
    from swarmpress.codecs import CodecError

    with pytest.raises(CodecError):
        R.run_bench(tiny_corpus, ["nope"])
    with pytest.raises(CorpusError):
        R.run_bench(tmp_path / "missing")
    with pytest.raises(ValueError):
        R.run_bench(tiny_corpus, ["zstd"], target_similarity=1.5)


def test_selection_helpers(tiny_corpus: Path):
    corpus = load_corpus(tiny_corpus)
    assert len(R.select_entries(corpus, quick=False)) == len(corpus.entries)
    picks = R.sweep_entries(corpus.entries)
    assert set(picks) == {"activation", "gradient"}
    assert all(e.dtype == "bfloat16" and e.role == role for role, e in picks.items())
    assert R.repeats_for(1000) > R.repeats_for(100 << 20) == 1
    assert R.repeats_for(1000, quick=True) == 1
    out, best, n = R.best_time(lambda: 7, 3)
    assert out == 7 and best >= 0 and n == 3


def test_references_run_on_every_tensor(quick_result: BenchResult):
    r = quick_result
    refs = [m for m in r.measurements if m.kind == "reference"]
    assert {m.codec for m in refs} == set(REFERENCE_NAMES) == {"memcpy", "zstd-1"}
    assert len(refs) == len(REFERENCE_NAMES) * len(r.tensors)
    for m in refs:
        assert m.ok and m.bit_exact and m.setting and m.compress_mbps > 0
        assert m.decompress_mbps > 0
    memcpy = [m for m in refs if m.codec == "memcpy"]
    assert all(m.ratio == 1.0 and m.break_even_bps == 0.0 for m in memcpy)
    assert set(r.meta["references"]) == set(REFERENCE_NAMES)
    kinds = {a.codec: a.kind for a in r.aggregates}
    assert kinds["memcpy"] == kinds["zstd-1"] == "reference"
    # references come after every codec and anchor in each group
    first = r.aggregates[: len({a.codec for a in r.aggregates})]
    assert [a.kind for a in first][-2:] == ["reference", "reference"]


def test_break_even_is_the_documented_formula(quick_result: BenchResult):
    for m in quick_result.measurements:
        if not m.ok:  # a failing codec is another test's business
            continue
        t = m.compress_s + m.decompress_s
        want = max(0.0, (1.0 - m.ratio) * m.original_bytes / t)
        assert m.break_even_bps == pytest.approx(want, rel=1e-9), m.codec
    for a in quick_result.aggregates:
        if a.n_errors < a.n_tensors:
            assert not math.isnan(a.break_even_bps), a.codec


def test_timed_sections_run_with_one_blas_thread(monkeypatch: pytest.MonkeyPatch, tiny_corpus):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from swarmpress.bench import threads

    with threads.one_thread():
        pools = threadpoolctl.threadpool_info()
        assert pools and all(p["num_threads"] == 1 for p in pools)
    assert "threadpoolctl" in threads.describe()
    seen: list[int] = []
    real = R.best_time

    def spy(*args, **kwargs):  # every timed section sees the BLAS pools at one thread
        seen.append(max(p["num_threads"] for p in threadpoolctl.threadpool_info()))
        return real(*args, **kwargs)

    monkeypatch.setattr(R, "best_time", spy)
    r = R.run_bench(tiny_corpus, ["zstd"], anchors=False, quick=True, sweep=False)
    assert seen and set(seen) == {1}
    assert "1 thread" in r.meta["threads"]
