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
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Protocol

import httpx

from swarmpress.errors import SwarmpressError
from swarmpress.twin.policies import BalancingPolicy, PolicyFailure, RoutingPolicy
from swarmpress.twin.tracker import Tracker

PEER_LIMIT = 512


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


class HttpTransport:
    """A Transport over HTTP to base_url (one kept-alive httpx connection pool)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.client = httpx.Client(
            base_url=self.base_url, headers={"Content-Type": "application/json"}
        )

    def request(
        self, method: str, path: str, body: bytes | None, timeout: float
    ) -> tuple[int, bytes]:
        """One call; raises TransportTimeout / TransportError as the protocol says."""
        try:
            r = self.client.request(method, path, content=body, timeout=timeout)
        except httpx.TimeoutException as exc:
            raise TransportTimeout(f"no answer within {timeout:g} s") from exc
        except httpx.HTTPError as exc:
            raise TransportError(f"{type(exc).__name__}: {exc}") from exc
        return r.status_code, r.content

    def close(self) -> None:
        self.client.close()

    def __repr__(self) -> str:
        return self.base_url


def wait_healthy(url: str, timeout: float = 10.0) -> bool:
    """Poll GET url/health until it answers (a router just started); False on timeout."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            httpx.get(url.rstrip("/") + "/health", timeout=0.5)
            return True
        except httpx.HTTPError:
            time.sleep(0.05)
    return False


def _snippet(raw: bytes, n: int = 200) -> str:
    text = raw[:n].decode("utf-8", "replace").replace("\n", " ")
    return text + ("..." if len(raw) > n else "")


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
        self._key = None
        self._miners_json = ""
        self._by_node: dict[str, object] = {}
        self.batch = 1  # the scenario's swarm.local_batch_size (set by the engine)

    # RoutingPolicy.reset and BalancingPolicy.reset have different signatures.
    def reset(self, seed, latency=None, cache_size=None) -> None:  # type: ignore[override]
        if latency is not None:
            self.latency = latency

    def check(self) -> None:
        """GET /health; PolicyFailure if the router is not up."""
        try:
            status, _ = self.transport.request("GET", "/health", None, 5.0)
        except TransportError as exc:
            raise PolicyFailure(f"router {self.url} is unreachable: {exc}") from None
        if status != 200:
            raise PolicyFailure(f"router /health answered HTTP {status}")

    def _post(self, path: str, body: str) -> dict:
        """POST a JSON body; the answer as a dict, or PolicyFailure (slow, failed, not 200,
        not a JSON object)."""
        t0 = self.clock()
        try:
            status, raw = self.transport.request("POST", path, body.encode(), self.limit_s + 0.05)
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
    def _info(self, m, peers) -> str:
        """One MinerInfo as JSON (the published model's fields and types exactly)."""
        return json.dumps(
            {
                "miner_id": m.miner_id,
                "receiver_node_id": m.node_id,
                "active": bool(m.active),
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

    def _miners(self, layers: list[list]) -> str:
        """RouteRequest.miners as JSON, rebuilt only when a layout or liveness changed."""
        key = tuple((m.id, m.active, len(m.layers), m.layers[0]) for g in layers for m in g)
        if key != self._key:
            self._key = key
            self._by_node = {m.node_id: m for g in layers for m in g}
            infos: dict[int, str] = {}
            for g in layers:
                for m in g:
                    if m.id not in infos:
                        infos[m.id] = self._info(m, self._peers(m, layers))
            self._miners_json = (
                "[" + ",".join("[" + ",".join(infos[m.id] for m in g) + "]" for g in layers) + "]"
            )
        return self._miners_json

    # ------------------------------------------------------------------ calls
    def route(self, act_id, entry, layers, tracker: Tracker, now):
        """POST /route; the path as Miner objects, unknown node ids left as strings (the
        engine makes those hops fail, as Apex does)."""
        if entry is None:
            entry = next(iter(getattr(layers[0], "active", None) or layers[0]))
        body = (
            f'{{"activation_id":{json.dumps(str(act_id))},'
            f'"miner_id":{json.dumps(entry.miner_id)},'
            f'"miners":{self._miners(layers)},"n_layers":{len(layers)},'
            f'"activation_tracking_buffer":{tracker.to_json()}}}'
        )
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
        infos = ",".join(f"{json.dumps(m.miner_id)}:{self._info(m, peers)}" for m in miners)
        body = (
            f'{{"miners":{{{infos}}},"n_layers":{n_layers},'
            f'"activation_tracking_buffer":{tracker.to_json()}}}'
        )
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
