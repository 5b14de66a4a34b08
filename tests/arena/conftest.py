"""Arena fixtures: a small arena home (a secret pool of small MiniLM pieces) built once per
session."""

import shutil
from pathlib import Path

import pytest

from swarmpress.arena.config import ArenaConfig, Competition, LimitsModel
from swarmpress.arena.service import Arena, init_home

SOLUTIONS = Path(__file__).resolve().parents[2] / "src" / "swarmpress" / "arena" / "solutions"
FAST_LIMITS = LimitsModel(wall_s=20, startup_s=30, cpu_s=20)


def small_config(
    reveal: int = 3600, per_day: int = 4, sandbox: str = "bwrap", tensors: int = 2
) -> ArenaConfig:
    """Two small competitions. Tests of the arena's rules, API and workers run their entries
    under bubblewrap (a call starts in ~0.1 s, not gVisor's ~0.5 s); the hostile, sandbox and
    conformance tests run the default engine (sandbox="auto": gVisor) and both engines."""
    common = dict(tensors_per_round=tensors, reveal_delay_seconds=reveal,
                  submissions_per_day=per_day, limits=FAST_LIMITS, sandbox=sandbox)  # fmt: skip
    return ArenaConfig(
        competition=[
            Competition(name="lossless", track="lossless", **common),
            Competition(name="lossy", track="lossy", **common),
        ]
    )


@pytest.fixture(scope="session")
def pool_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("arena-template")
    init_home(home, config=small_config(), sequences=4, seq_len=64)  # 16 small pieces
    return home


@pytest.fixture
def arena_home(pool_home, tmp_path) -> Path:
    home = tmp_path / "home"
    shutil.copytree(pool_home, home)
    return home


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, arena_home):
    """Each arena test runs on SQLite (in the home) and on PostgreSQL."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("pg_url")


@pytest.fixture
def arena(arena_home, db_url) -> Arena:
    a = Arena(arena_home, db_url)
    yield a
    a.Session.kw["bind"].dispose()


def solution(name: str) -> bytes:
    return (SOLUTIONS / f"{name}_solution.py").read_bytes()
