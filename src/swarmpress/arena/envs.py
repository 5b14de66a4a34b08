"""Solution environments: the Python packages a submission sees inside the sandbox.

Apex runs a solution in a Docker image built from its competition's requirements file; an
entry may import exactly what that image holds. Each environment here is the same list
(envs/<name>.txt, with the Apex release it matches) installed into its own virtual
environment, and that environment, not this project's, is what the sandbox mounts. So an
entry sees the Apex packages and nothing of swarmpress, its models or its data.

Environments live under `envs_root()` (SWARMPRESS_ARENA_ENVS, else
~/.cache/swarmpress/arena-envs), one folder per name and requirements hash, built by
`swarmpress arena env build` (or `make`). A built one records its importable top-level
modules in modules.json; the upload check refuses imports outside that set, and falls back
to the committed snapshot envs/<name>.modules.txt where the environment is not built.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from swarmpress.errors import SwarmpressError

HERE = Path(__file__).with_name("envs")
READY = "ready.json"

# Prints the environment's importable top-level modules (run by the environment's python).
_LIST_MODULES = """
import json, pkgutil, sys, sysconfig
site = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
names = {m.name for m in pkgutil.iter_modules(site) if not m.name.startswith("_")}
names |= {n for n in sys.stdlib_module_names if not n.startswith("_")}
print(json.dumps(sorted(names)))
"""


class EnvError(SwarmpressError, RuntimeError):
    """An environment that is unknown, not built, or failed to build."""

    exit_code = 2  # the CLI's usage code: name a known environment or build it first


@dataclass(frozen=True)
class Environment:
    """One named solution environment and where it is (or would be) built."""

    name: str

    @property
    def requirements(self) -> Path:
        return HERE / f"{self.name}.txt"

    @property
    def snapshot(self) -> Path:
        return HERE / f"{self.name}.modules.txt"

    def digest(self) -> str:
        text = self.requirements.read_bytes() + sys.version.encode()
        return hashlib.sha256(text).hexdigest()[:12]

    @property
    def path(self) -> Path:
        return envs_root() / f"{self.name}-{self.digest()}"

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    def matches(self) -> str:
        """Which published release this environment reproduces (from its header comment)."""
        text = self.requirements.read_text()
        found = re.search(r"macrocosm-os/apex v[\d.]+ \(commit \w+\)", text.replace("\n# ", " "))
        return found.group(0) if found else "(no published source named)"

    def is_built(self) -> bool:
        return (self.path / READY).is_file() and self.python.exists()

    @property
    def sysroot(self) -> Path:
        return self.path / "sysroot"

    def modules(self) -> frozenset[str]:
        """Importable top-level modules: from the built environment, else the snapshot."""
        if self.is_built():
            data = json.loads((self.path / READY).read_text())
            return frozenset(data["modules"])
        return frozenset(self.snapshot.read_text().split())

    def require(self) -> Path:
        """The built environment's folder; EnvError with the command that builds it."""
        if not self.is_built():
            raise EnvError(
                f"the solution environment {self.name!r} is not built at {self.path}; "
                f"run `swarmpress arena env build {self.name}`"
            )
        return self.path


def envs_root() -> Path:
    """Where environments are built (read at call time, so tests and operators can move it)."""
    root = os.environ.get("SWARMPRESS_ARENA_ENVS")
    return Path(root) if root else Path.home() / ".cache" / "swarmpress" / "arena-envs"


def names() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.txt") if not p.name.endswith(".modules.txt"))


def get(name: str) -> Environment:
    if name not in names():
        raise EnvError(f"no solution environment {name!r}; known: {', '.join(names())}")
    return Environment(name)


