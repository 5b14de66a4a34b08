"""Real multi-process swarm runs: stage workers as processes, ZeroMQ on loopback, codecs on
every tensor, a worker killed mid-run, a peer sending garbage, workers joining by address."""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys

import pytest
import zmq

from swarmpress.swarm.config import build_config
from swarmpress.swarm.framing import VERSION, Message
from swarmpress.swarm.orchestrator import Orchestrator, Slot
from swarmpress.swarm.report import RunResult
from swarmpress.swarm.run import compare, load_data, train
from tests.inprocess import run_cli

pytestmark = pytest.mark.slow

# Small enough for 2 cores: one block per stage, short sequences.
SMALL = {"layers": 2, "dim": 64, "heads": 4, "ffn": 172, "seq_len": 64, "microbatch": 2}


def _garbage(address: str) -> None:
    """A rogue peer: junk frames, a foreign magic, a newer protocol version, a forged
    forward message with a bad tensor frame."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.IDENTITY, b"rogue")
    sock.setsockopt(zmq.LINGER, 1000)
    sock.connect(address)
    sock.send_multipart([b"\x00\xff" * 10])
    sock.send_multipart([b"GET / HTTP/1.1", b"\r\n"])
    sock.send_multipart([b"SPW" + bytes([VERSION + 1]), b'{"kind":"fwd"}'])
    forged = Message("fwd", {"key": [0, 0, 0], "path": ["x", "y"]}, [b"junk", b"junk"])
    sock.send_multipart(forged.encode())
    sock.send_multipart([b"SPW" + bytes([VERSION]), b"{not json"])
    # control messages only the orchestrator may send: ignored from anyone else
    sock.send_multipart(Message("stop", {}).encode())
    sock.send_multipart(Message("step", {"step": 2, "commit": []}).encode())
    ctx.destroy(linger=1000)


@pytest.fixture(scope="module")
def tiny_data():
    """The tokenized text of the tiny preset (read-only; what load_data gives every run)."""
    return load_data(build_config("tiny", **SMALL))


@pytest.mark.parametrize("auth", [True, False], ids=["curve", "open"])
def test_killed_worker_and_garbage_peer_cost_no_sample(auth):
    """With CurveZMQ (the default for spawned workers) the garbage peer never gets past
    the handshake; without it the garbage is read, counted and survived."""
    cfg = build_config("tiny", steps=14, kill_every=5, merge_every=4, **SMALL)
    data = load_data(cfg)
    attacked: list[str] = []

    def on_step(step: int, info: dict) -> None:
        if step == 1:
            for slot in list(orch.slots.values()):
                if slot.alive and slot.address:
                    _garbage(slot.address)
                    attacked.append(slot.name)

    orch = Orchestrator(cfg, data, on_step=on_step, auth=auth)
    res = orch.run()
    assert isinstance(res, RunResult)
    assert res.steps == 14
    assert math.isfinite(res.final_loss)
    f = res.faults
    assert f["killed"] >= 2
    assert f["replacements"] >= 2
    assert res.exactly_once, f["miscounted_steps"]
    # every stage applied every micro-batch of every step exactly once, across its replicas
    for stage in range(cfg.stages):
        applied = sum(w.samples_applied for w in res.workers if w.stage == stage)
        assert applied == cfg.steps * cfg.microbatches
    # the garbage was seen and survived: the attacked workers that were not killed finished
    assert len(attacked) == 4
    survivors = [w for w in res.workers if w.name in attacked and w.alive]
    assert survivors
    if auth:  # refused at the handshake: nothing to read, nothing counted
        assert all(w.bad_inputs == 0 for w in survivors)
    else:
        assert all(w.bad_inputs >= 6 for w in survivors)
    # an attacked worker that is gone was SIGKILLed by the fault drill, nothing else
    for w in res.workers:
        if w.name in attacked and not w.alive:
            assert f"{w.name}: killed by the fault drill (SIGKILL)" in f["reasons"]
    assert res.loss_curve[-1] < res.loss_curve[0]
    # the JSON form is what `swarm train --json` prints
    out = json.loads(json.dumps(res.to_json()))
    assert out["steps"] == 14 and out["faults"]["exactly_once"]
    assert out["workers"][0].keys() == {"name", "stage", "alive", "ready", "caught_up_from",
                                        "samples_applied", "codecs", "bad_inputs"}  # fmt: skip


def test_workers_join_by_address():
    """`swarm train --listen --remote-workers` plus `swarm worker --orch` processes: the
    path a run across machines takes, here on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = build_config("tiny", steps=3, replicas=1, codec_activation="none",
                       codec_gradient="none", **SMALL)  # fmt: skip
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "swarmpress.cli",
                "swarm",
                "worker",
                "--orch",
                f"tcp://127.0.0.1:{port}",
                "--stage",
                str(stage),
                "--name",
                f"remote{stage}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for stage in range(cfg.stages)
    ]
    try:
        res = train(cfg, listen=f"127.0.0.1:{port}", remote_workers=True)
    finally:
        outs = []
        for w in workers:
            try:
                outs.append(w.communicate(timeout=30)[0])
            except subprocess.TimeoutExpired:
                w.kill()
                outs.append(w.communicate()[0])
    assert res["steps"] == 3
    assert sorted(w["name"] for w in res["workers"]) == ["remote0", "remote1"]
    assert res["bytes_on_wire"]["activation"] > 0
    assert [w.returncode for w in workers] == [0, 0], outs


