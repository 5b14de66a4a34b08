"""Hostile entries against the arena sandbox, on both engines (gVisor and bubblewrap).

Every case is an entry that genuinely tries the attack; each test asserts the attack
failed (the call failed with a reason, or the entry itself reports the refusal) and that
the honest path still works afterwards. Where the engines differ, a comment says what each
one does. Observed on this machine (runsc 20221219 on the ptrace platform; bubblewrap with
the libseccomp filter; cgroup v1):

* i386 `int 0x80` / x32 syscalls: bwrap kills the process (SIGSYS, libseccomp's bad-arch
  action); gVisor never serves the 32-bit table: `int 0x80` is taken as a 64-bit syscall
  by gVisor's own kernel (i386 keyctl 288 = accept4 -> EBADF, unshare 310 =
  process_vm_readv -> ENOSYS) and x32 numbers get ENOSYS.
* keyrings: bwrap EPERM (seccomp), gVisor EACCES (its kernel has no user keyrings).
* namespaces: bwrap EPERM for unshare and clone with CLONE_NEW*; gVisor creates them inside
  its own kernel (unshare returns 0, uid becomes 65534, uid_map writes EACCES) but mount
  is still EPERM and nothing but loopback exists.
* RLIMIT_CPU: bwrap kills with SIGXCPU; gVisor does not deliver SIGXCPU (the entry's
  rlimit reads (cpu_s, cpu_s + 1) yet it spins past it), so there only the wall clock
  ends the call; the sandbox is pinned to one host CPU, so CPU time never exceeds it.
* CPU affinity: bwrap EPERM (seccomp); gVisor accepts sched_setaffinity and reports every
  CPU, but every host thread of the sandbox stays on the one CPU it was given.
* ptrace of the harness: EPERM on both (the harness is not dumpable); process_vm_readv:
  bwrap EPERM, gVisor ENOSYS. gVisor would let a same-uid child open the harness's
  /proc/<pid>/fd, so there the entry and the harness run as different uids (bwrap: EACCES).
* memory: the memory cgroup's OOM killer ends the whole sandbox (SIGKILL) on both.
"""

from __future__ import annotations

import ast
import contextlib
import os
import socket
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from swarmpress.arena import envs, sandbox, service
from swarmpress.arena.evaluate import score_tensor
from swarmpress.arena.sandbox import (
    CallResult,
    Limits,
    Session,
    bwrap,
    cgroups,
    channel,
    gvisor,
    run_call,
)
from swarmpress.arena.sandbox.core import UID_BASE
from swarmpress.arena.validate import SolutionError, inspect_solution
from tests.arena.conftest import small_config

ROOT = Path(__file__).resolve().parents[2]
SLOT = 7  # this file's sandbox uid (UID_BASE + SLOT): other test files use other slots
UID = UID_BASE + SLOT
LIMITS = Limits(wall_s=5.0, startup_s=30.0, cpu_s=10, nproc=32, memory_bytes=512 << 20,
                log_bytes=4096)  # fmt: skip
DATA = bytes(range(256)) * 64
# A call that should end at its deadline must be over within this: the startup allowance,
# the wall limit and the teardown, with room for a loaded machine. It tells a hung worker
# from a finished one; it measures no speed.
HUNG_S = LIMITS.startup_s + 60.0
PYLIB = f"lib/python{sys.version_info.major}.{sys.version_info.minor}"
ENV = "apex-matrix-compression"

HONEST = """
import zstandard
def compress_data(data):
    return zstandard.ZstdCompressor(level=3).compress(data)
def decompress_data(data):
    return zstandard.ZstdDecompressor().decompress(data)
"""


@pytest.fixture
def roots(monkeypatch) -> list[Path]:
    """The job roots of the sandboxes started during the test (their names are the
    container ids and cgroup names)."""
    made: list[Path] = []
    real = gvisor.new_root

    def record(parent: Path) -> Path:
        made.append(real(parent))
        return made[-1]

    monkeypatch.setattr(gvisor, "new_root", record)
    return made


