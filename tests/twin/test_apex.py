"""The Apex IOTA-simulator semantics in the engine (docs/twin.md "Apex IOTA compatibility"):
the starting layout with multi-layer miners, balancing only between epochs, path[0]
corrected, invalid hops failing the activation (not the task), balancing entries dropped
or failing the task by the README's rules, events keyed by MinerInfo miner_id."""

import json
from types import SimpleNamespace

import pytest

from swarmpress.twin.policies import (
    BalancingPolicy,
    EvenBalancer,
    PolicyFailure,
    RandomRouter,
    RoutingPolicy,
)
from swarmpress.twin.scenario import load_scenario
from swarmpress.twin.sim import Simulation, apply_assignments

# A generous call limit: these tests are about the rules, not the wall clock.
SMALL = ["workload.activations_per_epoch=60", "workload.epochs=2", "swarm.miners=24",
         "rules.route_call_limit_s=30"]  # fmt: skip


def scenario(*extra):
    return load_scenario("apex-default", [*SMALL, *extra])


class SpyBalancer(EvenBalancer):
    """Even balancing that records what it saw at each call."""

    def reset(self, seed):
        super().reset(seed)
        self.calls = []

    def assign(self, miners, n_layers, tracker, now):
        self.calls.append({"events": len(tracker.events),
                           "layers": {m.miner_id: list(m.layers) for m in miners}})  # fmt: skip
        return super().assign(miners, n_layers, tracker, now)


def test_first_epoch_starts_from_a_layout_with_multi_layer_miners_then_one_layer_each():
    bal = SpyBalancer()
    sim = Simulation(scenario(), 0, RandomRouter(), bal, record=True)
    res = sim.run()
    assert res.ok, res.reason
    assert len(bal.calls) == 1  # between the two epochs only, never before the first
    call = bal.calls[0]
    assert call["events"] > 0  # the completed epoch's buffer
    multi = [ls for ls in call["layers"].values() if len(ls) > 1]
    assert multi and all(ls == list(range(ls[0], ls[0] + len(ls))) for ls in multi)
    first, second = res.logs["balance"]
    assert first["source"] == "initial layout" and first["multi_layer_miners"] == len(multi)
    assert second["source"] == "balancing" and second["multi_layer_miners"] == 0
    assert all(len(m.layers) == 1 for m in sim.world.miners)


def test_a_balancer_is_never_called_for_a_single_epoch():
    class Refuses(BalancingPolicy):
        name = "refuses"

        def assign(self, miners, n_layers, tracker, now):
            raise AssertionError("balancing before the first epoch")

    res = Simulation(scenario("workload.epochs=1"), 0, RandomRouter(), Refuses()).run()
    assert res.ok, res.reason


class WrongEntry(RoutingPolicy):
    """Names another layer-0 miner first; records who asked."""

    name = "wrong-entry"

    def reset(self, seed, latency, cache_size):
        super().reset(seed, latency, cache_size)
        self.asked = {}

    def route(self, act_id, entry, layers, tracker, now):
        self.asked[act_id] = entry.node_id
        other = next((m for m in layers[0] if m is not entry), entry)
        return [other] + [self.rng.choice(self._active(g)) for g in layers[1:]]


def test_path0_is_corrected_to_the_requesting_miner():
    router = WrongEntry()
    res = Simulation(scenario(), 1, router, EvenBalancer(), record=True).run()
    assert res.ok and res.invalid_routes == 0
    assert all(r["path"][0] == router.asked[r["activation"]] for r in res.logs["routes"])


class SameMiner(RoutingPolicy):
    name = "same-miner"

    def route(self, act_id, entry, layers, tracker, now):
        return [entry] * len(layers)


def test_consecutive_hops_on_one_multi_layer_miner_need_no_transfer():
    sc = scenario("workload.epochs=1", "model.layers=3", "swarm.multi_layer_share=1",
                  "swarm.max_layers_per_miner=3")  # fmt: skip
    sim = Simulation(sc, 0, SameMiner(), EvenBalancer(), record=True)
    sim.world.initial_layout = lambda: [setattr(m, "layers", [0, 1, 2]) for m in sim.world.miners]
    res = sim.run()
    assert res.ok, res.reason
    assert res.completed == 60 and res.invalid_routes == 0
    assert res.bytes_on_wire == 0  # the whole pipeline on one miner: nothing on the wire
    # Every layer was computed, forward and backward, by the one miner of each activation.
    spans = {(a, layer, d) for a, layer, d, *_ in res.logs["spans"]}
    done = {a["id"] for a in res.logs["activations"] if "dropped" not in a}
    assert all((a, layer, d) in spans for a in done for layer in range(3) for d in (0, 1))


class SometimesBad(RoutingPolicy):
    """Every third activation: layer 1 goes to `bad` (a miner not serving it, a string
    naming no node, or nothing: a short path)."""

    name = "sometimes-bad"

    def __init__(self, bad):
        self.bad = bad

    def route(self, act_id, entry, layers, tracker, now):
        path = [entry] + [self.rng.choice(self._active(g)) for g in layers[1:]]
        if act_id % 3 == 0:
            if self.bad == "short":
                return path[:1]
            if self.bad == "wrong-layer":
                path[1] = next(m for m in layers[-1] if 1 not in m.layers)
            else:
                path[1] = self.bad
        return path


