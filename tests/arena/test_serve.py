"""`swarmpress arena serve` end to end: real server, real workers, the CLI as a client,
and workers or the server killed in the middle of an evaluation."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import httpx
import pytest

from tests.arena.helpers import Server, cli, wait_state

SLOW = b"""
import time, zstandard
def compress_data(data):
    time.sleep(0.8)
    return zstandard.ZstdCompressor().compress(data)
def decompress_data(data):
    return zstandard.ZstdDecompressor().decompress(data)
"""


@pytest.fixture
def server(arena_home):
    s = Server(arena_home)
    s.admin = s.start()
    yield s
    s.stop()


def test_serve_submit_and_the_leader_changes(server, tmp_path):
    assert server.admin
    made = cli("keys", "create", "kim", "--json", server=server.url, key=server.admin)
    key = json.loads(made.stdout)["key"]
    for codec in ("zstd", "lossless"):
        r = cli("export-solution", "--codec", codec, "--out", str(tmp_path / f"{codec}.py"))
        assert r.returncode == 0, r.stderr
    r = cli("submit", str(tmp_path / "zstd.py"), "--competition", "lossless", "--json",
            server=server.url, key=key)  # fmt: skip
    assert r.returncode == 0, r.stderr
    first = json.loads(r.stdout)["id"]
    wait_state(server.url, first)
    r = cli("submit", str(tmp_path / "lossless.py"), "-c", "lossless", "--fork", str(first),
            "--wait", "--json", server=server.url, key=key)  # fmt: skip
    st = json.loads(r.stdout)
    assert st["state"] == "done" and st["parent"] == first
    board = json.loads(cli("leaderboard", "-c", "lossless", "--json", server=server.url).stdout)
    assert board[0]["id"] == st["id"] and board[0]["leader"]
    stairs = httpx.get(f"{server.url}/api/competitions/lossless/staircase").json()
    assert [s["id"] for s in stairs] == [first, st["id"]]
    status = json.loads(cli("status", str(first), "--json", server=server.url).stdout)
    assert status["state"] == "done" and len(status["results"]) == 2
    lin = cli("lineage", str(first), server=server.url)
    assert f"#{st['id']}" in lin.stdout


def test_submit_wait_exits_1_when_every_tensor_failed(server, tmp_path):
    path = tmp_path / "bad.py"
    path.write_bytes(b"def compress_data(data):\n    raise ValueError('nope')\n\n"
                     b"def decompress_data(data):\n    return data\n")  # fmt: skip
    r = cli("submit", str(path), "-c", "lossless", "--wait", "--json", server=server.url,
            key=server.admin)  # fmt: skip
    assert r.returncode == 1, r.stderr
    st = json.loads(r.stdout)
    assert st["state"] == "failed" and "nope" in st["error"]  # its author sees why
    public = httpx.get(f"{server.url}/api/submissions/{st['id']}").json()
    assert public["error"] == "all tensors failed: compress failed"
    assert "nope" not in json.dumps(public)
    assert httpx.get(f"{server.url}/api/competitions/lossless/leaderboard").json() == []


@pytest.fixture
def idle_server(arena_home):
    """A server without workers: for requests that never reach an evaluation."""
    s = Server(arena_home, workers=0)
    s.admin = s.start()
    yield s
    s.stop()


def test_client_errors_are_one_line_with_exit_2(idle_server, tmp_path):
    server = idle_server
    r = cli("status", "424242", server=server.url)
    assert r.returncode == 2 and "no submission 424242" in r.stderr
    r = cli("submit", str(tmp_path / "missing.py"), "-c", "lossless", server=server.url, key="x")
    assert r.returncode == 2 and "cannot read" in r.stderr
    r = cli("status", "1", server="http://127.0.0.1:9")
    assert r.returncode == 2 and "cannot reach" in r.stderr


def _worker_pids(home):
    """The worker processes of the arena in home (only these: other arenas may be running)."""
    pattern = re.escape(f"swarmpress.cli arena worker --home {home} ")
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_killing_a_worker_or_the_server_mid_evaluation_loses_nothing(server, tmp_path):
    path = tmp_path / "slow.py"
    path.write_bytes(SLOW)
    sid = json.loads(cli("submit", str(path), "-c", "lossy", "--json", server=server.url,
                         key=server.admin).stdout)["id"]  # fmt: skip
    wait_state(server.url, sid, states=("running",))
    for pid in _worker_pids(server.home):
        os.kill(pid, signal.SIGKILL)  # every worker dies mid-call; serve restarts them
    st = wait_state(server.url, sid)
    assert st["state"] == "done" and st["attempts"] >= 2 and st["score"] > 0

    sid2 = json.loads(cli("submit", str(path), "-c", "lossy", "--json", server=server.url,
                          key=server.admin).stdout)["id"]  # fmt: skip
    wait_state(server.url, sid2, states=("running",))
    server.kill()  # the server and (by their death signal) its workers
    end = time.monotonic() + 60  # a deadline for the kernel, not a speed under test
    while _worker_pids(server.home) and time.monotonic() < end:
        time.sleep(0.1)
    assert _worker_pids(server.home) == []
    server.start()
    st2 = wait_state(server.url, sid2)
    assert st2["state"] == "done" and st2["attempts"] >= 2
    assert wait_state(server.url, sid)["score"] == st["score"]  # nothing lost


def test_workers_on_other_machines_share_a_postgresql_arena(arena_home, pg_url, tmp_path):
    # "Another machine" = another home (its own copy of config and pool), the same database.
    other = tmp_path / "other-machine"
    shutil.copytree(arena_home, other)
    server = Server(arena_home, workers=0, db=pg_url)
    admin = server.start()
    env = {**os.environ, "SWARMPRESS_ARENA_LEASE": "3"}
    workers = []
    try:
        workers += [
            subprocess.Popen([sys.executable, "-m", "swarmpress.cli", "arena", "worker", "--home",
                              str(other), "--db", pg_url, "--slot", str(3 + i)], env=env)
            for i in range(2)
        ]  # fmt: skip
        path = tmp_path / "slow.py"
        path.write_bytes(SLOW)
        ids = [
            json.loads(cli("submit", str(path), "-c", "lossless", "--json", server=server.url,
                           key=admin).stdout)["id"]
            for _ in range(4)
        ]  # fmt: skip
        done = [wait_state(server.url, i) for i in ids]
        assert all(d["state"] == "done" and d["score"] > 0 for d in done)
        assert len({d["worker"] for d in done}) == 2  # both workers took jobs
    finally:
        for w in workers:
            w.terminate()
            w.wait(timeout=20)
        server.stop()
