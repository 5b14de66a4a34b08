"""External routing and balancing over HTTP: the Apex IOTA-simulator contract, to the letter
(macrocosm-os/apex v4.2.11, iota_simulator models.py; docs/twin.md "Apex IOTA compatibility").

    GET  /health                -> {"ok": true}
    POST /route                 {activation_id: str, miner_id: str, miners: [[MinerInfo]] per
                                 layer, n_layers: int, activation_tracking_buffer: [event]}
                                -> {"path": [receiver_node_id per layer]}
    POST /balance-orchestrator  {miners: {miner_id: MinerInfo}, n_layers,
                                 activation_tracking_buffer} -> {"assignments": {miner_id: [layer]}}

MinerInfo = {miner_id, receiver_node_id, active, layers, local_batch_size, peer_latencies};
a miner serving several layers is listed in each of their lists. Every call must answer
within the scenario's limit (0.5 s): a slow call, a transport error, a non-200 status,
non-JSON or an answer that is not a RouteResponse / BalanceResponse fails the task (score
0 with the reason, never a crash). What the answer then says is applied by the engine's
Apex rules: invalid hops make that activation fail, invalid balancing entries are dropped.
peer_latencies lists the miners of the layers next to the miner's own (the only hops a
path can take from it; the full table would be N^2 numbers per call). The balancing call
lists all peers for swarms up to PEER_LIMIT miners.

The HTTP goes through a Transport, so the arena can relay the same calls through a pipe.

Speed (docs/twin.md "External router speed"). A /route request on apex-default is ~400 KB
(1,920 events, ~150 KB of MinerInfo) and there is one per activation, so the twin side is
kept to what changed since the last call:

* the request is bytes assembled from cached pieces: each miner's MinerInfo is encoded
  once per layout (twice: active and not), the `miners` array is re-joined only when a
  layout or liveness changed; each tracking-buffer event is encoded once while open and
  once when it closes (`_BufferJson` follows the Tracker's appends, evictions and
  closings), then one join per call. The pieces are the same bytes `json.dumps` and
  `Event.to_json` give (tests/twin/test_remote_requests.py checks whole runs against them);
* HttpTransport is HTTP/1.1 over one persistent plain socket (TCP_NODELAY, head and body
  in one sendmsg, Content-Length, chunked or until-close answers). A router call needs
  nothing more (one host, one connection, JSON both ways). Measured round trips of a
  /route request to the baseline server, back to back (docs/twin.md): httpx takes 0.3-0.4
  ms a call more; http.client is about even, but its timeout is per socket operation
  where a call needs one deadline. Reads are 64 KB recv calls: recv(1 MB) allocates 1 MB
  each time, which cost ~0.1 ms a call. A
  kept-alive connection that the server closed while idle (a restart, a keep-alive
  timeout) is noticed before the send and redialled; one that dies before any byte of the
  answer is redialled once.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import select
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol
from urllib.parse import urlsplit

from swarmpress.errors import SwarmpressError
from swarmpress.twin.policies import BalancingPolicy, PolicyFailure, RoutingPolicy
from swarmpress.twin.tracker import ACTIONS, DIRECTIONS, EPOCH, Tracker

PEER_LIMIT = 512
_MAX_HEAD = 64 * 1024  # a response head longer than this is not a router's answer


class TransportError(SwarmpressError, RuntimeError):
    """The exchange with the router failed (refused, reset, broken pipe...)."""


class TransportTimeout(TransportError):
    """The router did not answer within the call's timeout."""


class Transport(Protocol):
    """How RemotePolicy reaches a router: HTTP here, a relay pipe in the arena's sandbox."""

    def request(
        self, method: str, path: str, body: bytes | None, timeout: float
    ) -> tuple[int, bytes]:
        """(HTTP status, response body); raises TransportTimeout after timeout seconds,
        TransportError for anything else."""
        ...

    # A transport may also set `last_seconds` after each request: the call's time measured
    # next to the router (the arena's sandbox relay does, so that its pipe and the worker's
    # scheduling are not charged to the router); RemotePolicy then judges that time.


