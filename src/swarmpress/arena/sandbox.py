"""One sandboxed call of a submission: bubblewrap namespaces, rlimits, an unprivileged uid.

Each call (one compress or one decompress of one tensor) gets a fresh sandbox, so no state
survives from compress to decompress or from one tensor to the next. Isolation:

* bubblewrap: new network (loopback only), pid, ipc and uts namespaces; a read-only
  view of the system, the interpreter and its packages only (no project tree, no arena
  home, no pool); a size-capped private /tmp; cleared environment; dies with its parent.
* setpriv inside drops to a per-slot unprivileged uid with no capabilities and
  no_new_privs, so RLIMIT_NPROC holds fork bombs.
* rlimits set before exec: CPU seconds, data segment (memory), address space (memory plus
  AS_ALLOWANCE, which also bounds shared mappings), file size, processes, no core dumps;
  the sandbox is pinned to one CPU. These are per process: a cgroup memory limit for the
  whole sandbox is the stronger form, not used yet.
* a seccomp filter refuses kernel keyrings (data that would outlive the call), ptrace and
  cross-process memory access, new namespaces, eBPF, perf and userfaultfd.
* the parent times the call from outside, caps the reply and the log, and kills the whole
  process group at the wall-clock limit.

The input reaches the harness over a pipe only after it reported ready, so a submission
cannot start work before the clock does.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

_FRAME = struct.Struct(">I")
_HARNESS = Path(__file__).with_name("harness.py")
UID_BASE = 61000  # sandbox uids are UID_BASE + slot; nothing on the host owns them
AS_ALLOWANCE = 2 << 30  # address space beyond the memory limit (libraries, torch, stacks)


class SandboxUnavailable(RuntimeError):
    """bubblewrap or setpriv is missing or cannot create namespaces here."""


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


def check_available() -> None:
    """Raise SandboxUnavailable with the fix when the sandbox cannot run on this machine."""
    for tool in ("bwrap", "setpriv"):
        if shutil.which(tool) is None:
            raise SandboxUnavailable(
                f"{tool} is not installed; the arena needs bubblewrap and util-linux "
                "(`apt-get install bubblewrap`, or `make system-deps`)"
            )
    if os.geteuid() != 0:
        raise SandboxUnavailable(
            "the arena sandbox runs bubblewrap as root so that it can drop each call to its "
            "own unprivileged uid; start the arena workers as root (e.g. in a container)"
        )


# Syscalls refused inside the sandbox (x86-64 numbers): the kernel keyrings (per-uid
# storage that would outlive a call and let compress hand data to decompress), tracing
# and reading other processes' memory, new namespaces, eBPF, perf and userfaultfd.
_DENY_X86_64 = {
    248: "add_key", 249: "request_key", 250: "keyctl", 101: "ptrace",
    310: "process_vm_readv", 311: "process_vm_writev", 272: "unshare", 308: "setns",
    321: "bpf", 298: "perf_event_open", 323: "userfaultfd", 425: "io_uring_setup",
}  # fmt: skip


def seccomp_program() -> bytes | None:
    """A classic-BPF seccomp filter (for bwrap --seccomp) answering EPERM to _DENY_X86_64;
    None on other architectures (the namespaces and rlimits still apply)."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return None
    ld, jeq, ret = 0x20, 0x15, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ|K, BPF_RET|K
    allow, eperm = 0x7FFF0000, 0x00050000 | 1  # SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO | EPERM
    nrs = sorted(_DENY_X86_64)
    prog = [(ld, 0, 0, 4), (jeq, 1, 0, 0xC000003E), (ret, 0, 0, allow), (ld, 0, 0, 0)]
    for i, nr in enumerate(nrs):  # a match jumps to the EPERM return at the end
        prog.append((jeq, len(nrs) - i, 0, nr))
    prog += [(ret, 0, 0, allow), (ret, 0, 0, eperm)]
    return b"".join(struct.pack("<HBBI", *ins) for ins in prog)


def _ancestors(path: Path) -> list[str]:
    return [str(p) for p in reversed(path.parents) if str(p) != "/"]


def _python_binds() -> list[str]:
    """Read-only binds for this interpreter and its packages, parents made traversable."""
    roots = {Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve()}
    args: list[str] = []
    made: set[str] = set()
    for root in sorted(roots):
        for d in _ancestors(root):
            if d not in made and d != "/tmp" and not d.startswith(("/usr", "/lib", "/bin")):
                args += ["--perms", "0755", "--dir", d]
                made.add(d)
        args += ["--ro-bind", str(root), str(root)]
    return args


