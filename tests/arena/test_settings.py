"""Settings are read when the object that needs them starts, not when a module is imported:
setting the variable after `import swarmpress.arena.jobqueue` still counts."""

import pytest

from swarmpress.arena import jobqueue
from swarmpress.arena.worker import Worker
from swarmpress.errors import UsageError
from tests.arena.conftest import solution


def test_lease_default_and_variable_read_at_call_time(monkeypatch):
    monkeypatch.delenv("SWARMPRESS_ARENA_LEASE", raising=False)
    assert jobqueue.lease_seconds() == jobqueue.LEASE_S == 30.0
    monkeypatch.setenv("SWARMPRESS_ARENA_LEASE", "3")
    assert jobqueue.lease_seconds() == 3.0


@pytest.mark.parametrize("raw", ["soon", "0", "-5", "nan", "inf"])
def test_a_bad_lease_is_refused_naming_the_variable(monkeypatch, raw):
    monkeypatch.setenv("SWARMPRESS_ARENA_LEASE", raw)
    with pytest.raises(UsageError, match="SWARMPRESS_ARENA_LEASE"):
        jobqueue.lease_seconds()


def test_a_worker_takes_the_lease_when_it_starts(arena, monkeypatch):
    monkeypatch.setenv("SWARMPRESS_ARENA_LEASE", "7.5")
    assert Worker(arena).lease_s == 7.5
    assert Worker(arena, lease_s=2).lease_s == 2  # passed in: the variable does not matter
    monkeypatch.delenv("SWARMPRESS_ARENA_LEASE")
    assert Worker(arena).lease_s == 30.0


def test_claim_uses_the_lease_read_at_call_time(arena, monkeypatch):
    from swarmpress.arena.db import Job, now

    arena.submit(arena.create_key("hal"), "lossless", "z.py", solution("zstd"))  # queues a job
    monkeypatch.setenv("SWARMPRESS_ARENA_LEASE", "1000")
    # bounded by the clock read before and after each call, not by a window of seconds
    before = now()
    job = jobqueue.claim(arena.Session, "me")
    assert job is not None and before + 1000 <= job.lease_until <= now() + 1000
    monkeypatch.setenv("SWARMPRESS_ARENA_LEASE", "5000")
    before = now()
    assert jobqueue.renew(arena.Session, job.id, "me")
    after = now()
    with arena.Session() as s:
        assert before + 5000 <= s.get(Job, job.id).lease_until <= after + 5000