class _Stale(TransportError):
    """A kept-alive connection ended before any byte of the answer (redial once)."""


class HttpTransport:
    """A Transport over HTTP/1.1 to base_url: one persistent connection on a plain socket
    (see the module docstring for why not httpx or http.client)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.sock: socket.socket | None = None
        self.connects = 0  # connections opened (a kept-alive one is reused)
        u = urlsplit(self.base_url)
        self._bad = "" if u.scheme in ("http", "https") and u.hostname else (
            f"not an http(s) URL: {base_url!r}")  # fmt: skip
        try:
            port = u.port
        except ValueError as exc:
            self._bad, port = f"bad URL {base_url!r}: {exc}", None
        self._tls = u.scheme == "https"
        self._addr = (u.hostname or "", port or (443 if self._tls else 80))
        self._prefix = u.path.rstrip("/")
        self._host = u.netloc.rsplit("@", 1)[-1]

    # ------------------------------------------------------------------ connection
    def _connect(self, deadline: float) -> None:
        try:
            s = socket.create_connection(self._addr, timeout=max(deadline - time.monotonic(),
                                                                 1e-3))  # fmt: skip
        except TimeoutError:
            raise TransportTimeout(f"no connection within the call's time to {self}") from None
        except OSError as exc:
            raise TransportError(f"ConnectError: {exc}") from None
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._tls:
            try:
                s = ssl.create_default_context().wrap_socket(s, server_hostname=self._addr[0])
            except (OSError, ssl.SSLError) as exc:
                s.close()
                raise TransportError(f"TLS: {exc}") from None
        self.sock = s
        self.connects += 1

    def _idle_closed(self) -> bool:
        """True when the kept-alive connection is unusable: readable while idle means the
        server closed it (or sent something unasked)."""
        try:
            p = select.poll()
            p.register(self.sock, select.POLLIN)
            return bool(p.poll(0))
        except (OSError, ValueError):
            return True

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None

    # ------------------------------------------------------------------ one call
    def request(
        self, method: str, path: str, body: bytes | None, timeout: float
    ) -> tuple[int, bytes]:
        """One call; raises TransportTimeout / TransportError as the protocol says."""
        if self._bad:
            raise TransportError(self._bad)
        deadline = time.monotonic() + timeout
        head = f"{method} {self._prefix}{path} HTTP/1.1\r\nHost: {self._host}\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        head_b = head.encode("latin-1") + b"\r\n"
        for attempt in range(2):
            fresh = self.sock is None
            if not fresh and self._idle_closed():
                self.close()
                fresh = True
            if fresh:
                self._connect(deadline)
            try:
                self._send(head_b, body, deadline)
                return self._read(deadline, method)
            except _Stale:
                self.close()
                if fresh or attempt:
                    raise TransportError(
                        "the router closed the connection without an answer"
                    ) from None
            except TimeoutError:
                self.close()
                raise TransportTimeout(f"no answer within {timeout:g} s") from None
            except TransportError:
                self.close()
                raise
            except (OSError, ValueError) as exc:
                self.close()
                raise TransportError(f"{type(exc).__name__}: {exc}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _send(self, head: bytes, body: bytes | None, deadline: float) -> None:
        """Head and body in one segment train (sendmsg: no copy of the body to join them)."""
        s = self.sock
        s.settimeout(max(deadline - time.monotonic(), 1e-3))
        try:
            if not body or self._tls:
                s.sendall(head + body if body else head)
                return
            sent = s.sendmsg([head, body])
            if sent < len(head):
                s.sendall(head[sent:])
                sent = len(head)
            if sent - len(head) < len(body):
                s.settimeout(max(deadline - time.monotonic(), 1e-3))
                s.sendall(memoryview(body)[sent - len(head) :])
        except (BrokenPipeError, ConnectionResetError):
            raise _Stale from None

    def _recv(self, deadline: float) -> bytes:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        self.sock.settimeout(left)
        return self.sock.recv(65536)

    def _read(self, deadline: float, method: str) -> tuple[int, bytes]:
        """One response: status line, headers, then a Content-Length, chunked or
        until-close body. 1xx interim answers are skipped."""
        buf = b""
        got_any = False
        while True:
            end = buf.find(b"\r\n\r\n")
            while end < 0:
                if len(buf) > _MAX_HEAD:
                    raise TransportError("the router's answer has no end of headers")
                try:
                    chunk = self._recv(deadline)
                except ConnectionResetError:
                    if got_any:
                        raise
                    raise _Stale from None
                if not chunk:
                    if got_any:
                        raise TransportError("the router closed the connection mid-answer")
                    raise _Stale
                got_any = True
                buf += chunk
                end = buf.find(b"\r\n\r\n")
            lines = buf[:end].decode("latin-1").split("\r\n")
            buf = buf[end + 4 :]
            parts = lines[0].split(None, 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
                raise TransportError(f"not an HTTP answer: {lines[0][:80]!r}")
            status = int(parts[1])
            if 100 <= status < 200:
                continue  # 100 Continue and friends: the real answer follows
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if sep:
                    headers[name.strip().lower()] = value.strip()
            break
        keep = parts[0] != "HTTP/1.0" and "close" not in headers.get("connection", "").lower()
        if parts[0] == "HTTP/1.0" and "keep-alive" in headers.get("connection", "").lower():
            keep = True
        if method == "HEAD" or status in (204, 304):
            body = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            body, buf = self._chunked(buf, deadline)
        elif "content-length" in headers:
            n = int(headers["content-length"])
            if n < 0:
                raise ValueError("negative Content-Length")
            parts_ = [buf]
            have = len(buf)
            while have < n:
                chunk = self._recv(deadline)
                if not chunk:
                    raise TransportError("the router closed the connection mid-answer")
                parts_.append(chunk)
                have += len(chunk)
            data = b"".join(parts_)
            body, buf = data[:n], data[n:]
        else:  # no length: the body runs to the end of the connection
            parts_ = [buf]
            while chunk := self._recv(deadline):
                parts_.append(chunk)
            body, buf, keep = b"".join(parts_), b"", False
        if buf or not keep:  # bytes past the answer: nothing can be trusted after them
            self.close()
        return status, body

    def _chunked(self, buf: bytes, deadline: float) -> tuple[bytes, bytes]:
        out = []
        while True:
            while (i := buf.find(b"\r\n")) < 0:
                buf += self._need(deadline)
            size = int(buf[:i].split(b";", 1)[0].strip() or b"x", 16)
            buf = buf[i + 2 :]
            if size == 0:
                while (i := buf.find(b"\r\n")) != 0:  # trailers, then an empty line
                    if i > 0:
                        buf = buf[i + 2 :]
                    else:
                        buf += self._need(deadline)
                return b"".join(out), buf[2:]
            while len(buf) < size + 2:
                buf += self._need(deadline)
            out.append(buf[:size])
            buf = buf[size + 2 :]

    def _need(self, deadline: float) -> bytes:
        chunk = self._recv(deadline)
        if not chunk:
            raise TransportError("the router closed the connection mid-answer")
        return chunk

    def __repr__(self) -> str:
        return self.base_url


def wait_healthy(url: str, timeout: float = 10.0) -> bool:
    """Poll GET url/health until it answers (a router just started); False on timeout."""
    end = time.monotonic() + timeout
    t = HttpTransport(url)
    try:
        while time.monotonic() < end:
            try:
                t.request("GET", "/health", None, 0.5)
                return True
            except TransportError:
                time.sleep(0.05)
        return False
    finally:
        t.close()


def _snippet(raw: bytes, n: int = 200) -> str:
    text = raw[:n].decode("utf-8", "replace").replace("\n", " ")
    return text + ("..." if len(raw) > n else "")


# ---------------------------------------------------------------------- request pieces
_DAYS: dict[int, str] = {}
_ISO: dict[float, str] = {}  # recent times (an event often ends when the next one starts)


def _iso(t: float) -> str:
    """tracker.iso(t), without building a datetime: the same rounding (to the millisecond
    by round(t, 3)) and the same text; the date part is cached per day."""
    s = _ISO.get(t)
    if s is not None:
        return s
    if len(_ISO) >= 4096:
        _ISO.clear()
    k = round(round(t, 3) * 1000)
    d, ms = divmod(k, 86_400_000)
    day = _DAYS.get(d)
    if day is None:
        day = _DAYS[d] = (EPOCH + _dt.timedelta(days=d)).date().isoformat() + "T"
    sec, ms = divmod(ms, 1000)
    m, sec = divmod(sec, 60)
    h, m = divmod(m, 60)
    out = _ISO[t] = f"{day}{h:02d}:{m:02d}:{sec:02d}.{ms:03d}Z"
    return out


_LABELS: dict[object, str] = {}


def _label(label) -> str:
    """json.dumps(str(label)), cached (miner ids repeat in every event)."""
    s = _LABELS.get(label)
    if s is None:
        if len(_LABELS) > 100_000:
            _LABELS.clear()
        s = _LABELS[label] = json.dumps(str(label))
    return s


class _BufferJson:
    """The tracking buffer's events as JSON pieces, kept in step with one Tracker: new
    events are encoded when first seen, an open one again when it closes, evicted ones are
    dropped; anything unexpected (another tracker, a clear, a mismatch) rebuilds. Each
    piece equals Event.to_json() of that event at that moment."""

    def __init__(self) -> None:
        self.tracker: Tracker | None = None
        self.generation = -1
        self.seq = 0
        self.events: deque = deque()  # the events mirrored, in buffer order
        self.parts: deque[bytes] = deque()  # their JSON
        self.base = 0  # absolute position (tracker.seq numbering) of parts[0]
        self.open: dict[int, tuple] = {}  # position -> (event, head, tail) while open
        self.rebuilds = 0

    @staticmethod
    def _split(ev) -> tuple[str, str]:
        """The event's JSON around its end_time value."""
        act = ev.act
        a = f'"{act}"' if type(act) is int else json.dumps(str(act))
        head = (
            f'{{"activation_id":{a},"direction":"{DIRECTIONS[ev.direction]}",'
            f'"action":"{ACTIONS[ev.action]}","start_time":"{_iso(ev.start)}","end_time":'
        )
        return head, f',"miner_id":{_label(ev.label)},"layer":{int(ev.layer)}}}'

    def _add(self, pos: int, ev) -> None:
        head, tail = self._split(ev)
        if ev.end is None:
            self.open[pos] = (ev, head, tail)
            self.parts.append((head + "null" + tail).encode())
        else:
            self.parts.append(f'{head}"{_iso(ev.end)}"{tail}'.encode())
        self.events.append(ev)

    def _rebuild(self, tracker: Tracker) -> None:
        self.rebuilds += 1
        self.tracker, self.generation, self.seq = tracker, tracker.generation, tracker.seq
        self.events.clear()
        self.parts.clear()
        self.open.clear()
        self.base = tracker.seq - len(tracker.events)
        for pos, ev in enumerate(tracker.events, self.base):
            self._add(pos, ev)

    def json(self, tracker: Tracker) -> bytes:
        """The buffer as a JSON array (bytes)."""
        return b"[" + self.items(tracker) + b"]"

    def items(self, tracker: Tracker) -> bytes:
        """The buffer's events as JSON, comma-separated (the array without brackets)."""
        events = tracker.events
        new = tracker.seq - self.seq
        if (tracker is not self.tracker or tracker.generation != self.generation
                or new < 0 or new > len(events)):  # fmt: skip
            self._rebuild(tracker)
        elif new or self.open:
            gone = len(self.events) + new - len(events)  # evicted from the left
            if gone < 0:
                self._rebuild(tracker)
                return self.items(tracker)
            for _ in range(gone):
                self.events.popleft()
                self.parts.popleft()
            self.base += gone
            if new:
                start = self.seq
                for k, ev in enumerate(list(_tail(events, new)), start):
                    self._add(k, ev)
            self.seq = tracker.seq
            if not events or self.events[-1] is not events[-1] or (
                    self.events[0] is not events[0]):  # fmt: skip
                self._rebuild(tracker)
            else:
                base, parts = self.base, self.parts
                for pos in list(self.open):
                    ev, head, tail = self.open[pos]
                    if pos < base:
                        del self.open[pos]
                    elif ev.end is not None:
                        parts[pos - base] = f'{head}"{_iso(ev.end)}"{tail}'.encode()
                        del self.open[pos]
        return b",".join(self.parts)


