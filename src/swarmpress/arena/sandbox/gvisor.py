"""The default engine: gVisor (`runsc`, Debian's package), one OCI container per call.

gVisor puts its own user-space kernel between the entry and the host: the entry's system
calls (any ABI: 32-bit calls are not served at all), namespaces, keyrings, memfds and
ptrace all live inside the sandbox's kernel and die with it. The container gets:

* a read-only root holding only core.View's files (the solution environment with its
  sysroot as /usr, the base interpreter's binary and standard library, the job at /sub);
  a size-capped private /tmp; no network (`--network=none`: loopback only);
* a memory cgroup on the host around the whole sandbox (gVisor's kernel included:
  MEMORY_ALLOWANCE is its overhead), so tmpfs, memfd and every process count;
* the host CPU it is pinned to (affinity set on runsc before it starts, inherited by the
  sandbox's threads; what the entry sets inside changes only gVisor's view);
* rlimits for file size, open files and processes (gVisor does not enforce RLIMIT_CPU:
  the wall clock ends a call, and the one pinned CPU bounds what it can use meanwhile);
* the harness starts as the container's root holding only CAP_SETUID/SETGID, runs the
  entry as one unprivileged uid and drops itself to another before any input arrives
  (gVisor lets a process list a same-uid process's /proc/PID/fd, so same-uid isolation
  via PR_SET_DUMPABLE is not enough there).

The ptrace platform is used: it needs no /dev/kvm and runs compute at native speed; the
system calls themselves are slower (start-up about 0.5 s, `import torch` ~3 s vs ~2 s).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

from swarmpress.arena.sandbox import cgroups
from swarmpress.arena.sandbox.core import UID_BASE, Limits, View

NAME = "gvisor"
MEMORY_ALLOWANCE = 128 << 20  # gVisor's own kernel, on top of the entry's memory limit
FLAGS = ["--network=none", "--platform=ptrace"]


def unavailable() -> str:
    """Empty when runsc can run a container here, else why not."""
    if shutil.which("runsc") is None:
        return "runsc is not installed (`apt-get install runsc`, or `make system-deps`)"
    if os.geteuid() != 0:
        return "runsc needs root to create its sandboxes (start the arena workers as root)"
    why = cgroups.available()
    if why:
        return f"gVisor sandboxes are memory-limited by a cgroup and {why}"
    return _probe()


@functools.cache
def _probe() -> str:
    """Run `true` in a minimal container once per process: empty if it works."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="swarmpress-gvisor-probe-") as tmp:
        root = Path(tmp)
        bundle = _bundle(root, ["/usr/bin/true"], [], Limits(), 0)
        cid = f"sp-probe-{uuid.uuid4().hex[:12]}"
        argv = ["runsc", "--root", str(root / "state"), *FLAGS, "run", "--bundle", str(bundle),
                cid]  # fmt: skip
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:
            return "a test container did not finish within 60 s"
        if done.returncode != 0:
            return f"runsc cannot start a container here: {done.stderr.strip()[-300:]}"
    return ""


def _mount(dest: str, source: str | None = None, tmpfs_bytes: int | None = None) -> dict:
    if tmpfs_bytes is not None:
        opts = ["nosuid", "nodev", "mode=1777", f"size={tmpfs_bytes}"]
        return {"destination": dest, "type": "tmpfs", "source": "tmpfs", "options": opts}
    return {"destination": dest, "type": "bind", "source": source or dest,
            "options": ["rbind", "ro", "nosuid", "nodev"]}  # fmt: skip


