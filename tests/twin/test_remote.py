"""External routers over HTTP: a reference router written from the contract runs unchanged;
every way of breaking the contract fails the task with a reason and never crashes the twin."""

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from swarmpress.twin.remote import RemotePolicy, wait_healthy
from swarmpress.twin.scenario import load_scenario
from swarmpress.twin.sim import Simulation

FIX = Path(__file__).with_name("fixtures")
SMALL = ["workload.activations_per_epoch=60", "workload.epochs=2", "swarm.miners=24"]


def _port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(argv):
    port = _port()
    proc = subprocess.Popen([sys.executable, *argv, "--port", str(port)])
    url = f"http://127.0.0.1:{port}"
    if wait_healthy(url):
        return proc, url
    proc.kill()
    raise RuntimeError(f"{argv} did not start")


@pytest.fixture
def serve():
    procs = []

    def start(script, *args):
        proc, url = _serve([str(FIX / script), *args])
        procs.append(proc)
        return url

    yield start
    for p in procs:
        p.kill()
        p.wait()


def _run(url, seed=0):
    sc = load_scenario("apex-default", SMALL)
    remote = RemotePolicy(url, sc.rules.route_call_limit_s)
    remote.check()
    return Simulation(sc, seed, remote, remote, record=True).run()


def test_reference_router_from_the_contract_runs_unchanged(serve):
    res = _run(serve("reference_router.py"))
    assert res.ok, res.reason
    assert res.completed == 120 and res.score > 0
    assert len(res.logs["routes"]) >= 120


def test_baseline_server_matches_in_process_random_shape(serve):
    proc, url = _serve(["-m", "swarmpress.twin.baseline_server"])
    try:
        assert _run(url).ok
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize(
    "mode,reason",
    [
        ("short", "hops for"),
        ("unknown", "unknown node"),
        ("wrong-layer", "layer"),
        ("slow", "longer than 0.5 s"),
        ("not-json", "not JSON"),
        ("http-500", "HTTP 500"),
        ("empty-layer", "without miners"),
        ("two-layers", "exactly one layer"),
    ],
)
def test_malformed_router_answers_fail_the_task_cleanly(serve, mode, reason):
    res = _run(serve("bad_router.py", "--mode", mode))
    assert not res.ok and res.score == 0.0
    assert reason in res.reason


def test_unreachable_router_is_a_clear_error():
    from swarmpress.twin.policies import PolicyFailure

    with pytest.raises(PolicyFailure, match="unreachable"):
        RemotePolicy(f"http://127.0.0.1:{_port()}").check()


def test_requests_follow_the_contract(serve):
    # A recording router: check the request bodies' shape against the contract.
    url = serve("reference_router.py")
    sc = load_scenario("apex-default", SMALL)
    remote = RemotePolicy(url)
    bodies = []
    post = remote._post

    def spy(path, body):
        bodies.append((path, json.loads(body)))
        return post(path, body)

    remote._post = spy
    assert Simulation(sc, 1, remote, remote).run().ok
    route = next(b for p, b in bodies if p == "/route" and b["activation_tracking_buffer"])
    assert set(route) == {"activation_id", "miner_id", "miners", "n_layers",
                          "activation_tracking_buffer"}  # fmt: skip
    info = route["miners"][0][0]
    assert set(info) == {"miner_id", "receiver_node_id", "active", "layers", "local_batch_size",
                         "peer_latencies"}  # fmt: skip
    ev = route["activation_tracking_buffer"][0]
    assert set(ev) == {"activation_id", "direction", "action", "start_time", "end_time",
                       "miner_id", "layer"}  # fmt: skip
    assert ev["direction"] in ("forward", "backward")
    assert ev["action"] in ("receive", "processing", "queuing", "notify_orchestrator")
    assert ev["start_time"].endswith("Z")
    balance = next(b for p, b in bodies if p == "/balance-orchestrator")
    assert set(balance) == {"miners", "n_layers", "activation_tracking_buffer"}
    assert len(balance["miners"]) == 24