@pytest.mark.parametrize(
    "bad,why",
    [("wrong-layer", "which serves layers"), ("node-99999", "unknown node 'node-99999'"),
     ("short", "no hop for layer 1")],
)  # fmt: skip
def test_an_invalid_hop_fails_the_activation_not_the_task(bad, why):
    sc = scenario()
    res = Simulation(sc, 2, SometimesBad(bad), EvenBalancer(), record=True).run()
    assert res.ok, res.reason
    assert res.completed == 120 and 0 < res.score < 1
    assert res.invalid_routes > 0 and why in res.invalid_route
    lost = [a for a in res.logs["activations"] if "invalid hop" in a.get("dropped", "")]
    assert lost and all(why in a["dropped"] for a in lost)
    # Lost on the way, noticed at the layer timeout: each one held its slot that long.
    assert all(a["end"] - a["start"] >= sc.rules.layer_timeout_s for a in lost)
    done = {a["id"] for a in res.logs["activations"] if "dropped" not in a}
    assert not done & {a["id"] for a in lost}


def test_every_route_invalid_scores_0_with_the_reason_and_stops():
    res = Simulation(scenario(), 0, SometimesBad("node-99999"), EvenBalancer()).run()
    assert res.ok  # a third of the routes failing only slows the epoch

    class AlwaysBad(SometimesBad):
        def route(self, act_id, entry, layers, tracker, now):
            return super().route(0, entry, layers, tracker, now)

    res = Simulation(scenario(), 0, AlwaysBad("node-99999"), EvenBalancer()).run()
    assert not res.ok and res.score == 0.0 and res.completed == 0
    assert "stalled" in res.reason and "max_epoch_time" in res.reason
    assert "unknown node 'node-99999'" in res.reason
    assert res.simulated_seconds <= 2 * res.max_epoch_time  # it stopped, did not spin


def _miners(*layer_sets):
    return [SimpleNamespace(miner_id=f"miner-{i:05d}", layers=list(ls))
            for i, ls in enumerate(layer_sets)]  # fmt: skip


def test_the_starting_layout_keeps_every_layer_served_and_multi_layers_consecutive():
    for seed in range(5):
        sim = Simulation(scenario("swarm.multi_layer_share=0.5", "swarm.max_layers_per_miner=3"),
                         seed, RandomRouter(), EvenBalancer())  # fmt: skip
        sim.layout()
        assert all(len(g) > 0 for g in sim.by_layer)
        sizes = [len(m.layers) for m in sim.world.miners]
        assert sizes.count(1) == 12 and all(1 <= n <= min(3, sim.L) for n in sizes)
        for m in sim.world.miners:
            assert m.layers == list(range(m.layers[0], m.layers[0] + len(m.layers)))
            assert all(m in sim.by_layer[layer] for layer in m.layers)


def test_balancing_entries_invalid_on_their_own_are_dropped():
    miners = _miners([0], [1], [2], [0], [1])
    answer = [[1], [99], "x", [2, -1, 2.5], None]
    # miner 1: out of range -> keeps [1]; miner 2: not a list -> keeps [2]; miner 3: the
    # bad layers dropped -> [2]; miner 4: no entry -> keeps [1].
    assert apply_assignments(answer, miners, 3) == [[1], [1], [2], [2], [1]]
    assert apply_assignments([[2, 2], 0, [True], [], [0]], miners, 3) == [[2], [0], [2], [0],
                                                                            [0]]  # fmt: skip


def test_balancing_a_miner_onto_several_layers_fails_the_task():
    miners = _miners([0], [1], [2])
    with pytest.raises(PolicyFailure, match="miner-00001 to layers \\[0, 1\\]"):
        apply_assignments([[0], [0, 1], [2]], miners, 3)
    with pytest.raises(PolicyFailure, match="one entry per miner"):
        apply_assignments([[0]], miners, 3)


def test_a_multi_layer_miner_left_out_keeps_its_layers_and_fails_the_task():
    miners = _miners([0], [1, 2], [2])
    with pytest.raises(PolicyFailure, match="miner-00001 on its starting layers \\[1, 2\\]"):
        apply_assignments([[0], [7], [2]], miners, 3)


class Piles(BalancingPolicy):
    name = "piles"

    def __init__(self, answer):
        self.answer = answer

    def assign(self, miners, n_layers, tracker, now):
        return [self.answer(i) for i in range(len(miners))]


@pytest.mark.parametrize(
    "answer,why",
    [(lambda i: [0], "left layer 1 without miners"),
     (lambda i: [0, 1], "must serve exactly one layer")],
)  # fmt: skip
def test_a_bad_balance_fails_the_task_with_score_0_and_a_reason(answer, why):
    res = Simulation(scenario(), 0, RandomRouter(), Piles(answer)).run()
    assert not res.ok and res.score == 0.0
    assert res.reason.startswith("policy failed the task: balancing") and why in res.reason
    assert len(res.epochs) == 1  # the first epoch ran; the merge phase's answer failed


def test_events_name_miners_by_their_miner_id_and_ids_are_strings():
    seen = []

    class Reads(RandomRouter):
        def route(self, act_id, entry, layers, tracker, now):
            if act_id % 20 == 19:
                seen.append((json.loads(tracker.to_json()), {m.miner_id for g in layers
                                                             for m in g}))  # fmt: skip
            return super().route(act_id, entry, layers, tracker, now)

    assert Simulation(scenario(), 3, Reads(), EvenBalancer()).run().ok
    events = [(e, ids) for evs, ids in seen for e in evs]
    assert events
    for e, ids in events:
        assert set(e) == {"activation_id", "direction", "action", "start_time", "end_time",
                          "miner_id", "layer"}  # fmt: skip
        assert isinstance(e["activation_id"], str) and e["miner_id"] in ids
        assert type(e["layer"]) is int and e["direction"] in ("forward", "backward")