def _bundle(root: Path, args: list[str], mounts: list[dict], limits: Limits, slot: int,
            harness_uids: bool = False, usr: str = "/usr",
            memory_cgroup: str | None = None) -> Path:  # fmt: skip
    """Write an OCI bundle (config.json and an empty read-only rootfs) under root."""
    bundle = root / "bundle"
    rootfs = bundle / "rootfs"
    rootfs.mkdir(parents=True)
    for d in ("usr", "tmp", "proc", "dev", "sub"):
        (rootfs / d).mkdir()
    for link in ("bin", "lib", "lib64", "sbin"):  # a merged /usr, as Debian's
        (rootfs / link).symlink_to(f"usr/{link}")
    uid = 0 if harness_uids else UID_BASE + slot  # root of the container only
    caps = ["CAP_SETUID", "CAP_SETGID"] if harness_uids else []
    spec = {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": uid, "gid": uid},
            "args": args,
            "env": _ENV,
            "cwd": "/tmp",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps,
                             "inheritable": [], "ambient": []},
            "rlimits": [
                {"type": "RLIMIT_CPU", "hard": limits.cpu_s + 1, "soft": limits.cpu_s},
                {"type": "RLIMIT_FSIZE", "hard": limits.max_output_bytes + limits.tmp_bytes,
                 "soft": limits.max_output_bytes + limits.tmp_bytes},
                {"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024},
                {"type": "RLIMIT_NPROC", "hard": limits.nproc, "soft": limits.nproc},
                {"type": "RLIMIT_CORE", "hard": 0, "soft": 0},
            ],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "sandbox",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs"},
            _mount("/usr", usr),
            _mount("/tmp", tmpfs_bytes=limits.tmp_bytes),
            *mounts,
        ],
        "linux": {
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
        },
    }  # fmt: skip
    if memory_cgroup is not None:
        # The memory cgroup exists already (the session made it, so it outlives runsc and
        # its OOM count can be read): runsc joins it without owning it, and sizes gVisor's
        # memory to its limit, so a big allocation fails inside at once instead of faulting
        # pages in until the OOM killer comes.
        spec["linux"]["cgroupsPath"] = memory_cgroup
        spec["linux"]["resources"] = {"memory": {"limit": limits.memory_bytes + MEMORY_ALLOWANCE}}
    (bundle / "config.json").write_text(json.dumps(spec, indent=1))
    return bundle


_ENV = [
    "HOME=/tmp", "PATH=/usr/bin:/bin", "LANG=C.UTF-8", "PYTHONDONTWRITEBYTECODE=1",
    "LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu:/usr/lib",
    "OMP_NUM_THREADS=1", "MKL_NUM_THREADS=1", "OPENBLAS_NUM_THREADS=1",
]  # fmt: skip


def command(root: Path, view: View, args: list[str], limits: Limits, slot: int) -> list[str]:
    """The runsc command line for one sandbox whose job lives in root."""
    by_dest = {dest: src for src, dest in view.binds()}
    usr = by_dest.pop("/usr")
    mounts = [_mount(dest, src) for dest, src in by_dest.items()]
    # an empty read-only tmpfs over folders the entry must not read
    mounts += [{"destination": p, "type": "tmpfs", "source": "tmpfs",
                "options": ["ro", "size=4096"]} for p in view.hidden()]  # fmt: skip
    cid = root.name
    entry, harness = entry_uids(slot)
    argv = [view.python, args[0], args[1], "--uids", f"{entry},{harness}", *args[2:]]
    bundle = _bundle(root, argv, mounts, limits, slot, harness_uids=True, usr=usr,
                     memory_cgroup=f"/{cgroups.PARENT}/{cid}")  # fmt: skip
    return ["runsc", "--root", str(root / "state"), *FLAGS, "run", "--bundle", str(bundle), cid]


def cleanup(root: Path) -> None:
    """Remove the cgroups runsc made for the container in every controller (it would on a
    clean exit, but the worker kills runsc at the end of a call) and kill what is left."""
    for base in sorted(cgroups.ROOT.iterdir()) if cgroups.ROOT.is_dir() else []:
        d = base / cgroups.PARENT / root.name
        if d.is_dir():
            cgroups.remove(d)


def entry_uids(slot: int) -> tuple[int, int]:
    """(the entry's uid, the harness's uid) inside a gVisor sandbox."""
    return UID_BASE + 2 * slot, UID_BASE + 2 * slot + 1


def new_root(parent: Path) -> Path:
    """A job root whose name is also the container id and the cgroup name."""
    root = parent / f"sp-{uuid.uuid4().hex[:16]}"
    root.mkdir(mode=0o755)
    return root
