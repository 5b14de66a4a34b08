"""Local sources: text files, JSONL files, a directory of them, or the embedded text.

- A `.txt`/`.md` file becomes one record per paragraph block (blank-line separated,
  joined up to about 4 KB), uri `file://PATH#pN`, time = the file's modification time.
- A `.jsonl` file: each line either a full record (uri, datetime, source, content, ...) or
  an object with `text` (and optionally `title`, `author`, `datetime`, `label`, `uri`).
  A line that is not a valid record, whatever is wrong with it (not UTF-8, not JSON, not
  an object, NaN or a number beyond a float, a duplicate key, nesting deeper than
  MAX_DEPTH, a NUL or a lone surrogate, longer than MAX_LINE bytes), is reported (file and
  line) and skipped; a line is never held in memory beyond MAX_LINE bytes.
- A directory: every such file below it, in name order.
- No path: the standard library's `pydoc_data.topics` (about 0.5 MB of English), one
  record per topic, uri `pydoc://topics/NAME`: what a machine with no network can collect.

Items come out as (Record | None, error | None) so the caller counts and skips the bad.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from swarmpress.data.records import (
    MAX_CONTENT,
    Record,
    RecordError,
    make_record,
    parse_record,
    printable,
    strict_loads,
)
from swarmpress.errors import UsageError

TEXT_SUFFIXES = (".txt", ".md")
BLOCK = 4096
# The longest JSONL line read: a record's content (MAX_CONTENT) written with every
# character escaped as ASCII (a 4-byte character becomes 12), plus the other fields.
MAX_LINE = 3 * MAX_CONTENT + (64 << 10)
_CHUNK = 1 << 16  # how much of an overlong line is read at a time to skip it
_BOM = b"\xef\xbb\xbf"
Item = tuple[Record | None, str | None]
# What turning one item (a line, a listing child) into a record may raise: that item is
# counted and skipped, the rest go on (RecordError is a ValueError).
ITEM_ERRORS = (ValueError, TypeError, KeyError, AttributeError, OverflowError, RecursionError)


class SourceError(UsageError, ValueError):
    """A source that cannot be read at all (a missing path, nothing readable in it)."""


def _mtime(path: Path) -> datetime:
    return datetime.fromtimestamp(path.stat().st_mtime, UTC)


def _blocks(text: str) -> Iterator[str]:
    """Paragraphs joined into blocks of about BLOCK characters."""
    cur: list[str] = []
    size = 0
    for para in (p.strip() for p in text.split("\n\n")):
        if not para:
            continue
        if cur and size + len(para) > BLOCK:
            yield "\n\n".join(cur)
            cur, size = [], 0
        cur.append(para)
        size += len(para) + 2
    if cur:
        yield "\n\n".join(cur)


def read_text_file(path: Path) -> Iterator[Item]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        yield None, f"{path}: not UTF-8 text"
        return
    when = _mtime(path)
    for i, block in enumerate(_blocks(text)):
        try:
            yield make_record(f"{path.resolve().as_uri()}#p{i}", when, "local",
                              {"text": block}), None  # fmt: skip
        except RecordError as exc:  # one oversized paragraph, a NUL: skip it, not the file
            yield None, f"{path}: block {i}: {exc}"


def _line_record(path: Path, n: int, obj: dict, when: datetime) -> Record:
    if "content" in obj and "uri" in obj:
        return parse_record(obj)
    text = obj.get("text")
    if not isinstance(text, str) or not text.strip():
        raise RecordError("text: missing or empty (a line needs `text` or a full record)")
    content = {k: obj[k] for k in ("text", "title", "author", "parent", "scores") if k in obj}
    uri = obj.get("uri") or f"{path.resolve().as_uri()}#L{n}"
    return make_record(uri, obj.get("datetime", when), obj.get("source", "local"), content,
                       obj.get("label"))  # fmt: skip


def _lines(fh) -> Iterator[tuple[int, bytes | None, int]]:
    """(line number, the line or None when it is longer than MAX_LINE, its length so far)
    of a binary file; an overlong line is skipped in chunks, never held whole."""
    n = 0
    while True:
        raw = fh.readline(MAX_LINE + 1)
        if not raw:
            return
        n += 1
        if len(raw) <= MAX_LINE or raw.endswith(b"\n"):
            yield n, raw, len(raw)
            continue
        size = len(raw)
        del raw
        while True:
            chunk = fh.readline(_CHUNK)
            size += len(chunk)
            if not chunk or chunk.endswith(b"\n"):
                break
        yield n, None, size


def read_jsonl(path: Path) -> Iterator[Item]:
    when = _mtime(path)
    with path.open("rb") as fh:
        for n, raw, size in _lines(fh):
            if raw is None:
                yield None, f"{path}:{n}: longer than {MAX_LINE} bytes ({size}): not a record"
                continue
            line = raw.strip(b" \t\r\n")
            if n == 1 and line.startswith(_BOM):
                line = line[len(_BOM) :].lstrip()
            if not line:
                continue
            try:
                obj = strict_loads(line)
                if not isinstance(obj, dict):
                    raise RecordError(f"a record is a JSON object, not {_kind(obj)}")
                rec = _line_record(path, n, obj, when)
            except ITEM_ERRORS as exc:
                yield None, printable(f"{path}:{n}: {exc}")
                continue
            yield rec, None


_KINDS = {list: "an array", str: "a string", bool: "true or false", type(None): "null"}


def _kind(value: object) -> str:
    return _KINDS.get(type(value), "a number")


def read_pydoc() -> Iterator[Item]:
    from pydoc_data import topics

    when = _mtime(Path(topics.__file__))
    for name in sorted(topics.topics):
        content = {"title": name, "text": topics.topics[name]}
        yield make_record(f"pydoc://topics/{name}", when, "local", content, "pydoc"), None


def read_local(path: str | Path | None = None) -> Iterator[Item]:
    """Every item of a file, a directory, or (no path) the embedded pydoc text."""
    if path is None or str(path) in ("", "pydoc"):
        yield from read_pydoc()
        return
    p = Path(path).expanduser()
    if not p.exists():
        raise SourceError(f"local source {str(path)!r} does not exist")
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    usable = [f for f in files if f.suffix in (*TEXT_SUFFIXES, ".jsonl")]
    if not usable:
        raise SourceError(f"local source {str(path)!r} holds no .txt, .md or .jsonl files")
    for f in usable:
        yield from (read_jsonl(f) if f.suffix == ".jsonl" else read_text_file(f))
