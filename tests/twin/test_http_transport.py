"""HttpTransport, the twin's HTTP/1.1 client: one kept-alive connection that survives a
router restart and every way a server may end or frame an answer; anything broken is a
TransportError (so the task fails with a reason), never a hang or a crash. And the
baseline router server, both as `python -m` (plain socket server) and as an ASGI app."""

import json
import socket
import subprocess
import sys
import threading

import pytest
from fastapi.testclient import TestClient

from swarmpress.twin.baseline_server import create_app, create_handler
from swarmpress.twin.remote import (
    HttpTransport,
    RemotePolicy,
    TransportError,
    TransportTimeout,
    wait_healthy,
)
from swarmpress.twin.scenario import load_scenario
from swarmpress.twin.sim import Simulation

START_S = 120.0  # a deadline for a server to start on a loaded machine, not a speed
PATIENT = 30.0  # a call's timeout where the answer is sure to come


def _port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_baseline(port, *args):
    proc = subprocess.Popen([sys.executable, "-m", "swarmpress.twin.baseline_server",
                             "--port", str(port), *args])  # fmt: skip
    if not wait_healthy(f"http://127.0.0.1:{port}", timeout=START_S):
        proc.kill()
        raise RuntimeError("the baseline server did not start")
    return proc


@pytest.fixture
def baseline():
    port = _port()
    proc = _start_baseline(port)
    yield port, proc
    proc.kill()
    proc.wait()


# ---------------------------------------------------------------- a scripted raw server
class Raw:
    """A raw TCP server: for each request (head + Content-Length body) on any connection,
    `script(path, n)` (n counts requests on that connection from 0) returns the bytes to
    send back, with "close" after them to close the connection, or None to close without
    answering, or "hang" to never answer."""

    def __init__(self, script):
        self.script = script
        self.connections = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        buf, n = b"", 0
        with conn:
            while True:
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                head, buf = buf.split(b"\r\n\r\n", 1)
                lines = head.decode().split("\r\n")
                path = lines[0].split()[1]
                length = next((int(v) for k, _, v in (ln.partition(":") for ln in lines[1:])
                               if k.strip().lower() == "content-length"), 0)  # fmt: skip
                while len(buf) < length:
                    buf += conn.recv(65536)
                buf = buf[length:]
                out = self.script(path, n)
                n += 1
                if out is None:
                    return
                if out == "hang":
                    self.stop.wait()
                    return
                close = isinstance(out, tuple)
                conn.sendall(out[0] if close else out)
                if close:
                    return

    def close(self):
        self.stop.set()
        self.sock.close()


