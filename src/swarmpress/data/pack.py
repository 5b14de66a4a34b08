"""Pack: a query's records into tokenized, shuffled, fixed-length training shards.

Each record's text is tokenized (a real tokenizer: MiniLM's WordPiece by default, or any
local tokenizer.json / model directory), documents are joined with the tokenizer's
separator id, the stream is cut into rows of `seq_len` tokens, rows are shuffled with a
seed and written as int32 `.npy` shards of at most `rows_per_shard` rows. manifest.json
says what went in (records, sources, labels, time span, tokenizer, vocabulary size, rows,
tokens) and carries a SHA-256 over the shards, so a trainer can check what it reads.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from swarmpress.data.records import Record
from swarmpress.data.tokenizer import TokenizerError, load_tokenizer
from swarmpress.errors import UsageError

FORMAT = "swarmpress-pack/1"


class PackError(UsageError, ValueError):
    """Records that cannot be packed as asked (too few tokens, a bad output folder)."""


def _tokenizer(name: str):
    try:
        tok, path = load_tokenizer(name)
    except TokenizerError as exc:
        raise PackError(str(exc)) from None
    return tok, str(path)


def pack(
    recs: Iterable[Record],
    out: str | Path,
    tokenizer: str = "minilm",
    seq_len: int = 800,
    seed: int = 0,
    rows_per_shard: int = 4096,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Write shards and manifest.json to `out`; returns the manifest."""
    if seq_len < 2:
        raise PackError(f"--seq-len must be at least 2, not {seq_len}")
    out = Path(out)
    if seed < 0:
        raise PackError(f"--seed must be 0 or more, not {seed}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise PackError(f"output folder {out} is not an empty folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / ".writable").touch()
        (out / ".writable").unlink()
    except OSError as exc:
        raise PackError(f"cannot write to {out}: {exc.strerror or exc}") from None
    tok, tok_path = _tokenizer(tokenizer)
    sep = tok.token_to_id("[SEP]")
    if sep is None:
        sep = tok.token_to_id("</s>")
    stream: list[np.ndarray] = []
    sources: Counter[str] = Counter()
    labels: Counter[str] = Counter()
    first = last = None
    n = 0
    batch: list[Record] = []

    def flush() -> None:
        encs = tok.encode_batch([r.text for r in batch], add_special_tokens=False)
        for enc in encs:
            ids = np.asarray(enc.ids, dtype=np.int32)
            if ids.size:
                stream.append(ids)
                if sep is not None:
                    stream.append(np.asarray([sep], dtype=np.int32))
        batch.clear()

    for r in recs:
        if not r.text:
            continue
        n += 1
        sources[r.source] += 1
        if r.label:
            labels[r.label] += 1
        first = r.datetime if first is None or r.datetime < first else first
        last = r.datetime if last is None or r.datetime > last else last
        batch.append(r)
        if len(batch) >= 256:
            flush()
            if progress is not None:
                progress(n)
    if batch:
        flush()
    tokens = np.concatenate(stream) if stream else np.zeros(0, np.int32)
    rows = tokens.size // seq_len
    if rows == 0:
        raise PackError(f"{n} records hold {tokens.size} tokens, fewer than one row of {seq_len}")
    table = tokens[: rows * seq_len].reshape(rows, seq_len)
    table = table[np.random.default_rng(seed).permutation(rows)]
    digest = hashlib.sha256()
    shards = []
    for i, start in enumerate(range(0, rows, rows_per_shard)):
        name = f"shard-{i:05d}.npy"
        part = np.ascontiguousarray(table[start : start + rows_per_shard])
        np.save(out / name, part)
        digest.update((out / name).read_bytes())
        shards.append({"file": name, "rows": int(part.shape[0])})
    manifest = {
        "format": FORMAT,
        "created": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "records": n,
        "sources": dict(sources),
        "labels": dict(labels.most_common(50)),
        "time_span": [first.isoformat(), last.isoformat()] if first else None,
        "tokenizer": tok_path,
        "vocab_size": int(tok.get_vocab_size()),
        "seq_len": seq_len,
        "rows": int(rows),
        "tokens": int(rows * seq_len),
        "dropped_tail_tokens": int(tokens.size - rows * seq_len),
        "seed": seed,
        "shards": shards,
        "sha256": digest.hexdigest(),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def load_pack(folder: str | Path, verify: bool = True) -> tuple[dict[str, Any], np.ndarray]:
    """The manifest and all rows (rows x seq_len int32) of a pack; PackError if it does not
    check out (missing shard, wrong hash, wrong shape)."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise PackError(f"{folder}: no readable manifest.json ({exc})") from None
    if manifest.get("format") != FORMAT:
        raise PackError(f"{folder}: not a {FORMAT} pack")
    digest = hashlib.sha256()
    parts = []
    for shard in manifest["shards"]:
        path = folder / shard["file"]
        try:
            blob = path.read_bytes()
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise PackError(f"{path}: {exc}") from None
        digest.update(blob)
        want = (shard["rows"], manifest["seq_len"])
        if arr.dtype != np.int32 or arr.shape != want:
            raise PackError(f"{path}: shape {arr.shape} {arr.dtype}, manifest says otherwise")
        parts.append(arr)
    if verify and digest.hexdigest() != manifest["sha256"]:
        raise PackError(f"{folder}: shards do not match the manifest's sha256")
    return manifest, np.concatenate(parts)