def _cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """`swarmpress swarm ARGS` run in this process (tests.inprocess.run_cli: the console
    script's exit code, stdout and stderr, no interpreter start-up per call); the stage
    workers it starts are real processes."""
    return run_cli("swarm", *args, timeout=timeout)


def _small_flags() -> list[str]:
    return ["--stages", "2", "--replicas", "1", "--microbatches", "2"]


def test_cli_train_json(tmp_path):
    cfg = tmp_path / "swarm.toml"
    cfg.write_text("[swarm]\n" + "\n".join(f"{k} = {v}" for k, v in SMALL.items()) + "\n")
    p = _cli("train", str(cfg), "--steps", "3", "--codec", "lossy", "--link", "1gbit:1ms",
             *_small_flags(), "--json", "--out", str(tmp_path / "out"))  # fmt: skip
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["steps"] == 3
    assert math.isfinite(r["final_loss"]) and r["seconds_per_step"] > 0
    for role in ("activation", "gradient", "weight-delta"):
        assert role in r["bytes_on_wire"]
    # lossy at similarity 0.99 sends well under the raw float32 bytes
    assert r["wire_ratio"]["activation"] < 0.5
    assert r["link"]["bandwidth_bps"] == 1e9
    assert (tmp_path / "out" / "loss.png").stat().st_size > 0
    assert json.loads((tmp_path / "out" / "result.json").read_text())["steps"] == 3


def test_cli_compare_json(tmp_path):
    cfg = tmp_path / "swarm.toml"
    cfg.write_text("\n".join(f"{k} = {v}" for k, v in SMALL.items()) + "\n")
    p = _cli("compare", str(cfg), "--steps", "2", "--codecs", "none,lossy", *_small_flags(),
             "--json")  # fmt: skip
    assert p.returncode == 0, p.stderr
    rows = json.loads(p.stdout)
    assert [r["label"] for r in rows] == ["none", "lossy"]
    none, lossy = rows
    assert none["config"]["seed"] == lossy["config"]["seed"]
    assert lossy["bytes_on_wire"]["activation"] < none["bytes_on_wire"]["activation"] / 2
    assert none["wire_ratio"]["activation"] == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["train", "--stages", "9"], "stages"),
        (["train", "--codec", "nosuch"], "nosuch"),
        (["train", "--link", "fast"], "fast"),
        (["train", "--router", "nosuch"], "router"),
        (["train", "/nonexistent/swarm.toml"], "does not exist"),
        (["compare", "--codecs", ","], "empty"),
        (["train", "--remote-workers"], "--listen"),
    ],
)
def test_cli_bad_input_exits_2(args, needle):
    p = _cli(*args, timeout=60)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert needle in p.stderr
    assert "Traceback" not in p.stderr


