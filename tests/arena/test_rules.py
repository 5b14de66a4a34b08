"""The arena's rules without a sandbox (fast, on SQLite and PostgreSQL): what an unrevealed
submission shows to whom, what a finished evaluation stores, failed entries, the size cap,
the rate limit under concurrency, hostile ids and sources, key names and old databases.

Evaluations are finished by hand here: the test claims the job like a worker would and
records a made-up round with `Arena.record`."""

import json
import threading

import pytest
from sqlalchemy import text

from swarmpress.arena import jobqueue, service
from swarmpress.arena.config import Competition, dump_config
from swarmpress.arena.db import Result, Submission, open_db
from swarmpress.arena.evaluate import RoundResult, TensorResult
from swarmpress.arena.service import Arena, ArenaError, NotFound, RateLimited, failure_category
from swarmpress.arena.validate import SolutionError
from tests.arena.conftest import small_config, solution

SECRET = "HELDOUT-0x3f80-0x4000"  # stands for tensor contents a solution printed


def finish(arena: Arena, outcome: RoundResult | None, log: str = "", error: str = "") -> None:
    """Claim the oldest queued job and record outcome for it, as a worker would."""
    job = jobqueue.claim(arena.Session, "test-worker")
    assert job is not None
    assert arena.record(job.id, "test-worker", outcome, error=error, log=log)


def leaky_round() -> RoundResult:
    """A round whose failure reasons carry submitter-controlled text (SECRET)."""
    return RoundResult(
        0.0,
        [
            TensorResult("t0", False, 0.0, reason=f"compress raised: ValueError: {SECRET}"),
            TensorResult("t1", False, 0.0, ratio=0.5, reason=f"decompress raised: {SECRET}"),
        ],
    )


def public_views(arena: Arena, sid: int, viewer: str | None = None) -> str:
    """Everything a viewer can read about the arena, as one text."""
    views = [arena.status(sid, viewer=viewer), arena.lineage(sid), arena.competitions()]
    for c in ("lossless", "lossy"):
        views += [arena.leaderboard(c), arena.staircase(c), arena.recent(c)]
    return json.dumps(views)


# ----------------------------------------------------------------------------- 1. size cap
def test_the_default_file_cap_fits_public_apex_entries(arena):
    assert Competition(name="x", track="lossy").max_file_bytes == 65536
    key = arena.create_key("ann")
    big = solution("zstd") + b"# padding like a long community entry\n" * 800  # ~30 KB
    assert 29_000 < len(big) < 65536
    assert arena.submit(key, "lossless", "big.py", big) > 0
    with pytest.raises(SolutionError, match="limit is 65536"):
        arena.submit(key, "lossless", "huge.py", solution("zstd") + b"#" * 65536)


# ----------------------------------------------------------------------------- 2. no leaks
def test_unrevealed_failure_reasons_are_generic_to_others(arena):
    author, other = arena.create_key("ann"), arena.create_key("ben")
    admin = arena.create_key("root", admin=True)
    sid = arena.submit(author, "lossy", "leak.py", solution("zstd"))
    finish(arena, leaky_round(), log=f"printed {SECRET}\n", error="")
    for viewer in (None, other, "sp_not-a-key"):
        text_ = public_views(arena, sid, viewer)
        assert SECRET not in text_, viewer
        st = arena.status(sid, viewer=viewer)
        assert [r["reason"] for r in st["results"]] == ["compress failed", "decompress failed"]
        assert st["error"] == "all tensors failed: compress failed" and st["log"] is None
        assert not st["detailed"]
    for viewer in (author, admin):
        st = arena.status(sid, viewer=viewer)
        assert st["detailed"] and SECRET in st["results"][0]["reason"] and SECRET in st["log"]
        assert SECRET in st["error"] and st["error_category"] == "all tensors failed: " \
            "compress failed"  # fmt: skip
        assert [r["category"] for r in st["results"]] == ["compress failed", "decompress failed"]


def test_reasons_open_with_the_code_at_the_reveal(arena_home, db_url):
    (arena_home / "arena.toml").write_text(dump_config(small_config(reveal=0)))
    arena = Arena(arena_home, db_url)
    sid = arena.submit(arena.create_key("ann"), "lossy", "leak.py", solution("zstd"))
    finish(arena, leaky_round(), log=SECRET)
    st = arena.status(sid)
    assert st["revealed"] and SECRET in st["results"][0]["reason"] and SECRET in st["log"]
    arena.Session.kw["bind"].dispose()


def test_unrevealed_reasons_never_reach_the_http_api(arena):
    from fastapi.testclient import TestClient

    from swarmpress.arena.api import create_app

    author = arena.create_key("ann")
    sid = arena.submit(author, "lossy", "leak.py", solution("zstd"))
    finish(arena, leaky_round(), log=SECRET)
    client = TestClient(create_app(arena))
    urls = [f"/api/submissions/{sid}", f"/api/submissions/{sid}/lineage", "/api/competitions",
            "/api/competitions/lossy/leaderboard", "/api/competitions/lossy/staircase",
            "/api/competitions/lossy/submissions", "/api/health"]  # fmt: skip
    for url in urls:
        r = client.get(url)
        assert r.status_code == 200 and SECRET not in r.text, url
    assert client.get(f"/api/submissions/{sid}/code").status_code == 403
    own = client.get(f"/api/submissions/{sid}", headers={"X-API-Key": author}).json()
    assert SECRET in own["results"][1]["reason"]
    recent = client.get("/api/competitions/lossy/submissions").json()
    assert recent == [{**recent[0], "id": sid, "state": "failed",
                       "error": "all tensors failed: compress failed"}]  # fmt: skip


