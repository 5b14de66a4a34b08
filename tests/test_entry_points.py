"""The command's entry points: `python -m swarmpress` and `--version` (issue 14)."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import swarmpress


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "swarmpress", *args], capture_output=True, text=True, timeout=120
    )


def test_version_is_one_fact_everywhere():
    out = _run("--version")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"swarmpress {swarmpress.__version__}"
    assert importlib.metadata.version("swarmpress") == swarmpress.__version__


def test_python_dash_m_runs_the_same_command():
    out = _run("codecs", "--json")
    assert out.returncode == 0, out.stderr
    assert '"id": "lossy"' in out.stdout
    bad = _run("no-such-command")
    assert bad.returncode == 2