def build(name: str, log: Callable[[str], None] | None = None) -> Path:
    """Create the environment's venv and install its requirements (no-op when built).

    Built in place (a venv records its absolute path) under a lock, so concurrent callers
    wait for one build; READY is written last, so a half-built folder is never used."""
    env = get(name)
    env.path.parent.mkdir(parents=True, exist_ok=True)
    with open(env.path.parent / f".{env.path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if env.is_built():
            if not (env.sysroot / READY).is_file():  # built before sysroots existed
                make_sysroot(env.path, env.sysroot)
            return env.path
        shutil.rmtree(env.path, ignore_errors=True)
        steps = [
            [_base_python(), "-m", "venv", str(env.path)],
            [str(env.python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "-r", str(env.requirements)],
        ]  # fmt: skip
        for cmd in steps:
            done = subprocess.run(cmd, capture_output=True, text=True)
            if log is not None:
                log(done.stdout + done.stderr)
            if done.returncode != 0:
                tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
                raise EnvError(f"building {name} failed ({cmd[2]}): " + " | ".join(tail))
        listed = subprocess.run(
            [str(env.python), "-I", "-c", _LIST_MODULES], capture_output=True, text=True
        )
        if listed.returncode != 0:
            raise EnvError(f"{name}: the new environment's python failed: {listed.stderr[-300:]}")
        make_sysroot(env.path, env.sysroot)
        record = {"name": name, "matches": env.matches(), "modules": json.loads(listed.stdout)}
        (env.path / READY).write_text(json.dumps(record, indent=1))
        return env.path


# Host programs the sandbox needs besides the interpreter: setpriv (bubblewrap drops to
# the sandbox uid with it) and a POSIX shell (for entries that call os.system).
SYSROOT_PROGRAMS = ("/usr/bin/setpriv", "/usr/bin/sh")
LIBDIR = "usr/lib/x86_64-linux-gnu"


def _elf_files(roots: list[Path]) -> list[Path]:
    out = []
    for root in roots:
        for p in [root] if root.is_file() else root.rglob("*"):
            if p.is_file() and not p.is_symlink() and (".so" in p.name or p.parent.name == "bin"):
                with open(p, "rb") as f:
                    if f.read(4) == b"\x7fELF":
                        out.append(p)
    return out


def make_sysroot(env_path: Path, sysroot: Path) -> None:
    """Copy the system libraries the interpreter, the environment's extension modules and
    SYSROOT_PROGRAMS link to (as ldd resolves them) into sysroot/usr, which the sandbox
    mounts as its /usr instead of the host's: the host's other gigabytes of /usr (its own
    Python packages among them) stay out, and so does their page cache."""
    base = Path(sys.base_prefix).resolve()
    ver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    roots = [env_path, base / "bin" / ver, base / "lib" / f"lib{ver}.so.1.0",
             base / "lib" / ver / "lib-dynload", *map(Path, SYSROOT_PROGRAMS)]  # fmt: skip
    elves = _elf_files([r for r in roots if r.exists() and r != env_path / "sysroot"])
    libs: dict[str, Path] = {}
    for i in range(0, len(elves), 200):
        out = subprocess.run(["ldd", *map(str, elves[i : i + 200])], capture_output=True,
                             text=True).stdout  # fmt: skip
        for m in re.finditer(r"^\s+(\S+) => (/\S+) \(", out, re.M):
            name, where = m.group(1), Path(m.group(2))
            if not str(where).startswith((str(env_path), str(base))):
                libs[name] = where.resolve()
    shutil.rmtree(sysroot, ignore_errors=True)
    (sysroot / LIBDIR).mkdir(parents=True)
    (sysroot / "usr" / "lib64").mkdir()
    (sysroot / "usr" / "bin").mkdir()
    for name, src in sorted(libs.items()):
        shutil.copy2(src, sysroot / LIBDIR / name)
    loader = Path("/lib64/ld-linux-x86-64.so.2").resolve()
    shutil.copy2(loader, sysroot / "usr" / "lib64" / "ld-linux-x86-64.so.2")
    shutil.copy2(loader, sysroot / LIBDIR / "ld-linux-x86-64.so.2")
    for prog in SYSROOT_PROGRAMS:
        shutil.copy2(Path(prog).resolve(), sysroot / "usr" / "bin" / Path(prog).name)
    (sysroot / READY).write_text(json.dumps(sorted(libs), indent=1))


def _base_python() -> str:
    """The interpreter environments are made from: this one's base installation."""
    base = (
        Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    )
    return str(base if base.exists() else sys.executable)
