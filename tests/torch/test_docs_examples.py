"""Every Python example in the integration docs runs as written (docs/torch.md, zarr.md,
checkpoint.md): each block is a complete script, run in a fresh interpreter."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ("torch.md", "zarr.md", "checkpoint.md")
_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def _examples() -> list[tuple[str, str]]:
    out = []
    for name in DOCS:
        text = (ROOT / "docs" / name).read_text(encoding="utf-8")
        out += [(f"{name}#{i}", code) for i, code in enumerate(_BLOCK.findall(text), 1)]
    return out


EXAMPLES = _examples()


def test_the_docs_have_examples():
    assert sum(1 for name, _ in EXAMPLES if name.startswith("torch.md")) >= 4


@pytest.mark.parametrize(("name", "code"), EXAMPLES, ids=[n for n, _ in EXAMPLES])
def test_example_runs(name, code, tmp_path):
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, f"{name} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
