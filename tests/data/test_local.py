"""Local sources: text files as paragraph blocks, JSONL lines, folders, the embedded text;
bad lines reported with file and line and skipped."""

import json

import pytest

from swarmpress.data.collect import collect
from swarmpress.data.sources.local import SourceError, read_local
from swarmpress.data.store import Store


def test_pydoc_is_the_default():
    items = list(read_local(None))
    assert len(items) > 50 and all(err is None for _, err in items)
    r = items[0][0]
    assert r.uri.startswith("pydoc://topics/") and r.label == "pydoc" and r.content["text"]


def test_text_file_blocks(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("\n\n".join(f"paragraph {i} " + "word " * 200 for i in range(12)))
    recs = [r for r, _ in read_local(f)]
    assert len(recs) > 1 and all(len(r.content["text"]) <= 4096 + 1200 for r in recs)
    assert "paragraph 0" in recs[0].content["text"]
    assert len({r.uri for r in recs}) == len(recs)


def test_jsonl_good_and_bad_lines(tmp_path):
    f = tmp_path / "posts.jsonl"
    lines = [
        json.dumps({"text": "plain line", "author": "ann", "label": "#AI"}),
        "{not json",
        json.dumps([1, 2]),
        json.dumps({"title": "no text"}),
        json.dumps({"text": "bad time", "datetime": "tomorrow"}),
        json.dumps({"uri": "https://r/1", "datetime": "2026-01-01T00:00:00Z",
                    "source": "reddit", "label": "r/x", "content": {"text": "full"}}),
        "",
    ]  # fmt: skip
    f.write_text("\n".join(lines))
    items = list(read_local(f))
    good = [r for r, _ in items if r]
    errors = [e for _, e in items if e]
    assert [r.content["text"] for r in good] == ["plain line", "full"]
    assert good[0].label == "#ai" and good[1].source == "reddit"
    assert [e.split(": ", 1)[0] for e in errors] == [f"{f}:{n}" for n in (2, 3, 4, 5)]
    assert "datetime" in errors[-1]


def test_folder_and_collect_twice(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.md").write_text("hello\n\nworld")
    (tmp_path / "c.jsonl").write_text('{"text": "x"}\n{broken\n')
    (tmp_path / "ignored.bin").write_bytes(b"\x00")
    s = Store(str(tmp_path / "s.db"))
    one = collect(s, read_local(tmp_path), "local")
    assert (one["read"], one["inserted"], one["skipped"]) == (3, 2, 1)
    two = collect(s, read_local(tmp_path), "local")
    assert (two["inserted"], two["duplicates"]) == (0, 2)
    assert two["records_in_store"] == 2


def test_unusable_paths(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        list(read_local(tmp_path / "missing"))
    (tmp_path / "x.bin").write_bytes(b"1")
    with pytest.raises(SourceError, match=r"no \.txt"):
        list(read_local(tmp_path))


def test_a_bad_block_skips_the_block_not_the_file(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("first " * 900 + "\n\nbad \x00 block\n\n" + "last " * 900)
    items = list(read_local(f))
    good = [r.content["text"] for r, _ in items if r]
    assert len(good) == 2 and good[0].startswith("first") and good[1].startswith("last")
    errs = [e for _, e in items if e]
    assert len(errs) == 1 and "NUL" in errs[0] and str(f) in errs[0]
