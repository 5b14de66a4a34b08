"""The twin's engine: determinism, conservation of activations, the rules, codec effects."""

import json
import math

import pytest

from swarmpress.twin.policies import PolicyFailure, RoutingPolicy, parse_policy
from swarmpress.twin.profiles import NONE, get_profile
from swarmpress.twin.scenario import ScenarioError, load_scenario
from swarmpress.twin.sim import Simulation, max_epoch_time

# A generous call limit: a pause on a loaded CI core must not end a run early.
SMALL = ["workload.activations_per_epoch=120", "workload.epochs=2", "rules.route_call_limit_s=30"]


def run(name="apex-default", seed=0, policy="random", codec=NONE, extra=(), record=False):
    sc = load_scenario(name, [*SMALL, *extra])
    r, b = parse_policy(policy)
    return Simulation(sc, seed, r, b, codec, record=record).run()


def test_same_seed_same_result_bit_for_bit():
    def simulated(res):  # everything but the wall-clock measurements
        d = res.to_json(full=True)
        del d["wall_seconds"], d["speedup"]
        return json.dumps(d)

    # The 0.5 s call limit is a wall-clock rule; on a loaded CI core a pause could trip it
    # and end the run early, which is not what this test is about.
    patient = ["rules.route_call_limit_s=30"]
    a = run(seed=3, policy="best", record=True, extra=patient)
    b = run(seed=3, policy="best", record=True, extra=patient)
    assert a.ok, a.reason
    assert simulated(a) == simulated(b)
    c = run(seed=4, policy="best", extra=patient)
    assert c.total_epoch_time != a.total_epoch_time


@pytest.mark.parametrize("policy", ["random", "round-robin", "latency-greedy", "least-loaded",
                                    "capacity-aware", "pending", "best"])  # fmt: skip
def test_every_policy_completes_every_epoch(policy):
    res = run(policy=policy)
    assert res.ok, res.reason
    assert [e.completed for e in res.epochs] == [120, 120]
    assert res.completed == 240 and 0 <= res.score < 1
    assert res.simulated_seconds >= res.total_epoch_time > 0


def test_no_activation_is_counted_twice_and_drops_are_accounted():
    res = run(name="failure-storm", policy="best", record=True,
              extra=["storm.epoch=0", "storm.share=0.3"])  # fmt: skip
    assert res.ok
    logs = res.logs["activations"]
    done = [a["id"] for a in logs if "dropped" not in a]
    dropped = [a["id"] for a in logs if "dropped" in a]
    assert len(done) == len(set(done)) == res.completed
    assert not set(done) & set(dropped)
    assert len(dropped) == res.dropped > 0  # the storm did drop work
    assert any("dropped out" in a["dropped"] for a in logs if "dropped" in a)


def test_cache_limit_and_backward_priority_hold():
    sc = load_scenario("apex-default", SMALL)
    r, b = parse_policy("random")
    sim = Simulation(sc, 1, r, b)
    seen = {"max_cache": 0}
    orig = sim.try_start

    def spy(m):
        seen["max_cache"] = max(seen["max_cache"], m.cache)
        before_bq = len(m.bq)
        orig(m)
        if m.busy and m.current is not None and before_bq:
            assert m.current.dir == 1 or not m.bq  # backward work goes first

    sim.try_start = spy
    assert sim.run().ok
    assert seen["max_cache"] <= sc.rules.cache_size


def test_lossy_codec_helps_a_link_bound_swarm_and_not_a_compute_bound_one():
    lossy = get_profile("lossy")
    link_none, link_lossy = run("link-bound"), run("link-bound", codec=lossy)
    assert link_lossy.total_epoch_time < 0.8 * link_none.total_epoch_time
    comp_none, comp_lossy = run("compute-bound"), run("compute-bound", codec=lossy)
    assert comp_lossy.total_epoch_time >= 0.98 * comp_none.total_epoch_time
    assert link_lossy.bytes_on_wire < 0.5 * link_none.bytes_on_wire


def test_score_is_the_apex_formula():
    res = run(policy="best")
    assert res.max_epoch_time == max_epoch_time(load_scenario("apex-default", SMALL), res.n_layers)
    assert res.score == pytest.approx(max(0.0, 1 - res.total_epoch_time / res.max_epoch_time))


class _Broken(RoutingPolicy):
    name = "broken"

    def route(self, act_id, entry, layers, tracker, now):
        return [layers[0][0]] * len(layers)  # layer 0's miner for every layer


def test_a_policy_routing_everything_to_wrong_layers_scores_0_cleanly():
    # Apex does not reject invalid paths: each activation fails at its bad hop, so no
    # epoch ever completes and the task stops with score 0 and the reason.
    sc = load_scenario("apex-default", SMALL)
    _, b = parse_policy("random")
    res = Simulation(sc, 0, _Broken(), b).run()
    assert not res.ok and res.score == 0.0 and "stalled" in res.reason
    assert "which serves layers" in res.reason and res.invalid_routes > 0
    assert math.isinf(res.total_epoch_time)


@pytest.mark.parametrize(
    "override,match",
    [
        ("swarm.miners=0", "swarm.miners"),
        ("model.layers=[5, 2]", "layers"),
        ("swarm.forward_s.median=-1", "forward_s.median"),
        ("workload.bogus=1", "workload.bogus"),
        ("swarm.regions=['mars']", "unknown region"),
        ("swarm.miners=3", "at least as many"),
    ],
)
def test_invalid_scenarios_get_one_line_errors_naming_the_field(override, match):
    with pytest.raises(ScenarioError, match=match) as info:
        sc = load_scenario("apex-default", [override, "model.layers=4"] if "layers" not in override
                           else [override])  # fmt: skip
        r, b = parse_policy("random")
        Simulation(sc, 0, r, b)
    assert "\n" not in str(info.value)


def test_unknown_scenario_and_bad_toml(tmp_path):
    with pytest.raises(ScenarioError, match="built-in"):
        load_scenario("no-such-scenario")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [")
    with pytest.raises(ScenarioError, match="not valid TOML"):
        load_scenario(bad)


def test_policy_failure_type_is_exported():
    assert issubclass(PolicyFailure, RuntimeError)


def test_drop_outs_leave_no_double_timers_and_no_double_work():
    sc = load_scenario("failure-storm", [*SMALL, "storm.epoch=0"])
    r, b = parse_policy("best")
    sim = Simulation(sc, 2, r, b)
    busy_twice = []
    orig = sim.try_start

    def spy(m):
        was = m.current
        orig(m)
        if was is not None and m.current is not was:
            busy_twice.append(m.node_id)

    sim.try_start = spy
    routed_dead = []
    route = sim.router.route

    def check(*a):
        path = route(*a)
        routed_dead.extend(m.node_id for m in path if not m.active)
        return path

    sim.router.route = check
    res = sim.run()
    assert res.ok and busy_twice == []
    layers_alive = all(any(m.active for m in g) for g in sim.by_layer)
    assert routed_dead == [] or not layers_alive


def test_failed_runs_print_valid_json():
    sc = load_scenario("apex-default", SMALL)
    _, b = parse_policy("random")
    d = Simulation(sc, 0, _Broken(), b).run().to_json()
    assert d["total_epoch_time"] is None
    json.loads(json.dumps(d, allow_nan=False))
