"""`swarm train` where users train: a consumer uplink by default, progress on stderr from
the first second (start-up phases, then steps), and Ctrl-C that writes the partial result
and leaves no worker behind. The runs are real: the CLI in its own process, its stage
workers as processes, SIGINT sent by the test once a step is done."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from swarmpress.cli.swarm import DEFAULT_LINK, Live, _config, phase_text
from swarmpress.swarm.config import CONSUMER_UPLINK, PRESETS
from swarmpress.swarm.failover import pid_gone
from swarmpress.swarm.links import parse_link
from tests.inprocess import run_cli

# Small enough for 2 cores: one block per stage, short sequences (as test_swarm_run).
SMALL = {"layers": 2, "dim": 64, "heads": 4, "ffn": 172, "seq_len": 64, "microbatch": 2}
SHAPE = ["--stages", "2", "--replicas", "1", "--microbatches", "2"]


def _toml(tmp_path: Path, extra: str = "") -> Path:
    p = tmp_path / "swarm.toml"
    p.write_text("\n".join(f"{k} = {v}" for k, v in SMALL.items()) + "\n" + extra)
    return p


# ----------------------------------------------------------------------------- default link
def test_the_default_link_is_the_consumer_uplink():
    assert DEFAULT_LINK == CONSUMER_UPLINK
    spec = parse_link(DEFAULT_LINK)
    assert (spec.bandwidth_bps, spec.latency_s) == (20e6, 0.05)


def test_train_runs_on_the_consumer_uplink_unless_told_otherwise(tmp_path):
    assert _config(None, "tiny", {}).link == DEFAULT_LINK
    assert _config(None, "tiny", {"link": "none"}).link == "none"  # --link none stays
    assert _config(None, "tiny", {"link": "1gbit:1ms"}).link == "1gbit:1ms"
    # a config file that names a link keeps it; one that does not gets the default
    assert _config(_toml(tmp_path, 'link = "100mbit:20ms"\n'), "tiny", {}).link == "100mbit:20ms"
    assert _config(_toml(tmp_path), "tiny", {}).link == DEFAULT_LINK
    # a preset that names a link keeps it, and the rest of the config is untouched
    cfg = _config(None, "uplink", {"steps": 3})
    assert cfg.link == PRESETS["uplink"]["link"] and cfg.steps == 3
    assert _config(None, "small", {}).dim == PRESETS["small"]["dim"]


def test_presets_show_the_link_train_runs_on():
    p = run_cli("swarm", "presets", "--json")
    assert p.returncode == 0, p.stderr
    rows = json.loads(p.stdout)
    assert rows["tiny"]["link"] == DEFAULT_LINK
    assert rows["uplink"]["link"] == PRESETS["uplink"]["link"]
    assert rows["uplink"]["wire_dtype"] == "bfloat16"


def test_help_names_the_default_link():
    p = run_cli("swarm", "train", "--help")
    assert p.returncode == 0
    assert DEFAULT_LINK in p.stdout
    assert "uplink" in p.stdout


# ----------------------------------------------------------------------------- progress lines
def test_every_phase_reads_as_a_line():
    assert phase_text("config", {}) == "reading the configuration"
    assert "pydoc" in phase_text("data", {"text": "pydoc", "tokenizer": "minilm"})
    assert phase_text("starting", {"want": 4, "spawned": 0, "hello": 0, "ready": 0}) == (
        "starting the orchestrator"
    )
    line = phase_text("starting", {"want": 4, "spawned": 4, "hello": 3, "ready": 1})
    assert "4/4 up" in line and "3 said hello" in line and "1/4 ready" in line
    assert "first step" in phase_text("training", {"steps": 5})
    assert "evaluating" in phase_text("evaluating", {"steps": 5})
    assert "2/9 steps" in phase_text("interrupted", {"steps_done": 2, "steps": 9})
    again = {"steps_done": 2, "steps": 9, "again": True}  # a second Ctrl-C: told, let go
    assert "still stopping the workers" in phase_text("interrupted", again)


def test_plain_progress_lines_go_to_stderr(capsys):
    live = Live(None, total=3)
    live.phase("data", {"text": "pydoc", "tokenizer": "minilm"})
    live.step(0, {"loss": 5.25, "seconds": 0.5, "live_workers": 2})
    live.phase("training", {"steps": 3})  # said nothing new once steps are shown
    live.step(2, {"loss": 4.5, "seconds": 0.25, "live_workers": 2})  # the last: always shown
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 3, lines
    assert "tokenizing the training text" in lines[0]
    assert "step 1/3" in lines[1] and "loss 5.250" in lines[1] and "0.50 s/step" in lines[1]
    assert "step 3/3" in lines[2]


# ----------------------------------------------------------------------------- real runs
def _cli(*args: str) -> subprocess.Popen:
    """`swarmpress swarm ARGS` in a process of its own (stdout and stderr piped: not a
    terminal, so progress comes as plain lines), in a session of its own so the test can
    signal its whole process group as a terminal's Ctrl-C does."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "swarmpress.cli", "swarm", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)  # fmt: skip


