"""The discrete-event engine: activations through a pipeline of miners, epoch by epoch.

One heap of (time, sequence, kind, a, b) events, so runs are deterministic for a seed
(ties break by insertion order). Per activation: the router picks one hop per layer
(path[0] is always the requesting layer-0 miner, as Apex corrects it); forward work flows
down the path and the gradient back up it. Consecutive hops naming the same miner (one
serving several consecutive layers) are one visit: it computes those layers back to back,
with no transfer between them. Each miner computes one thing at a time, backward before
forward, and holds at most `cache_size` activations between their forward and backward
passes (forward work stalls when full). Each transfer occupies the sender's uplink for
overhead + encode + ratio x bytes / min(uplink, receiver downlink) + decode seconds, then
travels for the pair's latency. An activation sent to an invalid hop (an unknown node, a
miner not serving that layer, a missing hop) is lost there and dropped at the layer
timeout; one stuck `layer_timeout_s` at a layer, or caught on a miner that drops out, is
dropped too, and the orchestrator starts another. The first epoch starts from the
scenario's initial layout; the balancer is called between epochs (merge phases) with the
completed epoch's buffer. An epoch ends at its N-th completed activation; the merge phase
follows (its cost reported, not counted, as in the Apex scoring).
"""

from __future__ import annotations

import heapq
import math
import time
from dataclasses import dataclass, field

from swarmpress.twin.policies import BalancingPolicy, PolicyFailure, RoutingPolicy
from swarmpress.twin.profiles import NONE, CodecProfile
from swarmpress.twin.scenario import Scenario
from swarmpress.twin.tracker import (
    BACKWARD,
    FORWARD,
    NOTIFY,
    PROCESSING,
    QUEUING,
    RECEIVE,
    Tracker,
)
from swarmpress.twin.world import Miner, World

ARRIVE, DONE, TIMEOUT, DROPOUT, REJOIN = 0, 1, 2, 3, 4
_MISSING = object()  # a hop the route did not give (the path was too short)


class LayerView(list):
    """A layer's miners (all of them, as the contract shows) plus `.active`, the active
    ones, kept current by the engine so policies need not filter on every call."""

    def refresh(self) -> None:
        self.active = [m for m in self if m.active]


class Activation:
    """One activation in flight. path[layer] is the Miner for that layer, or a string saying
    why that hop is invalid (the activation is lost if it gets there)."""

    __slots__ = ("dir", "dropped", "holders", "id", "layer", "lost", "path", "queued_ev", "t0",
                 "visit")  # fmt: skip

    def __init__(self, i: int, path: list, t0: float) -> None:
        self.id, self.path, self.t0 = i, path, t0
        self.layer, self.dir, self.visit = 0, FORWARD, 0
        self.holders: list[Miner] = []
        self.dropped = False
        self.lost: str | None = None  # why it was lost at an invalid hop
        self.queued_ev = None


@dataclass
class EpochStats:
    epoch: int
    seconds: float
    completed: int
    dropped: int
    merge_seconds: float
    layers: list[int]


@dataclass
class RunResult:
    scenario: str
    seed: int
    policy: str
    codec: str
    n_layers: int
    ok: bool
    reason: str
    total_epoch_time: float
    max_epoch_time: float
    score: float
    completed: int
    dropped: int
    simulated_seconds: float
    wall_seconds: float
    epochs: list[EpochStats] = field(default_factory=list)
    bytes_on_wire: float = 0.0
    utilisation: dict[str, float] = field(default_factory=dict)
    series: dict[str, list] = field(default_factory=dict)
    logs: dict[str, list] = field(default_factory=dict)
    invalid_routes: int = 0  # routes with an invalid hop (their activations failed)
    invalid_route: str = ""  # the first of them and why

    @property
    def speedup(self) -> float:
        return self.simulated_seconds / self.wall_seconds if self.wall_seconds > 0 else math.inf

    def to_json(self, full: bool = False) -> dict:
        d = {
            "scenario": self.scenario,
            "seed": self.seed,
            "policy": self.policy,
            "codec": self.codec,
            "n_layers": self.n_layers,
            "ok": self.ok,
            "reason": self.reason,
            "total_epoch_time": self.total_epoch_time if self.ok else None,
            "max_epoch_time": self.max_epoch_time,
            "score": self.score,
            "completed": self.completed,
            "dropped": self.dropped,
            "simulated_seconds": self.simulated_seconds,
            "wall_seconds": self.wall_seconds,
            "speedup": self.speedup,
            "throughput": self.completed / self.total_epoch_time if self.ok else 0.0,
            "bytes_on_wire": self.bytes_on_wire,
            "invalid_routes": self.invalid_routes,
            "invalid_route": self.invalid_route,
            "epochs": [e.__dict__ for e in self.epochs],
        }
        if full:
            d["utilisation"] = self.utilisation
            d["series"] = self.series
            d["logs"] = self.logs
        return d