def _ok(body: bytes = b'{"ok":true}', extra: str = "") -> bytes:
    return (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body  # fmt: skip


@pytest.fixture
def raw():
    servers = []

    def make(script):
        s = Raw(script)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.close()


def test_one_connection_is_kept_alive_across_calls(raw):
    srv = raw(lambda path, n: _ok(json.dumps({"n": n}).encode()))
    t = HttpTransport(srv.url)
    got = [json.loads(t.request("POST", "/route", b'{"x":1}', PATIENT)[1])["n"] for _ in range(20)]
    assert got == list(range(20)) and t.connects == 1 == srv.connections


def test_chunked_answers_and_interim_100_are_read(raw):
    chunked = (b"HTTP/1.1 100 Continue\r\n\r\n"
               b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5;ext=1\r\n{\"pat\r\n7\r\nh\": []}\r\n0\r\nX-Trailer: 1\r\n\r\n")  # fmt: skip
    srv = raw(lambda path, n: chunked)
    t = HttpTransport(srv.url)
    for _ in range(3):
        assert t.request("POST", "/route", b"{}", PATIENT) == (200, b'{"path": []}')
    assert t.connects == 1


def test_an_answer_without_length_runs_to_the_close_then_redials(raw):
    srv = raw(lambda path, n: (b'HTTP/1.1 200 OK\r\n\r\n{"path": ["a"]}',))
    t = HttpTransport(srv.url)
    for _ in range(3):
        assert t.request("POST", "/route", b"{}", PATIENT) == (200, b'{"path": ["a"]}')
    assert t.connects == 3


def test_connection_close_is_honoured(raw):
    srv = raw(lambda path, n: _ok(extra="Connection: close\r\n"))
    t = HttpTransport(srv.url)
    for _ in range(3):
        assert t.request("GET", "/health", None, PATIENT)[0] == 200
    assert t.connects == 3 == srv.connections


def test_a_kept_alive_connection_the_server_dropped_is_redialled(raw):
    # the server answers once per connection, then drops it without saying so (as a
    # keep-alive timeout does): the next call must not fail because of it
    srv = raw(lambda path, n: _ok() if n == 0 else None)
    t = HttpTransport(srv.url)
    for _ in range(5):
        assert t.request("POST", "/route", b"{}", PATIENT)[0] == 200
    assert t.connects == 5


def test_a_fresh_connection_closed_without_an_answer_fails_once_not_forever(raw):
    srv = raw(lambda path, n: None)
    t = HttpTransport(srv.url)
    with pytest.raises(TransportError, match="without an answer"):
        t.request("POST", "/route", b"{}", PATIENT)
    assert srv.connections <= 2


@pytest.mark.parametrize(
    "answer,why",
    [
        (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP answer"),
        ((b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"pa',), "mid-answer"),
        ((b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{"pa',), "mid-answer"),
        ((b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",), "ValueError"),
        ((b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n",), "ValueError"),
        ((b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 20000,), "no end of headers"),
    ],
)
def test_broken_answers_are_transport_errors(raw, answer, why):
    srv = raw(lambda path, n: answer)
    t = HttpTransport(srv.url)
    with pytest.raises(TransportError, match=why):
        t.request("POST", "/route", b"{}", PATIENT)
    assert t.sock is None  # nothing after a broken answer is trusted


def test_a_router_that_never_answers_is_a_timeout(raw):
    srv = raw(lambda path, n: "hang")
    t = HttpTransport(srv.url)
    with pytest.raises(TransportTimeout):
        t.request("POST", "/route", b"{}", 0.3)  # no answer ever comes: any limit will do


def test_bad_urls_are_transport_errors_not_crashes():
    for url in ("ftp://example.org", "not a url", "http://127.0.0.1:99999"):
        with pytest.raises(TransportError):
            HttpTransport(url).request("GET", "/health", None, 1.0)


def test_a_url_path_prefix_is_kept(raw):
    seen = []
    srv = raw(lambda path, n: seen.append(path) or _ok())
    HttpTransport(srv.url + "/api/v1/").request("POST", "/route", b"{}", PATIENT)
    assert seen == ["/api/v1/route"]


def _twin(url_or_transport):
    small = ["workload.activations_per_epoch=40", "workload.epochs=2", "swarm.miners=24",
             "rules.route_call_limit_s=30"]  # fmt: skip
    sc = load_scenario("apex-default", small)
    policy = RemotePolicy(url_or_transport, 30.0)
    policy.check()
    return Simulation(sc, 0, policy, policy).run(), policy


def test_garbage_from_the_router_fails_the_task_with_a_reason(raw):
    srv = raw(lambda path, n: _ok() if path == "/health" else (b"<html>hello</html>\r\n\r\n",))
    res, _ = _twin(srv.url)
    assert not res.ok and res.score == 0
    assert res.reason.startswith("policy failed the task: /route failed:")


# ---------------------------------------------------------------- the baseline server
def test_the_connection_survives_a_router_restart(baseline):
    port, proc = baseline
    t = HttpTransport(f"http://127.0.0.1:{port}")
    assert t.request("GET", "/health", None, PATIENT) == (200, b'{"ok":true}')
    proc.kill()
    proc.wait()
    proc2 = _start_baseline(port)  # the same port, a new process
    try:
        assert t.request("GET", "/health", None, PATIENT) == (200, b'{"ok":true}')
        assert t.connects == 2
    finally:
        proc2.kill()
        proc2.wait()


def test_the_baseline_server_runs_a_task_on_one_connection(baseline):
    port, _ = baseline
    res, policy = _twin(f"http://127.0.0.1:{port}")
    assert res.ok, res.reason
    assert res.completed == 80 and res.invalid_routes == 0
    assert policy.transport.connects == 1


def test_the_asgi_app_under_uvicorn_runs_a_task_on_one_connection():
    port = _port()
    proc = _start_baseline(port, "--uvicorn")  # what `twin serve-baseline` runs
    try:
        res, policy = _twin(f"http://127.0.0.1:{port}")
        assert res.ok, res.reason
        assert res.completed == 80 and policy.transport.connects == 1
    finally:
        proc.kill()
        proc.wait()


def test_the_baseline_server_answers_bad_requests_with_4xx(baseline):
    port, _ = baseline
    t = HttpTransport(f"http://127.0.0.1:{port}")
    assert t.request("POST", "/route", b'{"miners": 3}', PATIENT)[0] == 422
    assert t.request("POST", "/route", b"not json", PATIENT)[0] == 422
    assert t.request("POST", "/nowhere", b"{}", PATIENT)[0] == 404
    assert t.request("GET", "/route", None, PATIENT)[0] == 405
    assert t.request("GET", "/health", None, PATIENT) == (200, b'{"ok":true}')
    assert t.connects == 1  # errors did not cost the connection


def test_the_asgi_app_and_the_handler_answer_alike():
    req = {"activation_id": "1", "miner_id": "miner-00001", "n_layers": 2,
           "activation_tracking_buffer": [],
           "miners": [[{"miner_id": f"miner-0000{i}", "receiver_node_id": f"node-0000{i}",
                        "active": i != 2, "layers": [layer], "local_batch_size": 1,
                        "peer_latencies": {}} for i in range(layer * 2, layer * 2 + 2)]
                      for layer in range(2)]}  # fmt: skip
    with TestClient(create_app(0)) as client:  # lifespan too
        assert client.get("/health").json() == {"ok": True}
        r = client.post("/route", content=json.dumps(req))
        assert r.status_code == 200 and r.json() == {"path": ["node-00001", "node-00003"]}
        b = client.post("/balance-orchestrator", content=json.dumps(
            {"miners": {"miner-00002": {}, "miner-00001": {}}, "n_layers": 2,
             "activation_tracking_buffer": []}))  # fmt: skip
        assert b.json() == {"assignments": {"miner-00001": [0], "miner-00002": [1]}}
        assert client.post("/route", content=b"[").status_code == 422
    status, out = create_handler(0)("POST", "/route", json.dumps(req).encode())
    assert status == 200 and json.loads(out) == {"path": ["node-00001", "node-00003"]}


def _exchange(port: int, raw: bytes) -> bytes:
    """Send raw bytes, read until the server closes (the requests say Connection: close)."""
    with socket.create_connection(("127.0.0.1", port), timeout=PATIENT) as s:
        s.sendall(raw)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def test_the_baseline_server_takes_what_curl_sends(baseline):
    port, _ = baseline
    body = json.dumps({"miners": {"miner-00001": {}}, "n_layers": 1,
                       "activation_tracking_buffer": []}).encode()  # fmt: skip
    # Expect: 100-continue (curl, for bodies over 1 KB), then the body
    out = _exchange(port, b"POST /balance-orchestrator HTTP/1.1\r\nHost: x\r\n"
                    b"Expect: 100-continue\r\nConnection: close\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip
    assert out.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n")
    assert out.endswith(b'{"assignments":{"miner-00001":[0]}}')
    # a chunked upload, with a trailer
    half = len(body) // 2
    chunked = b"%x\r\n%s\r\n%x;x=y\r\n%s\r\n0\r\nT: 1\r\n\r\n" % (
        half, body[:half], len(body) - half, body[half:])  # fmt: skip
    head = b"POST /balance-orchestrator HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    out = _exchange(port, head + b"Connection: close\r\n\r\n" + chunked)
    assert out.startswith(b"HTTP/1.1 200 OK\r\n")
    assert out.endswith(b'{"assignments":{"miner-00001":[0]}}')