def _bwrap_argv(
    job: Path, slot: int, limits: Limits, twin: bool = False, seccomp_fd: int | None = None
) -> list[str]:
    argv = ["bwrap"]
    if seccomp_fd is not None:
        argv += ["--seccomp", str(seccomp_fd)]
    for sysdir in ("/usr", "/bin", "/lib", "/lib64", "/sbin"):
        if os.path.isdir(sysdir):
            argv += ["--ro-bind", sysdir, sysdir]
    for f in ("/etc/ld.so.cache", "/etc/localtime", "/etc/nsswitch.conf", "/etc/hosts"):
        if os.path.exists(f):
            argv += ["--ro-bind", f, f]
    # /tmp first: an interpreter that lives under /tmp (a CI checkout) is bound on top of it.
    argv += ["--perms", "01777", "--size", str(limits.tmp_bytes), "--tmpfs", "/tmp"]
    argv += _python_binds()
    argv += ["--ro-bind", str(job), "/sub"]
    if twin:  # the routing track runs this project's twin next to the submission
        pkg = str(Path(__file__).resolve().parents[1])
        argv += ["--perms", "0755", "--dir", "/swarmpress"]
        argv += ["--ro-bind", pkg, "/swarmpress/swarmpress"]
    argv += ["--proc", "/proc", "--dev", "/dev"]
    argv += ["--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts"]
    argv += ["--unshare-cgroup-try", "--die-with-parent", "--new-session", "--clearenv"]
    env = {
        "HOME": "/tmp",
        "PATH": "/usr/bin:/bin",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "LANG": "C.UTF-8",
    }
    for k, v in env.items():
        argv += ["--setenv", k, v]
    argv += ["--chdir", "/tmp"]
    uid = str(UID_BASE + slot)
    argv += ["setpriv", "--reuid", uid, "--regid", uid, "--clear-groups"]
    argv += ["--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]
    return argv


def _limit(limits: Limits, cpu: int | None):
    def apply() -> None:
        os.setsid()
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 1))
        resource.setrlimit(resource.RLIMIT_DATA, (limits.memory_bytes, limits.memory_bytes))
        # RLIMIT_DATA misses shared anonymous mappings; the address-space cap bounds them
        # too, with room for the interpreter's and torch's own mappings.
        space = limits.memory_bytes + AS_ALLOWANCE
        resource.setrlimit(resource.RLIMIT_AS, (space, space))
        cap = limits.max_output_bytes + limits.tmp_bytes
        resource.setrlimit(resource.RLIMIT_FSIZE, (cap, cap))
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.nproc, limits.nproc))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})

    return apply


class _LogReader(threading.Thread):
    """Drain the sandbox's stdout+stderr, keeping the first `cap` bytes."""

    def __init__(self, fd: int, cap: int) -> None:
        super().__init__(daemon=True)
        self.fd, self.cap = fd, cap
        self.buf = bytearray()
        self.total = 0

    def run(self) -> None:
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            self.total += len(chunk)
            room = self.cap - len(self.buf)
            if room > 0:
                self.buf += chunk[:room]
        os.close(self.fd)