def test_worker_with_unreachable_orchestrator_exits_cleanly():
    # a process of its own: the worker sets process-wide state (torch threads, GIL switch)
    p = subprocess.run(
        [sys.executable, "-m", "swarmpress.cli", "swarm", "worker", "--orch",
         "tcp://127.0.0.1:1", "--stage", "0", "--name", "lonely", "--timeout", "2"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    # typer maps the worker's exit 2 through; the reason is one line, not a traceback
    assert p.returncode == 2
    assert "did not answer" in p.stderr
    assert "Traceback" not in p.stderr


def test_same_seed_same_run_bit_for_bit():
    """Round-robin routing fixes which replica sees which micro-batch; gradients are applied
    in sorted order and merges average in name order: two runs give the same loss curve."""
    cfg = build_config("tiny", steps=3, router="round-robin", **SMALL)
    a, b = compare(cfg, ["none", "none"])
    assert a["loss_curve"] == b["loss_curve"]
    assert a["final_loss"] == b["final_loss"]


def test_a_worker_of_another_version_is_named_in_the_error():
    """The orchestrator cannot answer a peer it cannot read, but says why nobody joined."""
    from swarmpress.swarm.orchestrator import SwarmError

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = build_config("tiny", steps=1, replicas=1, start_timeout_s=2, **SMALL)
    orch = Orchestrator(cfg, load_data(cfg), port=port, spawn=False)
    ctx = zmq.Context()
    try:
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.IDENTITY, b"future-worker")
        sock.connect(f"tcp://127.0.0.1:{port}")
        sock.send_multipart([b"SPW" + bytes([VERSION + 1]), b'{"kind":"hello","stage":0}'])
        with pytest.raises(SwarmError, match=r"2 of 2 workers not ready.*protocol v"):
            orch.start_workers()
    finally:
        ctx.destroy(linger=0)
        orch.shutdown()


@pytest.mark.parametrize(
    "kind, head",
    [
        ("hello", {"stage": 0, "address": "foo"}),
        ("hello", {"stage": 0, "address": None}),
        ("hello", {"stage": 9, "address": "tcp://127.0.0.1:9"}),
        ("ev", {"key": "ab", "dur": 0.1, "dir": 0}),
        ("done", {"key": [0, [1], 0]}),
        ("loss", {"key": 5, "loss": 1.0}),
        ("loss", {"key": [0, 0, 0], "loss": "x"}),
        ("failed", {"key": {"a": 1}}),
        ("stepped", {}),
        ("stepped", {"step": "3", "stats": {}}),
        ("bye", {"stats": [1, 2]}),
        ("hb", {"progress_age": "x"}),
        ("ready", {"step": [1]}),
    ],
)
def test_orchestrator_survives_malformed_messages(kind, head, tiny_data):
    """Fields of the wrong type from a known worker or a stranger: recorded, never raised."""
    cfg = build_config("tiny", steps=1, replicas=1, **SMALL)
    orch = Orchestrator(cfg, tiny_data, spawn=False)
    try:
        known = Slot("w", 0, 0, address="tcp://127.0.0.1:9", said_hello=True)
        orch.slots["w"] = known
        orch._handle("w", Message(kind, head))
        orch._handle("stranger", Message(kind, head))
        orch._check_health()
        assert known.alive
    finally:
        orch.shutdown()


def test_trains_on_a_data_pack(tmp_path):
    """The data layer feeds the trainer: collect the embedded text, pack it, train on it."""
    db, pack = str(tmp_path / "d.db"), tmp_path / "pack"
    assert _cli_data("collect", "--store", db).returncode == 0
    assert _cli_data("pack", "--out", str(pack), "--seq-len", "65", "--store", db).returncode == 0
    cfg = tmp_path / "swarm.toml"
    cfg.write_text("\n".join(f"{k} = {v}" for k, v in SMALL.items()) + "\n")
    p = _cli("train", str(cfg), "--text", str(pack), "--steps", "2", *_small_flags(), "--json")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["data"]["text"] == f"pack {pack}" and math.isfinite(r["final_loss"])


def _cli_data(*args: str) -> subprocess.CompletedProcess:
    return run_cli("data", *args, timeout=120)


def _forge_control(address: str, server_public: bytes | None) -> None:
    """Control messages only the orchestrator may send, claimed as "orch": once from a
    socket with no key, once with a CURVE key the run does not hold."""
    from swarmpress.swarm.auth import KeyPair, dial_curve

    ctx = zmq.Context()
    for keyed in (False, True):
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.IDENTITY, b"orch")
        sock.setsockopt(zmq.LINGER, 1000)
        if keyed and server_public is not None:
            dial_curve(sock, KeyPair.generate(), server_public)
        sock.connect(address)
        for kind, head in (
            ("stop", {}),
            ("crash", {"reason": "forged"}),
            ("stepped", {"step": 9}),
            ("step", {"step": 2, "commit": []}),
        ):
            sock.send_multipart(Message(kind, head).encode())  # fmt: skip
    ctx.destroy(linger=1000)


