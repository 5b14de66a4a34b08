"""The /route request is assembled from cached pieces (docs/twin.md "External router
speed"); these tests hold that it is always what a from-scratch encoding of the current
state gives: miners that drop out and rejoin, layouts that change at balancing, events that
close, leave the buffer or are cleared, and a policy reused for another run."""

import json
import random

import pytest

from swarmpress.twin import remote as R
from swarmpress.twin.remote import RemotePolicy
from swarmpress.twin.scenario import load_scenario
from swarmpress.twin.sim import Simulation
from swarmpress.twin.tracker import Tracker, iso

GENEROUS = "rules.route_call_limit_s=30"


def _expected(sim: Simulation) -> dict:
    """The RouteRequest for the engine's current state, built from scratch from the
    contract (not from RemotePolicy's code)."""
    layers = sim.by_layer

    def info(m):
        near = {j for i in m.layers for j in (i - 1, i + 1) if 0 <= j < len(layers)}
        peers = {}
        for j in sorted(near):
            for p in layers[j]:
                if p is not m:
                    peers.setdefault(p.miner_id, round(sim.world.latency(m, p), 6))
        return {"miner_id": m.miner_id, "receiver_node_id": m.node_id, "active": m.active,
                "layers": list(m.layers), "local_batch_size": sim.sc.swarm.local_batch_size,
                "peer_latencies": peers}  # fmt: skip

    return {
        "activation_id": str(sim.next_act - 1),
        "miners": [[info(m) for m in g] for g in layers],
        "n_layers": len(layers),
        "activation_tracking_buffer": json.loads(sim.tracker.to_json()),
    }


class Checking:
    """A Transport that checks every /route body against _expected and answers a random
    valid path (and an even balancing)."""

    def __init__(self, seed=0):
        self.sim: Simulation | None = None
        self.rng = random.Random(seed)
        self.routes = 0
        self.active_sets: set[tuple] = set()
        self.layouts: set[tuple] = set()
        self.closed_later = 0  # events sent open, then sent again closed
        self.open_seen: set[tuple] = set()

    def request(self, method, path, body, timeout):
        if method == "GET":
            return 200, b'{"ok":true}'
        req = json.loads(body)
        if path == "/balance-orchestrator":
            ids = sorted(req["miners"])
            n = req["n_layers"]
            return 200, json.dumps(
                {"assignments": {m: [i % n] for i, m in enumerate(ids)}}
            ).encode()
        sim = self.sim
        self.routes += 1
        want = _expected(sim)
        got = dict(req)
        assert got.pop("miner_id") in {m.miner_id for m in sim.by_layer[0]}
        assert got == want
        # byte for byte, the buffer is what Event.to_json gives
        tail = b',"activation_tracking_buffer":' + sim.tracker.to_json().encode() + b"}"
        assert body.endswith(tail)
        self.active_sets.add(tuple(m.active for m in sim.world.miners))
        self.layouts.add(tuple(tuple(m.layers) for m in sim.world.miners))
        for e in req["activation_tracking_buffer"]:
            k = (e["activation_id"], e["direction"], e["action"], e["start_time"], e["layer"])
            if e["end_time"] is None:
                self.open_seen.add(k)
            elif k in self.open_seen:
                self.open_seen.discard(k)
                self.closed_later += 1
        hops = [self.rng.choice([m for m in g if m["active"]] or g)["receiver_node_id"]
                for g in req["miners"]]  # fmt: skip
        return 200, json.dumps({"path": hops}).encode()


def _run(transport, scenario="failure-storm", seed=0, extra=(), policy=None):
    sc = load_scenario(scenario, ["workload.activations_per_epoch=150", "workload.epochs=3",
                                  GENEROUS, *extra])  # fmt: skip
    # the checks take time; a frozen clock keeps the 0.5 s rule out of this test
    policy = policy or RemotePolicy(transport, 0.5, clock=lambda: 0.0)
    sim = Simulation(sc, seed, policy, policy)
    transport.sim = sim
    res = sim.run()
    assert res.ok, res.reason
    return res, policy


def test_every_request_is_the_current_state_though_built_from_caches():
    t = Checking()
    _, policy = _run(t, extra=["storm.epoch=0", "storm.share=0.3"])
    assert t.routes >= 450
    # the caching was exercised: liveness changed between calls (drop-outs and rejoins),
    # the layout changed at balancing, events were sent open and later closed
    assert len(t.active_sets) > 3
    assert len(t.layouts) >= 2
    assert t.closed_later > 100
    assert policy._buffer.rebuilds <= 4  # one per epoch (+ the first), not one per call


