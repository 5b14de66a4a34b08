"""No single point of failure: the orchestrator's state store (leases, fencing, take-over)
and real runs whose orchestrator is SIGKILLed mid-run and resumed by a successor, on SQLite
and PostgreSQL: every sample applied exactly once, the same final loss as a run that was
never interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from swarmpress.swarm.config import SwarmConfig
from swarmpress.swarm.failover import here, owner_gone, pid_gone, read_run_file
from swarmpress.swarm.orchestrator import Orchestrator, StoreLost
from swarmpress.swarm.run import load_data
from swarmpress.swarm.state import Fenced, Held, StateError, StateStore, redact

ROOT = Path(__file__).resolve().parents[2]


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    return request.getfixturevalue("pg_url")


# ----------------------------------------------------------------------------- the store
def test_lease_fencing_and_take_over(store_url):
    clock = Clock()
    a = StateStore(store_url, clock=clock)
    assert a.create("run1", "a", {"x": 1}, lease_s=5) == 1
    with pytest.raises(StateError, match="already"):
        a.create("run1", "a", {"x": 1}, lease_s=5)
    b = StateStore(store_url, clock=clock)
    with pytest.raises(Held, match="held by a"):
        b.take_over("run1", "b", lease_s=5)  # the lease runs for 5 s more
    clock.t += 3
    a.save("run1", 1, {"x": 2}, lease_s=5)  # renewed: runs to t+8 now
    clock.t += 4
    with pytest.raises(Held):
        b.take_over("run1", "b", lease_s=5)
    clock.t += 2
    lease = b.take_over("run1", "b", lease_s=5)
    assert (lease.epoch, lease.owner, lease.state) == (2, "b", {"x": 2})
    with pytest.raises(Fenced):  # the old holder wakes up: every write is refused
        a.save("run1", 1, {"x": 3}, lease_s=5)
    with pytest.raises(Fenced):
        a.renew("run1", 1, lease_s=5)
    assert b.load("run1").state == {"x": 2}
    b.release("run1", 2)
    c = StateStore(store_url, clock=clock)
    assert c.take_over("run1", "c", lease_s=5).epoch == 3  # released: no wait


def test_two_successors_one_wins(store_url):
    clock = Clock()
    s = StateStore(store_url, clock=clock)
    s.create("r", "a", {}, lease_s=1)
    clock.t += 2
    seen = s.load("r")
    s.take_over("r", "b", lease_s=5)
    # the second standby read the row before the first took it: its conditional update fails
    with pytest.raises(Held):
        s.take_over("r", "c", lease_s=5)
    assert s.load("r").owner == "b" and seen.epoch == 1


def test_store_errors_name_the_problem(tmp_path):
    with pytest.raises(StateError, match="no run 'nope'"):
        StateStore(f"sqlite:///{tmp_path / 's.db'}").load("nope")
    with pytest.raises(StateError, match="state store"):
        StateStore(f"sqlite:///{tmp_path / 'no' / 'such' / 's.db'}")
    assert redact("postgresql://u:secret@h:5/db") == "postgresql://u:***@h:5/db"
    assert redact("sqlite:////x/y.db") == "sqlite:////x/y.db"
    with pytest.raises(StateError, match="not a swarm run folder"):
        read_run_file(tmp_path)
    (tmp_path / "run.json").write_text("[1]")
    with pytest.raises(StateError, match="not a swarm run file"):
        read_run_file(tmp_path)


def test_a_live_holder_is_not_taken_for_gone():
    assert not owner_gone(f"{here()}:{os.getpid()}:x")
    assert not owner_gone("another-host:1:x")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert owner_gone(f"{here()}:{dead.pid}:x")
    # the same host name in another PID namespace (a container): a pid says nothing there
    host, boot, _ = here().split("/")
    assert not owner_gone(f"{host}/{boot}/1:{dead.pid}:x")
    assert not owner_gone(f"{host}:{dead.pid}:x")


def test_a_run_stopped_with_its_workers_is_not_resumed(tmp_path):
    """Ctrl-C or a failure stops the workers, and the weights only they held go with them:
    the state says so and a successor refuses at once, naming why."""
    from swarmpress.swarm.config import build_config

    orch = Orchestrator(build_config("tiny"), None, spawn=False, run_dir=tmp_path)
    orch._open_state()
    assert (tmp_path / "run.json").stat().st_mode & 0o777 == 0o600
    orch.shutdown()
    with pytest.raises(StateError, match="was stopped"):
        Orchestrator.resume(tmp_path, None)


# ----------------------------------------------------------------------------- real runs
def _primary(run_dir: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.swarm.failover_primary", str(run_dir), *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )  # fmt: skip


def _steps(proc: subprocess.Popen, until: int | None = None) -> tuple[list[int], dict]:
    """The steps a primary printed (up to `until`, or until it exits) and its result."""
    seen, result = [], {}
    for line in proc.stdout:
        got = json.loads(line)
        if "step" not in got:
            result = got
            continue
        seen.append(got["step"])
        if until is not None and seen[-1] >= until:
            break
    return seen, result


def _resume(run_dir: Path, **kw) -> dict:
    info = read_run_file(run_dir)
    cfg = SwarmConfig(**StateStore(info["state"]).load(info["run_id"]).state["config"])
    steps: list[int] = []
    orch = Orchestrator.resume(run_dir, load_data(cfg), on_step=lambda s, _: steps.append(s), **kw)
    res = orch.run().to_json()
    res["resumed_steps"] = steps
    return res


def _workers_gone(run_dir: Path) -> bool:
    info = read_run_file(run_dir)
    slots = StateStore(info["state"]).load(info["run_id"]).state["slots"]
    end = time.monotonic() + 30
    while time.monotonic() < end:
        alive = [s["pid"] for s in slots if s["pid"] and not pid_gone(s["pid"])]
        if not alive:
            return True
        time.sleep(0.2)
    return False


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The same run, never interrupted: its final loss is what a failover must reach (and
    a finished run is not resumed)."""
    run_dir = tmp_path_factory.mktemp("whole")
    proc = _primary(run_dir)
    steps, result = _steps(proc)
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    assert steps == list(range(12))
    assert result["faults"]["exactly_once"] and result["faults"]["takeovers"] == []
    with pytest.raises(StateError, match="has finished"):
        _resume(run_dir)
    return result["final_loss"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("store", "die"), [("sqlite", "after-save:5"), ("postgresql", "mid-step:6")]
)
def test_sigkilled_orchestrator_is_resumed_exactly_once(store, die, request, tmp_path,
                                                        uninterrupted):  # fmt: skip
    """after-save: killed between writing a step's decision and telling any worker (the
    successor sends it); mid-step: killed with half a step's samples in flight (routed
    again under new attempt numbers); external: SIGKILL from outside between steps."""
    args = [] if die == "external" else ["--die", die]
    url = (
        f"sqlite:///{tmp_path / 'state.db'}"
        if store == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    proc = _primary(tmp_path, "--state", url, *args)
    if die == "external":
        _steps(proc, until=4)
        proc.send_signal(signal.SIGKILL)
    else:
        _steps(proc)
    assert proc.wait(timeout=300) == -signal.SIGKILL
    res = _resume(tmp_path)
    faults = res["faults"]
    assert faults["exactly_once"], faults
    assert faults["miscounted_steps"] == {}
    assert res["steps"] == 12 and len(res["loss_curve"]) == 12
    assert res["resumed_steps"][-1] == 11
    (takeover,) = faults["takeovers"]
    assert takeover["epoch"] == 2 and takeover["first_step_s"] is not None
    # the decided steps as the primary saw them, then the successor's: none twice
    assert sorted(set(range(12)) - set(res["resumed_steps"])) == list(
        range(res["resumed_steps"][0])
    )
    # no sample lost or doubled: the very loss of the run that was never interrupted
    assert res["final_loss"] == uninterrupted
    assert faults["dead"] == 0  # every worker of the predecessor carried on
    assert _workers_gone(tmp_path)


@pytest.mark.slow
def test_standby_takes_over_after_the_lease_and_fences_the_old_one(tmp_path):
    """A paused primary (SIGSTOP) keeps its lease no longer than lease_s; a standby that
    cannot see its process takes over; woken up, the old one finds itself fenced and
    leaves the workers to its successor."""
    proc = _primary(tmp_path, "--lease", "1.0", "--steps", "10")
    _steps(proc, until=3)
    proc.send_signal(signal.SIGSTOP)
    waits: list[str] = []
    try:
        res = None
        info = read_run_file(tmp_path)
        cfg = SwarmConfig(**StateStore(info["state"]).load(info["run_id"]).state["config"])
        orch = Orchestrator.resume(tmp_path, load_data(cfg), standby=True, lease_s=1.0,
                                   poll_s=0.1, on_wait=waits.append, see_pids=False)  # fmt: skip
        proc.send_signal(signal.SIGCONT)  # wakes while the successor holds the run
        res = orch.run().to_json()
    finally:
        proc.send_signal(signal.SIGCONT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "another orchestrator took over" in err
    assert res["faults"]["exactly_once"], json.dumps(res["faults"], indent=1)
    assert res["steps"] == 10
    assert _workers_gone(tmp_path)


# ----------------------------------------------------------------------------- hostile cases
def _held_run(tmp_path, lease_s=5.0) -> Orchestrator:
    from swarmpress.swarm.config import build_config

    orch = Orchestrator(build_config("tiny"), None, spawn=False, run_dir=tmp_path,
                        lease_s=lease_s)  # fmt: skip
    orch._open_state()
    return orch


def test_a_store_away_for_less_than_the_lease_costs_a_pause(tmp_path):
    orch = _held_run(tmp_path, lease_s=2.0)
    real, calls = orch.store.save, []

    def flaky(*a, **k):
        calls.append(1)
        if len(calls) <= 3:
            raise StateError("state store: connection refused")
        return real(*a, **k)

    orch.store.save = flaky
    orch.save()  # three failures, then written
    assert len(calls) == 4
    orch.store.save = lambda *a, **k: (_ for _ in ()).throw(StateError("gone"))
    with pytest.raises(StoreLost, match="--resume"):
        orch.save()
    orch.ep.close()


def test_a_replaced_orchestrator_never_stops_its_successors_workers(tmp_path):
    orch = _held_run(tmp_path)
    other = StateStore(orch.state_url)
    other.release(orch.run_id, orch.epoch)
    other.take_over(orch.run_id, "successor", lease_s=5)
    orch.renewed = time.monotonic()  # its lease looks fresh to it: only the store knows
    orch.shutdown()
    assert orch.fenced
    assert not other.load(orch.run_id).state["stopped"]  # nothing written over the successor


def test_standing_is_taken_only_when_asked_and_never_rewrites_counts(tmp_path):
    from swarmpress.swarm.orchestrator import Slot
    from swarmpress.swarm.protocol import Standing, WorkerStats

    orch = _held_run(tmp_path)
    slot = Slot("s0r0", 0, 0, said_hello=True, ready=True)
    orch.slots["s0r0"], orch.next_step = slot, 5
    orch.applied_by[(3, "s0r0")] = 0
    forged = Standing(10**9, True, ((3, 4), (4, 4)), WorkerStats())
    orch._handle("s0r0", forged.envelope())
    assert orch.applied_by == {(3, "s0r0"): 0} and slot.stepped == -1
    assert any("not asked for" in r for r in orch.rejected)
    orch.rejoining = True
    orch._handle("s0r0", forged.envelope())
    assert orch.applied_by == {(3, "s0r0"): 0, (4, "s0r0"): 4}  # a gap filled, 3 kept
    assert slot.stepped == 4  # not a billion steps ahead
    orch.ep.close()


def test_run_file_is_private_and_never_written_through_a_link(tmp_path):
    from swarmpress.errors import AuthError
    from swarmpress.swarm.failover import write_run_file

    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "run.json").symlink_to(victim)
    with pytest.raises(AuthError, match="symbolic link"):
        write_run_file(tmp_path, "r", "sqlite:///x", "tcp://127.0.0.1:1")
    assert victim.read_text() == "precious"
    (tmp_path / "run.json").unlink()
    (tmp_path / "run.json").write_text("{}")
    os.chmod(tmp_path / "run.json", 0o644)
    write_run_file(tmp_path, "r", "postgresql://u:pw@h/db", "tcp://127.0.0.1:1")
    assert (tmp_path / "run.json").stat().st_mode & 0o777 == 0o600


def test_tampered_state_is_refused_and_innocents_are_not_killed(tmp_path):
    from swarmpress.swarm.failover import restore, snapshot
    from swarmpress.swarm.orchestrator import Slot

    orch = _held_run(tmp_path)
    orch.slots["s0r0"] = Slot("s0r0", 0, 0, address="tcp://127.0.0.1:9", pid=1)
    good = snapshot(orch)
    for field, value in [("pid", "12"), ("pid", 1 << 70), ("address", "nowhere"),
                         ("stage", 1.5)]:  # fmt: skip
        bad = json.loads(json.dumps(good))
        bad["slots"][0][field] = value
        fresh = _held_run(tmp_path / field / str(len(str(value))))
        with pytest.raises(StateError, match="does not fit"):
            restore(fresh, bad, Slot)
        fresh.ep.close()
    # a process that looks like a worker of the same name but belongs to no run of ours
    decoy = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "swarmpress.swarm.worker",
         "--name", "s0r0", "--orch", "tcp://127.0.0.1:1"],
    )  # fmt: skip
    try:
        orch.spawn = True
        orch.slots["s0r0"].pid = decoy.pid
        orch._dead(orch.slots["s0r0"], "test")
    except Exception:
        pass  # the stage has no replica left: what matters is the decoy
    finally:
        time.sleep(0.2)
        assert decoy.poll() is None, "an innocent process was killed"
        decoy.kill()
        decoy.wait()
    orch.ep.close()