def mean_of(median: float, sigma: float) -> float:
    return median * math.exp(sigma * sigma / 2)


def ideal_epoch_time(sc: Scenario, n_layers: int, codec: CodecProfile = NONE) -> float:
    """Perfectly balanced, queue-free epoch: work / capacity plus one path's traversal."""
    sw = sc.swarm
    f = mean_of(sw.forward_s.median, sw.forward_s.sigma)
    work = f * (1 + sw.backward_factor)
    m = sc.model
    if m.layer_forward_s is not None or m.layer_backward_s is not None:
        speed = f / sw.forward_s.median
        fwd = m.layer_forward_s or [sw.forward_s.median] * n_layers
        bwd = m.layer_backward_s or [c * sw.backward_factor for c in fwd]
        work = speed * (sum(fwd) + sum(bwd)) / n_layers  # per layer, on average
    size = sc.model.activation_bytes()
    bw = min(mean_of(sw.upload_mbit.median, sw.upload_mbit.sigma),
             mean_of(sw.download_mbit.median, sw.download_mbit.sigma)) * 1e6 / 8  # fmt: skip
    hop = sw.message_overhead_s + 0.05 + size / bw  # 50 ms: a typical one-way latency
    capacity = sw.miners / (n_layers * work)  # activations per second, whole swarm
    path = n_layers * work + 2 * (n_layers - 1) * hop
    return sc.workload.activations_per_epoch / capacity + path + sc.workload.step_s


MAX_FACTOR = 4.0  # max_epoch_time = 4 x the ideal: a perfect policy scores 0.75


def max_epoch_time(sc: Scenario, n_layers: int) -> float:
    """The Apex score's denominator, analytic from the configuration (docs/twin.md)."""
    return MAX_FACTOR * sc.workload.epochs * ideal_epoch_time(sc, n_layers)


