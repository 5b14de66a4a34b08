"""Routing and balancing policies, as Python classes the engine calls in-process.

A policy sees only what the Apex contract shows a router: each miner's node id, layers
(a miner may serve several consecutive layers and then sits in each of their lists),
active flag, batch size and latencies to its peers, plus the activation tracking buffer
(and statistics derived from that buffer's events, kept by tracker.Tracker). Speeds,
bandwidths, queue lengths and cache use stay hidden. Routers enter at the requesting
layer-0 miner when one is given (the engine corrects path[0] to it anyway, as Apex does).

Routing: random, round-robin, latency-greedy, least-loaded (open events in the buffer),
capacity-aware (IOTA's free-cache weighting), and `pending` (this project's: join the
shortest estimated queue, counting the activations it has routed but not yet seen finish,
times the miner's observed service time, plus the hop's latency).
Balancing: even, and throughput-proportional (largest observed capacity first, each to the
layer with the least capacity so far). `best` = pending + throughput.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from swarmpress.errors import SwarmpressError, UsageError
from swarmpress.twin.tracker import Tracker


class PolicyFailure(SwarmpressError, RuntimeError):
    """A policy broke the contract (a bad route or assignment, a slow or failed call):
    the task scores 0 with this reason."""

    exit_code = 2  # the CLI's usage code: the policy given, not swarmpress, is at fault


class RoutingPolicy:
    """Choose one miner per layer for a new activation."""

    name = "base"

    def reset(self, seed: int, latency: Callable, cache_size: int) -> None:
        self.rng = random.Random(seed)
        self.latency = latency
        self.cache_size = cache_size

    def route(self, act_id: int, entry, layers: list[list], tracker: Tracker, now: float) -> list:
        """One hop per layer for activation act_id requested by `entry` (a layer-0 miner, or
        None); an invalid hop is not an error: the activation is lost there."""
        raise NotImplementedError

    def _entry(self, entry, layers: list[list]):
        """Layer 0's hop: the requesting miner, else a random active layer-0 miner."""
        return entry if entry is not None else self.rng.choice(self._active(layers[0]))

    @staticmethod
    def _active(group) -> list:
        """The active miners of a layer (the engine hands in-process policies a view that
        keeps this list up to date); everyone if nobody is active (it will be dropped)."""
        alive = getattr(group, "active", None)
        if alive is None:
            alive = [m for m in group if m.active]
        return alive or group


class RandomRouter(RoutingPolicy):
    name = "random"

    def route(self, act_id, entry, layers, tracker, now):
        return [self._entry(entry, layers)] + [self.rng.choice(self._active(g)) for g in layers[1:]]


class RoundRobinRouter(RoutingPolicy):
    name = "round-robin"

    def reset(self, seed, latency, cache_size):
        super().reset(seed, latency, cache_size)
        self.turn: dict[int, int] = {}

    def route(self, act_id, entry, layers, tracker, now):
        path = [entry] if entry is not None else []
        for layer, g in enumerate(layers[len(path) :], start=len(path)):
            alive = self._active(g)
            i = self.turn.get(layer, 0)
            self.turn[layer] = i + 1
            path.append(alive[i % len(alive)])
        return path


class LatencyGreedyRouter(RoutingPolicy):
    """Enter at the suggested miner, then always the nearest miner of the next layer."""

    name = "latency-greedy"

    def route(self, act_id, entry, layers, tracker, now):
        path = [self._entry(entry, layers)]
        for g in layers[1:]:
            prev = path[-1]
            path.append(
                min(self._active(g), key=lambda m: (self.latency(prev, m), self.rng.random()))
            )
        return path


class LeastLoadedRouter(RoutingPolicy):
    """The miner with the fewest open (unfinished) events in the tracking buffer."""

    name = "least-loaded"

    def route(self, act_id, entry, layers, tracker, now):
        load = tracker.open_by_miner
        path = [entry] if entry is not None else []
        return path + [
            min(self._active(g), key=lambda m: (load.get(m.id, 0), self.rng.random()))
            for g in layers[len(path) :]
        ]


class CapacityAwareRouter(RoutingPolicy):
    """IOTA-style: pick with probability proportional to estimated free cache slots
    (cache size minus forward passes seen without their backward pass)."""

    name = "capacity-aware"

    def route(self, act_id, entry, layers, tracker, now):
        fwd, bwd = tracker.done_by_dir
        path = [entry] if entry is not None else []
        for g in layers[len(path) :]:
            alive = self._active(g)
            weights = [
                max(0.0, self.cache_size - max(0, fwd.get(m.id, 0) - bwd.get(m.id, 0))) + 0.25
                for m in alive
            ]
            path.append(self.rng.choices(alive, weights=weights)[0])
        return path


SAMPLE = 16  # candidates per layer the pending router scores in large swarms


