"""Submissions through the service and a real worker: scoring, leader, limits, reveal, forks."""

import pytest

from swarmpress.arena import jobqueue
from swarmpress.arena.config import dump_config
from swarmpress.arena.service import Arena, AuthError, Forbidden, NotFound, RateLimited
from swarmpress.arena.validate import SolutionError
from swarmpress.arena.worker import Worker
from tests.arena.conftest import small_config, solution

FAILING = b"""
def compress_data(data):
    raise ValueError("nope")

def decompress_data(data):
    return data
"""


def test_submissions_are_scored_and_the_leader_changes_only_by_the_margin(arena):
    key = arena.create_key("alice")
    worker = Worker(arena, slot=2)
    first = arena.submit(key, "lossless", "zstd.py", solution("zstd"))
    assert arena.status(first)["state"] == "queued"
    assert worker.run_once()
    st = arena.status(first)
    assert st["state"] == "done" and 0 < st["score"] < 0.3
    assert len(st["results"]) == 2 and all(r["ok"] for r in st["results"])
    again = arena.submit(key, "lossless", "zstd-again.py", solution("zstd"))  # same code
    worker.run_once()
    better = arena.submit(key, "lossless", "lossless.py", solution("lossless"), fork=first)
    worker.run_once()
    assert arena.status(better)["score"] > 1.01 * st["score"]
    stairs = arena.staircase("lossless")
    assert [s["id"] for s in stairs] == [first, better]  # the equal resubmission did not lead
    board = arena.leaderboard("lossless")
    assert board[0]["id"] == better and board[0]["leader"]
    assert {b["id"] for b in board} == {first, again, better}
    lineage = arena.lineage(first)
    assert [c["id"] for c in lineage["tree"]["children"]] == [better]
    assert arena.lineage(better)["ancestors"] == [{"id": first, "score": st["score"]}]


def test_a_failing_solution_fails_with_reasons_for_its_author_only(arena):
    key = arena.create_key("bob")
    sid = arena.submit(key, "lossy", "bad.py", FAILING)
    Worker(arena, slot=2).run_once()
    st = arena.status(sid, viewer=key)
    assert st["state"] == "failed" and st["score"] == 0.0
    assert all("nope" in r["reason"] for r in st["results"])
    assert "nope" in st["log"] and "nope" in st["error"]
    public = arena.status(sid)
    assert [r["reason"] for r in public["results"]] == ["compress failed"] * 2
    assert public["error"] == "all tensors failed: compress failed" and public["log"] is None
    assert arena.staircase("lossy") == [] and arena.leaderboard("lossy") == []


def test_bad_requests_are_refused_clearly(arena):
    key = arena.create_key("carol")
    with pytest.raises(AuthError):
        arena.submit("sp_wrong", "lossless", "x.py", solution("zstd"))
    with pytest.raises(NotFound, match="competition"):
        arena.submit(key, "nope", "x.py", solution("zstd"))
    with pytest.raises(SolutionError, match="neither"):
        arena.submit(key, "lossless", "x.py", b"print('hi')\n")
    with pytest.raises(SolutionError, match="limit"):
        arena.submit(key, "lossless", "x.py", b"#" * 70_000)
    with pytest.raises(NotFound, match="fork"):
        arena.submit(key, "lossless", "x.py", solution("zstd"), fork=999)


def test_rate_limit_per_submitter_and_day(arena):
    key = arena.create_key("dave")
    for _ in range(4):
        arena.submit(key, "lossy", "z.py", solution("zstd"))
    with pytest.raises(RateLimited, match="limit is 4"):
        arena.submit(key, "lossy", "z.py", solution("zstd"))
    arena.submit(arena.create_key("erin"), "lossy", "z.py", solution("zstd"))  # others may


def test_code_and_logs_are_revealed_only_after_the_delay(arena_home, monkeypatch):
    # The delay passes on an injected clock: with a real one of a few seconds, a pause of
    # this process on a loaded machine revealed the code before the first check.
    from swarmpress.arena import service

    (arena_home / "arena.toml").write_text(dump_config(small_config(reveal=3600)))
    arena = Arena(arena_home)
    owner, other = arena.create_key("fay"), arena.create_key("gus")
    sid = arena.submit(owner, "lossless", "mine.py", solution("zstd"))
    with pytest.raises(Forbidden):
        arena.download(sid, viewer=other)
    assert arena.download(sid, viewer=owner)[1] == solution("zstd")
    assert arena.status(sid, viewer=other)["log"] is None
    created = arena.status(sid)["created"]
    monkeypatch.setattr(service, "now", lambda: created + 3599.9)
    with pytest.raises(Forbidden):
        arena.download(sid, viewer=other)
    monkeypatch.setattr(service, "now", lambda: created + 3600)
    assert arena.download(sid)[1] == solution("zstd")
    assert arena.status(sid)["revealed"]


def test_a_dead_workers_job_is_retried_and_finishes(arena, monkeypatch):
    key = arena.create_key("hal")
    sid = arena.submit(key, "lossless", "z.py", solution("zstd"))
    ghost = jobqueue.claim(arena.Session, "ghost", lease_s=60)  # a worker that then dies
    assert ghost is not None and ghost.attempts == 1
    assert not Worker(arena, slot=2).run_once()  # the lease holds: nothing to claim
    # The lease runs out on an injected clock (a real 0.5 s lease ran out under load
    # before the first run_once, which then found the job and finished it).
    real = jobqueue.now
    monkeypatch.setattr(jobqueue, "now", lambda: real() + 61)
    assert Worker(arena, slot=2).run_once()
    st = arena.status(sid)
    assert st["state"] == "done" and st["attempts"] == 2 and st["score"] > 0
    assert not arena.record(ghost.id, "ghost", None, error="late")  # the ghost lost its lease
    assert arena.status(sid)["state"] == "done"


def test_filenames_are_made_safe():
    from swarmpress.arena.service import safe_filename

    assert safe_filename("../../etc/passwd") == "passwd"
    assert safe_filename("..") == "solution.py"
    assert safe_filename("sol ü€.py") == "sol___.py"
    assert safe_filename("") == "solution.py"