class Simulation:
    """One run of a scenario with one routing and one balancing policy and a codec."""

    def __init__(
        self,
        sc: Scenario,
        seed: int,
        router: RoutingPolicy,
        balancer: BalancingPolicy,
        codec: CodecProfile = NONE,
        record: bool = False,
        sample_every: float = 5.0,
    ) -> None:
        self.sc, self.seed = sc, seed
        self.world = World(sc, seed)
        self.rng = self.world.rng
        self.L = self.world.n_layers
        self.router, self.balancer, self.codec = router, balancer, codec
        router.reset(seed, self.world.latency, sc.rules.cache_size)
        if hasattr(router, "batch"):  # what the contract's MinerInfo reports
            router.batch = sc.swarm.local_batch_size
        balancer.reset(seed)
        self.call_limit = sc.rules.route_call_limit_s
        self.record = record
        self.sample_every = sample_every
        self.tracker = Tracker(sc.rules.buffer_events)
        self.heap: list = []
        self.seq = 0
        self.t = 0.0
        self.epoch = 0
        self.next_act = 0
        self.in_flight = 0
        self.completed = self.dropped = 0
        self.epoch_done = self.epoch_dropped = 0
        self.bytes = 0.0
        self.size = sc.model.activation_bytes()
        self.acts: dict[int, Activation] = {}
        self.logs: dict[str, list] = {"activations": [], "routes": [], "balance": [], "spans": []}
        self.max_spans = 50_000
        self.series: dict[str, list] = {"t": [], "queued": [], "cached": [], "in_flight": []}
        self.by_layer: list[LayerView] = []
        self.jitter = sc.swarm.pass_jitter
        self.layer_fwd = sc.model.layer_forward_s
        self.layer_bwd = sc.model.layer_backward_s
        if self.layer_fwd is not None and self.layer_bwd is None:
            self.layer_bwd = [c * sc.swarm.backward_factor for c in self.layer_fwd]
        elif self.layer_bwd is not None and self.layer_fwd is None:
            self.layer_fwd = [sc.swarm.forward_s.median] * self.L
        self._next_sample = 0.0
        self.invalid_routes = 0  # routes with at least one invalid hop
        self.invalid_example = ""  # the first of them, for the report
        # An epoch with no completion for this long has pushed the total epoch time past
        # max_epoch_time (score 0 whatever follows): the task stops there.
        self.stall_s = max_epoch_time(sc, self.L)
        self.deadline = math.inf

    # ------------------------------------------------------------------ scheduling
    def push(self, t: float, kind: int, a, b=None) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, kind, a, b, self.epoch))

    # ------------------------------------------------------------------ orchestrator
    def entry_miners(self) -> list[Miner]:
        return self.by_layer[0].active

    def fill(self) -> None:
        """Start activations until the in-flight limit (per active layer-0 miner) is met."""
        target = self.sc.workload.activations_per_epoch
        limit = self.sc.workload.in_flight_per_entry * len(self.entry_miners())
        while self.in_flight < limit and self.epoch_done < target:
            if not self.start_activation():
                return

    def start_activation(self) -> bool:
        entries = self.entry_miners()
        if not entries:
            return False
        entry = entries[self.next_act % len(entries)]
        i = self.next_act
        self.next_act += 1
        t0 = time.perf_counter()
        path = self.router.route(i, entry, self.by_layer, self.tracker, self.t)
        if time.perf_counter() - t0 > self.call_limit:
            raise PolicyFailure(f"a route call took longer than {self.call_limit:g} s")
        path = self.plan(path, entry, i)
        act = Activation(i, path, self.t)
        self.acts[i] = act
        self.in_flight += 1
        if self.record:
            self.logs["routes"].append({"t": self.t, "activation": i, "path": [
                m.node_id if isinstance(m, Miner) else None for m in path]})  # fmt: skip
        self.push(self.t + self.sc.swarm.message_overhead_s, ARRIVE, path[0], act)
        return True

    def plan(self, path, entry: Miner, act_id: int) -> list:
        """The route as the engine follows it (Apex: invalid paths are used as-is, never
        rejected): path[0] becomes the requesting miner, extra hops are ignored, and each
        invalid hop (missing, an unknown node, a miner not serving that layer) is replaced
        by the reason, so the activation is lost when it gets there."""
        hops = list(path[: self.L]) if isinstance(path, list | tuple) else []
        hops += [_MISSING] * (self.L - len(hops))
        hops[0] = entry
        bad = None
        for layer in range(1, self.L):
            m = hops[layer]
            if isinstance(m, Miner) and layer in m.layers:
                continue
            if m is _MISSING:
                why = f"the route has no hop for layer {layer}"
            elif isinstance(m, Miner):
                why = f"layer {layer} routed to {m.node_id}, which serves layers {m.layers}"
            else:
                why = f"layer {layer} routed to unknown node {m!r}"
            hops[layer] = why
            bad = bad or why
        if bad is not None:
            self.invalid_routes += 1
            if not self.invalid_example:
                self.invalid_example = f"activation {act_id}: {bad}"
        return hops

    # ------------------------------------------------------------------ miners
    def arrive(self, m: Miner, act: Activation) -> None:
        if act.dropped:
            return
        if not m.active:
            self.drop(act, f"sent to {m.node_id}, which has dropped out")
            return
        tr = self.tracker
        tr.instant(act.id, act.dir, RECEIVE, self.t, m.id, m.miner_id, act.layer)
        act.queued_ev = tr.open(act.id, act.dir, QUEUING, self.t, m.id, m.miner_id, act.layer)
        (m.bq if act.dir == BACKWARD else m.fq).append(act)
        act.visit += 1
        self.push(self.t + self.sc.rules.layer_timeout_s, TIMEOUT, act, act.visit)
        if not m.busy:
            self.try_start(m)

    def try_start(self, m: Miner) -> None:
        if m.busy or not m.active:
            return
        cache_size = self.sc.rules.cache_size
        while True:
            if m.bq:
                act = m.bq.popleft()
            elif m.fq and m.cache < cache_size:
                act = m.fq.popleft()
            else:
                return
            if not act.dropped:
                break
        self.tracker.close(act.queued_ev, self.t)
        if act.dir == FORWARD:  # one cache slot per visit, however many layers it covers
            m.cache += 1
            act.holders.append(m)
            m.held[act] = m.held.get(act, 0) + 1
        self.compute(m, act)

    def compute(self, m: Miner, act: Activation) -> None:
        """Miner m computes the activation's pass at its current layer."""
        dur = self.pass_seconds(m, act)
        if self.jitter:
            dur *= math.exp(self.jitter * self.rng.gauss(0.0, 1.0) - self.jitter**2 / 2)
        m.busy = True
        m.current = act
        m.busy_time += dur
        ev = self.tracker.open(act.id, act.dir, PROCESSING, self.t, m.id, m.miner_id, act.layer)
        self.push(self.t + dur, DONE, m, (act, ev, dur))

    def pass_seconds(self, m: Miner, act: Activation) -> float:
        """How long miner m computes this pass: its own speed, times the layer's cost when
        the scenario gives layers different costs."""
        costs = self.layer_fwd if act.dir == FORWARD else self.layer_bwd
        if costs is None:
            return m.fwd_s if act.dir == FORWARD else m.bwd_s
        return costs[act.layer] * m.fwd_s / self.sc.swarm.forward_s.median

    def done(self, m: Miner, act: Activation, ev, dur: float) -> None:
        if m.current is not act:  # the miner dropped out (and maybe rejoined) meanwhile
            self.tracker.close(ev, self.t)
            return
        m.busy = False
        m.current = None
        m.processed += 1
        if self.record and len(self.logs["spans"]) < self.max_spans:
            self.logs["spans"].append(
                (act.id, act.layer, act.dir, self.t - dur, self.t, self.epoch)
            )
        self.tracker.close(ev, self.t)
        if not act.dropped and m.active:
            if act.dir == FORWARD:
                if act.layer == self.L - 1:  # the last layer turns it around on the spot
                    act.dir = BACKWARD  # still at this layer: its timeout keeps running
                    m.bq.append(act)
                    act.queued_ev = None
                elif not self.onward(m, act, act.layer + 1):
                    return  # m goes on computing the next layer
            else:
                if act.layer == 0:
                    self.release(m, act)
                    self.complete(act)
                elif not self.onward(m, act, act.layer - 1):
                    return
        self.try_start(m)

    def onward(self, m: Miner, act: Activation, layer: int) -> bool:
        """Move the activation from miner m to `layer`'s hop; False when m serves that layer
        too (the same miner on consecutive hops): it computes it at once, no transfer."""
        nxt = act.path[layer]
        if nxt is m:
            act.layer = layer
            act.visit += 1  # progress: the layer timeout starts again
            self.push(self.t + self.sc.rules.layer_timeout_s, TIMEOUT, act, act.visit)
            self.compute(m, act)
            return False
        if act.dir == BACKWARD:
            self.release(m, act)
        if isinstance(nxt, Miner):
            self.send(m, nxt, act, act.dir)
        else:  # an invalid hop: lost on the way; the layer timeout drops it
            act.visit += 1
            act.layer = layer
            act.lost = f"lost at an invalid hop: {nxt}"
            self.push(self.t + self.sc.rules.layer_timeout_s, TIMEOUT, act, act.visit)
        return True

    def release(self, m: Miner, act: Activation) -> None:
        """The activation's backward pass left miner m: the cache slot of its visit is free."""
        m.cache -= 1
        act.holders.remove(m)
        self._unhold(m, act)

    @staticmethod
    def _unhold(m: Miner, act: Activation) -> None:
        n = m.held.get(act, 0)
        if n > 1:
            m.held[act] = n - 1
        else:
            m.held.pop(act, None)

    def send(self, src: Miner, dst: Miner, act: Activation, direction: int) -> None:
        act.visit += 1  # leaving this layer: its timeout no longer applies
        act.layer += 1 if direction == FORWARD else -1
        act.dir = direction
        role = self.codec.activation if direction == FORWARD else self.codec.gradient
        size = self.size
        wire = size * role.ratio
        dur = self.sc.swarm.message_overhead_s + role.seconds(size) + wire / min(src.up, dst.down)
        start = src.link_free if src.link_free > self.t else self.t
        src.link_free = start + dur
        self.bytes += wire
        self.push(start + dur + self.world.latency(src, dst), ARRIVE, dst, act)

    def complete(self, act: Activation) -> None:
        act.visit += 1  # finished: no timeout applies any more
        self.in_flight -= 1
        self.completed += 1
        self.epoch_done += 1
        self.deadline = self.t + self.stall_s
        m = act.path[0]
        self.tracker.instant(act.id, BACKWARD, NOTIFY, self.t, m.id, m.miner_id, 0)
        if self.record:
            self.logs["activations"].append({"id": act.id, "start": act.t0, "end": self.t,
                                             "epoch": self.epoch})  # fmt: skip
        del self.acts[act.id]
        if self.epoch_done < self.sc.workload.activations_per_epoch:
            self.fill()

    def drop(self, act: Activation, reason: str) -> None:
        if act.dropped or act.id not in self.acts:
            return
        act.dropped = True
        self.in_flight -= 1
        self.dropped += 1
        self.epoch_dropped += 1
        for h in act.holders:  # upstream miners release the cache slot it held
            h.cache -= 1
            self._unhold(h, act)
            if h.active and not h.busy:
                self.try_start(h)
        act.holders.clear()
        if self.record:
            self.logs["activations"].append({"id": act.id, "start": act.t0, "end": self.t,
                                             "epoch": self.epoch, "dropped": reason})  # fmt: skip
        self.acts.pop(act.id, None)
        self.fill()

    # ------------------------------------------------------------------ drop-outs
    def schedule_dropout(self, m: Miner) -> None:
        rate = self.sc.swarm.classes[m.cls].dropout_per_hour / 3600.0
        if rate > 0:
            self.push(self.t + self.rng.expovariate(rate), DROPOUT, m, m.drop_token)

    def dropout(self, m: Miner, token: int | None = None) -> None:
        """A miner leaves; token None is a forced drop (a storm), else its own timer's."""
        if not m.active or (token is not None and token != m.drop_token):
            return
        m.active = False
        m.dropouts += 1
        m.drop_token += 1  # any pending drop-out timer of this miner is now stale
        for layer in m.layers if self.by_layer else ():  # before the drops below start new
            self.by_layer[layer].refresh()  # work: route around it
        victims = [*m.held, *m.fq, *m.bq] + ([m.current] if m.current is not None else [])
        m.current, m.busy = None, False
        for act in victims:  # in transit to it: dropped on arrival
            self.drop(act, f"{m.node_id} dropped out")
        m.fq.clear()
        m.bq.clear()
        m.held.clear()
        m.cache = 0
        mean = self.sc.swarm.classes[m.cls].rejoin_mean_s
        self.push(self.t + self.rng.expovariate(1.0 / mean), REJOIN, m, None)

    def rejoin(self, m: Miner) -> None:
        m.active, m.busy, m.cache = True, False, 0
        m.link_free = self.t
        for layer in m.layers if self.by_layer else ():
            self.by_layer[layer].refresh()
        self.schedule_dropout(m)
        if self.by_layer and 0 in m.layers:
            self.fill()

    def storm(self) -> None:
        st = self.sc.storm
        if st is None or st.epoch != self.epoch:
            return
        active = [m for m in self.world.miners if m.active]
        for m in self.rng.sample(active, round(st.share * len(active))):
            self.push(self.t + st.start_s + self.rng.random() * st.window_s, DROPOUT, m, None)

    # ------------------------------------------------------------------ epochs
    def layout(self) -> None:
        """The first epoch's layout: the scenario's starting configuration (no balancing
        call before the first epoch, as in Apex)."""
        self.world.initial_layout()
        self.build_layers("initial layout")

    def balance(self) -> None:
        """The merge phase's balancing call, with the completed epoch's buffer, applied with
        the Apex rules: invalid entries dropped, then one layer per miner, no empty layer."""
        miners = self.world.miners
        t0 = time.perf_counter()
        answer = self.balancer.assign(miners, self.L, self.tracker, self.t)
        if time.perf_counter() - t0 > self.call_limit:
            raise PolicyFailure(f"a balance call took longer than {self.call_limit:g} s")
        for m, layers in zip(miners, apply_assignments(answer, miners, self.L), strict=True):
            m.layers = layers
        self.build_layers("balancing")

    def build_layers(self, what: str) -> None:
        """Index miners by layer after a layout or a balancing call (a miner serving several
        layers is in each of their lists)."""
        self.by_layer = [LayerView() for _ in range(self.L)]
        for m in self.world.miners:
            for layer in m.layers:
                self.by_layer[layer].append(m)
        counts = [len(g) for g in self.by_layer]
        if 0 in counts:
            raise PolicyFailure(f"{what} left layer {counts.index(0)} without miners "
                                "(every layer needs at least one)")  # fmt: skip
        for g in self.by_layer:
            g.refresh()
        if self.record:
            multi = sum(len(m.layers) > 1 for m in self.world.miners)
            self.logs["balance"].append(
                {"t": self.t, "epoch": self.epoch, "source": what, "counts": counts,
                 "multi_layer_miners": multi}
            )  # fmt: skip

    def merge_seconds(self) -> float:
        """Replicas of each layer exchange weight deltas (ring all-reduce: 2x the delta)."""
        if not self.sc.workload.merge:
            return 0.0
        role = self.codec.weight_delta
        size = self.sc.model.params_per_layer * self.sc.model.bytes_per_value
        worst = 0.0
        for group in self.by_layer:
            alive = [m for m in group if m.active] or group
            bw = sorted(min(m.up, m.down) for m in alive)[len(alive) // 2]
            worst = max(worst, 2 * size * role.ratio / bw + role.seconds(size))
        return worst

    def reset_epoch_state(self) -> None:
        for m in self.world.miners:
            m.fq.clear()
            m.bq.clear()
            m.held.clear()
            m.current = None
            m.cache = 0
            m.busy = False
            m.link_free = self.t
        self.acts.clear()
        self.in_flight = 0
        self.epoch_done = self.epoch_dropped = 0

    def sample(self) -> None:
        ms = self.world.miners
        self.series["t"].append(round(self.t, 3))
        self.series["queued"].append(sum(len(m.fq) + len(m.bq) for m in ms))
        self.series["cached"].append(sum(m.cache for m in ms))
        self.series["in_flight"].append(self.in_flight)
        self._next_sample = self.t + self.sample_every

    # ------------------------------------------------------------------ main loop
    def run(self) -> RunResult:
        wall0 = time.perf_counter()
        epochs: list[EpochStats] = []
        ok, reason = True, ""
        horizon = 50 * max_epoch_time(self.sc, self.L)  # a stalled swarm stops here
        for m in self.world.miners:
            self.schedule_dropout(m)
        try:
            for e in range(self.sc.workload.epochs):
                self.epoch = e
                if e == 0:
                    self.layout()
                else:  # the merge phase: drift, then balancing with the epoch's buffer
                    self.world.drift()
                    self.balance()
                self.tracker.clear()
                self.reset_epoch_state()
                self.storm()
                t_start = self.t
                self.advance(self.t + self.sc.workload.step_s)
                self.deadline = self.t + self.stall_s
                self.fill()
                self.loop(horizon)
                merge = self.merge_seconds()
                epochs.append(EpochStats(e, self.t - t_start, self.epoch_done, self.epoch_dropped,
                                         merge, [len(g) for g in self.by_layer]))  # fmt: skip
                self.advance(self.t + merge)
        except PolicyFailure as exc:
            ok, reason = False, f"policy failed the task: {exc}"
        except _Stalled as exc:
            ok, reason = False, str(exc)
        wall = time.perf_counter() - wall0
        total = sum(e.seconds for e in epochs)
        mx = max_epoch_time(self.sc, self.L)
        score = max(0.0, min(1.0, 1.0 - total / mx)) if ok else 0.0
        busy_span = max(self.t, 1e-9)
        util = {m.node_id: m.busy_time / busy_span for m in self.world.miners}
        if self.record:
            self.logs["miners"] = [
                {"miner_id": m.miner_id, "receiver_node_id": m.node_id,
                 "class": self.sc.swarm.classes[m.cls].name, "layers": m.layers,
                 "utilisation": m.busy_time / busy_span, "processed": m.processed,
                 "dropouts": m.dropouts, "forward_s": m.fwd_s, "upload_mbit": m.up * 8 / 1e6}
                for m in self.world.miners
            ]  # fmt: skip
        return RunResult(
            self.sc.name, self.seed, f"{self.router.name}+{self.balancer.name}", self.codec.name,
            self.L, ok, reason, total if ok else math.inf, mx, score, self.completed,
            self.dropped, self.t, wall, epochs, self.bytes, util, self.series, self.logs,
            self.invalid_routes, self.invalid_example,
        )  # fmt: skip

    def advance(self, until: float) -> None:
        """Process only miner drop-out/rejoin events up to `until` (the merge phase)."""
        heap = self.heap
        while heap and heap[0][0] <= until:
            t, _, kind, a, b, _ = heapq.heappop(heap)
            self.t = t
            if kind == DROPOUT:
                self.dropout(a, b)
            elif kind == REJOIN:
                self.rejoin(a)
        self.t = until

    def loop(self, horizon: float) -> None:
        target = self.sc.workload.activations_per_epoch
        heap, epoch = self.heap, self.epoch
        pop = heapq.heappop
        while self.epoch_done < target:
            if not heap:
                raise _Stalled(f"the swarm stalled in epoch {epoch}: nothing left to do"
                               + self._invalid_note())  # fmt: skip
            t, _, kind, a, b, ev_epoch = pop(heap)
            if t > horizon:
                raise _Stalled(f"epoch {epoch} did not finish within {horizon:.0f} simulated s"
                               + self._invalid_note())  # fmt: skip
            if t > self.deadline:
                raise _Stalled(
                    f"epoch {epoch} stalled: no activation completed for {self.stall_s:.0f} "
                    "simulated s, so the total epoch time passed max_epoch_time (score 0)"
                    + self._invalid_note()
                )
            self.t = t
            if t >= self._next_sample:
                self.sample()
            if kind == DROPOUT:
                self.dropout(a, b)
                continue
            if kind == REJOIN:
                self.rejoin(a)
                continue
            if ev_epoch != epoch:
                continue  # work cancelled at the end of an earlier epoch
            if kind == ARRIVE:
                self.arrive(a, b)
            elif kind == DONE:
                self.done(a, *b)
            elif kind == TIMEOUT and b == a.visit and not a.dropped:
                self.drop(a, a.lost or f"stuck {self.sc.rules.layer_timeout_s:g} s at layer "
                          f"{a.layer}")  # fmt: skip

    def _invalid_note(self) -> str:
        if not self.invalid_routes:
            return ""
        return (f"; {self.invalid_routes} routes had invalid hops and their activations "
                f"failed (first: {self.invalid_example})")  # fmt: skip


class _Stalled(RuntimeError):
    pass


def apply_assignments(answer: object, miners: list, n_layers: int) -> list[list[int]]:
    """Each miner's layers after a balancing answer (one entry per miner: a layer, a list of
    layers, or None), by the Apex rules: invalid entries are dropped silently (layers out
    of range or not integers, values that are not lists; a miner whose entry is dropped or
    missing keeps its current layers), then every miner must serve exactly one layer, else
    PolicyFailure (the task scores 0). Empty layers are checked when the layers are built."""
    if not isinstance(answer, list | tuple) or len(answer) != len(miners):
        raise PolicyFailure("balancing must answer one entry per miner")
    out = []
    for m, a in zip(miners, answer, strict=True):
        if isinstance(a, int) and not isinstance(a, bool):
            a = [a]
        if not isinstance(a, list | tuple):
            a = []  # not a list: the entry is dropped
        layers = []
        for v in a:  # [2, 2] names one layer
            valid = isinstance(v, int) and not isinstance(v, bool) and 0 <= v < n_layers
            if valid and v not in layers:
                layers.append(v)
        if len(layers) > 1:
            raise PolicyFailure(f"balancing mapped {m.miner_id} to layers {layers}: every miner "
                                "must serve exactly one layer")  # fmt: skip
        if not layers and len(m.layers) != 1:
            raise PolicyFailure(f"balancing left {m.miner_id} on its starting layers {m.layers} "
                                "(no valid entry: it keeps its layers), but every miner must "
                                "serve exactly one layer after balancing")  # fmt: skip
        out.append(layers or list(m.layers))
    return out


__all__ = ["RunResult", "Simulation", "apply_assignments", "ideal_epoch_time", "max_epoch_time"]
