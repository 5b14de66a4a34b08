"""The fallback engine: bubblewrap namespaces, a libseccomp filter, rlimits, a memory
cgroup, an unprivileged uid. Used where gVisor cannot run (no runsc, no ptrace).

* bubblewrap: new network (loopback only), pid, ipc, uts and cgroup namespaces; a
  read-only view of core.View's files only (the environment with its sysroot as /usr,
  the base interpreter's binary and standard library, the job at /sub); a size-capped
  private /tmp; a cleared environment; it dies with its parent.
* seccomp.py's filter: other ABIs killed, namespaces, keyrings, ptrace, io_uring,
  re-pinning and more refused.
* setpriv drops to a per-slot unprivileged uid with no capabilities and no_new_privs, so
  RLIMIT_NPROC holds fork bombs.
* a memory cgroup around the whole sandbox where one can be made (cgroups.py); otherwise
  per-process data and address-space rlimits, which miss memfd and tmpfs pages.
* rlimits for CPU seconds, file size, processes, no core dumps; one CPU.
"""

from __future__ import annotations

import os
import resource
import shutil
from pathlib import Path

from swarmpress.arena.sandbox import cgroups, seccomp
from swarmpress.arena.sandbox.core import UID_BASE, Limits, View, ancestors

NAME = "bwrap"
AS_ALLOWANCE = 2 << 30  # address space beyond the memory limit when no cgroup bounds it


def unavailable() -> str:
    """Empty when bubblewrap sandboxes can run here, else why not."""
    for tool, pkg in (("bwrap", "bubblewrap"), ("setpriv", "util-linux")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (`apt-get install {pkg}`, or `make system-deps`)"
    if os.geteuid() != 0:
        return ("the bubblewrap sandbox runs as root so that it can drop each call to its own "
                "unprivileged uid; start the arena workers as root")  # fmt: skip
    try:
        seccomp.program()
    except seccomp.SeccompUnavailable as exc:
        return str(exc)
    return ""


def _binds(view: View) -> list[str]:
    """Read-only binds of core.View's paths (parents made traversable) and its covers."""
    args: list[str] = []
    made: set[str] = {"/usr", "/tmp"}
    for src, dest in view.binds():
        for d in ancestors(Path(dest)):
            if d not in made and not d.startswith(("/usr/", "/tmp/")):
                args += ["--perms", "0755", "--dir", d]
                made.add(d)
        args += ["--ro-bind", src, dest]
    for hidden in view.hidden():
        args += ["--perms", "0555", "--size", "4096", "--tmpfs", hidden]
    return args


def command(view: View, args: list[str], limits: Limits, slot: int, seccomp_fd: int) -> list[str]:
    """The bwrap command line for one sandbox."""
    argv = ["bwrap", "--seccomp", str(seccomp_fd)]
    # /tmp first: an environment that lives under /tmp is bound on top of it.
    argv += ["--perms", "01777", "--size", str(limits.tmp_bytes), "--tmpfs", "/tmp"]
    argv += _binds(view)
    for link in ("bin", "lib", "lib64", "sbin"):  # a merged /usr, as Debian's
        argv += ["--symlink", f"usr/{link}", f"/{link}"]
    argv += ["--proc", "/proc", "--dev", "/dev"]
    argv += ["--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts"]
    argv += ["--unshare-cgroup-try", "--die-with-parent", "--new-session", "--clearenv"]
    env = {
        "HOME": "/tmp", "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8",
        "LD_LIBRARY_PATH": "/usr/lib/x86_64-linux-gnu:/usr/lib",
        "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
    }  # fmt: skip
    for k, v in env.items():
        argv += ["--setenv", k, v]
    argv += ["--chdir", "/tmp"]
    uid = str(UID_BASE + slot)
    argv += ["setpriv", "--reuid", uid, "--regid", uid, "--clear-groups"]
    argv += ["--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]
    return [*argv, view.python, *args]


def rlimits(limits: Limits, cgroup: cgroups.MemoryCgroup | None) -> None:
    """Set the sandbox's rlimits (from a preexec_fn, before bwrap starts)."""
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 1))
    if cgroup is None:  # no cgroup: per-process memory caps are all there is
        resource.setrlimit(resource.RLIMIT_DATA, (limits.memory_bytes, limits.memory_bytes))
        space = limits.memory_bytes + AS_ALLOWANCE
        resource.setrlimit(resource.RLIMIT_AS, (space, space))
    cap = limits.max_output_bytes + limits.tmp_bytes
    resource.setrlimit(resource.RLIMIT_FSIZE, (cap, cap))
    resource.setrlimit(resource.RLIMIT_NPROC, (limits.nproc, limits.nproc))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
