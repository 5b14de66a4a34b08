"""The routing track: a router server file is run next to the twin in the sandbox and scored
as the median Apex score over seeded tasks."""

from pathlib import Path

import pytest

from swarmpress.arena.config import ArenaConfig, dump_config, routing_competition
from swarmpress.arena.service import Arena
from swarmpress.arena.validate import SolutionError
from swarmpress.arena.worker import Worker

ROUTERS = Path(__file__).resolve().parents[1] / "twin" / "fixtures"


@pytest.fixture
def arena(arena_home):
    comp = routing_competition()
    comp.seeds = 3
    comp.scenario_overrides = ["workload.activations_per_epoch=40", "workload.epochs=1",
                               "swarm.miners=32"]  # fmt: skip
    (arena_home / "arena.toml").write_text(dump_config(ArenaConfig(competition=[comp])))
    return Arena(arena_home)


def test_a_contract_router_is_scored_by_the_median_of_seeded_tasks(arena):
    key = arena.create_key("rita")
    code = (ROUTERS / "reference_router.py").read_bytes()
    sid = arena.submit(key, "routing", "router.py", code)
    assert arena.status(sid)["form"] == "router"
    Worker(arena, slot=2).run_once()
    st = arena.status(sid)
    assert st["state"] == "done", st
    assert [r["tensor"] for r in st["results"]] == [f"apex-default/seed{i}" for i in range(3)]
    scores = sorted(r["score"] for r in st["results"])
    assert all(r["ok"] for r in st["results"]) and st["score"] == pytest.approx(scores[1])
    assert arena.leaderboard("routing")[0]["id"] == sid


def _run_bad_router(arena, author: str, mode: str) -> tuple[int, dict]:
    """Submit bad_router.py in one of its --mode settings, evaluate it: (id, author's view)."""
    key = arena.create_key(author)
    code = (ROUTERS / "bad_router.py").read_text().replace('default="ok"', f'default="{mode}"')
    sid = arena.submit(key, "routing", f"{mode}.py", code.encode())
    Worker(arena, slot=2).run_once()
    return sid, arena.status(sid, viewer=key)


def test_a_router_breaking_the_contract_scores_zero_with_the_reason(arena, tmp_path):
    sid, st = _run_bad_router(arena, "sam", "unknown")
    assert st["state"] == "failed" and st["score"] == 0.0
    assert all("unknown node" in r["reason"] for r in st["results"])
    assert {r["reason"] for r in arena.status(sid)["results"]} == {"task failed"}


def test_compression_files_are_refused_on_the_routing_track(arena):
    zstd = Path(__file__).resolve().parents[2] / "src/swarmpress/arena/solutions/zstd_solution.py"
    with pytest.raises(SolutionError, match="routing solution"):
        arena.submit(arena.create_key("tom"), "routing", "z.py", zstd.read_bytes())


def test_a_slow_router_fails_every_task_on_the_time_measured_next_to_it(arena):
    _, st = _run_bad_router(arena, "slo", "slow")
    assert st["state"] == "failed" and st["score"] == 0.0
    assert all("longer than 0.5 s" in r["reason"] for r in st["results"]), st["results"]
    assert st["sandbox"] in ("gvisor", "bwrap")
