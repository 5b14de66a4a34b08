"""Runs inside the arena sandbox: loads one submission and serves exactly one call.

Standard library only (it runs in the sandbox's interpreter before anything is allowed in).
The parent talks to it over two inherited pipes with length-prefixed JSON messages; the
submission's own stdout and stderr go to a capped log. The parent times the call from
outside, so nothing the submission does to this process's clocks changes its score.

    harness.py call FORM SOLUTION KIND CMD_FD REPLY_FD   (FORM: functions | server)
    harness.py serve SOLUTION --port N                    (the server form's own process)
    harness.py route SOLUTION CMD_FD REPLY_FD             (routing track: the twin's tasks)
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.abc
import importlib.util
import json
import os
import runpy
import socket
import struct
import subprocess
import sys
import time
import traceback
import urllib.request
import uuid

ALLOWED = {"numpy", "torch", "zstandard", "brotli", "lz4"}
SERVER_ALLOWED = ALLOWED | {
    "fastapi", "uvicorn", "starlette", "pydantic", "pydantic_core", "multipart",
    "python_multipart", "anyio", "sniffio", "h11", "click", "typing_extensions",
    "annotated_types", "annotated_doc", "typing_inspection", "idna",
}  # fmt: skip
_FRAME = struct.Struct(">I")


class ImportGuard(importlib.abc.MetaPathFinder):
    """Refuse top-level imports the submission itself makes outside the allowed set.

    Imports made by allowed packages for their own needs (torch importing sympy, say) pass:
    the guard looks at the first frame outside the import machinery.
    """

    def __init__(self, solution: str, allowed: set[str]) -> None:
        self.solution = os.path.realpath(solution)
        self.allowed = allowed | set(sys.stdlib_module_names) | {"__main__"}

    def find_spec(self, fullname, path=None, target=None):
        top = fullname.partition(".")[0]
        if top in self.allowed:
            return None
        frame = sys._getframe(1)
        while frame is not None:
            name = frame.f_code.co_filename
            if not (name.startswith("<frozen importlib") or "importlib" in name):
                break
            frame = frame.f_back
        if frame is not None and os.path.realpath(frame.f_code.co_filename) == self.solution:
            allowed = ", ".join(sorted(ALLOWED))
            raise ModuleNotFoundError(
                f"module {top!r} is not available in the arena sandbox "
                f"(beyond the standard library only {allowed})"
            )
        return None


def _undumpable() -> None:
    """Keep sibling processes of the same uid (a submission's server) from ptracing us."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 4


def _send(fd: int, header: dict, payload: bytes = b"") -> None:
    body = json.dumps(header).encode()
    os.write(fd, _FRAME.pack(len(body)) + body)
    view = memoryview(payload)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _read_exact(fd: int, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise EOFError("control pipe closed")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _receive(fd: int) -> tuple[dict, bytes]:
    (n,) = _FRAME.unpack(_read_exact(fd, _FRAME.size))
    header = json.loads(_read_exact(fd, n))
    return header, _read_exact(fd, int(header.get("size", 0)))


def _load_functions(solution: str):
    sys.meta_path.insert(0, ImportGuard(solution, ALLOWED))
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


def _start_server(solution: str, deadline: float) -> tuple[subprocess.Popen, int]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-I", __file__, "serve", solution, "--port", str(port)],
        stdin=subprocess.DEVNULL,
    )
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the solution's server exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                if r.status == 200:
                    return proc, port
        except OSError:
            time.sleep(0.05)
    raise TimeoutError("the solution's server did not answer /health in time")


def _post(port: int, kind: str, data: bytes) -> bytes:
    boundary = uuid.uuid4().hex
    body = b"".join(
        [
            f"--{boundary}\r\n".encode(),
            b'Content-Disposition: form-data; name="file"; filename="data.bin"\r\n',
            b"Content-Type: application/octet-stream\r\n\r\n",
            data,
            f"\r\n--{boundary}--\r\n".encode(),
        ]
    )
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/{kind}",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=3600) as r:
        return r.read()


def call(form: str, solution: str, kind: str, cmd_fd: int, reply_fd: int) -> int:
    _undumpable()
    try:
        if form == "server":
            _server, port = _start_server(solution, time.monotonic() + 3600)
            run = lambda data: _post(port, kind, data)  # noqa: E731
        else:
            module = _load_functions(solution)
            fn = getattr(module, f"{kind}_data")
            run = fn
    except BaseException as exc:  # the submission failed to load: report, never crash
        _send(reply_fd, {"event": "error", "error": _describe(exc)})
        return 1
    _send(reply_fd, {"event": "ready"})
    _header, data = _receive(cmd_fd)
    try:
        out = run(data)
        if not isinstance(out, bytes | bytearray | memoryview):
            raise TypeError(f"{kind}_data returned {type(out).__name__}, not bytes")
        out = bytes(out)
    except BaseException as exc:
        _send(reply_fd, {"event": "error", "error": _describe(exc)})
        return 1
    _send(reply_fd, {"event": "done", "size": len(out)}, out)
    return 0


def route(solution: str, cmd_fd: int, reply_fd: int) -> int:
    """Routing track: run the twin here (next to the router, on the sandbox's loopback)
    against the submission's server, one seeded task per request, and report each result.

    The twin is this project's code (mounted read-only at /swarmpress); the submission runs
    in its own process and cannot reach this one's memory or clocks."""
    _undumpable()
    try:
        server, port = _start_server(solution, time.monotonic() + 60)
    except BaseException as exc:
        _send(reply_fd, {"event": "error", "error": _describe(exc)})
        return 1
    sys.path.insert(0, "/swarmpress")
    from swarmpress.twin.remote import RemotePolicy
    from swarmpress.twin.scenario import parse_scenario
    from swarmpress.twin.sim import Simulation

    _send(reply_fd, {"event": "ready"})
    _header, payload = _receive(cmd_fd)
    task = json.loads(payload)
    sc = parse_scenario(task["scenario"], "arena routing scenario")
    results = []
    for seed in task["seeds"]:
        if server.poll() is not None:
            gone = f"the router exited with code {server.returncode}"
            results.append({"seed": seed, "ok": False, "score": 0.0, "reason": gone})
            continue
        remote = RemotePolicy(f"http://127.0.0.1:{port}", sc.rules.route_call_limit_s)
        res = Simulation(sc, seed, remote, remote).run()
        results.append({"seed": seed, **{k: v for k, v in res.to_json().items()
                                         if k not in ("epochs",)}})  # fmt: skip
    out = json.dumps(results).encode()
    _send(reply_fd, {"event": "done", "size": len(out)}, out)
    return 0


def _describe(exc: BaseException) -> str:
    """The exception and where it happened, without source lines: an unrevealed
    submission's code must not leak through its failure reasons."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno})" if frames else ""
    return ("".join(traceback.format_exception_only(exc)).strip() + where)[-500:]


def serve(solution: str, argv: list[str]) -> None:
    sys.meta_path.insert(0, ImportGuard(solution, SERVER_ALLOWED))
    sys.argv = [solution, *argv]
    runpy.run_path(solution, run_name="__main__")


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2], sys.argv[3:])
    elif sys.argv[1] == "route":
        sys.exit(route(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
    else:
        _, _, form_, solution_, kind_, cmd_, reply_ = sys.argv
        sys.exit(call(form_, solution_, kind_, int(cmd_), int(reply_)))
