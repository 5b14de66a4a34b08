"""Hostile submissions against the sandbox: each is contained and reported as a failure."""

import contextlib
import socket
import subprocess
import textwrap
import threading
import time
from pathlib import Path

import pytest

from swarmpress.arena import sandbox
from swarmpress.arena.sandbox import Limits, run_call

LIMITS = Limits(wall_s=5.0, startup_s=20.0, cpu_s=10, nproc=32, log_bytes=4096)
DATA = bytes(range(256)) * 64


def _solution(tmp_path: Path, body: str, name: str = "sol.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


ECHO = """
def compress_data(data):
    return bytes(data)

def decompress_data(data):
    return bytes(data)
"""


def _call(path, kind="compress", data=DATA, form="functions", limits=LIMITS):
    return run_call(path, form, kind, data, limits=limits, slot=1)


def test_an_honest_solution_round_trips_and_is_timed(tmp_path):
    r = _call(_solution(tmp_path, ECHO))
    assert r.ok and r.output == DATA and 0 < r.seconds < 5


def test_socket_to_the_outside_or_the_arena_port_is_refused(tmp_path):
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.settimeout(0.1)
    accepted = []

    def accept():
        end = time.time() + 8
        while time.time() < end:
            with contextlib.suppress(OSError):
                accepted.append(listener.accept())

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    body = f"""
    import socket
    def compress_data(data):
        for host, port in (("127.0.0.1", {port}), ("8.8.8.8", 53), ("10.0.0.1", 80)):
            try:
                socket.create_connection((host, port), timeout=1).close()
                return b"CONNECTED " + host.encode()
            except OSError:
                pass
        raise RuntimeError("no network")
    decompress_data = compress_data
    """
    r = _call(_solution(tmp_path, body))
    t.join()
    listener.close()
    assert not r.ok and "no network" in r.reason
    assert accepted == []


def test_reading_the_pool_or_the_database_fails(tmp_path):
    secret = tmp_path / "home" / "arena.db"
    secret.parent.mkdir()
    secret.write_bytes(b"SECRET-POOL-BYTES")
    body = f"""
    def compress_data(data):
        for path in ({str(secret)!r}, {str(Path(__file__))!r}, "/root/.bashrc"):
            try:
                return open(path, "rb").read()
            except OSError:
                pass
        raise PermissionError("nothing readable")
    decompress_data = compress_data
    """
    r = _call(_solution(tmp_path, body))
    assert not r.ok and "nothing readable" in r.reason
    assert r.output is None


def test_writes_outside_its_temp_dir_fail_and_leave_nothing(tmp_path):
    target = tmp_path / "planted"
    body = f"""
    import os
    def compress_data(data):
        wrote = []
        for path in ({str(target)!r}, "/sub/planted", "/usr/planted", "/planted"):
            try:
                open(path, "wb").write(b"x")
                wrote.append(path)
            except OSError:
                pass
        open("/tmp/scratch", "wb").write(b"fine")  # its own temp dir works
        return repr(wrote).encode()
    decompress_data = compress_data
    """
    r = _call(_solution(tmp_path, body))
    assert r.ok and r.output == b"[]"
    assert not target.exists()


def test_fork_bomb_is_held_by_the_process_limit(tmp_path):
    body = """
    import os, time
    def compress_data(data):
        kids = 0
        try:
            while True:
                if os.fork() == 0:
                    time.sleep(60)
                    os._exit(0)
                kids += 1
        except OSError:
            raise RuntimeError(f"fork refused after {kids} children")
    decompress_data = compress_data
    """
    r = _call(_solution(tmp_path, body))
    assert not r.ok and "fork refused" in r.reason
    uid = sandbox.UID_BASE + 1
    time.sleep(0.5)
    left = subprocess.run(["pgrep", "-u", str(uid)], capture_output=True, text=True).stdout
    assert left.strip() == ""  # the whole sandbox died with the call


def test_allocating_10_gib_fails_cleanly(tmp_path):
    body = """
    def compress_data(data):
        block = bytearray(10 << 30)
        return bytes(block[:10])
    decompress_data = compress_data
    """
    r = _call(_solution(tmp_path, body))
    assert not r.ok and "MemoryError" in r.reason


def test_infinite_loop_times_out(tmp_path):
    body = """
    def compress_data(data):
        while True:
            pass
    decompress_data = compress_data
    """
    t = time.monotonic()
    r = _call(_solution(tmp_path, body))
    assert not r.ok and "timed out" in r.reason
    assert time.monotonic() - t < LIMITS.wall_s + 10


def test_huge_output_is_refused(tmp_path):
    body = """
    def compress_data(data):
        return b"x" * (300 << 20)
    decompress_data = compress_data
    """
    r = _call(
        _solution(tmp_path, body), limits=Limits(**{**LIMITS.__dict__, "max_output_bytes": 1 << 20})
    )
    assert not r.ok and ("exceeds the limit" in r.reason or "MemoryError" in r.reason)
    assert r.output is None


def test_megabytes_of_logs_are_capped(tmp_path):
    body = """
    import sys
    def compress_data(data):
        for _ in range(200):
            print("x" * 50_000)
            sys.stderr.write("y" * 10_000 + "\\n")
        return bytes(data)
    decompress_data = compress_data
    """
    r = _call(_solution(tmp_path, body))
    assert r.ok and r.output == DATA
    assert len(r.log) <= LIMITS.log_bytes and r.log_truncated
    assert r.details["log_bytes"] > 10_000_000


def test_importing_a_package_outside_the_allowed_set_fails(tmp_path):
    body = """
    import sqlalchemy
    def compress_data(data):
        return data
    decompress_data = compress_data
    """
    r = _call(_solution(tmp_path, body))
    assert not r.ok and "not available in the arena sandbox" in r.reason
    allowed = """
    import numpy, zstandard, brotli, lz4.frame, json, struct
    def compress_data(data):
        return zstandard.ZstdCompressor().compress(data)
    def decompress_data(data):
        return zstandard.ZstdDecompressor().decompress(data)
    """
    assert _call(_solution(tmp_path, allowed, "ok.py")).ok


def test_timing_tampering_does_not_change_the_measured_time(tmp_path):
    body = """
    import time
    time.perf_counter = lambda: 0.0
    time.monotonic = lambda: 0.0
    time.time = lambda: 0.0
    def compress_data(data):
        return bytes(data)
    def decompress_data(data):
        import os
        os.system("true")  # stays inside the sandbox
        t = __import__("time")
        t.sleep(1.5)
        return bytes(data)
    """
    r = _call(_solution(tmp_path, body), kind="decompress")
    assert r.ok and r.seconds >= 1.5


def test_work_before_the_call_cannot_see_the_input(tmp_path):
    # The input arrives over the pipe after "ready": import-time code sees no data at all
    # (/tmp holds nothing but, in a checkout under /tmp, the path to the interpreter).
    body = """
    import os, sys
    SEEN = sorted(os.listdir("/sub"))
    FILES = [os.path.join(d, f) for d, _, fs in os.walk("/tmp") for f in fs
             if not os.path.join(d, f).startswith((sys.prefix, sys.base_prefix))]
    def compress_data(data):
        return repr((SEEN, FILES)).encode()
    decompress_data = compress_data
    """
    r = _call(_solution(tmp_path, body))
    assert r.ok and r.output == b"(['harness.py', 'solution.py'], [])"


def test_a_crash_is_reported_with_its_signal(tmp_path):
    body = """
    import os, signal
    def compress_data(data):
        os.kill(os.getpid(), signal.SIGSEGV)
    decompress_data = compress_data
    """
    r = _call(_solution(tmp_path, body))
    assert not r.ok and "crashed" in r.reason


def test_missing_tools_give_a_clear_error(monkeypatch):
    monkeypatch.setattr(sandbox.shutil, "which", lambda tool: None)
    with pytest.raises(sandbox.SandboxUnavailable, match="bubblewrap"):
        sandbox.check_available()


def test_the_apex_reference_server_form_runs_unchanged():
    path = Path(__file__).with_name("fixtures") / "apex_baseline_server.py"
    c = _call(path, form="server", limits=Limits(**{**LIMITS.__dict__, "nproc": 64}))
    assert c.ok, c.reason + c.log
    d = _call(path, kind="decompress", data=c.output, form="server")
    assert d.ok and d.output == DATA


def test_kernel_keyrings_and_tracing_are_refused(tmp_path):
    # A keyring outlives the call: compress could hand the tensor to decompress through it.
    body = """
    import ctypes, os
    libc = ctypes.CDLL(None, use_errno=True)
    def compress_data(data):
        out = []
        key = libc.syscall(248, b"user", b"stash", bytes(data[:64]), 64, -4)  # add_key
        out.append((key, ctypes.get_errno()))
        out.append((libc.syscall(101, 16, os.getppid(), 0, 0), ctypes.get_errno()))  # ptrace
        return repr(out).encode()
    decompress_data = compress_data
    """
    r = _call(_solution(tmp_path, body))
    assert r.ok and r.output == b"[(-1, 1), (-1, 1)]"  # both EPERM


def test_a_harness_that_stops_reading_cannot_hang_the_worker(tmp_path):
    body = """
    import time, __main__
    __main__._receive = lambda fd: time.sleep(3600)
    def compress_data(data):
        return data
    decompress_data = compress_data
    """
    t = time.monotonic()
    r = _call(_solution(tmp_path, body), data=bytes(1 << 20))
    assert not r.ok and "timed out" in r.reason
    assert time.monotonic() - t < LIMITS.wall_s + 10


def test_a_forged_reply_header_is_a_crash_not_an_exception(tmp_path):
    body = """
    import json, os, struct, __main__
    def compress_data(data):
        head = json.dumps({"event": "done", "size": None}).encode()
        os.write(int(__import__("sys").argv[-1]), struct.pack(">I", len(head)) + head)
        os._exit(0)
    decompress_data = compress_data
    """
    r = _call(_solution(tmp_path, body))
    assert not r.ok and "crashed" in r.reason


def test_failure_reasons_do_not_quote_the_source(tmp_path):
    body = """
    def compress_data(data):
        secret_sauce = 42; raise ValueError("nope")
    decompress_data = compress_data
    """
    r = _call(_solution(tmp_path, body))
    assert not r.ok and "ValueError: nope" in r.reason and "secret_sauce" not in r.reason