@pytest.mark.parametrize(
    ("ok", "reason", "track", "category"),
    [
        (True, "", "lossy", ""),
        (False, "compress raised: ValueError: timed out", "lossy", "compress failed"),
        (False, "compress timed out after 60 s", "lossy", "timed out"),
        (False, "decompress did not load within 60 s", "lossless", "timed out"),
        (False, "decompress crashed during the call: killed by SIGKILL", "lossy",
         "decompress failed"),
        (False, "decompress gave 10 bytes, expected 20", "lossy", "wrong output"),
        (False, "decompressed bytes differ from the original", "lossless", "wrong output"),
        (False, "similarity 0.98000 is not above 0.99", "lossy", "similarity below threshold"),
        (False, "router failed to load: boom", "routing", "router failed"),
        (False, "policy failed the task: secret", "routing", "task failed"),
        (False, "something new: similarity", "lossy", "failed"),
    ],
)  # fmt: skip
def test_failure_categories_are_a_fixed_vocabulary(ok, reason, track, category):
    assert failure_category(ok, reason, track) == category


# ----------------------------------------------------------------------------- 3. sanitizing
def test_hostile_text_is_stored_safely_and_capped(arena):
    key = arena.create_key("ann")
    sid = arena.submit(key, "lossy", "nul.py", solution("zstd"))
    nasty = "a\x00b\udcff" + "x" * 10_000
    outcome = RoundResult(
        float("nan"),
        [
            TensorResult("t0", False, 0.0, ratio=float("inf"), similarity=float("nan"),
                         reason=nasty),
            TensorResult("t1", True, 0.5, ratio=0.5, similarity=0.995, seconds_compress=0.1,
                         seconds_decompress=0.1),
        ],
    )  # fmt: skip
    finish(arena, outcome, log="\x00" * 10 + "\udcfe" + "y" * 200_000)
    st = arena.status(sid, viewer=key)
    bad = st["results"][0]
    assert "\x00" not in bad["reason"] and "\udcff" not in bad["reason"]
    assert bad["reason"].startswith("a\ufffdb") and len(bad["reason"]) <= service.REASON_CHARS
    assert bad["ratio"] is None and bad["similarity"] is None
    assert "\x00" not in st["log"] and len(st["log"]) <= service.LOG_CHARS
    assert st["log"].endswith("y" * 100)  # the last lines are kept
    assert st["state"] == "done" and st["score"] == 0.0  # nan became 0: not ranked


def test_a_failed_evaluation_error_is_sanitized_too(arena):
    key = arena.create_key("ann")
    sid = arena.submit(key, "lossy", "x.py", solution("zstd"))
    finish(arena, None, error="boom\x00" + "e" * 5000, log="\x00")
    st = arena.status(sid, viewer=key)
    assert st["state"] == "failed" and st["error"].startswith("boom\ufffd")
    assert len(st["error"]) <= service.REASON_CHARS
    assert arena.status(sid)["error"] == "evaluation failed"


# ----------------------------------------------------------------------------- 7. outcomes
def test_an_entry_whose_every_tensor_failed_is_failed_and_unranked(arena):
    key = arena.create_key("ann")
    bad = arena.submit(key, "lossy", "bad.py", solution("zstd"))
    finish(arena, leaky_round())
    zero = arena.submit(key, "lossy", "zero.py", solution("zstd"))
    finish(arena, RoundResult(0.0, [TensorResult("t0", True, 0.0, ratio=1.2)]))
    good = arena.submit(key, "lossy", "good.py", solution("zstd"))
    half = [TensorResult("t0", True, 0.4, ratio=0.6),
            TensorResult("t1", False, 0.0, reason="similarity 0.9")]  # fmt: skip
    finish(arena, RoundResult(0.4, half))
    st = arena.status(bad, viewer=key)
    assert st["state"] == "failed" and st["score"] == 0.0
    assert st["error"].startswith("all tensors failed; the first, t0: compress raised")
    assert arena.status(zero)["state"] == "done" and arena.status(zero)["error"] is None
    assert arena.status(good)["state"] == "done"
    board = arena.leaderboard("lossy")
    assert [b["id"] for b in board] == [good] and board[0]["leader"] and board[0]["rank"] == 1
    assert [s["id"] for s in arena.staircase("lossy")] == [good]
    assert {r["id"]: r["state"] for r in arena.recent("lossy")} == {
        bad: "failed", zero: "done", good: "done"}  # fmt: skip