def _entry(tmp_path: Path, body: str, name: str = "entry.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def _call(engine, path, kind="compress", data=DATA, form="functions", limits=LIMITS, cpu=None):
    return run_call(path, form, kind, data, limits=limits, slot=SLOT, cpu=cpu, engine=engine)


def _limits(**kw) -> Limits:
    return Limits(**{**LIMITS.__dict__, **kw})


# Memory tests assert the OOM kill, not the clock: under a loaded CI machine gVisor's page
# faults are slow, and 5 s once ran out first (10 GiB: "timed out" at 574 MiB).
MEMORY_LIMITS = _limits(wall_s=120.0, cpu_s=120)


def _honest_still_works(engine: str, tmp_path: Path) -> None:
    """After an attack: a fresh honest entry on the same engine and slot round-trips."""
    path = _entry(tmp_path, HONEST, "honest.py")
    c = _call(engine, path)
    assert c.ok, c.reason + c.log
    d = _call(engine, path, kind="decompress", data=c.output)
    assert d.ok and d.output == DATA, d.reason


def _value(r) -> object:
    """The Python literal an entry returned (a repr of what it saw)."""
    assert r.ok, r.reason
    return ast.literal_eval(r.output.decode())


def _leftovers(name: str) -> list[str]:
    """Host processes or cgroups still belonging to the sandbox named `name` (bwrap: any
    process of the slot's uid; gVisor: any runsc process of the container)."""
    left = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            status = Path(f"/proc/{pid}/status").read_text()
            uid = int(next(ln for ln in status.splitlines() if ln.startswith("Uid:")).split()[1])
            if name.encode() in cmd or uid == UID:
                left.append(f"{pid}: {cmd[:80]!r}")
    if cgroups.ROOT.is_dir():
        left += [str(d) for d in cgroups.ROOT.glob(f"*/{cgroups.PARENT}/{name}") if d.is_dir()]
    return left


def _gone(name: str, within: float = 5.0) -> list[str]:
    end = time.monotonic() + within
    while (left := _leftovers(name)) and time.monotonic() < end:
        time.sleep(0.1)
    return left


# ---------------------------------------------------------------- honest path, basics


def test_an_honest_entry_round_trips_and_is_timed(engine, tmp_path, roots):
    path = _entry(tmp_path, HONEST)
    c = _call(engine, path)
    assert c.ok and len(c.output) < len(DATA) and 0 < c.seconds < LIMITS.wall_s
    assert c.details["engine"] == engine and c.details["memory_cgroup"]
    d = _call(engine, path, kind="decompress", data=c.output)
    assert d.ok and d.output == DATA
    assert [_gone(r.name) for r in roots] == [[], []]  # nothing of either sandbox is left


def test_the_engines_name_what_is_missing(monkeypatch):
    monkeypatch.setattr(gvisor.shutil, "which", lambda tool: None)
    monkeypatch.setattr(bwrap.shutil, "which", lambda tool: None)
    assert "runsc" in sandbox.engine_unavailable("gvisor")
    assert "bubblewrap" in sandbox.engine_unavailable("bwrap")
    with pytest.raises(sandbox.SandboxUnavailable, match=r"gvisor: .*bwrap: .*bubblewrap"):
        sandbox.check_available()
    with pytest.raises(ValueError, match="unknown sandbox engine"):
        sandbox.pick_engine("docker")


def test_a_crash_is_reported_with_its_signal(engine, tmp_path):
    body = """
    import os, signal
    def compress_data(data):
        os.kill(os.getpid(), signal.SIGSEGV)
    decompress_data = compress_data
    """
    r = _call(engine, _entry(tmp_path, body))
    assert not r.ok and r.reason == "crashed during the call: killed by SIGSEGV"


def test_failure_reasons_do_not_quote_the_source(engine, tmp_path):
    body = """
    def compress_data(data):
        secret_sauce = 42; raise ValueError("nope")
    decompress_data = compress_data
    """
    r = _call(engine, _entry(tmp_path, body))
    assert not r.ok and "ValueError: nope" in r.reason and "(at solution.py:3)" in r.reason
    assert "secret_sauce" not in r.reason


def test_work_before_the_call_cannot_see_the_input(engine, tmp_path):
    # The input reaches the harness only after it reported ready: import-time code finds
    # nothing of it anywhere it can look (/sub holds the entry and the harness; /tmp is
    # empty apart from the environment, where it lives under /tmp).
    body = """
    import os, sys
    SEEN = sorted(os.listdir("/sub"))
    FILES = [os.path.join(d, f) for d, _, fs in os.walk("/tmp") for f in fs
             if not os.path.join(d, f).startswith((sys.prefix, sys.base_prefix))]
    def compress_data(data):
        return repr((SEEN, FILES)).encode()
    decompress_data = compress_data
    """
    r = _call(engine, _entry(tmp_path, body))
    assert r.ok and r.output == b"(['harness.py', 'solution.py'], [])"


# ---------------------------------------------------------------- network, files, imports


def test_no_network_reaches_the_host_or_the_outside(engine, tmp_path):
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.settimeout(0.1)
    accepted: list = []
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            with contextlib.suppress(OSError):
                accepted.append(listener.accept())

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    body = f"""
    import socket
    def compress_data(data):
        reached = []
        for host, port in (("127.0.0.1", {port}), ("8.8.8.8", 53), ("10.0.0.1", 80)):
            try:
                socket.create_connection((host, port), timeout=1).close()
                reached.append(host)
            except OSError:
                pass
        return repr((reached, [n for _, n in socket.if_nameindex()])).encode()
    decompress_data = compress_data
    """
    try:
        r = _call(engine, _entry(tmp_path, body))
    finally:
        stop.set()
        t.join()
        listener.close()
    assert r.ok and r.output == b"([], ['lo'])", r.reason
    assert accepted == []


def test_the_arena_project_and_other_envs_cannot_be_read(engine, tmp_path):
    home = tmp_path / "home"
    (home / "pool").mkdir(parents=True)
    (home / "arena.db").write_bytes(b"SECRET-DB")
    (home / "pool" / "pool.json").write_bytes(b"SECRET-POOL")
    base_lib = Path(sys.base_prefix).resolve() / PYLIB
    own = envs.get(ENV).require()
    other = envs.get("apex-iota-simulator")
    secrets = [
        home / "arena.db",
        home / "pool" / "pool.json",
        ROOT / "pyproject.toml",
        ROOT / "src" / "swarmpress" / "__init__.py",
        Path(__file__),
        Path(sys.prefix) / PYLIB / "site-packages" / "numba" / "__init__.py",  # main venv
        base_lib / "site-packages" / "README.txt",  # the base interpreter's packages
        base_lib / "pydoc_data" / "topics.py",  # the pool's text comes from there
        other.path / envs.READY,  # another solution environment
        Path.home() / ".bashrc",
    ]
    present = [p for p in secrets if p.exists()]
    assert len(present) >= 7  # the host does hold most of them
    body = f"""
    import os
    def compress_data(data):
        read = []
        for path in {[str(p) for p in present]!r}:
            try:
                open(path, "rb").read(16)
                read.append(path)
            except OSError:
                pass
        envs = os.path.dirname({str(own)!r})
        try:
            listed = os.listdir(envs)
        except OSError:
            listed = []
        return repr((read, listed, os.path.isfile({str(own / envs.READY)!r}))).encode()
    decompress_data = compress_data
    """
    r = _call(engine, _entry(tmp_path, body))
    assert r.ok, r.reason
    read, listed, own_visible = _value(r)
    assert read == []
    assert set(listed) <= {own.name}  # the folder of environments shows at most its own
    assert own_visible  # the entry's own environment is there
    _honest_still_works(engine, tmp_path)


def test_writes_outside_tmp_fail_and_leave_nothing(engine, tmp_path):
    target = tmp_path / "planted"
    env_dir = envs.get(ENV).require()
    paths = [target, "/sub/planted", "/usr/planted", "/planted", "/dev/shm/planted",
             env_dir / "planted", Path(sys.base_prefix).resolve() / "planted"]  # fmt: skip
    body = f"""
    def compress_data(data):
        wrote = []
        for path in {[str(p) for p in paths]!r}:
            try:
                open(path, "wb").write(b"x")
                wrote.append(path)
            except OSError:
                pass
        open("/tmp/scratch", "wb").write(b"fine")  # its own /tmp works
        return repr(wrote).encode()
    decompress_data = compress_data
    """
    r = _call(engine, _entry(tmp_path, body))
    assert r.ok and r.output == b"[]", r.reason
    assert not any(Path(p).exists() for p in (target, env_dir / "planted"))


def test_modules_outside_the_environment_cannot_be_imported(engine, tmp_path):
    # The old in-sandbox import guard is gone: what is not mounted cannot be imported, even
    # with sys.path and sys.meta_path pointed at the host's package folders.
    base_lib = Path(sys.base_prefix).resolve() / PYLIB
    folders = [str(ROOT / "src"), str(Path(sys.prefix) / PYLIB / "site-packages"),
               str(base_lib / "site-packages"), str(base_lib)]  # fmt: skip
    body = f"""
    import importlib, importlib.machinery, importlib.util, os, sys
    FOLDERS = {folders!r}

    class Finder:
        @staticmethod
        def find_spec(name, path=None, target=None):
            return importlib.machinery.PathFinder.find_spec(name, FOLDERS)

    def compress_data(data):
        sys.path[:0] = FOLDERS
        sys.meta_path.insert(0, Finder)
        importlib.invalidate_caches()
        got = {{}}
        for name in ("swarmpress", "numba", "transformers", "sentence_transformers",
                     "ml_dtypes", "pytest", "pydoc_data", "pydoc_data.topics"):
            try:
                module = importlib.import_module(name)
            except ImportError as exc:
                got[name] = type(exc).__name__
                continue
            paths = list(getattr(module, "__path__", []))
            # an empty folder imports as an empty namespace package: nothing in it
            empty = module.__file__ is None and not any(os.listdir(p) for p in paths)
            got[name] = "EMPTY NAMESPACE" if empty else "IMPORTED"
        spec = importlib.util.spec_from_file_location("sp", FOLDERS[0] + "/swarmpress/__init__.py")
        try:
            spec.loader.exec_module(importlib.util.module_from_spec(spec))
            got["by path"] = "IMPORTED"
        except OSError as exc:
            got["by path"] = type(exc).__name__
        import numpy, zstd  # the environment's own packages still load
        return repr(got).encode()
    decompress_data = compress_data
    """
    r = _call(engine, _entry(tmp_path, body), limits=_limits(wall_s=30))
    assert r.ok, r.reason
    got = _value(r)
    # pydoc_data's folder is covered by an empty tmpfs: `import pydoc_data` finds an empty
    # namespace package there, and nothing of the text (pydoc_data.topics) is left
    assert got.pop("pydoc_data") in ("EMPTY NAMESPACE", "ModuleNotFoundError")
    assert set(got.values()) <= {"ModuleNotFoundError", "FileNotFoundError"}, repr(got)
    assert len(got) == 8


def test_a_top_level_import_of_a_missing_module_fails_to_load(engine, tmp_path):
    body = """
    import numba
    def compress_data(data):
        return data
    decompress_data = compress_data
    """
    r = _call(engine, _entry(tmp_path, body))
    assert not r.ok
    assert r.reason.startswith("failed to load: ModuleNotFoundError: No module named 'numba'")
    _honest_still_works(engine, tmp_path)


# ---------------------------------------------------------------- processes and limits


def test_a_fork_bomb_and_its_daemons_die_with_the_call(engine, tmp_path, roots):
    body = """
    import os, signal, time
    def compress_data(data):
        kids = 0
        try:
            while True:
                if os.fork() == 0:
                    os.setsid()  # daemonised: a new session, deaf to hangups
                    signal.signal(signal.SIGHUP, signal.SIG_IGN)
                    signal.signal(signal.SIGTERM, signal.SIG_IGN)
                    time.sleep(120)
                    os._exit(0)
                kids += 1
        except OSError:
            raise RuntimeError(f"fork refused after {kids} children")
    decompress_data = compress_data
    """
    r = _call(engine, _entry(tmp_path, body))
    assert not r.ok and r.output is None
    # RLIMIT_NPROC holds on both (gVisor counts the entry's own uid: the harness has another)
    assert r.reason.startswith("raised: RuntimeError: fork refused after "), r.reason
    kids = int(r.reason.split("after ")[1].split()[0])
    assert 0 < kids <= LIMITS.nproc
    assert _gone(roots[0].name) == []
    _honest_still_works(engine, tmp_path)


def test_a_handful_of_worker_processes_can_run(engine, tmp_path):
    # An honest entry may fork a few workers (well under the process limit).
    body = """
    import os, time
    def compress_data(data):
        kids = []
        for _ in range(16):
            pid = os.fork()
            if pid == 0:
                time.sleep(0.5)
                os._exit(0)
            kids.append(pid)
        return b"%d" % sum(os.waitpid(k, 0)[1] == 0 for k in kids)
    decompress_data = compress_data
    """
    r = _call(engine, _entry(tmp_path, body), limits=_limits(nproc=64))
    assert r.ok and r.output == b"16", r.reason


def test_an_endless_loop_times_out(engine, tmp_path):
    body = """
    def compress_data(data):
        while True:
            pass
    decompress_data = compress_data
    """
    t = time.monotonic()
    r = _call(engine, _entry(tmp_path, body), limits=_limits(wall_s=2.0))
    assert not r.ok and r.reason == "timed out after 2 s" and r.seconds == 2.0
    assert time.monotonic() - t < HUNG_S  # ended, not held: no speed is tested here


def test_the_cpu_time_limit(engine, tmp_path):
    body = """
    import threading
    def spin():
        while True:
            pass
    def compress_data(data):
        for _ in range(3):
            threading.Thread(target=spin, daemon=True).start()
        spin()
    decompress_data = compress_data
    """
    # bwrap: a wall clock far off, so only the CPU limit can end it (a busy machine gives
    # the entry less than a core: its CPU second takes longer than one wall second)
    wall = 60.0 if engine == "bwrap" else 4.0
    r = _call(engine, _entry(tmp_path, body), limits=_limits(cpu_s=1, wall_s=wall))
    assert not r.ok
    if engine == "bwrap":
        assert r.reason == "crashed during the call: killed by SIGXCPU (CPU time limit)"
    else:  # gVisor (runsc 20221219) does not enforce RLIMIT_CPU: the wall clock ends it
        assert r.reason == "timed out after 4 s" or "(CPU time limit)" in r.reason


def test_ten_gib_in_one_allocation_is_stopped(engine, tmp_path):
    body = """
    def compress_data(data):
        return bytes(bytearray(10 << 30))[:8]
    decompress_data = compress_data
    """
    r = _call(engine, _entry(tmp_path, body), limits=MEMORY_LIMITS)
    assert not r.ok and r.output is None
    # the memory cgroup's OOM killer ends the whole sandbox
    assert r.reason.startswith("crashed during the call: killed")
    _honest_still_works(engine, tmp_path)


MEMFD = """
import os
def compress_data(data):
    block = b"\\xa5" * (1 << 20)
    fds, held = [], 0
    while held < (3 << 29):  # 1.5 GiB, in memfds of 192 MiB (each under RLIMIT_FSIZE)
        fd = os.memfd_create("stash")
        os.ftruncate(fd, 192 << 20)
        for off in range(0, 192 << 20, 1 << 20):
            os.pwrite(fd, block, off)
            held += 1 << 20
        fds.append(fd)
    return b"HELD %d MiB" % (held >> 20)
decompress_data = compress_data
"""


def test_memfd_pages_count_against_the_memory_limit(engine, tmp_path):
    r = _call(engine, _entry(tmp_path, MEMFD), limits=MEMORY_LIMITS)  # 512 MiB limit
    assert not r.ok and r.output is None
    assert r.reason.startswith("crashed during the call: killed")
    # one memfd as large as the whole 1.5 GiB: RLIMIT_FSIZE refuses the ftruncate
    body = """
    import os
    def compress_data(data):
        fd = os.memfd_create("stash")
        os.ftruncate(fd, 3 << 29)
        return b"SIZED"
    decompress_data = compress_data
    """
    r = _call(engine, _entry(tmp_path, body, "one.py"))
    assert not r.ok and "[Errno 27] File too large" in r.reason
    _honest_still_works(engine, tmp_path)


def test_a_memory_limit_hit_is_named_in_the_reason(engine, tmp_path):
    r = _call(engine, _entry(tmp_path, MEMFD), limits=MEMORY_LIMITS)
    assert not r.ok and r.output is None
    assert "killed at the memory limit" in r.reason, r.reason
    assert "killed at the memory limit" in r.reason and "512 MiB" in r.reason
    assert r.details["memory_limit_hit"]


def test_filling_tmp_stops_at_its_size(engine, tmp_path):
    body = """
    def compress_data(data):
        block, n = b"\\x5a" * (1 << 20), 0
        try:
            with open("/tmp/fill", "wb") as f:
                for _ in range(1024):
                    f.write(block)
                    f.flush()
                    n += 1
        except OSError as exc:
            raise RuntimeError(f"/tmp full after {n} MiB: errno {exc.errno}") from None
        return b"WROTE %d MiB" % n
    decompress_data = compress_data
    """
    r = _call(engine, _entry(tmp_path, body), limits=_limits(tmp_bytes=32 << 20))
    assert not r.ok and r.reason.startswith("raised: RuntimeError: /tmp full after ")
    assert int(r.reason.split("after ")[1].split()[0]) <= 32 and "errno 28" in r.reason


def test_huge_output_is_refused(engine, tmp_path):
    body = """
    def compress_data(data):
        return b"x" * (8 << 20)
    decompress_data = compress_data
    """
    r = _call(engine, _entry(tmp_path, body), limits=_limits(max_output_bytes=1 << 20))
    assert not r.ok and r.output is None
    assert "8388608 bytes" in r.reason and "1048576" in r.reason, r.reason


def test_log_spam_and_binary_garbage_become_capped_text(engine, tmp_path):
    body = """
    import os, sys
    def compress_data(data):
        sys.stdout.buffer.write(b"\\x00\\xff\\xfe garbage \\x00\\xc3\\x28 " * 20 + b"\\n")
        sys.stdout.flush()
        os.write(2, bytes(range(256)) * 4)
        for _ in range(200):
            print("x" * 50_000)
            sys.stderr.write("y" * 10_000 + "\\n")
        return bytes(data)
    decompress_data = compress_data
    """
    r = _call(engine, _entry(tmp_path, body))
    assert r.ok and r.output == DATA
    assert isinstance(r.log, str) and "\x00" not in r.log and "garbage" in r.log
    assert len(r.log) <= LIMITS.log_bytes and r.log_truncated
    assert r.details["log_bytes"] > 10_000_000


def test_clock_tampering_does_not_change_the_measured_time(engine, tmp_path):
    body = """
    import os, time
    time.perf_counter = lambda: 0.0
    time.monotonic = lambda: 0.0
    time.time = lambda: 0.0
    def compress_data(data):
        return bytes(data)
    def decompress_data(data):
        os.system("true")  # stays inside the sandbox
        t0 = time.process_time()
        while time.process_time() - t0 < 0.3:  # some work, then a long sleep
            pass
        __import__("time").sleep(1.2)
        return bytes(data)
    """
    r = _call(engine, _entry(tmp_path, body), kind="decompress")
    assert r.ok and r.output == DATA and r.seconds >= 1.5


def test_a_harness_that_stops_reading_cannot_hang_the_worker(engine, tmp_path):
    # The entry breaks the harness's command reader at import time: the worker's write of
    # a 4 MiB input fills the pipe and must give up at the deadline.
    body = """
    import time, __main__
    __main__.Pipe._exact = lambda self, n: time.sleep(3600)
    def compress_data(data):
        return data
    decompress_data = compress_data
    """
    t = time.monotonic()
    r = _call(engine, _entry(tmp_path, body), data=bytes(4 << 20), limits=_limits(wall_s=2.0))
    assert not r.ok and r.reason == "timed out after 2 s"
    assert time.monotonic() - t < HUNG_S  # gave up, not hung: no speed is tested here


# ---------------------------------------------------------------- red team: kernel surface

I386 = """
import ctypes, mmap, os, struct

def int80(nr, a=0, b=0, c=0):
    # x86 machine code: the i386 call number and arguments in eax, ebx, ecx, edx, and the
    # registers a 64-bit call would read set too (rdi = -1, rsi = r10 = r8 = r9 = 0), so
    # whatever serves it, the outcome is fixed; then int 0x80 (rbx saved around it)
    code = b"".join([
        b"\\x53",  # push rbx
        b"\\x48\\xc7\\xc7\\xff\\xff\\xff\\xff",  # mov rdi, -1
        b"\\x48\\x31\\xf6\\x4d\\x31\\xd2\\x4d\\x31\\xc0\\x4d\\x31\\xc9",  # xor rsi r10 r8 r9
        b"\\xb8", struct.pack("<I", nr), b"\\xbb", struct.pack("<i", a),  # mov eax; mov ebx
        b"\\xb9", struct.pack("<i", b), b"\\xba", struct.pack("<i", c),  # mov ecx; mov edx
        b"\\xcd\\x80\\x5b\\xc3",  # int 0x80; pop rbx; ret
    ])
    page = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(code)
    address = ctypes.addressof(ctypes.c_char.from_buffer(page))
    return ctypes.CFUNCTYPE(ctypes.c_int)(address)()

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
X32 = 0x40000000

def compress_data(data):
    attack = data.decode()
    if attack == "i386-getpid":  # i386 getpid is 20: the pid only if the table is served
        return repr((int80(20), os.getpid())).encode()
    if attack == "i386-keyctl":  # keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_USER_KEYRING, 1)
        return repr(int80(288, 0, -4, 1)).encode()
    if attack == "i386-unshare":  # unshare(CLONE_NEWUSER)
        return repr(int80(310, 0x10000000)).encode()
    if attack == "x32-add_key":
        key = libc.syscall(X32 | 248, b"user", b"stash", b"abc", 3, -4)
        return repr((key, ctypes.get_errno())).encode()
    if attack == "x32-getpid":
        return repr((libc.syscall(X32 | 39), ctypes.get_errno())).encode()
    return data
decompress_data = compress_data
"""


@pytest.mark.parametrize(
    "attack", ["i386-getpid", "i386-keyctl", "i386-unshare", "x32-add_key", "x32-getpid"]
)
def test_other_syscall_abis_are_not_served(engine, tmp_path, attack):
    r = _call(engine, _entry(tmp_path, I386), data=attack.encode())
    if engine == "bwrap":  # libseccomp's filter kills any call through a foreign ABI
        assert not r.ok and r.reason == "crashed during the call: killed by SIGSYS"
    else:
        # gVisor never serves the 32-bit table: `int 0x80` reaches gVisor's own kernel as a
        # 64-bit call (20 = writev on a bad fd, 288 = accept4 on a bad fd: EBADF; 310 =
        # process_vm_readv: ENOSYS); x32 numbers are ENOSYS.
        assert r.ok, r.reason
        got = _value(r)
        expect = {"i386-getpid": (-9, got[1] if isinstance(got, tuple) else None),
                  "i386-keyctl": -9, "i386-unshare": -38,
                  "x32-add_key": (-1, 38), "x32-getpid": (-1, 38)}  # fmt: skip
        assert got == expect[attack]
    _honest_still_works(engine, tmp_path)


KEYRING = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
RINGS = (-4, -3)  # KEY_SPEC_USER_KEYRING, KEY_SPEC_SESSION_KEYRING
FILES = ("/tmp/stash", "/dev/shm/stash", "/tmp/.cache/stash")

def compress_data(data):  # hide the input where a later call might find it
    stored = []
    for ring in RINGS:  # add_key(type, description, payload, length, keyring)
        if libc.syscall(248, b"user", b"swarmpress-stash", data, len(data), ring) > 0:
            stored.append(ring)
    for path in FILES:
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
            stored.append(path)
        except OSError:
            pass
    return repr((stored, ctypes.get_errno())).encode()

def decompress_data(data):  # a separate sandbox: look for what compress left
    found = []
    for ring in RINGS:  # keyctl(KEYCTL_SEARCH, ring, "user", description, 0)
        key = libc.syscall(250, 10, ring, b"user", b"swarmpress-stash", 0)
        if key > 0:
            buf = ctypes.create_string_buffer(1 << 16)
            n = libc.syscall(250, 11, key, buf, 1 << 16)  # KEYCTL_READ
            found.append(buf.raw[: max(n, 0)])
    for path in FILES:
        try:
            found.append(open(path, "rb").read())
        except OSError:
            pass
    return repr(found).encode()
"""


def test_nothing_stashed_by_compress_reaches_decompress(engine, tmp_path):
    path = _entry(tmp_path, KEYRING)
    c = _call(engine, path)
    assert c.ok, c.reason
    stored, errno = _value(c)
    assert stored == ["/tmp/stash", "/tmp/.cache/stash"]  # keyrings refused, /tmp writable
    # bwrap: seccomp refuses add_key with EPERM; gVisor's kernel has no keyrings: EACCES
    assert errno == (1 if engine == "bwrap" else 13)
    d = _call(engine, path, kind="decompress", data=b"anything")
    assert d.ok and d.output == b"[]", d.output  # no keyring, no file survived the call
    _honest_still_works(engine, tmp_path)


def test_tracing_other_processes_is_refused(engine, tmp_path):
    body = """
    import ctypes, os, time
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    def attach(pid):
        return libc.syscall(101, 16, pid, 0, 0), ctypes.get_errno()  # PTRACE_ATTACH
    def compress_data(data):
        harness = os.getpid()
        r, w = os.pipe()
        kid = os.fork()
        if kid == 0:  # a child of the harness tries to trace it
            os.write(w, repr(attach(harness)).encode())
            os._exit(0)
        os.close(w)
        from_child = os.read(r, 100).decode()
        os.waitpid(kid, 0)
        sleeper = os.fork()
        if sleeper == 0:
            time.sleep(10)
            os._exit(0)
        own = attach(sleeper)
        os.kill(sleeper, 9)
        os.waitpid(sleeper, 0)
        buf = ctypes.create_string_buffer(16)
        local = (ctypes.c_void_p * 2)(ctypes.addressof(buf), 16)
        read = libc.syscall(310, harness, local, 1, local, 1, 0), ctypes.get_errno()
        return repr((from_child, own, read)).encode()
    decompress_data = compress_data
    """
    r = _call(engine, _entry(tmp_path, body))
    assert r.ok, r.reason
    # bwrap: seccomp EPERM for ptrace and process_vm_readv; gVisor: the harness is not
    # dumpable (EPERM), and process_vm_readv is not implemented (ENOSYS)
    vm = (-1, 1) if engine == "bwrap" else (-1, 38)
    assert _value(r) == ("(-1, 1)", (-1, 1), vm)


NAMESPACES = """
import ctypes, os, socket
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
NEWUSER, NEWNS, NEWNET, SIGCHLD = 0x10000000, 0x00020000, 0x40000000, 17

def in_child(fn):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(w, repr(fn()).encode())
        os._exit(0)
    os.close(w)
    out = b""
    while chunk := os.read(r, 65536):
        out += chunk
    os.waitpid(pid, 0)
    return eval(out)

def mounts():
    return {t: (libc.mount(b"none", t.encode(), b"tmpfs", 0, None), ctypes.get_errno())
            for t in ("/tmp", "/sub", "/usr")}

def via_unshare():
    uid = os.getuid()
    done = (libc.unshare(NEWUSER | NEWNS | NEWNET), ctypes.get_errno())
    maps = []
    for f, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {uid} 1")):
        try:
            with open(f"/proc/self/{f}", "w") as fh:
                fh.write(text)
            maps.append(f)
        except OSError:
            pass
    return done, maps, mounts(), [n for _, n in socket.if_nameindex()]

def via_clone():  # raw clone(flags, stack=0): the child tries the mounts and reports
    r, w = os.pipe()
    pid = libc.syscall(56, NEWUSER | NEWNS | NEWNET | SIGCHLD, 0, 0, 0, 0)
    if pid == 0:
        os.write(w, repr(mounts()).encode())
        os._exit(0)
    err = ctypes.get_errno()
    os.close(w)
    child = os.read(r, 4096).decode() if pid > 0 else ""
    if pid > 0:
        os.waitpid(pid, 0)
    return pid > 0, err, eval(child) if child else None

def compress_data(data):
    return repr((in_child(via_unshare), in_child(via_clone), mounts(),
                 sorted(os.listdir("/sub")), os.listdir("/tmp"))).encode()
decompress_data = compress_data
"""


def _mountinfo() -> set[str]:
    return {ln.split()[4] for ln in Path("/proc/self/mountinfo").read_text().splitlines()}


def test_new_namespaces_give_no_mounts_and_no_network(engine, tmp_path):
    before = _mountinfo()
    r = _call(engine, _entry(tmp_path, NAMESPACES))
    assert r.ok, r.reason
    (done, maps, inner, ifaces), (cloned, err, child), outer, sub, tmp = _value(r)
    eperm = {"/tmp": (-1, 1), "/sub": (-1, 1), "/usr": (-1, 1)}
    assert inner == outer == eperm and ifaces == ["lo"]
    assert sub == ["harness.py", "solution.py"] and tmp == []
    if engine == "bwrap":  # seccomp: unshare and clone with CLONE_NEW* are EPERM
        assert done == (-1, 1) and maps == [] and (cloned, err, child) == (False, 1, None)
    else:
        # gVisor creates the namespaces inside its own kernel (no host namespace is made):
        # unshare succeeds but the id maps cannot be written and mount stays EPERM
        assert done == (0, 0) and maps == []
        assert cloned and child == eperm
    assert _mountinfo() == before  # no mount appeared on the host
    _honest_still_works(engine, tmp_path)


# ---------------------------------------------------------------- red team: CPU pinning


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for p in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = Path(f"/proc/{p}/stat").read_text()
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(p))
    out, todo = [], [pid]
    while todo:
        out.append(todo.pop())
        todo += children.get(out[-1], [])
    return out


def test_the_entry_cannot_leave_its_cpu(engine, tmp_path):
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two CPUs")
    cpu = max(os.sched_getaffinity(0))
    body = """
    import os, time
    def compress_data(data):
        try:
            os.sched_setaffinity(0, set(range(os.cpu_count())))
            res = "set"
        except OSError as exc:
            res = exc.errno
        end = time.monotonic() + 2.0
        while time.monotonic() < end:  # spin where the host can watch
            pass
        return repr((res, sorted(os.sched_getaffinity(0)))).encode()
    decompress_data = compress_data
    """
    seen: dict[str, set[str]] = {}
    # the entry spins 2 s: a wall limit far beyond that, so a busy machine cannot fail it
    with Session(_entry(tmp_path, body), ["call", "functions", "compress", "/sub/solution.py"],
                 ENV, _limits(wall_s=60.0), SLOT, cpu, engine) as s:  # fmt: skip
        assert s.wait_ready() == ""
        stop = threading.Event()

        def watch():  # every thread of every host process of the sandbox
            while not stop.is_set():
                for pid in _descendants(s.proc.pid):
                    with contextlib.suppress(OSError, StopIteration):
                        for tid in os.listdir(f"/proc/{pid}/task"):
                            st = Path(f"/proc/{pid}/task/{tid}/status").read_text()
                            cpus = next(ln.split()[1] for ln in st.splitlines()
                                        if ln.startswith("Cpus_allowed_list:"))  # fmt: skip
                            seen.setdefault(f"{pid}/{tid}", set()).add(cpus)
                time.sleep(0.05)

        t = threading.Thread(target=watch, daemon=True)
        t.start()
        r = s.call(b"x")
        stop.set()
        t.join()
    assert r.ok, r.reason
    res, inside = _value(r)
    if engine == "bwrap":  # seccomp refuses sched_setaffinity
        assert res == 1 and inside == [cpu]
    else:  # gVisor's kernel accepts it and reports every CPU: only its own view changes
        assert res == "set"
    assert len(seen) >= 3  # the watcher did see the sandbox's processes and threads
    assert {c for cpus in seen.values() for c in cpus} == {str(cpu)}


# ---------------------------------------------------------------- red team: the reply pipe

CHANNEL = """
import gc, os, struct, sys, time
HEAD = struct.Struct(">BI")
READY, DONE, ERROR = 10, 11, 12

def reply_fd():  # the harness's private copy of the reply pipe
    return next(o.reply for o in gc.get_objects()
                if type(o).__name__ == "Pipe" and hasattr(o, "reply"))

def send(fd, raw):
    view = memoryview(raw)
    while view:
        view = view[os.write(fd, view):]

def compress_data(data):
    fd, attack = reply_fd(), data.decode()
    if attack == "unknown-kind":
        send(fd, HEAD.pack(99, 4) + b"abcd")
    elif attack == "done-4gib":
        send(fd, HEAD.pack(DONE, 2**32 - 1) + b"x" * 65536)
    elif attack == "error-4gib":
        send(fd, HEAD.pack(ERROR, 2**32 - 1) + b"x" * 65536)
    elif attack == "error-1mib":
        send(fd, HEAD.pack(ERROR, 1 << 20) + (b"\\x00\\xff\\xc3(" * (1 << 18)))
    elif attack == "error-garbage":
        text = b"\\x00\\xff\\xfe\\xc3\\x28" * 2000 + b"[" * 30000 + b"{" * 20000
        send(fd, HEAD.pack(ERROR, len(text)) + text)
    elif attack == "ready-again":
        send(fd, HEAD.pack(READY, 0))
    elif attack == "half-frame":
        send(fd, HEAD.pack(DONE, 100) + b"short")
        os._exit(0)
    elif attack == "header-then-exit":
        send(fd, b"\\x0b\\x00")
        os._exit(0)
    time.sleep(60)  # the worker must not wait for this
    return b"LATE"
decompress_data = compress_data
"""

# A reason, the session's fixed prefix included, keeps channel.REASON_CHARS (500)
# characters; the arena stores at most 500 too (service.REASON_CHARS).
REASON_MAX = channel.REASON_CHARS

CHANNEL_REASONS = {  # attack -> words the reason must hold (the wording may change)
    "unknown-kind": ("unknown kind 99",),
    "done-4gib": ("4294967295 bytes", f"{LIMITS.max_output_bytes}"),
    "error-4gib": ("4294967295 bytes", "65536"),
    "error-1mib": ("1048576 bytes", "65536"),
    "ready-again": ("unknown kind 10",),  # READY is no answer to a call
    "half-frame": ("crashed during the call", "exit code 0"),
    "header-then-exit": ("crashed during the call", "exit code 0"),
}


@pytest.mark.parametrize("attack", [*CHANNEL_REASONS, "error-garbage"])
def test_forged_replies_fail_the_call_not_the_worker(engine, tmp_path, attack):
    r = _call(engine, _entry(tmp_path, CHANNEL), data=attack.encode(),
              limits=_limits(wall_s=20.0))  # fmt: skip
    # decided at once, not at the deadline: the entry sleeps 60 s after its forgery, so a
    # worker that waited would report a timeout (judged by the reason, not the clock)
    assert "timed out" not in r.reason, r.reason
    assert not r.ok and r.output is None
    assert len(r.reason) <= REASON_MAX and "\x00" not in r.reason
    if attack == "error-garbage":  # an ERROR frame within its cap: cleaned text, capped
        assert r.reason.startswith("raised: \ufffd\ufffd") and r.reason.endswith("…")
        assert len(r.reason) == REASON_MAX
    else:
        assert all(words in r.reason for words in CHANNEL_REASONS[attack]), r.reason
    _honest_still_works(engine, tmp_path)  # the worker (this process) is unharmed


def test_a_forged_frame_while_loading_fails_the_load(engine, tmp_path):
    body = CHANNEL.replace("def compress_data", "send(reply_fd(), HEAD.pack(DONE, 3) + b'abc')"
                           "\ndef compress_data")  # fmt: skip
    r = _call(engine, _entry(tmp_path, body))
    assert not r.ok
    assert "while loading" in r.reason and "unknown kind 11" in r.reason, r.reason


ROUTER = """
import json, os, struct, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

def forge():  # the harness (our parent) holds the reply pipe: write a RESPONSE frame to it
    opened = []
    try:
        fds = os.listdir(f"/proc/{os.getppid()}/fd")
    except OSError as exc:
        return [f"listdir: errno {exc.errno}"]
    for fd in fds:
        try:
            out = os.open(f"/proc/{os.getppid()}/fd/{fd}", os.O_WRONLY)
            os.write(out, struct.pack(">BIHd", 13, 10, 299, 0.0))
            opened.append(fd)
        except OSError:
            pass
    return opened

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"ok": True} if self.path == "/health" else forge()).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