def _tail(d: deque, n: int):
    """The last n items of a deque, in order."""
    out = []
    it = reversed(d)
    for _ in range(n):
        out.append(next(it))
    out.reverse()
    return out


class RemotePolicy(RoutingPolicy, BalancingPolicy):
    """Both policies of one router server (the contract puts them in one server), reached
    through a Transport (a URL string builds an HttpTransport). A call slower than limit_s
    by `clock` fails the task."""

    def __init__(
        self,
        url_or_transport: str | Transport,
        limit_s: float = 0.5,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.transport: Transport
        if isinstance(url_or_transport, str):
            self.transport = HttpTransport(url_or_transport)
            self.url = url_or_transport.rstrip("/")
        else:
            self.transport = url_or_transport
            self.url = repr(url_or_transport)
        self.name = f"router@{self.url}"
        self.limit_s = limit_s
        self.clock = clock
        self.batch = 1  # the scenario's swarm.local_batch_size (set by the engine)
        self._forget()

    def _forget(self) -> None:
        """Drop every cached request piece (a new run: new miners, latencies, tracker)."""
        self._key: tuple | None = None
        self._layout: tuple | None = None
        self._infos: dict[int, tuple[bytes, bytes]] = {}  # miner id -> (inactive, active)
        self._miners_json = b""
        self._by_node: dict[str, object] = {}
        self._buffer = _BufferJson()

    # RoutingPolicy.reset and BalancingPolicy.reset have different signatures.
    def reset(self, seed, latency=None, cache_size=None) -> None:  # type: ignore[override]
        if latency is not None:
            self.latency = latency
            self._forget()

    def check(self) -> None:
        """GET /health; PolicyFailure if the router is not up."""
        try:
            status, _ = self.transport.request("GET", "/health", None, 5.0)
        except TransportError as exc:
            raise PolicyFailure(f"router {self.url} is unreachable: {exc}") from None
        if status != 200:
            raise PolicyFailure(f"router /health answered HTTP {status}")

    def _post(self, path: str, body: bytes) -> dict:
        """POST a JSON body; the answer as a dict, or PolicyFailure (slow, failed, not 200,
        not a JSON object)."""
        t0 = self.clock()
        try:
            status, raw = self.transport.request("POST", path, body, self.limit_s + 0.05)
        except TransportTimeout:
            raise PolicyFailure(f"{path} took longer than {self.limit_s:g} s") from None
        except TransportError as exc:
            raise PolicyFailure(f"{path} failed: {exc}") from None
        near = getattr(self.transport, "last_seconds", None)
        if (near if near is not None else self.clock() - t0) > self.limit_s:
            raise PolicyFailure(f"{path} took longer than {self.limit_s:g} s")
        if status != 200:
            raise PolicyFailure(f"{path} answered HTTP {status}: {_snippet(raw)}")
        try:
            data = json.loads(raw)
        except ValueError:
            raise PolicyFailure(f"{path} answered something that is not JSON") from None
        if not isinstance(data, dict):
            raise PolicyFailure(f"{path} answered JSON that is not an object")
        return data

    # ------------------------------------------------------------------ views
    def _info(self, m, peers, active: bool | None = None) -> str:
        """One MinerInfo as JSON (the published model's fields and types exactly)."""
        return json.dumps(
            {
                "miner_id": m.miner_id,
                "receiver_node_id": m.node_id,
                "active": bool(m.active if active is None else active),
                "layers": list(m.layers),
                "local_batch_size": int(self.batch),
                "peer_latencies": {
                    p.miner_id: round(self.latency(m, p), 6) for p in peers if p is not m
                },
            },
            separators=(",", ":"),
        )

    @staticmethod
    def _peers(m, layers: list[list]) -> list:
        """The miners a path can hand m's activations to or take them from: those serving
        a layer next to one of m's (each once)."""
        near = {j for i in m.layers for j in (i - 1, i + 1) if 0 <= j < len(layers)}
        seen: dict[int, object] = {}
        for j in sorted(near):
            for p in layers[j]:
                if p is not m:
                    seen.setdefault(p.id, p)
        return list(seen.values())

    def _miners(self, layers: list[list]) -> bytes:
        """RouteRequest.miners as JSON. Each MinerInfo is encoded (active and inactive) once
        per layout; the array is re-joined when a layout or a liveness changed."""
        key = (len(layers), self.batch,
               *[(m.id, m.active, len(m.layers), m.layers[0])
                 for g in layers for m in g])  # fmt: skip
        if key != self._key:
            self._key = key
            layout = key[:2] + tuple([(i, n, first) for i, _, n, first in key[2:]])
            if layout != self._layout:
                self._layout = layout
                self._by_node = {m.node_id: m for g in layers for m in g}
                self._infos = {}
                for g in layers:
                    for m in g:
                        if m.id not in self._infos:
                            peers = self._peers(m, layers)
                            self._infos[m.id] = (self._info(m, peers, False).encode(),
                                                 self._info(m, peers, True).encode())  # fmt: skip
            infos = self._infos
            self._miners_json = b"[" + b",".join(
                b"[" + b",".join(infos[m.id][bool(m.active)] for m in g) + b"]" for g in layers
            ) + b"]"  # fmt: skip
        return self._miners_json

    # ------------------------------------------------------------------ calls
    def route(self, act_id, entry, layers, tracker: Tracker, now):
        """POST /route; the path as Miner objects, unknown node ids left as strings (the
        engine makes those hops fail, as Apex does)."""
        if entry is None:
            entry = next(iter(getattr(layers[0], "active", None) or layers[0]))
        aid = f'"{act_id}"' if type(act_id) is int else json.dumps(str(act_id))
        body = b"".join((
            b'{"activation_id":', aid.encode(), b',"miner_id":', _label(entry.miner_id).encode(),
            b',"miners":', self._miners(layers), b',"n_layers":', str(len(layers)).encode(),
            b',"activation_tracking_buffer":[', self._buffer.items(tracker), b"]}",
        ))  # fmt: skip
        data = self._post("/route", body)
        path = data.get("path")
        if not isinstance(path, list) or not all(isinstance(n, str) for n in path):
            raise PolicyFailure(
                '/route answered no RouteResponse {"path": [receiver_node_id, ...]}: '
                f"{_snippet(json.dumps(data).encode())}"
            )
        by_node = self._by_node
        return [by_node.get(n, n) for n in path]

    def assign(self, miners, n_layers, tracker: Tracker, now):
        """POST /balance-orchestrator; one entry per miner (its list, or None when the answer
        has no list for it: unknown ids and non-list values are dropped)."""
        peers = miners if len(miners) <= PEER_LIMIT else []
        infos = ",".join(f"{_label(m.miner_id)}:{self._info(m, peers)}" for m in miners)
        body = b"".join((
            f'{{"miners":{{{infos}}},"n_layers":{n_layers},"activation_tracking_buffer":'.encode(),
            self._buffer.json(tracker), b"}",
        ))  # fmt: skip
        data = self._post("/balance-orchestrator", body)
        got = data.get("assignments")
        if not isinstance(got, dict):
            raise PolicyFailure(
                '/balance-orchestrator answered no BalanceResponse {"assignments": {miner_id: '
                f"[layer]}}}}: {_snippet(json.dumps(data).encode())}"
            )
        out = []
        for m in miners:
            a = got.get(m.miner_id)
            out.append(a if isinstance(a, list) else None)
        return out
