"""Apex conformance, IOTA simulator: a router in the shape of Apex's published baseline
(tests/twin/fixtures/conformance_router.py, written for these tests; its models carry the
published fields exactly, so anything else gets a 422) is accepted at upload as a router
and scores on a short twin task in the sandbox, on both engines."""

from __future__ import annotations

from pathlib import Path

from swarmpress.arena import envs
from swarmpress.arena.config import routing_competition
from swarmpress.arena.evaluate import evaluate_routing
from swarmpress.arena.validate import inspect_solution

ROUTER = Path(__file__).parents[1] / "twin" / "fixtures" / "conformance_router.py"
ENV = "apex-iota-simulator"


def test_the_router_is_accepted_at_upload():
    code = ROUTER.read_bytes()
    assert inspect_solution(code, 65536, "routing", envs.get(ENV).modules(), ENV) == "router"


def test_the_router_scores_on_a_short_task(engine):
    comp = routing_competition().model_copy(
        update={
            "seeds": 1,
            # conformance, not speed: a busy 2-core CI machine must not fail the 0.5 s call
            # rule here (tests/arena/test_routing_track.py holds the rule itself)
            "scenario_overrides": [
                "workload.activations_per_epoch=40",
                "workload.epochs=2",
                "rules.route_call_limit_s=5",
            ],
            "sandbox": engine,
        }
    )
    assert comp.env_name == ENV
    result = evaluate_routing(ROUTER, comp, slot=0, cpu=None)
    assert result.engine == engine
    assert len(result.tensors) == 1
    for task in result.tensors:
        assert task.ok and task.score > 0, (task.reason, task.log[-2000:])
    assert result.score > 0
