"""What every sandbox engine shares: the limits of a call, its result, the job folder and
the file system view (which host paths an entry may read)."""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from swarmpress.errors import SwarmpressError

HARNESS = Path(__file__).with_name("harness.py")
UID_BASE = 61000  # sandbox uids are UID_BASE + slot; nothing on the host owns them


class SandboxUnavailable(SwarmpressError, RuntimeError):
    """No engine can run a sandbox here; the message says what to install or change."""

    exit_code = 2  # the CLI's usage code: the host needs something installed or changed


@dataclass(frozen=True)
class Limits:
    """Per-call limits (DESIGN.md defaults: 1 CPU, 1 GiB, no network, 60 s)."""

    wall_s: float = 60.0
    startup_s: float = 60.0
    cpu_s: int = 60
    memory_bytes: int = 1 << 30
    nproc: int = 64
    tmp_bytes: int = 64 << 20
    log_bytes: int = 64 << 10
    max_output_bytes: int = 256 << 20


@dataclass
class CallResult:
    """What one call produced: output or the reason it failed, its time, its log."""

    ok: bool
    output: bytes | None = None
    seconds: float = 0.0
    reason: str = ""
    log: str = ""
    log_truncated: bool = False
    details: dict = field(default_factory=dict)


@dataclass(frozen=True)
class View:
    """The host paths a sandbox sees, all read-only, and nothing else of the host:

    * the solution environment's venv, and its sysroot (envs.py: copies of the system
      libraries the interpreter and the environment's extensions link to) as /usr;
    * of the base interpreter the venv was made from: its binary, libpython and standard
      library, with site-packages, test and pydoc_data (the pool's default text) covered;
    * the job folder at /sub.

    Keeping to these files also keeps the page-cache surface small: every page of them is
    made resident before a call (cache.py), so a call cannot signal the next one through
    which pages of a shared file are cached."""

    env: Path
    job: Path

    @property
    def base(self) -> Path:
        return Path(sys.base_prefix).resolve()

    @property
    def python(self) -> str:
        return str(self.env / "bin" / "python")

    @property
    def stdlib(self) -> Path:
        return self.base / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"

    def binds(self) -> list[tuple[str, str]]:
        """(host path, sandbox path) pairs to mount read-only, files and folders."""
        ver = f"{sys.version_info.major}.{sys.version_info.minor}"
        out = [(str(self.env / "sysroot" / "usr"), "/usr"), (str(self.env), str(self.env))]
        for p in (self.base / "bin" / f"python{ver}", self.base / "lib" / f"libpython{ver}.so.1.0",
                  self.stdlib):  # fmt: skip
            if p.exists():
                out.append((str(p), str(p)))
        return [*out, (str(self.job), "/sub")]

    def hidden(self) -> list[str]:
        """Folders under the bound trees that are covered with an empty tmpfs."""
        lib = self.stdlib
        return [str(p) for p in (lib / "site-packages", lib / "test", lib / "pydoc_data")
                if p.is_dir()]  # fmt: skip

    def shared(self) -> list[str]:
        """The bound host paths every sandbox shares (the job is private to one call)."""
        return [src for src, dest in self.binds() if dest != "/sub"]


def make_job(root: Path, solution: str | Path) -> Path:
    """A job folder holding the solution and the harness (mounted read-only at /sub)."""
    sub = root / "sub"
    sub.mkdir(mode=0o755)
    root.chmod(0o755)
    shutil.copyfile(solution, sub / "solution.py")
    shutil.copyfile(HARNESS, sub / "harness.py")
    for f in sub.iterdir():
        f.chmod(0o644)
    return sub


def ancestors(path: Path) -> list[str]:
    """Every folder above path, outermost first, without /."""
    return [str(p) for p in reversed(path.parents) if str(p) != "/"]
