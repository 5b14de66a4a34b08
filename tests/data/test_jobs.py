"""Collection jobs: defined once, stopped by their limits or SIGTERM, resumed after a crash
from the saved cursor without a duplicate."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from jsonschema import Draft202012Validator

from swarmpress.data.jobs import (
    JobError,
    get_job,
    jobs,
    list_jobs,
    parse_spec,
    run_job,
    save_spec,
)
from swarmpress.data.schema import schema
from swarmpress.data.sources.http import JsonClient
from swarmpress.data.sources.reddit import RedditSource
from swarmpress.data.store import Store
from tests.data.conftest import listing, post


def reddit_items(url):
    def items_for(spec, source, cursor):
        src = RedditSource(url, JsonClient(url, sleep=lambda s: None))
        return src.items(["r/Python"], [], spec.mode, spec.page_limit, cursor), lambda: src.resume

    return items_for


def pages(server):
    path = "/r/Python/new.json"
    server.routes[path] = [
        (200, {}, listing([post(9), post(8), post(7)], "t3_p7")),
        (200, {}, listing([post(6), post(5), post(4)], "t3_p4")),
        (200, {}, listing([post(3), post(2), post(1)], None)),
    ]


def test_spec_errors_name_the_field():
    with pytest.raises(JobError, match="source"):
        parse_spec({"name": "j", "sources": ["myspace"]})
    with pytest.raises(JobError, match="sources"):
        parse_spec({"name": "j", "sources": []})
    with pytest.raises(JobError, match="name"):
        parse_spec({"name": "bad name!", "sources": ["local"]})
    with pytest.raises(JobError, match="stop_after_records"):
        parse_spec({"name": "j", "sources": ["local"], "stop_after_records": 0})


def test_job_stops_after_n_records(server, tmp_path):
    pages(server)
    s = Store(str(tmp_path / "j.db"))
    save_spec(s, parse_spec({"name": "py", "sources": ["reddit"], "label": "r/Python",
                             "stop_after_records": 4}))  # fmt: skip
    res = run_job(s, "py", reddit_items(server.url))
    assert (res["status"], res["collected"]) == ("done", 4) and s.count() == 4
    assert get_job(s, "py")["status"] == "done"


def _update(store: Store, name: str, **values) -> None:
    """Write a job row directly, as a process that died mid-run left it."""
    with store.engine.begin() as conn:
        conn.execute(jobs.update().where(jobs.c.name == name).values(**values))


def test_crashed_job_resumes_from_its_cursor(server, tmp_path):
    pages(server)
    s = Store(str(tmp_path / "j.db"))
    save_spec(s, parse_spec({"name": "py", "sources": ["reddit"], "label": "r/Python"}))
    # a first run that died after its first page: records committed, cursor saved, the
    # process gone while the row still says running
    first = [r for r, _ in RedditSource(server.url, JsonClient(server.url)).items(
        ["r/Python"], limit=3)]  # fmt: skip
    s.insert(first)
    _update(s, "py", status="running", pid=2**22 + 12345, collected=3,
            cursor=json.dumps({"reddit": "t3_p7"}))  # fmt: skip
    assert get_job(s, "py")["status"] == "crashed"
    pages(server)
    res = run_job(s, "py", reddit_items(server.url))
    assert res["resumed"] and res["status"] == "done"
    assert res["collected"] == 9 and s.count() == 9
    after = [q for _, q, _ in server.log[-2:]]
    assert after[0]["after"] == ["t3_p7"]  # it went on from the saved page, not the top


def test_running_job_cannot_be_redefined_or_doubled(tmp_path):
    s = Store(str(tmp_path / "j.db"))
    save_spec(s, parse_spec({"name": "loc", "sources": ["local"]}))
    _update(s, "loc", status="running", pid=os.getpid())
    with pytest.raises(JobError, match="running"):
        save_spec(s, parse_spec({"name": "loc", "sources": ["local"], "every_s": 5}))
    with pytest.raises(JobError, match="already running"):
        run_job(s, "loc", lambda spec, src, c: (iter(()), lambda: None))
    with pytest.raises(JobError, match="no job"):
        run_job(s, "nope", lambda spec, src, c: (iter(()), lambda: None))


def test_background_job_killed_and_resumed_without_duplicates(tmp_path):
    """A real detached job over 30,000 JSONL lines, SIGKILLed mid-collection, then run
    again: every line stored exactly once, the store sound."""
    src = tmp_path / "big.jsonl"
    src.write_text("".join(json.dumps({"text": f"line {i} " + "word " * 30, "uri": f"u:{i}"})
                           + "\n" for i in range(30_000)))  # fmt: skip
    db = str(tmp_path / "bg.db")
    env = dict(os.environ, HOME=str(tmp_path))
    cmd = [sys.executable, "-m", "swarmpress.cli", "data", "collect", "--source", "local",
           "--path", str(src), "--store", db, "--job", "big", "--limit", "100000"]  # fmt: skip
    out = subprocess.run([*cmd, "--background", "--json"], capture_output=True, text=True,
                         env=env, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    pid = json.loads(out.stdout)["pid"]
    s = Store(db)
    deadline = time.time() + 60
    while time.time() < deadline and (get_job(s, "big") or {}).get("collected", 0) == 0:
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    j = get_job(s, "big")
    assert j["status"] == "crashed" and 0 < s.count() < 30_000
    assert s.check() == "ok"
    again = subprocess.run([*cmd, "--json"], capture_output=True, text=True, env=env,
                           timeout=120)  # fmt: skip
    assert again.returncode == 0, again.stderr
    res = json.loads(again.stdout)
    Draft202012Validator(schema("job")).validate(res)
    listed = subprocess.run([sys.executable, "-m", "swarmpress.cli", "data", "jobs", "--json",
                             "--store", db], capture_output=True, text=True, env=env)  # fmt: skip
    Draft202012Validator(schema("jobs")).validate(json.loads(listed.stdout))
    assert res["status"] == "done" and res["resumed"]
    assert s.count() == 30_000 == res["collected"]
    assert [x["status"] for x in list_jobs(s)] == ["done"]
    assert (tmp_path / ".swarmpress" / "jobs" / "big.log").exists()


def test_a_job_visits_each_of_its_sources(server, tmp_path, monkeypatch):
    """reddit then x in one round; the source registry's item factory (run_job's default),
    the replay server behind both."""

    monkeypatch.setenv("SWARMPRESS_REDDIT_URL", server.url)
    monkeypatch.setenv("SWARMPRESS_X_URL", server.url)
    monkeypatch.setenv("X_BEARER_TOKEN", "t")
    server.add("/search.json", 200, listing([post(1), post(2)], None))
    server.add("/2/tweets/search/recent", 200, {
        "data": [{"id": "5", "text": "gpu talk", "author_id": "1",
                  "created_at": "2026-03-01T12:00:00Z"}],
        "includes": {"users": [{"id": "1", "username": "bo"}]}, "meta": {},
    })  # fmt: skip
    s = Store(str(tmp_path / "multi.db"))
    save_spec(s, parse_spec({"name": "both", "sources": ["reddit", "x"], "keywords": ["gpu"]}))
    res = run_job(s, "both")
    assert res["collected"] == 3 and res["rounds"] == 1
    assert sorted(r.source for r in s.iter_all()) == ["reddit", "reddit", "x"]
    assert [p for p, _, _ in server.log] == ["/search.json", "/2/tweets/search/recent"]


def test_a_batch_and_the_job_counter_commit_together(tmp_path, monkeypatch):
    """A job dying between storing a batch and counting it must not leave records the
    counter never saw: the counter is written inside the batch's own transaction."""
    import swarmpress.data.jobs as jobs_mod

    src = tmp_path / "lines.jsonl"
    src.write_text("".join(json.dumps({"text": f"line {i}", "uri": f"u:{i}"}) + "\n"
                           for i in range(1_200)))  # fmt: skip
    s = Store(str(tmp_path / "j.db"))
    save_spec(s, parse_spec({"name": "loc", "sources": ["local"], "path": str(src)}))
    real, calls = jobs_mod._update_in, []

    def dies_on_second_batch(conn, name, **values):
        if "collected" in values and values["collected"] > 500:
            calls.append(values["collected"])
            raise RuntimeError("killed between the batch and its count")
        return real(conn, name, **values)

    monkeypatch.setattr(jobs_mod, "_update_in", dies_on_second_batch)
    with pytest.raises(RuntimeError, match="killed"):
        run_job(s, "loc")
    assert calls == [1000]
    assert s.count() == get_job(s, "loc")["collected"] == 500  # the second batch rolled back
    monkeypatch.setattr(jobs_mod, "_update_in", real)
    res = run_job(s, "loc")
    assert res["collected"] == s.count() == 1_200
