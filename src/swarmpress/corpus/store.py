"""On-disk corpus format: safetensors shards plus manifest.json, and the loader every layer uses.

A corpus directory holds `manifest.json` and one or more `*.safetensors` shards. Each
manifest entry names one tensor: where it lives, what produced it (model, layer, role,
dtype, shape, text source, seed) and whether it is from a real model or the synthetic family.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from swarmpress.codecs.core.tensors import BF16
from swarmpress.errors import UsageError

MANIFEST = "manifest.json"
FORMAT = "swarmpress-corpus"
FORMAT_VERSION = 1
ROLES = ("activation", "gradient", "weight-delta")
DTYPES = ("bfloat16", "float32", "float16")


class CorpusError(UsageError, ValueError):
    """A corpus directory is missing, malformed, or disagrees with its manifest."""


@dataclass(frozen=True)
class Entry:
    """One tensor of a corpus and where it came from."""

    name: str  # unique key, also the safetensors key
    file: str  # shard file name, relative to the corpus directory
    family: str  # "model" (captured from a real model) or "synthetic"
    model: str  # model name or path, or the generator name for synthetic tensors
    layer: int  # layer boundary index (0 = embeddings output)
    role: str  # activation | gradient | weight-delta
    dtype: str  # bfloat16 | float32 | float16
    shape: tuple[int, ...]
    text_source: str  # e.g. "pydoc_data.topics" or "synthetic"
    seed: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.numel * np.dtype(_NP[self.dtype]).itemsize

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d


_NP = {"bfloat16": BF16, "float32": np.dtype(np.float32), "float16": np.dtype(np.float16)}


@dataclass
class Corpus:
    """A loaded manifest plus lazy access to the tensors it lists."""

    root: Path
    entries: list[Entry]
    source: dict[str, Any]

    def load(self, entry: Entry) -> np.ndarray:
        """The tensor for entry as a numpy array (bfloat16 via ml_dtypes)."""
        from safetensors import safe_open

        path = self.root / entry.file
        if not path.is_file():
            raise CorpusError(f"corpus shard {path} listed in the manifest is missing")
        try:
            with safe_open(str(path), framework="pt") as f:
                t = f.get_tensor(entry.name)
        except Exception as exc:
            raise CorpusError(f"cannot read {entry.name!r} from {path}: {exc}") from None
        arr = _torch_to_numpy(t)
        if arr.dtype != _NP[entry.dtype] or tuple(arr.shape) != entry.shape:
            raise CorpusError(
                f"{entry.name}: shard holds {arr.dtype} {tuple(arr.shape)}, manifest says "
                f"{entry.dtype} {entry.shape}"
            )
        return arr

    def __iter__(self) -> Iterator[tuple[Entry, np.ndarray]]:
        for e in self.entries:
            yield e, self.load(e)

    def select(self, **criteria: Any) -> list[Entry]:
        """Entries whose fields equal every given value, e.g. select(role="gradient")."""
        return [e for e in self.entries if all(getattr(e, k) == v for k, v in criteria.items())]


def _torch_to_numpy(t: Any) -> np.ndarray:
    import torch

    if t.dtype == torch.bfloat16:
        return t.contiguous().view(torch.int16).numpy().view(BF16)
    return t.contiguous().numpy()


def write_corpus(
    root: Path, tensors: dict[str, Any], entries: list[Entry], source: dict[str, Any]
) -> Path:
    """Write shards and manifest; tensors maps entry name -> torch tensor, grouped by Entry.file."""
    from safetensors.torch import save_file

    root.mkdir(parents=True, exist_ok=True)
    by_file: dict[str, dict[str, Any]] = {}
    for e in entries:
        by_file.setdefault(e.file, {})[e.name] = tensors[e.name].contiguous()
    for fname, group in by_file.items():
        save_file(group, str(root / fname))
    manifest = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "source": source,
        "tensors": [e.to_json() for e in entries],
    }
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return root


def load_corpus(root: str | Path) -> Corpus:
    """Read and validate a corpus directory's manifest; CorpusError says what is wrong."""
    root = Path(root)
    if not root.exists():
        raise CorpusError(f"corpus directory {root} does not exist")
    if not root.is_dir():
        raise CorpusError(f"corpus path {root} is not a directory")
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise CorpusError(f"{root} has no {MANIFEST}; build one with `swarmpress corpus build`")
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorpusError(f"{mpath} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CorpusError(f"{mpath} is not a swarmpress corpus manifest")
    if manifest.get("version") != FORMAT_VERSION:
        raise CorpusError(f"{mpath} has unsupported version {manifest.get('version')!r}")
    raw = manifest.get("tensors")
    if not isinstance(raw, list) or not raw:
        raise CorpusError(f"{mpath} lists no tensors")
    entries = [_entry(mpath, i, d) for i, d in enumerate(raw)]
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        raise CorpusError(f"{mpath} lists a tensor name twice")
    source = manifest.get("source") or {}
    if not isinstance(source, dict):
        raise CorpusError(f"{mpath}: 'source' must be an object")
    return Corpus(root=root, entries=entries, source=dict(source))


def _entry(mpath: Path, i: int, d: Any) -> Entry:
    where = f"{mpath} tensor #{i}"
    if not isinstance(d, dict):
        raise CorpusError(f"{where} is not an object")
    try:
        e = Entry(
            name=str(d["name"]),
            file=str(d["file"]),
            family=str(d["family"]),
            model=str(d["model"]),
            layer=int(d["layer"]),
            role=str(d["role"]),
            dtype=str(d["dtype"]),
            shape=tuple(int(s) for s in d["shape"]),
            text_source=str(d["text_source"]),
            seed=int(d["seed"]),
            extra=dict(d.get("extra") or {}),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CorpusError(f"{where} is malformed: {exc!r}") from None
    if e.role not in ROLES:
        raise CorpusError(f"{where} has unknown role {e.role!r}")
    if e.dtype not in DTYPES:
        raise CorpusError(f"{where} has unknown dtype {e.dtype!r}")
    if Path(e.file).is_absolute() or ".." in Path(e.file).parts:
        raise CorpusError(f"{where} points outside the corpus directory: {e.file!r}")
    return e
