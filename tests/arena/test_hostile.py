"""Every hostile submission through a live arena: contained, scored 0 with a clear reason,
the server and honest submissions unharmed, nothing lost from the database."""

import json
import re
import site
import sqlite3
from pathlib import Path

import httpx
import pytest

from swarmpress.arena.config import LimitsModel, dump_config
from swarmpress.arena.sandbox import pick_engine
from tests.arena.conftest import small_config, solution
from tests.arena.helpers import Server, cli, wait_state

HOSTILE = Path(__file__).with_name("hostile")  # templates: {PORT}, {HOME}, {SITE} filled in
EXPECT = {  # file -> a pattern its detailed failure reason must match (either engine)
    "net": "no network",
    "read_secrets": "cannot read",
    "write_outside": "cannot write",
    "fork_bomb": "",
    "memory": r"memory limit|timed out",  # gVisor faults 1 GiB in slowly on a busy machine
    "loop": "timed out",
    "huge_output": "exceeds the limit",
    "logs": "after the spam",
    "forbidden_import": "No module named 'sqlalchemy'",
    # the red team's entries: each attack fails, under gVisor and under bubblewrap
    "rt_keyring": r"keyring refused|stash not found",
    "rt_i386": r"killed by SIGSYS|i386 getpid returned -",
    "rt_namespaces": r"unshare=-1/1 clone=-1/1|unshare=0/0 mount=-1 clone=-1/1",
    # killed by the cgroup, or by the wall clock first where gVisor faults pages in slowly
    # on a busy machine (test_sandbox.py checks the memory-limit kill itself)
    "rt_memfd": r"killed at the memory limit|timed out",
    "rt_affinity": r"re-pinning refused|re-pinned to",  # gVisor: only its own view moves
    "rt_forged_reply": "frame of unknown kind 99",
    "rt_nul_log": "reason with",
    "rt_exfiltrate": "LEAK:",
    "rt_pool_rebuild": "cannot rebuild: sources absent",
    "rt_pagecache": "differ from the original",  # the page-cache bits do not arrive
}


@pytest.fixture
def server(arena_home, db_url):
    cfg = small_config(sandbox="auto", tensors=1)  # the default engine: gVisor
    for c in cfg.competition:
        c.limits = LimitsModel(wall_s=3, startup_s=30, cpu_s=5, max_output_bytes=4 << 20)
    (arena_home / "arena.toml").write_text(dump_config(cfg))
    s = Server(arena_home, db=db_url)
    s.admin = s.start()
    yield s
    s.stop()


def _counts(server) -> tuple[int, int]:
    """(submissions, results) rows, after an integrity check on SQLite."""
    if server.db is None:
        db = sqlite3.connect(server.home / "arena.db")
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    else:
        import psycopg

        db = psycopg.connect(server.db)
    subs = db.execute("SELECT count(*) FROM submissions").fetchone()[0]
    return subs, db.execute("SELECT count(*) FROM results").fetchone()[0]


def _submit(server, path, competition="lossless"):
    r = cli("submit", str(path), "-c", competition, "--json", server=server.url, key=server.admin)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["id"]


def test_hostile_submissions_are_contained(server, tmp_path):
    honest = tmp_path / "zstd.py"
    honest.write_bytes(solution("zstd"))
    before = _submit(server, honest)
    ids = {}
    for name in EXPECT:
        text = (HOSTILE / f"{name}.py.in").read_text()
        text = text.replace("{PORT}", str(server.port)).replace("{HOME}", str(server.home))
        text = text.replace("{SITE}", site.getsitepackages()[0])
        path = tmp_path / f"{name}.py"
        path.write_text(text)
        ids[name] = _submit(server, path)
    timing = tmp_path / "timing.py"
    timing.write_text((HOSTILE / "timing.py.in").read_text())
    timed = _submit(server, timing)
    after = _submit(server, honest)

    ref = wait_state(server.url, before, timeout=300)
    assert ref["state"] == "done" and ref["score"] > 0
    for name, sid in ids.items():
        st = wait_state(server.url, sid, timeout=300)
        assert st["state"] == "failed" and st["score"] == 0.0, name
        assert all(r["reason"] == r["category"] for r in st["results"])  # others: categories
        assert "LEAK" not in json.dumps(st) and "\\u0000" not in json.dumps(st)
        own = httpx.get(f"{server.url}/api/submissions/{sid}",
                        headers={"X-API-Key": server.admin}).json()  # fmt: skip
        reasons = " ".join(r["reason"] for r in own["results"])
        assert re.search(EXPECT[name], reasons), (name, reasons)
        assert all(len(r["reason"]) <= 500 and "\x00" not in r["reason"] for r in own["results"])
        assert "\x00" not in (own["log"] or "")
        assert own["sandbox"] == pick_engine()  # auto: gVisor wherever it runs
    st = wait_state(server.url, timed, timeout=300)
    assert all(r["seconds_decompress"] >= 2.0 for r in st["results"])
    assert st["score"] < ref["score"]  # the sleep is charged to it
    later = wait_state(server.url, after, timeout=300)
    assert later["score"] == pytest.approx(ref["score"], abs=0.05)

    assert not (server.home / "planted").exists()
    assert httpx.get(server.url + "/api/health").json()["ok"]
    n_subs, n_results = _counts(server)
    assert n_subs == len(ids) + 3 and n_results == n_subs  # one tensor per round here
    board = httpx.get(server.url + "/api/competitions/lossless/leaderboard").json()
    assert board[0]["id"] in (before, after)
