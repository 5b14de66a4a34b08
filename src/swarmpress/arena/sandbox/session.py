"""One sandbox from start to end: launch it with an engine, wait until the submission is
loaded, then one compress/decompress call or a stream of relayed HTTP requests.

The input reaches the harness only after it reported ready, so a submission cannot start
work before the clock does; the clock runs here, outside the sandbox. Every way a sandbox
can end (crash, timeout, memory cap, garbage on the pipe, a reply too large) becomes a
CallResult with a reason; nothing the entry does raises in the worker.
"""

from __future__ import annotations

import contextlib
import os
import signal
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from swarmpress.arena import envs
from swarmpress.arena.sandbox import bwrap, cache, cgroups, channel, gvisor, seccomp
from swarmpress.arena.sandbox.channel import (
    ChannelClosed,
    ChannelError,
    ChannelOversize,
    ChannelTimeout,
)
from swarmpress.arena.sandbox.core import CallResult, Limits, SandboxUnavailable, View, make_job

ENGINES = ("gvisor", "bwrap")
RESPONSE_CAP = 16 << 20  # the most a relayed HTTP answer may carry


def engine_unavailable(name: str) -> str:
    return gvisor.unavailable() if name == "gvisor" else bwrap.unavailable()


def pick_engine(name: str = "auto") -> str:
    """The engine to use: gVisor unless it cannot run here (then bubblewrap), or the one
    named; SandboxUnavailable with every reason when none can."""
    if name not in ("auto", *ENGINES):
        raise ValueError(f"unknown sandbox engine {name!r}; choose auto, gvisor or bwrap")
    order = ENGINES if name == "auto" else (name,)
    why = []
    for e in order:
        reason = engine_unavailable(e)
        if not reason:
            return e
        why.append(f"{e}: {reason}")
    raise SandboxUnavailable("no sandbox can run here: " + "; ".join(why))


class _LogReader(threading.Thread):
    """Drain the sandbox's stderr (the entry's stdout and stderr), keeping the first cap."""

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