if __name__ == "__main__":  # /route and /balance-orchestrator: not needed here
    port = int(sys.argv[sys.argv.index("--port") + 1])
    HTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""


def test_a_relayed_server_cannot_forge_the_harness_replies(engine, tmp_path):
    # The server runs as a child of the harness. bwrap: same uid, but the harness is not
    # dumpable, so the kernel closes its /proc/<pid>/fd to the server. gVisor ignores that
    # for /proc/<pid>/fd, so there the entry and the harness run as different uids.
    with Session(_entry(tmp_path, ROUTER), ["relay", "/sub/solution.py"], ENV, LIMITS, SLOT,
                 None, engine) as s:  # fmt: skip
        assert s.wait_ready() == ""
        status, body, seconds = s.request("GET", "/forge", None, 10.0)
        again = s.request("GET", "/health", None, 10.0)
    assert status == 200 and 0 <= seconds < 10
    assert again[:2] == (200, b'{"ok": true}')  # no forged frame was left in the pipe
    # bwrap: the folder itself is closed (EACCES); gVisor lists it, but another uid's pipes
    # do not open: at most /dev/null and the log (fds 0-2) do, which carry no replies
    opened = ast.literal_eval(body.decode())
    assert opened == ["listdir: errno 13"] or set(opened) <= {"0", "1", "2"}, opened


