"""Apex export: flat little-endian bf16 .bin files listed in manifest.csv."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from swarmpress.codecs.core.tensors import BF16
from swarmpress.corpus.apex import CSV_COLUMNS, export_apex
from swarmpress.corpus.build import build_corpus
from swarmpress.corpus.store import CorpusError, load_corpus
from swarmpress.corpus.synthetic import SyntheticConfig


def _rows(csv_path: Path) -> list[dict[str, str]]:
    with csv_path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_export_sizes_and_manifest(minilm_corpus: Path, tmp_path: Path) -> None:
    csv_path = export_apex(minilm_corpus, tmp_path / "apex")
    rows = _rows(csv_path)
    with csv_path.open() as f:
        assert f.readline().strip().split(",") == list(CSV_COLUMNS)
    corpus = load_corpus(minilm_corpus)
    bf16 = [e for e in corpus.entries if e.dtype == "bfloat16"]
    assert len(rows) == len(bf16)  # float32 twins are skipped
    assert {r["original_dtype"] for r in rows} == {"bfloat16"}
    listed = {r["file"] for r in rows}
    assert listed == {p.name for p in (tmp_path / "apex").glob("*.bin")}
    by_name = {e.name: e for e in corpus.entries}
    for r in rows:
        path = tmp_path / "apex" / r["file"]
        assert path.stat().st_size == 2 * int(r["numel"])
        e = by_name[r["name"]]
        assert int(r["numel"]) == e.numel and r["role"] == e.role and int(r["layer"]) == e.layer
        flat = np.frombuffer(path.read_bytes(), dtype="<u2")
        np.testing.assert_array_equal(flat, corpus.load(e).reshape(-1).view(np.uint16))


def test_float32_without_twin_is_converted(tmp_path: Path) -> None:
    cfg = SyntheticConfig(hidden=64, seq=16, dtypes=("float32",))
    corpus_dir = build_corpus(tmp_path / "c", model=None, synthetic_config=cfg)
    rows = _rows(export_apex(corpus_dir, tmp_path / "apex"))
    assert len(rows) == 2 and {r["original_dtype"] for r in rows} == {"float32"}
    corpus = load_corpus(corpus_dir)
    for r in rows:
        (e,) = [e for e in corpus.entries if e.name == r["name"]]
        data = (tmp_path / "apex" / r["file"]).read_bytes()
        assert len(data) == 2 * e.numel == 2 * 16 * 64
        expect = corpus.load(e).astype(BF16).reshape(-1).view(np.uint16)
        np.testing.assert_array_equal(np.frombuffer(data, dtype="<u2"), expect)


def test_export_errors(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="does not exist"):
        export_apex(tmp_path / "missing", tmp_path / "apex")
    (tmp_path / "file").write_text("x")
    cfg = SyntheticConfig(hidden=64, seq=16)
    corpus_dir = build_corpus(tmp_path / "c", model=None, synthetic_config=cfg)
    with pytest.raises(CorpusError, match="not a directory"):
        export_apex(corpus_dir, tmp_path / "file")