def test_forged_control_from_strangers_changes_nothing():
    """Forged stop / crash / stepped / step, claimed as the orchestrator, from a socket with
    no key and from one with a wrong key, to every worker and to the orchestrator: refused
    at the handshake; the run finishes exactly once with every worker alive."""
    cfg = build_config("tiny", steps=6, merge_every=3, **SMALL)
    data = load_data(cfg)
    sent: list[str] = []

    def on_step(step: int, info: dict) -> None:
        if step == 1:
            for slot in list(orch.slots.values()):
                if slot.alive and slot.address:
                    _forge_control(slot.address, orch.ring.public(slot.name))
                    sent.append(slot.name)
            _forge_control(orch.address, orch.keys.public)

    orch = Orchestrator(cfg, data, on_step=on_step)
    res = orch.run()
    assert len(sent) == 4
    assert res.steps == 6 and res.exactly_once
    assert all(w.alive for w in res.workers) and res.faults["killed"] == 0
    assert orch.ep.refused >= 1  # the wrong key, at the orchestrator's own socket
    assert all(w.bad_inputs == 0 for w in res.workers)


def test_dial_in_workers_present_their_keys_and_strangers_stay_out(tmp_path):
    """`swarm keys`, `swarm train --listen --remote-workers --keys DIR` and
    `swarm worker --key FILE`: the keyed workers run; one without a key never joins."""
    from swarmpress.swarm.auth import make_run_keys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = build_config("tiny", steps=3, replicas=1, codec_activation="none",
                       codec_gradient="none", **SMALL)  # fmt: skip
    keys = make_run_keys(tmp_path / "keys", cfg.stages, 1)
    assert oct(keys["s0r0"].stat().st_mode & 0o777) == "0o600"
    orch_addr = f"tcp://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "swarmpress.cli", "swarm", "worker", "--orch", orch_addr]
    workers = [
        subprocess.Popen([*cmd, "--key", str(keys[f"s{s}r0"])], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT)
        for s in range(cfg.stages)
    ]  # fmt: skip
    stranger = subprocess.Popen([*cmd, "--stage", "0", "--name", "intruder", "--timeout", "8"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        res = train(cfg, listen=f"127.0.0.1:{port}", remote_workers=True, keys=keys["orch"].parent)
    finally:
        for w in [*workers, stranger]:
            try:
                w.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                w.kill()
                w.communicate()
    assert res["steps"] == 3 and res["faults"]["exactly_once"]
    assert sorted(w["name"] for w in res["workers"]) == [f"s{s}r0" for s in range(cfg.stages)]
    assert stranger.returncode == 2  # its hello was never answered