# ---------------------------------------------------------------- red team: reasons


def test_the_held_out_input_cannot_leave_through_the_reason(engine, tmp_path):
    secret = os.urandom(4096)
    body = """
    import gc, os, struct
    def compress_data(data):  # the input, hex-encoded, as the exception text
        raise ValueError(data.hex())
    def decompress_data(data):  # the raw input as an ERROR frame of its own
        fd = next(o.reply for o in gc.get_objects()
                  if type(o).__name__ == "Pipe" and hasattr(o, "reply"))
        text = data.hex().encode()
        os.write(fd, struct.pack(">BI", 12, len(text)) + text)
        os._exit(0)
    """
    path = _entry(tmp_path, body)
    comp = small_config().competition[0]
    for kind in ("compress", "decompress"):
        r = _call(engine, path, kind=kind, data=secret)
        assert not r.ok and len(r.reason) <= REASON_MAX, kind
        assert secret.hex()[:64] in r.reason or secret.hex()[-64:] in r.reason  # it tried
        leaked = max(n for n in range(0, len(secret) + 1, 16) if secret[:n].hex() in r.reason
                     or secret[len(secret) - n :].hex() in r.reason)  # fmt: skip
        assert leaked < 256, (kind, leaked)  # at most a few hundred hex characters
        # what the arena stores of it (a compress failure, or a decompress one)
        c = r if kind == "compress" else CallResult(True, output=b"x")
        row = service._result_row(1, score_tensor(comp, "t", secret, c, r), comp.track)
        assert len(row.reason) <= service.REASON_CHARS == 500


