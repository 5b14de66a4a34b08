"""The tensor pool a competition is scored on: held out from submitters, sampled per round.

Built from a corpus (the embedded default corpus unless told otherwise): every bf16 tensor
(and every float tensor without a bf16 twin, rounded) is cut into pieces along its first
axes, one sequence per piece, in the Apex form (flat little-endian bf16 bytes). A few pieces
form the public sample anyone may download; the rest are the held-out pool, which only
workers read, one tensor at a time, to feed a sandbox.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from swarmpress.corpus.apex import to_apex_bytes
from swarmpress.corpus.store import load_corpus

MANIFEST = "pool.json"


class PoolError(ValueError):
    """A pool directory that is missing or inconsistent."""


@dataclass(frozen=True)
class PoolEntry:
    name: str
    file: str
    numel: int
    public: bool
    source: str


def _pieces(arr: np.ndarray, max_values: int) -> list[np.ndarray]:
    """Split along leading axes until each piece is at most max_values (rows stay whole)."""
    if arr.ndim >= 3:
        return [p for sub in arr for p in _pieces(sub, max_values)]
    if arr.ndim == 2 and arr.size > max_values:
        rows = max(1, max_values // arr.shape[1])
        return [arr[i : i + rows] for i in range(0, arr.shape[0], rows)]
    return [arr]


def build_pool(
    corpus_dir: str | Path,
    out_dir: str | Path,
    public_pieces: int = 2,
    max_values: int = 1 << 18,
) -> list[PoolEntry]:
    """Write the pool (pieces plus pool.json) into out_dir and return its entries."""
    corpus = load_corpus(corpus_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bf16_keys = {
        (e.family, e.model, e.layer, e.role) for e in corpus.entries if e.dtype == "bfloat16"
    }
    entries: list[PoolEntry] = []
    for e in corpus.entries:
        if e.dtype != "bfloat16" and (e.family, e.model, e.layer, e.role) in bf16_keys:
            continue  # its bf16 twin is the same tensor, rounded
        for i, piece in enumerate(_pieces(corpus.load(e), max_values)):
            name = f"{e.name}.p{i:03d}"
            file = name.replace("/", "_") + ".bin"
            (out / file).write_bytes(to_apex_bytes(piece))
            entries.append(PoolEntry(name, file, int(piece.size), False, e.name))
    if len(entries) <= public_pieces:
        raise PoolError(f"corpus {corpus_dir} gives {len(entries)} pieces; need more than "
                        f"{public_pieces} to hold any out")  # fmt: skip
    rng = random.Random(0)
    for i in rng.sample(range(len(entries)), public_pieces):
        entries[i] = PoolEntry(**{**entries[i].__dict__, "public": True})
    manifest = {"entries": [e.__dict__ for e in entries]}
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, out / MANIFEST)
    return entries


class Pool:
    """A built pool directory: held-out sampling and reads, and the public sample."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        try:
            raw = json.loads((self.root / MANIFEST).read_text())
            self.entries = [PoolEntry(**d) for d in raw["entries"]]
        except FileNotFoundError:
            raise PoolError(f"no pool at {self.root} (run `swarmpress arena init`)") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise PoolError(f"pool manifest in {self.root} is malformed: {exc}") from None
        self.held_out = [e for e in self.entries if not e.public]
        self.public = [e for e in self.entries if e.public]
        if not self.held_out:
            raise PoolError(f"pool at {self.root} holds no held-out tensors")

    def sample(self, competition: str, round_index: int, n: int) -> list[PoolEntry]:
        """The round's tensors: the same for every submission of that round."""
        seed = hashlib.sha256(f"{competition}:{round_index}".encode()).digest()
        rng = random.Random(int.from_bytes(seed[:8], "little"))
        if n >= len(self.held_out):
            return list(self.held_out)
        return rng.sample(self.held_out, n)

    def read(self, entry: PoolEntry) -> bytes:
        data = (self.root / entry.file).read_bytes()
        if len(data) != 2 * entry.numel:
            raise PoolError(f"pool file {entry.file} holds {len(data)} bytes, expected "
                            f"{2 * entry.numel}")  # fmt: skip
        return data

    def public_entry(self, name: str) -> PoolEntry:
        for e in self.public:
            if e.name == name:
                return e
        raise PoolError(f"{name!r} is not in the public sample")
