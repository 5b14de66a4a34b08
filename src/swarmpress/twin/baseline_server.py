"""A random-routing reference server for the twin's HTTP contract (`twin serve-baseline`).

Enters at the requesting miner, then a uniformly random active miner of every later layer,
and balances by dealing miners to layers in turn (one layer each): the baseline any routing
submission should beat.
Run: python -m swarmpress.twin.baseline_server --port 8000

Fast, so that it is not what a twin run with an external router waits on (docs/twin.md
"External router speed"): the request is decoded with msgspec into structs holding only
the fields this router reads (miner_id, and each MinerInfo's receiver_node_id and active;
msgspec checks the rest is well-formed JSON and skips it without building objects: ~0.25 ms
for a 500 KB request, against ~5 ms for json.loads of the whole of it), answers are encoded
by msgspec, and the app is a bare ASGI callable (no framework routing or validation).
`main` serves it on a plain blocking HTTP/1.1 server (`serve`): one thread per connection,
kept alive, which has less per-request overhead than an event loop for a twin's one
connection; `twin serve-baseline` runs the same app under uvicorn.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import socket
import socketserver
from collections.abc import Callable

import msgspec


class _Miner(msgspec.Struct):
    receiver_node_id: str
    active: bool
    miner_id: str


class _Route(msgspec.Struct):
    miner_id: str
    miners: list[list[_Miner]]


class _Balance(msgspec.Struct):
    miners: dict[str, msgspec.Raw]
    n_layers: int


_route = msgspec.json.Decoder(_Route)
_balance = msgspec.json.Decoder(_Balance)
_encode = msgspec.json.Encoder().encode
Handler = Callable[[str, str, bytes | bytearray], tuple[int, bytes]]


def create_handler(seed: int = 0) -> Handler:
    """handle(method, path, body) -> (status, JSON body): the router itself, without HTTP."""
    rng = random.Random(seed)
    choice = rng.choice

    def route(body: bytes | bytearray) -> bytes:
        req = _route.decode(body)
        entry = next((m for m in req.miners[0] if m.miner_id == req.miner_id), None) if (
            req.miners) else None  # fmt: skip
        path = [] if entry is None else [entry.receiver_node_id]
        for layer in req.miners[len(path) :]:
            alive = [m for m in layer if m.active] or layer
            path.append(choice(alive).receiver_node_id)
        return _encode({"path": path})

    def balance(body: bytes | bytearray) -> bytes:
        req = _balance.decode(body)
        n = req.n_layers
        return _encode({"assignments": {m: [i % n] for i, m in enumerate(sorted(req.miners))}})

    posts = {"/route": route, "/balance-orchestrator": balance}

    def handle(method: str, path: str, body: bytes | bytearray) -> tuple[int, bytes]:
        if path == "/health":
            return (200, b'{"ok":true}') if method in ("GET", "HEAD") else (405, b"{}")
        fn = posts.get(path)
        if fn is None:
            return 404, b'{"detail":"Not Found"}'
        if method != "POST":
            return 405, b'{"detail":"Method Not Allowed"}'
        try:
            return 200, fn(body)
        except (msgspec.DecodeError, msgspec.ValidationError, IndexError) as exc:
            return 422, _encode({"detail": str(exc)})

    return handle


def create_app(seed: int = 0):
    """The router as a bare ASGI app (uvicorn, or any ASGI server)."""
    handle = create_handler(seed)

    async def app(scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        chunks = []
        more = True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            chunks.append(msg.get("body", b""))
            more = msg.get("more_body", False)
        status, out = handle(scope["method"], scope["path"], b"".join(chunks))
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(out)).encode())]})  # fmt: skip
        await send({"type": "http.response.body", "body": out})

    return app


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            413: "Content Too Large", 422: "Unprocessable Content"}  # fmt: skip
_MAX_BODY = 256 * 1024 * 1024


class _Connection(socketserver.BaseRequestHandler):
    """One kept-alive HTTP/1.1 connection: Content-Length or chunked request bodies
    (Expect: 100-continue answered), JSON answers."""

    handle_request: Handler

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with contextlib.suppress(OSError, ValueError):  # the client left or spoke nonsense
            self._serve(sock)

    def _serve(self, sock: socket.socket) -> None:
        buf = b""
        while True:
            while (end := buf.find(b"\r\n\r\n")) < 0:
                if len(buf) > 65536:
                    return
                chunk = sock.recv(65536)
                if not chunk:
                    return
                buf += chunk
            lines = buf[:end].decode("latin-1").split("\r\n")
            buf = buf[end + 4 :]
            parts = lines[0].split()
            if len(parts) != 3:
                return
            method, target, version = parts
            n, close, chunked = 0, version == "HTTP/1.0", False
            for line in lines[1:]:
                name, _, value = line.partition(":")
                name, value = name.strip().lower(), value.strip().lower()
                if name == "content-length":
                    n = int(value) if value.isdigit() else -1
                elif name == "connection":
                    close = "close" in value or (close and "keep-alive" not in value)
                elif name == "transfer-encoding":
                    chunked = "chunked" in value
                elif name == "expect" and value == "100-continue":
                    sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            if chunked:
                body, buf = self._chunked(sock, buf)
            elif n < 0 or n > _MAX_BODY:
                self._answer(sock, 400 if n < 0 else 413, b'{"detail":"bad body length"}', True)
                return
            elif n > len(buf):  # read the rest straight into one buffer (no re-copying)
                body = bytearray(n)
                body[: len(buf)] = buf
                self._recv_into(sock, memoryview(body)[len(buf) :])
                buf = b""
            else:
                body, buf = buf[:n], buf[n:]
            try:
                status, out = self.handle_request(method, target.split("?", 1)[0], body)
            except Exception as exc:  # a bug here must not look like a network failure
                status, out = 500, _encode({"detail": f"{type(exc).__name__}: {exc}"})
            self._answer(sock, status, b"" if method == "HEAD" else out, close, len(out))
            if close:
                return

    @staticmethod
    def _chunked(sock: socket.socket, buf: bytes) -> tuple[bytes, bytes]:
        """A chunked request body, and what follows it."""

        def more(b: bytes) -> bytes:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionResetError("the client left mid-request")
            return b + chunk

        out, size_total = [], 0
        while True:
            while (i := buf.find(b"\r\n")) < 0:
                buf = more(buf)
            size = int(buf[:i].split(b";", 1)[0].strip(), 16)
            buf = buf[i + 2 :]
            if size == 0:
                while (i := buf.find(b"\r\n")) != 0:  # trailers, then an empty line
                    buf = buf[i + 2 :] if i > 0 else more(buf)
                return b"".join(out), buf[2:]
            size_total += size
            if size_total > _MAX_BODY:
                raise ValueError("request body too large")
            while len(buf) < size + 2:
                buf = more(buf)
            out.append(buf[:size])
            buf = buf[size + 2 :]

    @staticmethod
    def _recv_into(sock: socket.socket, view: memoryview) -> None:
        got, n = 0, len(view)
        while got < n:
            k = sock.recv_into(view[got:], n - got)
            if not k:
                raise ConnectionResetError("the client left mid-request")
            got += k

    @staticmethod
    def _answer(sock, status: int, out: bytes, close: bool, length: int | None = None) -> None:
        head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
                "content-type: application/json\r\n"
                f"content-length: {len(out) if length is None else length}\r\n"
                f"{'connection: close' + chr(13) + chr(10) if close else ''}\r\n")  # fmt: skip
        sock.sendall(head.encode("latin-1") + out)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def serve(host: str = "127.0.0.1", port: int = 8000, seed: int = 0) -> None:
    """Serve the router until interrupted (plain HTTP/1.1, one thread per connection)."""
    handler = type("Connection", (_Connection,), {"handle_request": staticmethod(
        create_handler(seed))})  # fmt: skip
    with _Server((host, port), handler) as server:
        server.serve_forever()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--uvicorn", action="store_true", help="serve the ASGI app with uvicorn")
    a = p.parse_args()
    if a.uvicorn:
        import uvicorn

        uvicorn.run(create_app(a.seed), host=a.host, port=a.port, log_level="warning")
    else:
        with contextlib.suppress(KeyboardInterrupt):
            serve(a.host, a.port, a.seed)


if __name__ == "__main__":
    main()
