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


# ---------------------------------------------------------------- hostile lines (issue 16)
HOSTILE = {
    "lone surrogate": b'{"text": "bad \\ud800 text"}',
    "lone low surrogate": b'{"text": "bad \\udc00"}',
    "lone surrogate in a key": b'{"text": "x", "scores": {"\\udfff": 1}}',
    "lone surrogate in the uri": b'{"text": "x", "uri": "u:\\ud800"}',
    "lone surrogate in the label": b'{"text": "x", "label": "#\\ud800"}',
    "lone surrogate in the author": b'{"text": "x", "author": "\\ud800"}',
    "lone surrogate in a full record": b'{"uri": "u:1", "datetime": 0, "source": "x", '
    b'"content": {"text": "\\ud800"}}',
    "surrogate as UTF-8 bytes": b'{"text": "\xed\xa0\x80"}',
    "invalid UTF-8": b'{"text": "\xff\xfe"}',
    "truncated UTF-8": b'{"text": "caf\xc3"}',
    "raw NUL in a string": b'{"text": "a\x00b"}',
    "NUL outside strings": b'\x00{"text": "x"}',
    "escaped NUL": b'{"text": "a\\u0000b"}',
    "escaped NUL in the uri": b'{"text": "x", "uri": "u:\\u0000"}',
    "UTF-16": '{"text": "x"}'.encode("utf-16-le"),
    "nesting 900 lists in content": b'{"text": "x", "scores": ' + b"[" * 900 + b"]" * 900 + b"}",
    "900 objects in content": b'{"text": "x", "scores": %s1%s}' % (b'{"a":' * 900, b"}" * 900),
    "nesting 900 outside content": b'{"text": "x", "junk": ' + b"[" * 900 + b"]" * 900 + b"}",
    "nesting 100000 at the top": b"[" * 100_000,
    "nesting 100000 closed": b"[" * 100_000 + b"]" * 100_000,
    "1e999": b'{"text": "x", "scores": {"s": 1e999}}',
    "-1e999": b'{"text": "x", "scores": {"s": -1e999}}',
    "100000 digits": b'{"text": "x", "scores": {"s": ' + b"9" * 100_000 + b"}}",
    "a float of 5000 digits": b'{"text": "x", "scores": {"s": ' + b"9" * 5000 + b".5}}",
    "time 1e999": b'{"text": "x", "datetime": 1e999}',
    "time of 4000 digits": b'{"text": "x", "datetime": ' + b"9" * 4000 + b"}",
    "NaN": b'{"text": "x", "scores": {"s": NaN}}',
    "Infinity": b'{"text": "x", "scores": {"s": Infinity}}',
    "-Infinity": b'{"text": "x", "scores": [-Infinity]}',
    "NaN time": b'{"text": "x", "datetime": NaN}',
    "a list": b"[1, 2]",
    "a string": b'"text"',
    "a number": b"1",
    "null": b"null",
    "true": b"true",
    "duplicate keys": b'{"text": "a", "text": "b"}',
    "duplicate nested keys": b'{"text": "a", "scores": {"s": 1, "s": 2}}',
    "not JSON": b"{broken",
    "trailing garbage": b'{"text": "x"} extra',
    "two objects": b'{"text": "x"}{"text": "y"}',
    "a BOM inside the file": b'\xef\xbb\xbf{"text": "x"}',
    "text of another type": b'{"text": 5}',
    "content not an object": b'{"uri": "u:1", "datetime": 0, "content": "text"}',
}


@pytest.mark.parametrize("line", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_hostile_line_is_counted_and_skipped(tmp_path, line):
    f = tmp_path / "h.jsonl"
    f.write_bytes(b'{"text": "before"}\n' + line + b'\n{"text": "after"}\n')
    items = list(read_local(f))
    assert [r.content["text"] for r, _ in items if r] == ["before", "after"]
    errors = [e for _, e in items if e]
    assert len(errors) == 1 and errors[0].startswith(f"{f}:2: ")
    errors[0].encode("utf-8")  # printable: no lone surrogate leaks into the message
    s = Store(str(tmp_path / "s.db"))
    stats = collect(s, read_local(f), "local")
    assert (stats["read"], stats["inserted"], stats["skipped"]) == (3, 2, 1)
    assert s.count() == 2


def test_every_hostile_line_in_one_file(tmp_path):
    f = tmp_path / "all.jsonl"
    f.write_bytes(b"\n".join([b'{"text": "first"}', *HOSTILE.values(), b'{"text": "last"}']))
    stats = collect(Store(str(tmp_path / "s.db")), read_local(f), "local")
    assert (stats["inserted"], stats["skipped"]) == (2, len(HOSTILE))


def test_valid_oddities_are_accepted(tmp_path):
    """What looks odd but is a valid record is stored: a BOM at the start of the file,
    escaped surrogate pairs, large but finite numbers, CRLF line ends, control characters."""
    f = tmp_path / "ok.jsonl"
    f.write_bytes(b"\xef\xbb\xbf" + b"\r\n".join([
        b'{"text": "bom first"}',
        b'{"text": "emoji \\ud83d\\ude00"}',
        b'{"text": "big", "scores": {"s": 1e308, "n": ' + b"9" * 4000 + b"}}",
        b'{"text": "tab\\tand\\u001b escape"}',
        b'{"text": "nested", "scores": ' + b"[" * 20 + b"]" * 20 + b"}",
    ]) + b"\r\n")  # fmt: skip
    items = list(read_local(f))
    assert [e for _, e in items if e] == []
    texts = [r.content["text"] for r, _ in items]
    assert texts[0] == "bom first" and texts[1] == "emoji \U0001f600"
    stats = collect(Store(str(tmp_path / "s.db")), read_local(f), "local")
    assert stats["inserted"] == 5


def test_a_huge_line_costs_no_more_than_the_line_limit(tmp_path):
    """A line far beyond any record (here 8x the line limit) is skipped while reading it,
    in memory bounded by the limit, not the line; the lines after it are read."""
    import tracemalloc

    from swarmpress.data.sources.local import MAX_LINE

    f = tmp_path / "huge.jsonl"
    with f.open("wb") as fh:
        fh.write(b'{"text": "before"}\n{"text": "')
        for _ in range(8):
            fh.write(b"a" * MAX_LINE)
        fh.write(b'"}\n{"text": "after"}\n')
    tracemalloc.start()
    try:
        items = list(read_local(f))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [r.content["text"] for r, _ in items if r] == ["before", "after"]
    errors = [e for _, e in items if e]
    assert len(errors) == 1 and "longer than" in errors[0] and f"{f}:2" in errors[0]
    assert peak < 3 * MAX_LINE


def test_a_source_that_fails_midway_keeps_what_it_read(tmp_path):
    """Records read before a source fails are stored, not thrown away with the batch."""
    from tests.data.conftest import rec

    def items():
        for i in range(3):
            yield rec(i), None
        raise OSError("the disk went away")

    s = Store(str(tmp_path / "s.db"))
    with pytest.raises(OSError, match="went away"):
        collect(s, items(), "reddit")
    assert s.count() == 3