@pytest.mark.slow
def test_the_commands_users_run_kill_and_resume(pg_url, tmp_path, uninterrupted):
    """`swarm train CONFIG --run-dir DIR --state URL`, SIGKILLed mid-run from outside;
    `swarm train --resume DIR --json` finishes it: exactly once, the loss of the run
    never interrupted (the same config as tests/swarm/failover_primary.py)."""
    import re

    from tests.swarm.failover_primary import SMALL

    conf = tmp_path / "run.toml"
    fields = {**SMALL, "steps": 12, "merge_every": 4, "router": "round-robin", "link": "none"}
    conf.write_text("[swarm]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in fields.items()))
    run_dir = tmp_path / "run"
    swarmpress = [sys.executable, "-m", "swarmpress"]
    first = subprocess.Popen(
        [*swarmpress, "swarm", "train", str(conf), "--run-dir", str(run_dir), "--state", pg_url,
         "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    for line in first.stderr:  # plain progress lines: `[  3.1 s] step 5/12 ...`
        m = re.search(r"\] step (\d+)/12", line)
        if m and int(m.group(1)) >= 4:
            break
    first.send_signal(signal.SIGKILL)
    assert first.wait(timeout=60) == -signal.SIGKILL
    done = subprocess.run([*swarmpress, "swarm", "train", "--resume", str(run_dir), "--json"],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "taking over the run" in done.stderr
    res = json.loads(done.stdout)
    assert res["faults"]["exactly_once"] and res["steps"] == 12
    assert res["final_loss"] == uninterrupted
    again = subprocess.run([*swarmpress, "swarm", "train", "--resume", str(run_dir)],
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert again.returncode == 1 and "has finished" in again.stderr
    bad = subprocess.run([*swarmpress, "swarm", "train", "--resume", str(run_dir), "--steps",
                          "3"], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert bad.returncode == 2 and "drop run flags" in bad.stderr


def test_a_successor_admits_the_workers_keys_before_it_listens(tmp_path):
    """A worker's link reconnects the moment the successor listens; a handshake refused
    then (its key not yet in the ring) was never tried again by libzmq, and the worker fell
    silent (found by CI under load). The successor's first handshake admits it."""
    from swarmpress.swarm.auth import KeyPair, KeyRing
    from swarmpress.swarm.config import build_config
    from swarmpress.swarm.failover import snapshot
    from swarmpress.swarm.framing import Message
    from swarmpress.swarm.orchestrator import Slot
    from swarmpress.swarm.state import Lease
    from swarmpress.swarm.transport import Endpoint, PeerAuth

    first = Orchestrator(build_config("tiny"), None, spawn=False, auth=True, run_dir=tmp_path)
    worker_keys = KeyPair.generate()
    first.ring.add("s0r0", worker_keys.public)
    first.slots["s0r0"] = Slot("s0r0", 0, 0, address="tcp://127.0.0.1:9")
    state = snapshot(first)
    orch_public = first.keys.public
    first.ep.close()
    lease = Lease(first.run_id, 2, "elsewhere", time.time() + 5, 1, state)
    successor = Orchestrator(build_config("tiny"), None, spawn=False, run_dir=tmp_path,
                             _lease=lease)  # fmt: skip
    worker = Endpoint("s0r0", auth=PeerAuth(worker_keys, KeyRing.of({"orch": orch_public})))
    try:
        worker.connect("orch", successor.address)
        worker.send("orch", Message("heartbeat", {}))
        got = successor.ep.recv(timeout=10)
        assert got is not None and got[0] == "s0r0"
        assert successor.ep.refused == 0 and worker.refused_by_peer == 0
    finally:
        worker.close()
        successor.ep.close()


@pytest.mark.parametrize("ring", [None, [], "x", 0, [["s0r0", "k" * 40]], {"s0r0": 7},
                                  {"s0r0": None}, {"": "k" * 40}, {"s0r0#evil": "k" * 40},
                                  {"s0r0": "not a key"}])  # fmt: skip
def test_a_saved_key_ring_that_does_not_read_is_refused(ring):
    from swarmpress.swarm.auth import KeyRing
    from swarmpress.swarm.failover import admit_keys

    with pytest.raises(StateError, match="key ring does not read"):
        admit_keys(KeyRing(), {} if ring is None else {"ring": ring})