def test_submit_wait_exit_codes(monkeypatch):
    from typer.testing import CliRunner

    from swarmpress.cli import app
    from swarmpress.cli import arena as cli_arena

    class Fake:
        def __init__(self, final):
            self.final = final

        def submit(self, *_):
            return 7

        def status(self, _sid):
            return {"id": 7, "filename": "x.py", "author": "a", "competition": "lossy",
                    "results": [], "error": None, **self.final}  # fmt: skip

    runner = CliRunner()
    argv = ["arena", "submit", "x.py", "-c", "lossy", "--wait", "--json"]
    for final, code in [
        ({"state": "done", "score": 0.3}, 0),
        ({"state": "done", "score": 0.0}, 1),
        ({"state": "failed", "score": 0.0, "error": "all tensors failed: compress failed"}, 1),
    ]:
        monkeypatch.setattr(cli_arena, "_client", lambda *_a, f=final: Fake(f))
        r = runner.invoke(app, argv)
        assert r.exit_code == code, (final, r.output)
        assert json.loads(r.stdout)["state"] == final["state"]
    help_text = runner.invoke(app, ["arena", "submit", "--help"]).output
    assert "Exit" in help_text and "failed" in help_text


# ----------------------------------------------------------------------------- 5. rate limit
def test_the_daily_limit_holds_under_concurrency(arena, monkeypatch):
    key = arena.create_key("racer")
    slow_enqueue = jobqueue.enqueue

    def enqueue(session, submission_id):  # widen the window between check and insert
        threading.Event().wait(0.05)
        slow_enqueue(session, submission_id)

    monkeypatch.setattr(jobqueue, "enqueue", enqueue)
    start = threading.Barrier(12)
    outcomes: list[object] = []

    def one() -> None:
        start.wait()
        try:
            outcomes.append(arena.submit(key, "lossy", "z.py", solution("zstd")))
        except Exception as exc:  # the test counts every kind
            outcomes.append(exc)

    threads = [threading.Thread(target=one) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    accepted = [o for o in outcomes if isinstance(o, int)]
    refused = [o for o in outcomes if isinstance(o, RateLimited)]
    assert len(accepted) == 4 and len(refused) == 8, outcomes


# ----------------------------------------------------------------------------- 6. ids, sources
@pytest.mark.parametrize("sid", [2**63, 2**64 + 1, -1, 0, 2**31])
def test_out_of_range_ids_are_not_found(arena, sid):
    key = arena.create_key("ann")
    for call in (arena.status, arena.download, arena.lineage):
        with pytest.raises(NotFound):
            call(sid)
    with pytest.raises(NotFound, match="fork"):
        arena.submit(key, "lossless", "x.py", solution("zstd"), fork=sid)


@pytest.mark.parametrize("source", [b"x" + b"+x" * 30_000, b"-" * 60_000 + b"1",
                                    b"f" + b"()" * 30_000])  # fmt: skip
def test_deeply_nested_sources_are_refused_as_bad_requests(arena, source):
    key = arena.create_key("ann")
    with pytest.raises((ArenaError, SolutionError)) as info:
        arena.submit(key, "lossless", "deep.py", source)
    assert getattr(info.value, "status", 400) == 400 and str(info.value)


@pytest.mark.parametrize("exc", [RecursionError, MemoryError, ValueError("source code string")])
def test_parser_blowups_become_refusals(arena, monkeypatch, exc):
    def explode(*_a, **_k):
        raise exc

    monkeypatch.setattr(service, "inspect_solution", explode)
    with pytest.raises(ArenaError, match="cannot be parsed") as info:
        arena.submit(arena.create_key("ann"), "lossless", "x.py", b"x = 1\n")
    assert info.value.status == 400


# ----------------------------------------------------------------------------- 8. keys
@pytest.mark.parametrize("name", ["", "   ", "a\x00b", "x" * 65, "tab\there"])
def test_key_names_are_checked(arena, name):
    with pytest.raises(ArenaError, match="key name"):
        arena.create_key(name)


# ----------------------------------------------------------------------------- old databases
def test_a_database_from_before_the_new_columns_is_upgraded_on_open(arena_home, db_url):
    arena = Arena(arena_home, db_url)
    key = arena.create_key("ann")
    sid = arena.submit(key, "lossy", "old.py", solution("zstd"))
    finish(arena, leaky_round())
    engine = arena.Session.kw["bind"]
    with engine.begin() as conn:  # what a database made by the previous version looks like
        conn.execute(text("ALTER TABLE results DROP COLUMN category"))
        conn.execute(text("ALTER TABLE submissions DROP COLUMN error_category"))
        conn.execute(text("UPDATE submissions SET state = 'done', error = NULL"))
    engine.dispose()
    again = Arena(arena_home, db_url)
    st = again.status(sid)
    assert [r["reason"] for r in st["results"]] == ["compress failed", "decompress failed"]
    assert SECRET not in json.dumps(st)
    with again.Session() as s:
        assert s.get(Submission, sid).error_category is None
        assert s.query(Result).count() == 2
    open_db(again.db_url).kw["bind"].dispose()  # a second open finds nothing to add
    again.Session.kw["bind"].dispose()