class _Channel:
    """Length-prefixed JSON messages (plus raw payload) over the reply pipe, with deadlines."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pending = bytearray()

    def _read(self, n: int, deadline: float) -> bytes:
        while len(self.pending) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            ready, _, _ = select.select([self.fd], [], [], left)
            if not ready:
                raise TimeoutError
            chunk = os.read(self.fd, max(65536, n - len(self.pending)))
            if not chunk:
                raise EOFError
            self.pending += chunk
        out = bytes(self.pending[:n])
        del self.pending[:n]
        return out

    def receive(self, deadline: float, max_payload: int) -> tuple[dict, bytes]:
        (n,) = _FRAME.unpack(self._read(_FRAME.size, deadline))
        if n > 1 << 20:
            raise ValueError("reply header too large")
        header = json.loads(self._read(n, deadline))
        if not isinstance(header, dict):
            raise ValueError("reply header is not an object")
        size = header.get("size", 0)
        if not isinstance(size, int) or isinstance(size, bool):
            raise ValueError("reply header has a size that is not an integer")
        if size < 0 or size > max_payload:
            raise OverflowError(size)
        return header, self._read(size, deadline)


def _write_all(fd: int, data: bytes, deadline: float) -> None:
    """Write everything before the deadline (the pipe is non-blocking: a sandbox that stops
    reading cannot hang the worker)."""
    view = memoryview(data)
    while view:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        _, ready, _ = select.select([], [fd], [], left)
        if ready:
            try:
                view = view[os.write(fd, view[: 1 << 16]) :]
            except BlockingIOError:
                continue


def run_call(
    solution: str | Path,
    form: str,
    kind: str,
    data: bytes,
    limits: Limits = Limits(),
    slot: int = 0,
    cpu: int | None = None,
) -> CallResult:
    """Run compress or decompress of one submission on data in a fresh sandbox (or, with
    kind "route" and form "router", the twin's seeded tasks against a routing server)."""
    check_available()
    if (kind, form) != ("route", "router") and (
        kind not in ("compress", "decompress") or form not in ("functions", "server")
    ):
        raise ValueError(f"bad call {form}/{kind}")
    with tempfile.TemporaryDirectory(prefix="swarmpress-sbx-") as tmp:
        job = Path(tmp)
        job.chmod(0o755)
        shutil.copyfile(solution, job / "solution.py")
        shutil.copyfile(_HARNESS, job / "harness.py")
        for f in job.iterdir():
            f.chmod(0o644)
        return _run(job, form, kind, data, limits, slot, cpu)


def _run(job, form, kind, data, limits, slot, cpu) -> CallResult:
    cmd_r, cmd_w = os.pipe()
    rep_r, rep_w = os.pipe()
    log_r, log_w = os.pipe()
    fds = [cmd_r, rep_w]
    filt = seccomp_program()
    sec_fd = None
    if filt is not None:  # bwrap reads the filter from an inherited file descriptor
        sec_fd = os.memfd_create("swarmpress-seccomp")
        os.write(sec_fd, filt)
        os.lseek(sec_fd, 0, os.SEEK_SET)
        fds.append(sec_fd)
    py = str(Path(sys.executable).absolute())
    if kind == "route":
        tail = ["route", "/sub/solution.py", str(cmd_r), str(rep_w)]
    else:
        tail = ["call", form, "/sub/solution.py", kind, str(cmd_r), str(rep_w)]
    argv = [*_bwrap_argv(job, slot, limits, twin=kind == "route", seccomp_fd=sec_fd),
            py, "-I", "/sub/harness.py", *tail]  # fmt: skip
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_w,
            stderr=log_w,
            pass_fds=tuple(fds),
            preexec_fn=_limit(limits, cpu),
            close_fds=True,
        )
    finally:
        for fd in (cmd_r, rep_w, log_w, *([sec_fd] if sec_fd is not None else [])):
            os.close(fd)
    os.set_blocking(cmd_w, False)
    logs = _LogReader(log_r, limits.log_bytes)
    logs.start()
    chan = _Channel(rep_r)
    result = CallResult(ok=False)
    try:
        result = _converse(proc, chan, cmd_w, data, limits)
    finally:
        _kill(proc)
        os.close(cmd_w)
        os.close(rep_r)
        logs.join(timeout=5)
        result.log = logs.buf.decode("utf-8", "replace")
        result.log_truncated = logs.total > len(logs.buf)
        result.details["log_bytes"] = logs.total
    return result


def _converse(proc, chan: _Channel, cmd_w: int, data: bytes, limits: Limits) -> CallResult:
    try:
        header, _ = chan.receive(time.monotonic() + limits.startup_s, 0)
    except TimeoutError:
        return CallResult(False, reason=f"did not load within {limits.startup_s:g} s")
    except (EOFError, ValueError, OverflowError, TypeError):
        return CallResult(False, reason=_exit_reason(proc, "crashed while loading"))
    if header.get("event") != "ready":
        return CallResult(False, reason=f"failed to load: {header.get('error', header)}")
    start = time.perf_counter()
    try:
        msg = _frame({"cmd": "call", "size": len(data)}) + data
        _write_all(cmd_w, msg, start + limits.wall_s)
        header, payload = chan.receive(start + limits.wall_s, limits.max_output_bytes)
    except TimeoutError:
        reason = f"timed out after {limits.wall_s:g} s"
        return CallResult(False, seconds=limits.wall_s, reason=reason)
    except OverflowError as exc:
        return CallResult(False, reason=f"output of {exc.args[0]} bytes exceeds the limit")
    except (EOFError, OSError, ValueError, TypeError):  # broken pipe, garbage replies
        return CallResult(False, seconds=time.perf_counter() - start,
                          reason=_exit_reason(proc, "crashed during the call"))  # fmt: skip
    seconds = time.perf_counter() - start
    if header.get("event") == "done":
        return CallResult(True, output=payload, seconds=seconds)
    return CallResult(False, seconds=seconds, reason=f"raised: {header.get('error', header)}")


def _frame(header: dict) -> bytes:
    body = json.dumps(header).encode()
    return _FRAME.pack(len(body)) + body


def _exit_reason(proc: subprocess.Popen, what: str) -> str:
    try:
        code = proc.wait(timeout=2)
    except subprocess.TimeoutExpired:
        return what
    if code < 0:
        sig = signal.Signals(-code).name
        hint = " (CPU time limit)" if -code == signal.SIGXCPU else ""
        return f"{what}: killed by {sig}{hint}"
    return f"{what}: exit code {code}"


def _kill(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
