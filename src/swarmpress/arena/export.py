"""Export a codec as a standalone Apex matrix-compression solution (one Python file).

An Apex Subnet 1 submission is a single Python file of at most 20 KB defining
`compress_data(data: bytes) -> bytes` and `decompress_data(data: bytes) -> bytes` over the
raw bytes of a flat bfloat16 tensor (DESIGN.md, "Arena contract"). The solution files
live in `swarmpress.arena.solutions` as readable template modules that import only the
standard library, numpy and zstandard; exporting copies one with its `CONFIG = {...}`
line replaced by the chosen options, after checking option names, types and values, and
checks that the written file stays under the size limit.
"""

from __future__ import annotations

import ast
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from swarmpress import __version__
from swarmpress.errors import ExportError  # one class for arena and data exports

#: Apex's limit is "20 KB"; 20,000 bytes satisfies both readings (kB and KiB).
MAX_SOLUTION_BYTES = 20_000

#: codec name -> (template file in swarmpress/arena/solutions, one-line summary)
SOLUTIONS: dict[str, tuple[str, str]] = {
    "lossless": (
        "lossless_solution.py",
        "bit-exact: exponent plane (channel/block-referenced) through zstd Huffman, "
        "sign+mantissa raw",
    ),
    "lossy": (
        "lossy_solution.py",
        "rate-controlled uniform quantization meeting Apex similarity, rANS-coded with "
        "per-channel x per-row scales",
    ),
    "zstd": ("zstd_solution.py", "baseline: zstd on the raw bytes"),
}

_CONFIG_LINE = re.compile(r"^CONFIG = \{.*\}$", re.MULTILINE)
_TEMPLATES = Path(__file__).resolve().parent / "solutions"

#: extra checks on option values: (codec, option) -> (predicate, what it must be)
_CHECKS: dict[tuple[str, str], tuple[Callable[[Any], bool], str]] = {
    ("lossy", "target"): (lambda v: 0.99 < v < 1.0, "above 0.99 (Apex) and below 1"),
    ("lossy", "steps"): (lambda v: v >= 16, "at least 16"),
    ("lossy", "min_values"): (lambda v: v >= 16, "at least 16"),
    ("lossy", "sample"): (lambda v: v >= 4096, "at least 4096"),
    ("lossy", "max_rank"): (lambda v: 0 <= v <= 1024, "between 0 (no low-rank part) and 1024"),
    ("lossless", "block"): (lambda v: 0 <= v <= 4096, "between 0 (off) and 4096"),
    ("lossless", "sample"): (lambda v: v >= 4096, "at least 4096"),
    ("zstd", "level"): (lambda v: -7 <= v <= 22, "a zstd level between -7 and 22"),
}


def supported_codecs() -> list[str]:
    """The codec names export_solution accepts."""
    return sorted(SOLUTIONS)


def _check_codec(codec: str) -> None:
    if codec not in SOLUTIONS:
        raise ExportError(
            f"unknown codec {codec!r} for an Apex solution; supported: "
            + ", ".join(supported_codecs())
        )


def template_text(codec: str) -> str:
    """The template source of a codec's solution file."""
    _check_codec(codec)
    return (_TEMPLATES / SOLUTIONS[codec][0]).read_text(encoding="utf-8")


def default_config(codec: str) -> dict[str, Any]:
    """The CONFIG dict of a codec's template (its default options)."""
    match = _CONFIG_LINE.search(template_text(codec))
    if match is None:  # pragma: no cover - guarded by the tests
        raise ExportError(f"template of {codec!r} has no one-line CONFIG dict")
    return ast.literal_eval(match.group(0).split("=", 1)[1].strip())


def _coerce(codec: str, name: str, value: Any, default: Any) -> Any:
    kind = type(default)
    bad = ExportError(
        f"option {name}={value!r} of {codec!r} must be a {kind.__name__} like {default!r}"
    )
    if kind is bool:
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            value = value.lower() in ("true", "1", "yes")
        if not isinstance(value, bool):
            raise bad
    elif kind is int:
        if isinstance(value, bool):
            raise bad
        try:
            value = int(value) if not isinstance(value, float) or value.is_integer() else None
        except (TypeError, ValueError):
            raise bad from None
        if value is None:
            raise bad
    elif kind is float:
        if isinstance(value, bool):
            raise bad
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise bad from None
    check = _CHECKS.get((codec, name))
    if check is not None and not check[0](value):
        raise ExportError(f"option {name}={value!r} of {codec!r} must be {check[1]}")
    return value


def solution_config(codec: str, **options: Any) -> dict[str, Any]:
    """The template's CONFIG with options applied, names, types and values checked."""
    config = default_config(codec)
    for name, value in options.items():
        if name not in config:
            known = ", ".join(sorted(config)) or "none"
            raise ExportError(f"unknown option {name!r} for {codec!r}; its options: {known}")
        config[name] = _coerce(codec, name, value, config[name])
    return config


def render_solution(codec: str, **options: Any) -> str:
    """The text of the standalone solution file for codec with options."""
    config = solution_config(codec, **options)
    text = template_text(codec)
    line = "CONFIG = " + repr(config)
    text = _CONFIG_LINE.sub(lambda _: line, text, count=1)
    header = f"# Apex solution: swarmpress {__version__} codec {codec!r}, options in CONFIG\n"
    return header + text


def export_solution(codec: str, out: str | Path, **options: Any) -> Path:
    """Write the standalone solution file for codec to out and return its path.

    Raises ExportError for an unknown codec or option, a bad value, or a file that would
    exceed MAX_SOLUTION_BYTES; OSError when out cannot be written.
    """
    data = render_solution(codec, **options).encode("utf-8")
    if len(data) > MAX_SOLUTION_BYTES:
        raise ExportError(
            f"the {codec!r} solution would be {len(data)} bytes, over the Apex limit of "
            f"{MAX_SOLUTION_BYTES}"
        )
    path = Path(out).expanduser()
    if path.is_dir():
        raise ExportError(f"{path} is a directory; give the solution file's path")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
