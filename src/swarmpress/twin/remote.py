"""External routing and balancing over HTTP, exactly the Apex IOTA-simulator contract.

    GET  /health                -> {"ok": true}
    POST /route                 {activation_id, miner_id, miners: [[MinerInfo]] per layer,
                                 n_layers, activation_tracking_buffer: [event]}
                                -> {"path": [receiver_node_id per layer]}
    POST /balance-orchestrator  {miners: {miner_id: MinerInfo}, n_layers,
                                 activation_tracking_buffer} -> {"assignments": {miner_id: [layer]}}

MinerInfo = {miner_id, receiver_node_id, active, layers, local_batch_size, peer_latencies}.
Every call must answer within the scenario's limit (0.5 s); a slow call, a transport
error, a non-200 status, non-JSON or an answer that breaks the rules (wrong length,
unknown node, a miner of the wrong layer, a miner without exactly one layer, an empty
layer) fails the task with that reason: the run ends with score 0, never with a crash.
peer_latencies lists the miners of the neighbouring layers, the only hops a path can
take (the full table would be N^2 numbers per call). The balancing call lists all peers
for swarms up to PEER_LIMIT miners.
"""

from __future__ import annotations

import json
import time

import httpx

from swarmpress.twin.policies import BalancingPolicy, PolicyFailure, RoutingPolicy
from swarmpress.twin.tracker import Tracker

PEER_LIMIT = 512


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


class RemotePolicy(RoutingPolicy, BalancingPolicy):
    """Both policies of one router server (the contract puts them in one server)."""

    def __init__(self, url: str, limit_s: float = 0.5) -> None:
        self.url = url.rstrip("/")
        self.name = f"router@{self.url}"
        self.limit_s = limit_s
        self.http = httpx.Client(
            timeout=httpx.Timeout(limit_s + 0.05), headers={"Content-Type": "application/json"}
        )
        self._miners_json = ""
        self._key = None
        self._by_node: dict[str, object] = {}
        self.batch = 1  # the scenario's swarm.local_batch_size (set by the engine)

    # RoutingPolicy.reset and BalancingPolicy.reset have different signatures.
    def reset(self, seed, latency=None, cache_size=None) -> None:  # type: ignore[override]
        if latency is not None:
            self.latency = latency

    def check(self) -> None:
        """GET /health; PolicyFailure if the router is not up."""
        try:
            r = self.http.get(self.url + "/health", timeout=5)
        except httpx.HTTPError as exc:
            raise PolicyFailure(f"router {self.url} is unreachable: {exc}") from None
        if r.status_code != 200:
            raise PolicyFailure(f"router /health answered HTTP {r.status_code}")

    def _post(self, path: str, body: str) -> dict:
        t0 = time.perf_counter()
        try:
            r = self.http.post(self.url + path, content=body)
        except httpx.TimeoutException:
            raise PolicyFailure(f"{path} took longer than {self.limit_s:g} s") from None
        except httpx.HTTPError as exc:
            raise PolicyFailure(f"{path} failed: {type(exc).__name__}: {exc}") from None
        if time.perf_counter() - t0 > self.limit_s:
            raise PolicyFailure(f"{path} took longer than {self.limit_s:g} s")
        if r.status_code != 200:
            raise PolicyFailure(f"{path} answered HTTP {r.status_code}")
        try:
            data = r.json()
        except ValueError:
            raise PolicyFailure(f"{path} answered something that is not JSON") from None
        if not isinstance(data, dict):
            raise PolicyFailure(f"{path} answered JSON that is not an object")
        return data

    # ------------------------------------------------------------------ views
    def _info(self, m, peers) -> dict:
        return {
            "miner_id": f"miner-{m.id:05d}",
            "receiver_node_id": m.node_id,
            "active": m.active,
            "layers": [m.layer],
            "local_batch_size": self.batch,
            "peer_latencies": {
                f"miner-{p.id:05d}": round(self.latency(m, p), 6) for p in peers if p is not m
            },
        }

    def _peers(self, m, layers: list[list]) -> list:
        lo, hi = max(0, m.layer - 1), min(len(layers) - 1, m.layer + 1)
        return [p for g in layers[lo : hi + 1] for p in g if p.layer != m.layer]

    def _miners(self, layers: list[list]) -> str:
        key = tuple((m.id, m.active, m.layer) for g in layers for m in g)
        if key != self._key:
            self._key = key
            self._by_node = {m.node_id: m for g in layers for m in g}
            self._miners_json = json.dumps(
                [[self._info(m, self._peers(m, layers)) for m in g] for g in layers],
                separators=(",", ":"),
            )
        return self._miners_json

    # ------------------------------------------------------------------ calls
    def route(self, act_id, entry, layers, tracker: Tracker, now):
        body = (
            f'{{"activation_id": {act_id}, "miner_id": "miner-{entry.id:05d}", '
            f'"n_layers": {len(layers)}, "miners": {self._miners(layers)}, '
            f'"activation_tracking_buffer": {tracker.to_json()}}}'
        )
        data = self._post("/route", body)
        path = data.get("path")
        if not isinstance(path, list) or len(path) != len(layers):
            n = len(path) if isinstance(path, list) else "no"
            raise PolicyFailure(f"/route returned {n} hops for {len(layers)} layers")
        out = []
        for layer, node in enumerate(path):
            m = self._by_node.get(node) if isinstance(node, str) else None
            if m is None:
                raise PolicyFailure(f"/route named an unknown node {node!r}")
            if m.layer != layer:
                raise PolicyFailure(f"/route sent layer {layer} to {node}, a layer {m.layer} miner")
            out.append(m)
        return out

    def assign(self, miners, n_layers, tracker: Tracker, now):
        peers = miners if len(miners) <= PEER_LIMIT else []
        infos = {f"miner-{m.id:05d}": self._info(m, peers) for m in miners}
        body = json.dumps({"miners": infos, "n_layers": n_layers})[:-1]
        body += f', "activation_tracking_buffer": {tracker.to_json()}}}'
        data = self._post("/balance-orchestrator", body)
        got = data.get("assignments")
        if not isinstance(got, dict):
            raise PolicyFailure("/balance-orchestrator returned no assignments object")
        out = []
        for m in miners:
            a = got.get(f"miner-{m.id:05d}")
            if not (
                isinstance(a, list)
                and len(a) == 1
                and isinstance(a[0], int)
                and not isinstance(a[0], bool)
            ):
                raise PolicyFailure(f"miner-{m.id:05d} must get exactly one layer, got {a!r}")
            out.append(a[0])
        return out
