"""A memory cgroup around one whole sandbox: every process, tmpfs page and memfd counts.

Per-process rlimits miss memory a process holds outside its own mappings (a red team
held 1.5 GiB of memfd under a 1 GiB cap), so the sandbox runs inside a cgroup whose limit
covers all of it, and whose OOM killer ends the sandbox at the cap. cgroup v1 (a
`memory` hierarchy) and v2 (a unified hierarchy with the memory controller) both work;
where neither is writable (not root, a read-only /sys/fs/cgroup) `available()` says why
and the caller falls back to rlimits.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
PARENT = "swarmpress"


def _v1() -> Path | None:
    mem = ROOT / "memory"
    return mem if (mem / "memory.limit_in_bytes").exists() else None


def _v2() -> Path | None:
    for base in (ROOT, ROOT / "unified"):
        ctl = base / "cgroup.controllers"
        if ctl.exists() and "memory" in ctl.read_text().split():
            return base
    return None


def available() -> str:
    """Empty when a memory cgroup can be made here, else the reason it cannot."""
    base = _v1() or _v2()
    if base is None:
        return "no cgroup memory controller is mounted at /sys/fs/cgroup"
    if not os.access(base, os.W_OK):
        return f"{base} is not writable (run the arena workers as root)"
    return ""


class MemoryCgroup:
    """One sandbox's memory cgroup: create with a limit, join, read the peak, remove."""

    def __init__(self, name: str, limit_bytes: int) -> None:
        base = _v1()
        self.v2 = base is None
        base = base or _v2()
        if base is None:
            raise OSError(available())
        parent = base / PARENT
        parent.mkdir(exist_ok=True)
        if self.v2:
            with contextlib.suppress(OSError):  # let children use the memory controller
                (parent / "cgroup.subtree_control").write_text("+memory")
        self.dir = parent / name
        self.dir.mkdir()
        if self.v2:
            (self.dir / "memory.max").write_text(str(limit_bytes))
            with contextlib.suppress(OSError):
                (self.dir / "memory.swap.max").write_text("0")
        else:
            (self.dir / "memory.limit_in_bytes").write_text(str(limit_bytes))
            with contextlib.suppress(OSError):  # no swap beyond the limit where swap exists
                (self.dir / "memory.memsw.limit_in_bytes").write_text(str(limit_bytes))

    def join(self, pid: int = 0) -> None:
        """Move a process (0: the caller, e.g. from a preexec_fn) into the cgroup."""
        (self.dir / "cgroup.procs").write_text(str(pid or os.getpid()))

    def peak(self) -> int | None:
        name = "memory.peak" if self.v2 else "memory.max_usage_in_bytes"
        try:
            return int((self.dir / name).read_text())
        except (OSError, ValueError):
            return None

    def oom_killed(self) -> bool:
        """Whether the kernel killed something here for reaching the limit."""
        name = "memory.events" if self.v2 else "memory.oom_control"
        try:
            words = (self.dir / name).read_text().split()
            return int(words[words.index("oom_kill") + 1]) > 0
        except (OSError, ValueError, IndexError):  # no oom_kill counter: limit hits instead
            try:
                return not self.v2 and int((self.dir / "memory.failcnt").read_text()) > 0
            except (OSError, ValueError):
                return False

    def remove(self) -> None:
        """Kill whatever is left inside, then remove the cgroup."""
        remove(self.dir)


def remove(d: Path) -> None:
    """Kill every process left in the cgroup folder d, then remove it."""
    for _ in range(50):
        try:
            pids = [int(p) for p in (d / "cgroup.procs").read_text().split()]
        except (FileNotFoundError, ValueError):
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        try:
            d.rmdir()
            return
        except OSError:
            time.sleep(0.02)