# ---------------------------------------------------------------- upload check


@pytest.mark.parametrize(
    ("code", "module"),
    [
        ("import numba\n", "numba"),
        ("from transformers import AutoModel\n", "transformers"),
        ("x = __import__('swarmpress')\n", "swarmpress"),
        ("import importlib\nm = importlib.import_module('sentence_transformers.util')\n",
         "sentence_transformers"),
        ("def f():\n    import ml_dtypes\n", "ml_dtypes"),
    ],
)  # fmt: skip
def test_unknown_imports_are_refused_at_upload_naming_the_module(code, module):
    src = code + "def compress_data(d):\n    return d\ndecompress_data = compress_data\n"
    modules = envs.get(ENV).modules()
    with pytest.raises(SolutionError, match=f"imports '{module}', which the solution environment"):
        inspect_solution(src.encode(), 65536, "lossy", modules, ENV)


def test_optional_imports_and_the_environments_packages_are_allowed():
    src = (
        "try:\n    import numba\nexcept ImportError:\n    numba = None\n"
        "import torch, zstd, zstandard, brotli, lz4.frame, numpy, scipy.stats\n"
        "def compress_data(d):\n    return d\ndecompress_data = compress_data\n"
    )
    modules = envs.get(ENV).modules()
    assert inspect_solution(src.encode(), 65536, "lossy", modules, ENV) == "functions"


