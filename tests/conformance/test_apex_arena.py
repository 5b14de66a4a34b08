"""Apex-shaped entries through a live arena (service + worker + sandbox): the server form
of the zstd baseline scores about what the functions form of the same codec scores, and an
Apex-shaped lossy server is scored and ranked; an Apex-shaped router completes the routing
track. The fixtures keep every interface feature of the published files (see their
docstrings); the published files themselves are run outside the repository."""

from pathlib import Path

import pytest

from swarmpress.arena.config import ArenaConfig, dump_config, routing_competition
from swarmpress.arena.service import Arena
from swarmpress.arena.worker import Worker
from tests.arena.conftest import arena_home, pool_home, small_config, solution  # noqa: F401

FIXTURES = Path(__file__).with_name("fixtures")
ROUTER = Path(__file__).parents[1] / "twin" / "fixtures" / "conformance_router.py"


@pytest.fixture
def arena(arena_home):  # noqa: F811
    cfg = small_config(sandbox="auto", tensors=1)  # the default engine: gVisor
    router = routing_competition()
    router.seeds = 1
    router.scenario_overrides = ["workload.activations_per_epoch=40", "workload.epochs=2"]
    cfg = ArenaConfig(competition=[*cfg.competition, router])
    (arena_home / "arena.toml").write_text(dump_config(cfg))
    a = Arena(arena_home)
    yield a
    a.Session.kw["bind"].dispose()


def _run(arena, key, competition, name, code) -> dict:
    sid = arena.submit(key, competition, name, code)
    while Worker(arena, slot=3).run_once():
        pass
    return arena.status(sid, viewer=key)


def test_apex_shaped_entries_score_in_a_live_arena(arena):
    key = arena.create_key("apex-miner")
    server = _run(arena, key, "lossless", "solution.py",
                  (FIXTURES / "apex_style_server.py").read_bytes())  # fmt: skip
    funcs = _run(arena, key, "lossless", "zstd.py", solution("zstd"))
    assert server["form"] == "server" and funcs["form"] == "functions"
    assert server["state"] == "done" and all(r["ok"] for r in server["results"]), server
    assert server["sandbox"] in ("gvisor", "bwrap")
    # the same codec at the same level: the ratio is identical, the time adds HTTP
    for a, b in zip(server["results"], funcs["results"], strict=True):
        assert a["ratio"] == pytest.approx(b["ratio"], abs=1e-3)
    assert server["score"] == pytest.approx(funcs["score"], abs=0.05)

    lossy = _run(arena, key, "lossy", "lossy.py",
                 (FIXTURES / "apex_style_lossy_server.py").read_bytes())  # fmt: skip
    assert lossy["form"] == "server" and lossy["state"] == "done" and lossy["score"] > 0
    assert arena.leaderboard("lossy")[0]["id"] == lossy["id"]

    routed = _run(arena, key, "routing", "router.py",
                  ROUTER.read_bytes())  # fmt: skip
    assert routed["form"] == "router" and routed["state"] == "done", routed
    assert routed["score"] > 0