def _signal_at(p: subprocess.Popen, needle: str, sig: int, before=None) -> tuple[str, str]:
    """Read p's stderr up to a line holding needle, call before(), send sig to p's process
    group, and return (stdout, all of stderr) once it exits; whatever goes wrong (no such
    line, a hang past 300 s), nothing is left running."""
    seen: list[str] = []
    try:
        for line in p.stderr:
            seen.append(line)
            if needle in line:
                break
        else:
            pytest.fail(f"no line with {needle!r}: {''.join(seen)}")
        if before is not None:
            before()
        os.killpg(p.pid, sig)
        out, err = p.communicate(timeout=300)  # a hang fails here instead of hanging
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    return out, "".join(seen) + err


def _children(pid: int) -> list[int]:
    """Processes whose parent is pid (from /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            out.append(int(entry))
    return out


@pytest.mark.slow
def test_train_prints_progress_from_the_start_and_json_alone_on_stdout(tmp_path):
    p = _cli("train", str(_toml(tmp_path)), "--steps", "2", *SHAPE, "--json")
    try:
        out, err = p.communicate(timeout=600)  # a hang fails here instead of hanging
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    assert p.returncode == 0, err
    r = json.loads(out)  # stdout holds the result and nothing else
    assert r["steps"] == 2
    assert r["link"]["spec"] == DEFAULT_LINK  # no link given: the consumer uplink
    lines = err.strip().splitlines()
    assert "reading the configuration" in lines[0]
    order = ["tokenizing the training text", "starting the orchestrator", "starting workers",
             "step 1/2", "step 2/2", "evaluating"]  # fmt: skip
    at = [next(i for i, line in enumerate(lines) if want in line) for want in order]
    assert at == sorted(at), lines
    assert any("2/2 ready" in line for line in lines) or any("step 1/2" in x for x in lines)
    assert "Traceback" not in err


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_writes_the_partial_result_and_stops_every_worker(tmp_path, sig):
    """SIGINT once the first step is reported, to the command's process group as a
    terminal's Ctrl-C: the workers run in their own sessions, so it reaches the
    orchestrator only, which stops them in order. Exit 130, the steps done in --out and on
    stdout with the workers' last counters, no worker left. SIGTERM (`timeout`, `docker
    stop`) the same: it once killed the orchestrator and left the workers running."""
    out_dir = tmp_path / "out"
    p = _cli("train", str(_toml(tmp_path)), "--steps", "100000", "--link", "none", *SHAPE,
             "--json", "--out", str(out_dir))  # fmt: skip
    workers: list[int] = []

    def count_workers():
        workers.extend(_children(p.pid))
        assert len(workers) == 2, workers

    out, err = _signal_at(p, "step 1/", sig, count_workers)
    assert p.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    r = json.loads(out)
    cut = r["interrupted"]
    assert cut["steps"] == 100000 and 1 <= cut["steps_done"] < 100000
    assert r["steps"] == cut["steps_done"] == len(r["loss_curve"]) == len(r["step_seconds"])
    assert r["final_loss"] is None  # no evaluation: the run did not finish
    assert r["faults"]["exactly_once"] is None  # not judged on a cut-short run
    assert set(r["bytes_on_wire"]) >= {"activation", "gradient", "total"}
    assert r["bytes_on_wire"]["activation"] > 0  # the workers said goodbye with their counters
    saved = json.loads((out_dir / "result.json").read_text())
    assert saved["interrupted"] == cut and saved["loss_curve"] == r["loss_curve"]
    assert (out_dir / "loss.png").stat().st_size > 0
    assert not [pid for pid in workers if not pid_gone(pid)]


@pytest.mark.slow
def test_an_interrupt_while_a_worker_is_made_leaves_no_worker_behind(tmp_path, monkeypatch):
    """A SIGTERM landing after the second worker's process exists but before the
    orchestrator stored it: the orchestrator holds it until the worker is known, so the
    partial result comes back and no worker is left running (one was, before)."""
    from swarmpress.swarm import orchestrator
    from swarmpress.swarm.config import build_config
    from swarmpress.swarm.run import Interrupted, train

    real, made = subprocess.Popen, []

    class Popen(real):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            made.append(self.pid)
            if len(made) == 2:
                os.kill(os.getpid(), signal.SIGTERM)  # handled before Popen returns

    monkeypatch.setattr(orchestrator.subprocess, "Popen", Popen)
    cfg = build_config("tiny", _toml(tmp_path), steps=100, stages=2, replicas=1,
                       microbatches=2, link="none")  # fmt: skip
    with pytest.raises(Interrupted) as cut:
        train(cfg, on_phase=lambda phase, info: None)
    assert cut.value.result is not None and cut.value.result["interrupted"]["steps_done"] == 0
    assert len(made) == 2
    assert all(pid_gone(pid) for pid in made), made


@pytest.mark.slow
def test_sigterm_before_the_run_starts_is_an_interrupt_too(tmp_path):
    """SIGTERM while the text is being tokenized (before any worker): exit 130 with the
    interrupt's message, as Ctrl-C; it used to kill the command outright (-15, no word)."""
    p = _cli("train", str(_toml(tmp_path)), "--steps", "100000", "--link", "none", *SHAPE)
    _out, err = _signal_at(p, "tokenizing", signal.SIGTERM)
    assert p.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err


def test_shutdown_kills_workers_that_never_said_hello_at_once(tmp_path, monkeypatch):
    """A worker that has not said hello holds nothing and hears no `stop`: shutdown kills
    it at once instead of waiting out its timeout (a `docker stop` SIGKILLs the
    orchestrator 10 s after SIGTERM, and the workers it was still waiting for lived on)."""
    import threading

    from swarmpress.swarm import orchestrator
    from swarmpress.swarm.config import build_config
    from swarmpress.swarm.run import load_data

    real = subprocess.Popen

    def silent(cmd, **kw):  # a worker process that never says hello
        return real([sys.executable, "-c", "import time; time.sleep(3600)"], **kw)

    monkeypatch.setattr(orchestrator.subprocess, "Popen", silent)
    cfg = build_config("tiny", _toml(tmp_path), steps=1, stages=2, replicas=1, link="none")
    orch = orchestrator.Orchestrator(cfg, load_data(cfg))
    slot = orch._spawn(0, "s0r0")
    stopper = threading.Thread(target=orch.shutdown, kwargs={"timeout": 3600}, daemon=True)
    stopper.start()
    stopper.join(timeout=120)  # generous: the fix returns at once, the old code took 3600 s
    if stopper.is_alive():
        slot.proc.kill()
        pytest.fail("shutdown waited for a worker that never said hello")
    assert slot.proc.returncode == -signal.SIGKILL