@pytest.mark.parametrize("events", [0, 7])
def test_a_small_or_disabled_buffer_stays_exact(events):
    t = Checking()
    _run(t, scenario="apex-default", extra=[f"rules.buffer_events={events}"])
    assert t.routes > 0


def test_a_policy_reused_for_another_run_forgets_the_last_one():
    t = Checking(1)
    short = ["workload.activations_per_epoch=60", "workload.epochs=2", "swarm.miners=32"]
    _, policy = _run(t, scenario="apex-default", seed=1, extra=short)
    before = t.routes
    # a new world: other latencies, layout, tracker
    _run(t, scenario="apex-default", seed=2, extra=short, policy=policy)
    assert t.routes > before


# ---------------------------------------------------------------- the pieces themselves
def test_iso_is_the_trackers_to_the_character():
    rng = random.Random(0)
    values = [0.0, -0.0, 1e-9, 0.0004999, 0.0005, 0.0015, 0.0025, 59.9995, 86399.9995,
              86399.9994999, 86400.0, -0.001, -0.0005, -86400.5, 1e6 + 0.0005, 3e7]  # fmt: skip
    values += [rng.uniform(0, 2e6) for _ in range(20000)]
    values += [k / 1000 + d for k in rng.sample(range(10**9), 5000) for d in (0, 5e-4, -5e-4)]
    for t in values:
        assert R._iso(t) == iso(t), t


def _label_like(i: int):
    return [f"miner-{i:05d}", 'quote"and\\slash', "ünïcode", i][i % 4]


def test_the_buffer_json_follows_any_sequence_of_tracker_changes():
    rng = random.Random(3)
    for capacity in (1, 5, 64):
        tracker = Tracker(capacity)
        buf = R._BufferJson()
        live = []
        for step in range(3000):
            r = rng.random()
            if r < 0.45:
                ev = tracker.open(rng.randrange(10**6) if rng.random() < 0.9 else "act x",
                                  rng.randrange(2), rng.randrange(4), rng.uniform(0, 1e5),
                                  rng.randrange(50), _label_like(rng.randrange(50)),
                                  rng.randrange(8))  # fmt: skip
                live.append(ev)
            elif r < 0.8 and live:
                tracker.close(live.pop(rng.randrange(len(live))), rng.uniform(0, 1e5))
            elif r < 0.85:
                tracker.instant(7, 1, 3, rng.uniform(0, 1e5), 3, "miner-00003", 0)
            elif r < 0.86:
                tracker.clear()
            if rng.random() < 0.5:  # not every change is followed by a call
                assert buf.json(tracker) == tracker.to_json().encode(), (capacity, step)
        other = Tracker(capacity)  # a different tracker: rebuilt, not patched
        other.instant(1, 0, 0, 1.0, 1, "miner-00001", 0)
        assert buf.json(other) == other.to_json().encode()


def test_miners_are_re_encoded_when_liveness_or_layout_changes():
    sc = load_scenario("apex-default", ["swarm.miners=12", GENEROUS])
    policy = RemotePolicy(Checking())
    sim = Simulation(sc, 0, policy, policy)
    sim.layout()
    layers = sim.by_layer

    def fresh():
        p = RemotePolicy(Checking())
        p.reset(0, sim.world.latency, 5)
        p.batch = policy.batch
        return json.loads(p._miners(layers))

    assert json.loads(policy._miners(layers)) == fresh()
    m = layers[0][0]
    m.active = False
    assert json.loads(policy._miners(layers))[0][0]["active"] is False
    assert json.loads(policy._miners(layers)) == fresh()
    m.active = True
    assert json.loads(policy._miners(layers)) == fresh()
    for x in sim.world.miners:  # a new layout: peers and lists change
        x.layers = [(x.id + 1) % sim.L]
    sim.build_layers("test")
    layers = sim.by_layer
    assert json.loads(policy._miners(layers)) == fresh()
    assert policy._by_node[layers[1][0].node_id] is layers[1][0]
    policy.batch = 4  # the batch size is part of every MinerInfo
    assert {i["local_batch_size"] for g in json.loads(policy._miners(layers)) for i in g} == {4}


@pytest.mark.parametrize("act_id", [17, 'a"b'])
def test_activation_ids_are_json_strings(act_id):
    t = Checking()
    sc = load_scenario("apex-default", ["swarm.miners=12", GENEROUS])
    policy = RemotePolicy(t)
    sim = Simulation(sc, 0, policy, policy)
    sim.layout()
    seen = {}

    def request(method, path, body, timeout):
        seen["req"] = json.loads(body)
        return 200, b'{"path": []}'

    t.request = request
    policy.route(act_id, sim.by_layer[0][0], sim.by_layer, sim.tracker, 0.0)
    assert seen["req"]["activation_id"] == str(act_id)
