"""Shared test settings: a hypothesis profile sized for 2-core CI, a throwaway PostgreSQL
database for the layers that run on both SQLite and PostgreSQL, and the arena's sandbox
engines."""

import os
import sys
import uuid

# One BLAS thread per process (this one and every process the tests start), unless the
# environment says otherwise. On 2 cores OpenBLAS's default, a thread per core, spins
# against anything else that is busy (a server, a sandbox, a neighbour's job): the SVDs of
# test_corpus_synthetic took 5-17 s so instead of 0.3 s, and one thread is as fast on an
# idle machine. It must be set before numpy loads OpenBLAS; if a plugin loaded numpy
# first, threadpoolctl (where installed) sets the same limit.
if "OPENBLAS_NUM_THREADS" not in os.environ:
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    if "numpy" in sys.modules:
        try:
            from threadpoolctl import threadpool_limits

            threadpool_limits(1, user_api="blas")
        except ImportError:
            pass

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("thorough", max_examples=1000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _pg_admin_url() -> str | None:
    url = os.environ.get("SWARMPRESS_TEST_PG_URL")
    if not url:
        if os.environ.get("SWARMPRESS_REQUIRE_PG"):
            pytest.fail("SWARMPRESS_REQUIRE_PG is set but SWARMPRESS_TEST_PG_URL is not")
        pytest.skip("no PostgreSQL: run scripts/pg-test-server.sh and set SWARMPRESS_TEST_PG_URL")
    return url


@pytest.fixture
def pg_url():
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    import psycopg

    admin = _pg_admin_url()
    name = f"arena_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield admin.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=("gvisor", "bwrap"))
def engine(request) -> str:
    """Each arena sandbox engine in turn (skipped, with the reason, where it cannot run)."""
    from swarmpress.arena.sandbox import engine_unavailable

    why = engine_unavailable(request.param)
    if why:
        pytest.skip(f"{request.param} cannot run here: {why}")
    return request.param