class PendingRouter(RoutingPolicy):
    """Join the shortest estimated queue: the work this router itself sent to a miner
    recently (each assignment decaying over the estimated time it holds the miner's cache,
    the round trip below that layer, so work that finished or was dropped fades away) plus
    one, times the miner's observed service time, plus the hop's latency; miners whose
    cache is probably full are avoided.

    Knowing its own decisions, it does not herd onto a miner whose buffer events have not
    caught up yet; observed service times steer work away from slow miners; in large layers
    it scores a random few (power of d choices)."""

    name = "pending"

    def reset(self, seed, latency, cache_size):
        super().reset(seed, latency, cache_size)
        self.load: dict[int, tuple[float, float]] = {}  # miner -> (decayed count, as of time)
        self.generation = -1
        self.calls = 0
        self.default = 1.0

    def route(self, act_id, entry, layers, tracker, now):
        if tracker.generation != self.generation:  # a new epoch: the buffer was cleared
            self.generation = tracker.generation
            self.load.clear()
            self.calls = 0
        ema = tracker.proc_ema
        if self.calls % 256 == 0:  # the typical service time, refreshed now and then
            self.default = sorted(ema.values())[len(ema) // 2] if ema else 1.0
        self.calls += 1
        default, cache_size = self.default, self.cache_size
        n_layers = len(layers)
        load, lat, rnd, exp = self.load, self.latency, self.rng.random, math.exp
        path = []
        prev = None
        for layer, g in enumerate(layers):
            # An activation holds a cache slot here until its gradient comes back: about the
            # round trip through the layers below.
            tau = 2.0 * (n_layers - layer) * default + 1.0
            alive = [entry] if layer == 0 and entry is not None else self._active(g)
            n = len(alive)
            if n > SAMPLE:
                alive = [alive[int(rnd() * n)] for _ in range(SAMPLE)]
            best, best_cost, best_w = None, 0.0, 0.0
            for m in alive:
                w, t = load.get(m.id, (0.0, now))
                w *= exp((t - now) / tau)
                cost = (w + 1.0) * ema.get(m.id, default) * (1.0 + 0.01 * rnd())
                if w >= cache_size - 0.5:
                    cost *= 10.0  # its cache is likely full: forward work would stall
                if prev is not None:
                    cost += lat(prev, m)
                if best is None or cost < best_cost:
                    best, best_cost, best_w = m, cost, w
            load[best.id] = (best_w + 1.0, now)
            path.append(best)
            prev = best
        return path


class BalancingPolicy:
    """Assign every miner exactly one layer between epochs (the merge phase)."""

    name = "base"

    def reset(self, seed: int) -> None:
        self.rng = random.Random(seed ^ 0x5EED)

    def assign(self, miners: list, n_layers: int, tracker: Tracker, now: float) -> list:
        """One entry per miner: its layer (or a list of layers, or None to keep its current
        ones), applied by the Apex rules (sim.apply_assignments)."""
        raise NotImplementedError


class EvenBalancer(BalancingPolicy):
    """Equal numbers of miners per layer, in a random order."""

    name = "even"

    def assign(self, miners, n_layers, tracker, now):
        order = list(range(len(miners)))
        self.rng.shuffle(order)
        out = [0] * len(miners)
        for k, i in enumerate(order):
            out[i] = k % n_layers
        return out


class ThroughputBalancer(BalancingPolicy):
    """Equal observed capacity per layer: miners by capacity (1 / recent processing time,
    the median for unseen ones), each to the layer with the least capacity so far."""

    name = "throughput"

    def assign(self, miners, n_layers, tracker, now):
        ema = tracker.proc_ema
        if not ema:
            return EvenBalancer.assign(self, miners, n_layers, tracker, now)
        default = sorted(ema.values())[len(ema) // 2]
        cap = [1.0 / max(ema.get(m.id, default), 1e-9) for m in miners]
        order = sorted(range(len(miners)), key=lambda i: (-cap[i], self.rng.random()))
        total = [0.0] * n_layers
        count = [0] * n_layers
        out = [0] * len(miners)
        for i in order:
            layer = min(range(n_layers), key=lambda j: (count[j] > 0, total[j], count[j]))
            out[i] = layer
            total[layer] += cap[i]
            count[layer] += 1
        return out


ROUTERS: dict[str, type[RoutingPolicy]] = {
    c.name: c
    for c in (RandomRouter, RoundRobinRouter, LatencyGreedyRouter, LeastLoadedRouter,
              CapacityAwareRouter, PendingRouter)
}  # fmt: skip
BALANCERS: dict[str, type[BalancingPolicy]] = {
    c.name: c for c in (EvenBalancer, ThroughputBalancer)
}
BEST = ("pending", "throughput")
DESCRIPTIONS = {
    "random": "uniformly random active miner per layer",
    "round-robin": "cycle through each layer's active miners",
    "latency-greedy": "nearest miner of the next layer from the previous hop",
    "least-loaded": "fewest open events in the tracking buffer",
    "capacity-aware": "IOTA-style: weighted by estimated free cache slots",
    "pending": "shortest estimated queue: own routed-but-unfinished count x observed "
    "service time + hop latency (this project's)",
    "even": "equal miners per layer, random order",
    "throughput": "equal observed capacity per layer (largest first, least-loaded layer)",
}


class PolicyError(UsageError, ValueError):
    """An unknown policy name."""


def parse_policy(spec: str) -> tuple[RoutingPolicy, BalancingPolicy]:
    """'best', 'ROUTER' or 'ROUTER+BALANCER' -> instances (default balancing: even)."""
    router, _, balancer = ("+".join(BEST) if spec == "best" else spec).partition("+")
    if router not in ROUTERS:
        raise PolicyError(f"no routing policy {router!r}; known: {', '.join(ROUTERS)} or best")
    balancer = balancer or "even"
    if balancer not in BALANCERS:
        raise PolicyError(f"no balancing policy {balancer!r}; known: {', '.join(BALANCERS)}")
    return ROUTERS[router](), BALANCERS[balancer]()
