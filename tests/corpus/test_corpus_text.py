"""Text sources: the stdlib default, local files and directories, deterministic chunking."""

from __future__ import annotations

from pathlib import Path

import pytest

from swarmpress.corpus.store import CorpusError
from swarmpress.corpus.text import DEFAULT_TEXT, chunk_text, load_text


def test_default_source_is_pydoc_topics() -> None:
    src = load_text()
    assert src.label == DEFAULT_TEXT and src.chars > 100_000
    assert load_text(DEFAULT_TEXT) == src


def test_chunks_are_deterministic_and_sized() -> None:
    src = load_text()
    a, b = chunk_text(src, 2048), chunk_text(src, 2048)
    assert a == b and len(a) > 100
    assert all(1024 <= len(c) <= 2048 for c in a)


def test_local_file_and_directory(tmp_path: Path) -> None:
    (tmp_path / "b.txt").write_text("second file " * 50)
    (tmp_path / "a.txt").write_text("first file " * 50)
    (tmp_path / "skip.md").write_text("not text")
    src = load_text(tmp_path)
    assert len(src.documents) == 2 and src.documents[0].startswith("first")
    one = load_text(tmp_path / "a.txt")
    assert one.documents == (src.documents[0],)
    assert chunk_text(one, 100)[0].startswith("first file")


def test_bad_text_sources(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="does not exist"):
        load_text(tmp_path / "missing.txt")
    with pytest.raises(CorpusError, match=r"no \.txt files"):
        load_text(tmp_path)
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(CorpusError, match="not UTF-8"):
        load_text(tmp_path / "bin.txt")
