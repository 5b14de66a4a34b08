"""Runs inside the arena sandbox: loads one submission and serves one call, or relays HTTP.

Standard library only: it runs with the solution environment's interpreter, next to the
submission. It talks to the worker over its standard input (commands) and a private copy
of its standard output (replies), in the binary frames of channel.py; the submission's own
stdout and stderr both go to the log. The worker times every call from outside, so nothing
the submission does to clocks in here changes its score.

    harness.py [--uids ENTRY,HARNESS] call functions|server compress|decompress SOLUTION
    harness.py [--uids ENTRY,HARNESS] relay SOLUTION   (a routing server: forward requests)

With --uids (the harness starts as the sandbox's root, holding only CAP_SETUID/SETGID),
the submission runs as uid ENTRY and the harness drops to uid HARNESS before it reads any
input, so a submission's server cannot open the harness's pipes through /proc, whatever
the kernel's view of PR_SET_DUMPABLE (gVisor lets a same-uid process list them).

The server form is started the Apex way, `python SOLUTION --port N`, the host left to the
file (Apex's files bind 0.0.0.0); the sandbox has no network beyond its own loopback.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import importlib.util
import os
import socket
import struct
import subprocess
import sys
import time
import traceback
import uuid

HEAD = struct.Struct(">BI")
CALL, REQUEST = 1, 2
READY, DONE, ERROR, RESPONSE, FAILED = 10, 11, 12, 13, 14
MAX_INPUT = 1 << 31


def _undumpable() -> None:
    """Keep the submission's processes (same uid) from ptracing or reading this one."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 4


class Pipe:
    """The worker's channel: commands in on a private copy of fd 0, replies out on a
    private copy of fd 1; fds 0 and 1 themselves become /dev/null and the log."""

    def __init__(self) -> None:
        self.cmd = os.dup(0)
        self.reply = os.dup(1)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        os.dup2(2, 1)
        for fd in (self.cmd, self.reply):
            os.set_inheritable(fd, False)

    def send(self, kind: int, payload: bytes = b"") -> None:
        for stream in (sys.stdout, sys.stderr):  # the log first: the sandbox ends soon after
            with contextlib.suppress(Exception):
                stream.flush()
        view = memoryview(HEAD.pack(kind, len(payload)) + payload)
        while view:
            view = view[os.write(self.reply, view) :]

    def error(self, text: str) -> None:
        self.send(ERROR, text.encode("utf-8", "replace")[:4000])

    def _exact(self, n: int) -> bytes:
        chunks, left = [], n
        while left:
            chunk = os.read(self.cmd, min(left, 1 << 20))
            if not chunk:
                raise EOFError("the worker closed the command pipe")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def receive(self) -> tuple[int, bytes]:
        kind, n = HEAD.unpack(self._exact(HEAD.size))
        if n > MAX_INPUT:
            raise ValueError("command too large")
        return kind, self._exact(n)