class Session:
    """A running sandbox around one submission. Use as a context manager."""

    def __init__(self, solution: str | Path, args: list[str], env: str, limits: Limits,
                 slot: int = 0, cpu: int | None = None, engine: str = "auto",
                 warm_every_s: float = 60.0) -> None:  # fmt: skip
        self.limits, self.slot, self.cpu = limits, slot, cpu
        self.engine = pick_engine(engine)
        self.env_path = envs.get(env).require()
        self._tmp = tempfile.TemporaryDirectory(prefix="swarmpress-sbx-")
        self.root = gvisor.new_root(Path(self._tmp.name))
        self.view = View(self.env_path, make_job(self.root, solution))
        # every shared page resident (cache.py): no bits through the page cache
        cache.warm(self.view.shared(), self.view.hidden(), warm_every_s)
        self.cgroup: cgroups.MemoryCgroup | None = None
        self.details: dict = {"engine": self.engine}
        self._launch(["-I", "/sub/harness.py", *args])

    # ------------------------------------------------------------------ start and stop
    def _launch(self, args: list[str]) -> None:
        cmd_r, cmd_w = os.pipe()
        rep_r, rep_w = os.pipe()
        log_r, log_w = os.pipe()
        keep: list[int] = []
        if self.engine == "gvisor":
            # the whole sandbox, gVisor's own kernel included, in one memory cgroup of ours
            # (kept until close(), so the peak and an OOM kill can still be read)
            limit = self.limits.memory_bytes + gvisor.MEMORY_ALLOWANCE
            self.cgroup = cgroups.MemoryCgroup(self.root.name, limit)
            argv = gvisor.command(self.root, self.view, args, self.limits, self.slot)
        else:
            if not cgroups.available():
                self.cgroup = cgroups.MemoryCgroup(self.root.name, self.limits.memory_bytes)
            sec = os.memfd_create("swarmpress-seccomp")
            os.write(sec, seccomp.program())
            os.lseek(sec, 0, os.SEEK_SET)
            keep.append(sec)
            argv = bwrap.command(self.view, args, self.limits, self.slot, sec)
        self.details["memory_cgroup"] = self.cgroup is not None
        try:
            self.proc = subprocess.Popen(
                argv, stdin=cmd_r, stdout=rep_w, stderr=log_w, pass_fds=tuple(keep),
                preexec_fn=self._preexec, close_fds=True,
            )  # fmt: skip
        finally:
            for fd in (cmd_r, rep_w, log_w, *keep):
                os.close(fd)
        self.cmd_w = cmd_w
        os.set_blocking(cmd_w, False)
        self.reader = channel.Reader(rep_r)
        self.logs = _LogReader(log_r, self.limits.log_bytes)
        self.logs.start()

    def _preexec(self) -> None:
        os.setsid()
        if self.cpu is not None:
            os.sched_setaffinity(0, {self.cpu})
        if self.cgroup is not None:
            self.cgroup.join()
        if self.engine == "bwrap":
            bwrap.rlimits(self.limits, self.cgroup)

    def close(self) -> None:
        """Kill the sandbox and everything in it; collect the log and the memory peak."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        peak = self.cgroup.peak() if self.cgroup else None
        hit = self.cgroup.oom_killed() if self.cgroup else False
        if self.cgroup is not None:
            self.cgroup.remove()
        if self.engine == "gvisor":
            gvisor.cleanup(self.root)
        self.details.update(peak_memory=peak, memory_limit_hit=hit)
        for fd in (self.cmd_w, self.reader.fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.logs.join(timeout=5)
        self._tmp.cleanup()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def log(self) -> str:
        return channel.clean_text(bytes(self.logs.buf), self.limits.log_bytes)

    # ------------------------------------------------------------------ conversation
    def wait_ready(self) -> str:
        """Empty once the submission is loaded, else why it did not load."""
        caps = {channel.READY: 0, channel.ERROR: channel.TEXT_CAP}
        try:
            kind, payload = self.reader.receive(time.monotonic() + self.limits.startup_s, caps)
        except ChannelTimeout:
            return f"did not load within {self.limits.startup_s:g} s"
        except ChannelClosed:
            return self.exit_reason("crashed while loading")
        except ChannelError as exc:
            return f"sent an unreadable reply while loading: {exc}"
        if kind == channel.ERROR:
            return channel.clean_text(payload)
        return ""

    def call(self, data: bytes) -> CallResult:
        """One compress or decompress of data, timed from the first byte sent."""
        caps = {channel.DONE: self.limits.max_output_bytes, channel.ERROR: channel.TEXT_CAP}
        start = time.perf_counter()
        deadline = time.monotonic() + self.limits.wall_s
        try:
            channel.write_all(self.cmd_w, channel.frame(channel.CALL, data), deadline)
            kind, payload = self.reader.receive(deadline, caps)
        except ChannelTimeout:
            return CallResult(False, seconds=self.limits.wall_s,
                              reason=f"timed out after {self.limits.wall_s:g} s")  # fmt: skip
        except ChannelClosed:
            return CallResult(False, seconds=time.perf_counter() - start,
                              reason=self.exit_reason("crashed during the call"))  # fmt: skip
        except ChannelOversize as exc:
            what = "output" if exc.kind == channel.DONE else "error message"
            return CallResult(False, seconds=time.perf_counter() - start,
                              reason=f"{what} of {exc.size} bytes exceeds the limit "
                                     f"of {exc.cap} bytes")  # fmt: skip
        except ChannelError as exc:
            return CallResult(False, reason=f"sent an unreadable reply: {exc}")
        seconds = time.perf_counter() - start
        if kind == channel.DONE:
            return CallResult(True, output=payload, seconds=seconds)
        return CallResult(False, seconds=seconds, reason=f"raised: {channel.clean_text(payload)}")

    def request(self, method: str, path: str, body: bytes | None, timeout: float) -> tuple:
        """Relay one HTTP request to the submission's server: (status, body, seconds), the
        seconds measured by the harness around the HTTP exchange itself. Raises
        ChannelTimeout, ChannelClosed, ChannelError, or RuntimeError when the server
        refused the connection or broke it."""
        caps = {channel.RESPONSE: RESPONSE_CAP, channel.FAILED: channel.TEXT_CAP}
        deadline = time.monotonic() + timeout
        msg = channel.frame(channel.REQUEST, channel.request_payload(method, path, body))
        channel.write_all(self.cmd_w, msg, deadline)
        kind, payload = self.reader.receive(deadline, caps)
        if kind == channel.FAILED:
            raise RuntimeError(channel.clean_text(payload))
        if len(payload) < 10:
            raise ChannelError("sent a response without a status and a time")
        status, seconds = struct.unpack_from(">Hd", payload)
        if not 0.0 <= seconds <= timeout:  # NaN fails too; the wait here bounds the truth
            raise ChannelError(f"reported an impossible call time {seconds!r}")
        return status, payload[10:], seconds

    def exit_reason(self, what: str) -> str:
        """Why the sandbox ended: its exit code or signal, and the memory cap if it hit."""
        try:
            code = self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return what
        if self.cgroup is not None and self.cgroup.oom_killed():
            mib = self.limits.memory_bytes >> 20
            return f"{what}: killed at the memory limit ({mib} MiB)"
        sig = -code if code < 0 else code - 128 if code > 128 else 0
        if sig:
            name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else sig
            hint = " (CPU time limit)" if sig == signal.SIGXCPU else ""
            return f"{what}: killed by {name}{hint}"
        return f"{what}: exit code {code}"


def run_call(solution: str | Path, form: str, kind: str, data: bytes,
             limits: Limits | None = None, slot: int = 0, cpu: int | None = None,
             env: str = "apex-matrix-compression", engine: str = "auto") -> CallResult:  # fmt: skip
    """Run compress or decompress of one submission on data in a fresh sandbox."""
    if kind not in ("compress", "decompress") or form not in ("functions", "server"):
        raise ValueError(f"bad call {form}/{kind}")
    limits = limits or Limits()
    # A decompress call is the one that could read what an earlier call signalled: the
    # shared files are made fully resident right before it, whatever happened since.
    every = 0.0 if kind == "decompress" else 60.0
    with Session(solution, ["call", form, kind, "/sub/solution.py"], env, limits, slot, cpu,
                 engine, every) as s:  # fmt: skip
        why = s.wait_ready()
        result = CallResult(False, reason=why) if why else s.call(data)
    result.reason = channel.clean_text(result.reason.encode())  # prefix included: 500 chars
    result.log = s.log
    result.log_truncated = s.logs.total > len(s.logs.buf)
    result.details.update(s.details, log_bytes=s.logs.total)
    return result
