"""Local sources: text files, JSONL files, a directory of them, or the embedded text.

- A `.txt`/`.md` file becomes one record per paragraph block (blank-line separated,
  joined up to about 4 KB), uri `file://PATH#pN`, time = the file's modification time.
- A `.jsonl` file: each line either a full record (uri, datetime, source, content, ...) or
  an object with `text` (and optionally `title`, `author`, `datetime`, `label`, `uri`).
  A line that is not JSON or not a valid record is reported (file and line) and skipped.
- A directory: every such file below it, in name order.
- No path: the standard library's `pydoc_data.topics` (about 0.5 MB of English), one
  record per topic, uri `pydoc://topics/NAME`: what a machine with no network can collect.

Items come out as (Record | None, error | None) so the caller counts and skips the bad.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from swarmpress.data.records import Record, RecordError, make_record, parse_record
from swarmpress.errors import UsageError

TEXT_SUFFIXES = (".txt", ".md")
BLOCK = 4096
Item = tuple[Record | None, str | None]


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


def read_jsonl(path: Path) -> Iterator[Item]:
    when = _mtime(path)
    with path.open("rb") as fh:
        for n, raw in enumerate(fh, 1):
            line = raw.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except (UnicodeDecodeError, ValueError) as exc:
                yield None, f"{path}:{n}: not JSON ({str(exc)[:80]})"
                continue
            if not isinstance(obj, dict):
                yield None, f"{path}:{n}: a record is a JSON object"
                continue
            try:
                yield _line_record(path, n, obj, when), None
            except RecordError as exc:
                yield None, f"{path}:{n}: {exc}"


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