# ---------------------------------------------------------------- red team: page cache

PAGECACHE = Path(__file__).with_name("hostile") / "rt_pagecache.py.in"


def _matching_bits(a: bytes, b: bytes, n: int = 64) -> int:
    return sum(((a[i // 8] ^ b[i // 8]) >> (i % 8)) & 1 == 0 for i in range(n))


def _evict(path: Path) -> None:
    """Drop the attack's blocks from the host page cache (what global reclaim may do)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("pagecache", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    env = envs.get(ENV).path
    mod.sys = type("S", (), {"prefix": str(env)})  # the environment's files, seen from here
    for file, _ in mod._slots():
        fd = os.open(file, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)


def test_no_bits_cross_from_compress_to_decompress_through_the_page_cache(engine, tmp_path):
    # The red team's channel: compress reads chosen blocks of a big shared file, decompress
    # times the same reads. Measured on this machine with the blocks evicted and no
    # warming, it carried 63 of 64 bits under bubblewrap and 56 under gVisor (docs/arena.md);
    # with cache.py's warming before decompress it is at chance, even when the blocks were
    # evicted before compress (as global reclaim may do between warm passes). A timing
    # control is left out of the suite: on a loaded CI machine it is noise-bound.
    path = _entry(tmp_path, PAGECACHE.read_text())
    secret = os.urandom(4096)
    _evict(path)
    c = _call(engine, path, data=secret, limits=_limits(wall_s=30.0))
    assert c.ok, c.reason
    d = _call(engine, path, "decompress", data=c.output, limits=_limits(wall_s=30.0))
    assert d.ok, d.reason
    assert _matching_bits(d.output, secret) <= 46  # 64 coin flips reach 47 with p ~ 1e-4
