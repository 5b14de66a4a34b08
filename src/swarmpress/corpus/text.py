"""Text sources for corpus capture: real English prose, turned into deterministic chunks.

The default source is the standard library's `pydoc_data.topics` (the Python reference
manual's help topics, about 0.5 MB of English with some code), so a corpus can be built on
any machine without downloads. A local `.txt` file, or a directory of them, works too.
Chunking is a pure function of the text and the chunk size, so the same seed picks the
same chunks everywhere (for a given Python version, whose `pydoc_data` may differ).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from swarmpress.corpus.store import CorpusError

DEFAULT_TEXT = "pydoc_data.topics"
MAX_TEXT_BYTES = 256 * 1024 * 1024  # refuse to read more than this from a local source


@dataclass(frozen=True)
class TextSource:
    """Documents from one source, in a fixed order, plus the label recorded in manifests."""

    label: str  # "pydoc_data.topics" or the local path
    documents: tuple[str, ...]

    @property
    def chars(self) -> int:
        return sum(len(d) for d in self.documents)


def read_documents(path: Path, suffixes: tuple[str, ...] = (".txt",)) -> list[str]:
    """UTF-8 documents of a file, or of every file with one of suffixes below a folder
    (sorted by path); CorpusError for an empty folder, too much text, or unreadable files."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in suffixes)
        if not files:
            kinds = " or ".join(suffixes)
            raise CorpusError(f"text directory {path} holds no {kinds} files")
    else:
        files = [path]
    total = sum(f.stat().st_size for f in files)
    if total > MAX_TEXT_BYTES:
        raise CorpusError(f"text source {path} is {total} bytes; the limit is {MAX_TEXT_BYTES}")
    docs = []
    for f in files:
        try:
            docs.append(f.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise CorpusError(f"text file {f} is not UTF-8") from None
        except OSError as exc:
            raise CorpusError(f"cannot read text file {f}: {exc.strerror or exc}") from None
    return docs


def load_text(source: str | Path | None = None) -> TextSource:
    """The default stdlib text (None or "pydoc_data.topics"), a .txt file, or a directory.

    A directory contributes every `*.txt` file below it, sorted by relative path. Raises
    CorpusError when the path is missing, holds no text, or is not UTF-8.
    """
    if source is None or str(source) == DEFAULT_TEXT:
        return _pydoc_topics()
    path = Path(source).expanduser()
    if not path.exists():
        raise CorpusError(f"text source {path} does not exist (a .txt file or a directory)")
    docs = read_documents(path, (".txt",))
    docs = [d for d in docs if d.strip()]
    if not docs:
        raise CorpusError(f"text source {path} is empty")
    return TextSource(label=str(path), documents=tuple(docs))


def _pydoc_topics() -> TextSource:
    try:
        from pydoc_data.topics import topics
    except ImportError:  # pragma: no cover - stripped-down Python builds
        raise CorpusError(
            "this Python has no pydoc_data.topics; pass --text with a .txt file or directory"
        ) from None
    docs = tuple(topics[k] for k in sorted(topics) if topics[k].strip())
    return TextSource(label=DEFAULT_TEXT, documents=docs)


def chunk_text(source: TextSource, chunk_chars: int) -> list[str]:
    """Cut the documents, joined by blank lines, into consecutive chunks of about chunk_chars.

    Cuts fall on the last whitespace before the limit (or at the limit when a chunk has
    none), so words stay whole; a trailing piece shorter than half a chunk is dropped.
    Adjacent chunks are adjacent text, which the contrastive loss uses as positive pairs.
    """
    if chunk_chars < 16:
        raise CorpusError(f"chunk size {chunk_chars} is too small (at least 16 characters)")
    text = "\n\n".join(d.strip() for d in source.documents)
    chunks: list[str] = []
    start, n = 0, len(text)
    while start < n:
        end = min(start + chunk_chars, n)
        if end < n:
            cut = max(text.rfind(" ", start, end), text.rfind("\n", start, end))
            if cut > start + chunk_chars // 2:
                end = cut
        piece = text[start:end].strip()
        if len(piece) >= chunk_chars // 2:
            chunks.append(piece)
        start = end
    return chunks
