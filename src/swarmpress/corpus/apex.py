"""Export a corpus in the Apex layout: flat bfloat16 `.bin` files plus `manifest.csv`.

Apex Subnet 1's matrix-compression task hands a submission the raw bytes of a flat
bfloat16 tensor (2 bytes per value, little-endian, no shape). This writes every corpus
tensor in exactly that form, so arena rounds and outside tools can use our corpora.

Policy for non-bf16 entries: a float32/float16 entry whose bfloat16 twin exists (same
family, model, layer, role and shape) is skipped, since the twin is that tensor rounded to
bf16 already; one without a twin is rounded to bfloat16 (round to nearest even) and
exported, and `original_dtype` in the CSV says so.
"""

from __future__ import annotations

import csv
import os
import re
import tempfile
from pathlib import Path

import numpy as np

from swarmpress.codecs.core.tensors import BF16
from swarmpress.corpus.store import CorpusError, Entry, load_corpus

CSV_NAME = "manifest.csv"
CSV_COLUMNS = (
    "file",
    "name",
    "role",
    "layer",
    "model",
    "family",
    "numel",
    "original_dtype",
    "shape",
)


def _key(e: Entry) -> tuple[object, ...]:
    return (e.family, e.model, e.layer, e.role, e.shape)


def bin_name(entry: Entry) -> str:
    """File name of an entry's .bin: its name with unsafe characters replaced."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", entry.name) + ".bin"


def to_apex_bytes(arr: np.ndarray) -> bytes:
    """Flat little-endian bfloat16 bytes of arr (rounded to bf16 if it is not already)."""
    bf = arr if arr.dtype == BF16 else np.asarray(arr).astype(BF16)
    return np.ascontiguousarray(bf).reshape(-1).view(np.uint16).astype("<u2").tobytes()


def export_apex(corpus_dir: str | Path, out_dir: str | Path) -> Path:
    """Write one .bin per exported tensor and manifest.csv into out_dir; return the CSV path."""
    corpus = load_corpus(corpus_dir)
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise CorpusError(f"Apex output path {out} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CorpusError(
            f"cannot create Apex output directory {out}: {exc.strerror or exc}"
        ) from None
    have_bf16 = {_key(e) for e in corpus.entries if e.dtype == "bfloat16"}
    rows = []
    used: set[str] = set()
    for e in corpus.entries:
        if e.dtype != "bfloat16" and _key(e) in have_bf16:
            continue
        fname = bin_name(e)
        if fname in used:
            raise CorpusError(f"two corpus tensors map to the same Apex file {fname}")
        used.add(fname)
        data = to_apex_bytes(corpus.load(e))
        _write_file(out / fname, data)
        rows.append(
            {
                "file": fname,
                "name": e.name,
                "role": e.role,
                "layer": e.layer,
                "model": e.model,
                "family": e.family,
                "numel": e.numel,
                "original_dtype": e.dtype,
                "shape": "x".join(str(s) for s in e.shape),
            }
        )
    csv_path = out / CSV_NAME
    fd, tmp = tempfile.mkstemp(prefix=".manifest-", suffix=".csv", dir=out)
    with os.fdopen(fd, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(CSV_COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, csv_path)
    return csv_path


def _write_file(path: Path, data: bytes) -> None:
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise CorpusError(f"cannot write {path}: {exc.strerror or exc}") from None