def _describe(exc: BaseException) -> str:
    """The exception and the line it came from, without source text."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno})" if frames else ""
    return "".join(traceback.format_exception_only(exc)).strip()[-400:] + where


def _load_functions(solution: str):
    sys.path.insert(0, os.path.dirname(solution))
    spec = importlib.util.spec_from_file_location("solution", solution)
    module = importlib.util.module_from_spec(spec)
    sys.modules["solution"] = module
    spec.loader.exec_module(module)
    for name in ("compress_data", "decompress_data"):
        if not callable(getattr(module, name, None)):
            raise TypeError(f"the solution defines no function {name}(data: bytes) -> bytes")
    return module


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _drop(uid: int) -> None:
    """Become uid (and its group) for good: no supplementary groups, no capabilities."""
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)


class Server:
    """The submission run as `python SOLUTION --port N`, and a keep-alive client to it."""

    def __init__(self, solution: str, uid: int | None = None) -> None:
        self.port = _free_port()
        self.proc = subprocess.Popen(
            [sys.executable, solution, "--port", str(self.port)],
            stdin=subprocess.DEVNULL,
            cwd="/tmp",
            preexec_fn=None if uid is None else (lambda: _drop(uid)),
        )
        self.conn: http.client.HTTPConnection | None = None

    def wait_healthy(self) -> None:
        """Poll GET /health until it answers 200 (the worker enforces the deadline)."""
        while True:
            code = self.proc.poll()
            if code is not None:
                raise RuntimeError(
                    f"the solution's server exited with code {code} before answering "
                    "/health (its log shows why)"
                )
            try:
                status, _ = self.request("GET", "/health", None, timeout=2)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)

    def request(self, method: str, path: str, body: bytes | None, headers=None, timeout=None):
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        self.conn.timeout = timeout
        if self.conn.sock is not None:
            self.conn.sock.settimeout(timeout)
        try:
            self.conn.request(method, path, body=body, headers=headers or {})
            r = self.conn.getresponse()
            return r.status, r.read()
        except BaseException:
            self.conn.close()
            self.conn = None
            raise

    def upload(self, kind: str, data: bytes) -> bytes:
        """POST /compress or /decompress with the data as multipart field `file`."""
        boundary = uuid.uuid4().hex
        body = b"".join([
            f"--{boundary}\r\n".encode(),
            b'Content-Disposition: form-data; name="file"; filename="data.bin"\r\n',
            b"Content-Type: application/octet-stream\r\n\r\n",
            data,
            f"\r\n--{boundary}--\r\n".encode(),
        ])  # fmt: skip
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        status, out = self.request("POST", f"/{kind}", body, headers, timeout=None)
        if status != 200:
            detail = out[:300].decode("utf-8", "replace")
            raise RuntimeError(f"POST /{kind} answered HTTP {status}: {detail}")
        return out


def call(pipe: Pipe, form: str, kind: str, solution: str, uids=None) -> int:
    try:
        if form == "server":
            server = Server(solution, uids and uids[0])
            if uids:
                _drop(uids[1])
            server.wait_healthy()
            run = lambda data: server.upload(kind, data)  # noqa: E731
        else:
            if uids:  # the submission runs in this process: as its own uid
                _drop(uids[0])
            run = getattr(_load_functions(solution), f"{kind}_data")
    except BaseException as exc:  # the submission failed to load: report, never crash
        pipe.error("failed to load: " + _describe(exc))
        return 1
    pipe.send(READY)
    cmd, data = pipe.receive()
    if cmd != CALL:
        return 2
    try:
        out = run(data)
        if not isinstance(out, bytes | bytearray | memoryview):
            raise TypeError(f"{kind}_data returned {type(out).__name__}, not bytes")
        out = bytes(out)
    except BaseException as exc:
        pipe.error(_describe(exc))
        return 1
    pipe.send(DONE, out)
    return 0


def relay(pipe: Pipe, solution: str, uids=None) -> int:
    """Routing track: start the server, then forward each request the worker sends."""
    try:
        server = Server(solution, uids and uids[0])
        if uids:
            _drop(uids[1])
        server.wait_healthy()
    except BaseException as exc:
        pipe.error("failed to load: " + _describe(exc))
        return 1
    pipe.send(READY)
    headers = {"Content-Type": "application/json"}
    while True:
        try:
            cmd, payload = pipe.receive()
        except EOFError:
            return 0
        if cmd != REQUEST:
            return 2
        method, n = struct.unpack_from(">BH", payload)
        path = payload[3 : 3 + n].decode()
        body = payload[3 + n :] if method == 1 else None
        t0 = time.perf_counter()
        try:
            status, out = server.request(
                "POST" if method == 1 else "GET", path, body, headers, timeout=3600
            )
        except BaseException as exc:
            pipe.send(FAILED, _describe(exc).encode("utf-8", "replace")[:4000])
            continue
        seconds = time.perf_counter() - t0  # measured here, next to the router
        pipe.send(RESPONSE, struct.pack(">Hd", status, seconds) + out)


def main(argv: list[str]) -> int:
    _undumpable()
    uids = None
    if argv[0] == "--uids":
        uids = tuple(int(u) for u in argv[1].split(","))
        argv = argv[2:]
    pipe = Pipe()
    if argv[0] == "relay":
        return relay(pipe, argv[1], uids)
    _, form, kind, solution = argv
    return call(pipe, form, kind, solution, uids)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
