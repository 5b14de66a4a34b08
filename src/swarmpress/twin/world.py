"""The simulated swarm's population: miners with their hidden properties, drawn from a
scenario and a seed, and the latency between any two of them from a geographic model.

Latency(a, b) = the great-circle distance between their regions at 2/3 of the speed of
light in fibre times a routing inflation of 1.5, plus a 2 ms floor, plus each side's
last-mile delay (log-normal per miner). A scenario may instead give region-to-region
latencies ("us-east>eu" = seconds). No N x N matrix is stored, so 10,000 miners cost
nothing extra.
"""

from __future__ import annotations

import math
import random
from collections import deque

from swarmpress.twin.scenario import Scenario, ScenarioError, Spread

REGION_COORDS = {
    "us-east": (40.7, -74.0),
    "us-west": (37.4, -122.1),
    "eu": (50.1, 8.7),
    "uk": (51.5, -0.1),
    "asia": (35.7, 139.7),
    "sg": (1.35, 103.8),
    "india": (19.1, 72.9),
    "sa": (-23.5, -46.6),
    "oceania": (-33.9, 151.2),
}
_FIBRE_KM_S = 200_000.0


def _great_circle_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    la1, lo1, la2, lo2 = map(math.radians, (*a, *b))
    h = (
        math.sin((la2 - la1) / 2) ** 2
        + math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2
    )
    return 2 * 6371.0 * math.asin(min(1.0, math.sqrt(h)))


class Miner:
    """One miner. Hidden from policies: speeds, bandwidths, queues, cache use."""

    __slots__ = (
        "active",
        "bq",
        "busy",
        "busy_time",
        "bwd_s",
        "cache",
        "cls",
        "current",
        "down",
        "drop_token",
        "dropouts",
        "fq",
        "fwd_s",
        "held",
        "id",
        "last_mile",
        "layers",
        "link_free",
        "miner_id",
        "node_id",
        "processed",
        "region",
        "up",
    )  # fmt: skip

    def __init__(self, i: int, cls: int, region: int, last_mile: float) -> None:
        self.id = i
        self.miner_id = f"miner-{i:05d}"  # the contract's MinerInfo.miner_id (events, balancing)
        self.node_id = f"node-{i:05d}"  # its receiver_node_id (what a route names)
        self.cls = cls
        self.region = region
        self.last_mile = last_mile
        self.fwd_s = self.bwd_s = self.up = self.down = 0.0
        self.active = True
        self.layers: list[int] = [0]  # consecutive layers it serves (one after balancing)
        self.cache = 0
        self.fq: deque = deque()  # forward work waiting
        self.bq: deque = deque()  # backward work waiting (served first)
        self.busy = False
        self.link_free = 0.0
        self.busy_time = 0.0
        self.processed = 0
        self.dropouts = 0
        self.held: dict = {}  # activation -> cache slots it holds here, between forward and
        # backward (a dict, ordered: a set of objects would iterate in memory order)
        self.current = None  # the activation being computed
        self.drop_token = 0  # identifies the live drop-out timer


class World:
    """Miners plus the latency model, built deterministically from (scenario, seed)."""

    def __init__(self, sc: Scenario, seed: int) -> None:
        self.sc = sc
        self.seed = seed
        self.rng = random.Random(seed)
        sw = sc.swarm
        unknown = [r for r in sw.regions if r not in REGION_COORDS and not sw.latency]
        if unknown:
            raise ScenarioError(f"swarm.regions: unknown region {unknown[0]!r} "
                                f"(known: {', '.join(REGION_COORDS)})")  # fmt: skip
        self.regions = list(sw.regions)
        self.region_lat = self._region_latency()
        self.miners = []
        shares = [c.share for c in sw.classes]
        for i in range(sw.miners):
            cls = self._pick(shares)
            region = self.rng.randrange(len(self.regions))
            last_mile = sw.last_mile_s * math.exp(0.5 * self.rng.gauss(0, 1))
            m = Miner(i, cls, region, last_mile)
            self._draw(m)
            self.miners.append(m)
        lo, hi = (sc.model.layers,) * 2 if isinstance(sc.model.layers, int) else sc.model.layers
        self.n_layers = self.rng.randint(lo, hi)
        if self.n_layers > sw.miners:
            raise ScenarioError(f"model.layers: {self.n_layers} layers need at least as many "
                                f"miners, the swarm has {sw.miners}")  # fmt: skip

    def _pick(self, shares: list[float]) -> int:
        u, acc = self.rng.random(), 0.0
        for i, s in enumerate(shares):
            acc += s
            if u < acc:
                return i
        return len(shares) - 1

    def _spread(self, s: Spread) -> float:
        return s.median * math.exp(s.sigma * self.rng.gauss(0, 1))

    def _draw(self, m: Miner) -> None:
        sw = self.sc.swarm
        m.fwd_s = self._spread(sw.forward_s)
        m.bwd_s = m.fwd_s * sw.backward_factor
        m.up = self._spread(sw.upload_mbit) * 1e6 / 8
        m.down = self._spread(sw.download_mbit) * 1e6 / 8

    def drift(self) -> None:
        """Properties wander between epochs (log-normal factor per property)."""
        d = self.sc.swarm.drift
        if d <= 0:
            return
        g = self.rng.gauss
        for m in self.miners:
            f = math.exp(d * g(0, 1))
            m.fwd_s *= f
            m.bwd_s *= f
            m.up *= math.exp(d * g(0, 1))
            m.down *= math.exp(d * g(0, 1))

    def _region_latency(self) -> list[list[float]]:
        sw = self.sc.swarm
        n = len(self.regions)
        out = [[0.0] * n for _ in range(n)]
        for i, a in enumerate(self.regions):
            for j, b in enumerate(self.regions):
                if sw.latency:
                    key, rev = f"{a}>{b}", f"{b}>{a}"
                    if i == j and key not in sw.latency:
                        out[i][j] = 0.002
                    elif key in sw.latency or rev in sw.latency:
                        out[i][j] = sw.latency.get(key, sw.latency.get(rev))
                    else:
                        raise ScenarioError(f"swarm.latency: no entry for {key!r}")
                else:
                    km = _great_circle_km(REGION_COORDS[a], REGION_COORDS[b])
                    out[i][j] = 0.002 + 1.5 * km / _FIBRE_KM_S
        return out

    def initial_layout(self) -> None:
        """The starting configuration (Apex: "Miners may initially host multiple layers"):
        miners dealt evenly to layers in a random order, then a `multi_layer_share` of them
        also serving the next layers (up to `max_layers_per_miner` consecutive ones).

        Its own generator (seed-derived), so the layout does not shift the world's draws."""
        sw, n = self.sc.swarm, self.n_layers
        rng = random.Random(self.seed ^ 0x1A7007)
        order = list(range(len(self.miners)))
        rng.shuffle(order)
        for k, i in enumerate(order):
            self.miners[i].layers = [k % n]
        if n < 2 or sw.multi_layer_share <= 0 or sw.max_layers_per_miner < 2:
            return
        chosen = rng.sample(order, round(sw.multi_layer_share * len(order)))
        for i in sorted(chosen):
            m = self.miners[i]
            span = min(n, rng.randint(2, sw.max_layers_per_miner))
            lo = min(m.layers[0], n - span)  # keeps its dealt layer, stays in range
            m.layers = list(range(lo, lo + span))

    def latency(self, a: Miner, b: Miner) -> float:
        """One-way latency in seconds between two miners (0 within one miner: a miner
        serving consecutive layers hands the activation to itself)."""
        if a is b:
            return 0.0
        return self.region_lat[a.region][b.region] + a.last_mile + b.last_mile
