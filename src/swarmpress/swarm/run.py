"""Run the swarm from a configuration: one training run, or the same run once per codec.

`train` builds the token data, starts the orchestrator (which spawns the stage workers, or
waits for remote ones to dial in) and returns the run's result (report.RunResult) in its
JSON form, what the CLI prints; `compare` repeats it with the same seed and data for each
codec, so only the codec differs between rows.

Progress: `on_phase(phase, info)` hears the run from its first moment (`data`: the text is
being tokenized; `starting`: workers spawned, said hello, ready, polled from the
orchestrator while it waits for them; `training`; `evaluating`; `interrupted`), `on_step`
each optimizer step. Ctrl-C (KeyboardInterrupt) stops the workers and raises `Interrupted`,
which carries the partial result: the steps done so far, their loss curve and the bytes
the workers had reported.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from swarmpress.swarm.config import ConfigError, SwarmConfig, build_config
from swarmpress.swarm.orchestrator import Orchestrator, SwarmError
from swarmpress.swarm.role_codecs import codec_spec
from swarmpress.swarm.text import DataError, TokenData

StepFn = Callable[[int, dict], None]
PhaseFn = Callable[[str, dict], None]
PHASES = ("data", "starting", "training", "evaluating", "interrupted")


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run, after the workers were stopped. `result` is the partial result
    (RunResult JSON plus `interrupted`: phase, steps done, steps planned), or None when the
    interrupt came before the orchestrator existed (while the text was tokenized)."""

    def __init__(self, result: dict | None) -> None:
        super().__init__("interrupted")
        self.result = result
        self.results: list[dict] = [] if result is None else [result]  # compare: every run


def load_data(cfg: SwarmConfig) -> TokenData:
    """The run's tokenized text; DataError when the text or tokenizer cannot be used."""
    data = TokenData.build(cfg.text, cfg.tokenizer)
    need = cfg.seq_len + 1
    if data.region("eval").size <= need:
        raise DataError(
            f"training text {data.label} is too short for seq_len {cfg.seq_len}: "
            f"{data.ids.size} tokens in all, the held-out tenth needs more than {need}"
        )
    return data


def start_state(orch: Orchestrator) -> dict[str, int]:
    """How far the workers are: wanted, spawned (or dialled in), said hello, ready."""
    slots = list(orch.slots.values())  # read from another thread: a copy
    return {
        "want": orch.cfg.stages * orch.cfg.replicas,
        "spawned": len(slots),
        "hello": sum(s.said_hello for s in slots),
        "ready": sum(s.ready for s in slots),
    }


class _StartWatch(threading.Thread):
    """Polls the orchestrator while it waits for its workers (Orchestrator.start_workers
    blocks and reports nothing) and calls on_phase("starting", start_state) on each change,
    then on_phase("training") once training has begun."""

    def __init__(self, orch: Orchestrator, on_phase: PhaseFn, every: float = 0.2) -> None:
        super().__init__(name="swarm-start-watch", daemon=True)
        self.orch, self.on_phase, self.every = orch, on_phase, every
        self.done = threading.Event()
        self.first = start_state(orch)
        on_phase("starting", self.first)

    def run(self) -> None:
        last = self.first
        while not self.done.is_set():
            if self.orch.training:
                self.on_phase("training", {"steps": self.orch.cfg.steps})
                return
            try:
                state = start_state(self.orch)
            except RuntimeError:  # the slots changed while being read: next time
                state = last
            if state != last:
                self.on_phase("starting", state)
                last = state
            self.done.wait(self.every)

    def stop(self) -> None:
        self.done.set()
        if self is not threading.current_thread() and self.is_alive():
            self.join(timeout=2)


@contextlib.contextmanager
def _sigint_notice(on_phase: PhaseFn | None, orch: Orchestrator) -> Iterator[None]:
    """Tell on_phase at once when Ctrl-C arrives (stopping the workers takes a moment),
    then raise KeyboardInterrupt as Python would; a Ctrl-C after that is told and let go,
    so it cannot cut the workers' shutdown (bounded: Orchestrator.shutdown waits 10 s,
    then kills) or the partial result short. SIGTERM (what `timeout`, `docker stop` and
    systemd send) is taken as Ctrl-C: killed outright, the orchestrator would leave its
    workers waiting for a successor. Only from the main thread."""
    if on_phase is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    seen = []

    def handler(signum: int, frame: Any) -> None:
        info = {"steps_done": len(orch.steps), "steps": orch.cfg.steps, "again": bool(seen)}
        # Told from a thread of its own: the main thread may hold the lock of the very
        # output the notice goes to (it is unwinding, and lets go of it in a moment).
        threading.Thread(target=on_phase, args=("interrupted", info), daemon=True).start()
        if not seen:
            seen.append(signum)
            if orch.spawning:  # raised when the worker being made is stored
                orch.interrupt_held = True
                return
            raise KeyboardInterrupt

    try:
        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main interpreter's main thread after all
        yield
        return
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _phase_of(orch: Orchestrator) -> str:
    if not orch.training:
        return "starting"
    return "evaluating" if len(orch.steps) >= orch.cfg.steps else "training"


def partial_result(orch: Orchestrator, phase: str) -> dict:
    """The result of an interrupted run: the steps done, their losses and times, the bytes
    the workers had reported; no eval loss. exactly_once is not judged (null): the workers'
    reports of the last step may not have arrived."""
    res = orch.result(None, sum(s.seconds for s in orch.steps)).to_json()
    res["faults"]["exactly_once"] = None
    res["interrupted"] = {"phase": phase, "steps_done": len(orch.steps),
                          "steps": orch.cfg.steps}  # fmt: skip
    return res


def _reap(orch: Orchestrator) -> None:
    """Kill worker processes a shutdown cut short left running (no orphans)."""
    for slot in list(orch.slots.values()):
        proc = slot.proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)


def train(
    cfg: SwarmConfig,
    data: TokenData | None = None,
    on_step: StepFn | None = None,
    listen: str | None = None,
    remote_workers: bool = False,
    run_dir: str | Path | None = None,
    keys: str | Path | None = None,
    on_phase: PhaseFn | None = None,
    state: str | None = None,
    insecure: bool = False,
    lease_s: float = 5.0,
) -> dict:
    """One training run; report.RunResult.to_json() of its result.

    listen: "HOST:PORT" for the orchestrator (default: loopback, a free port);
    remote_workers: spawn nothing and wait for `swarmpress swarm worker` processes;
    keys: the folder `swarmpress swarm keys` made (CurveZMQ for dial-in workers);
    on_phase: start-up and run phases (module docstring). Ctrl-C raises Interrupted;
    state: where the orchestrator's state goes at every step (default: SQLite in the run
    folder; a PostgreSQL URL for a standby elsewhere); insecure: let keyless workers dial
    in on an address other hosts reach; lease_s: how long a successor waits (resume).
    """
    host, port = "127.0.0.1", 0
    if listen:
        host, _, p = listen.rpartition(":")
        if not host or not p.isdigit():
            raise ConfigError(f"--listen takes HOST:PORT, not {listen!r}")
        port = int(p)
    try:
        if data is None:
            if on_phase is not None:
                on_phase("data", {"text": cfg.text, "tokenizer": cfg.tokenizer})
            data = load_data(cfg)
        steps_fn = on_step
        if on_phase is not None:

            def steps_fn(step: int, info: dict) -> None:
                if on_step is not None:
                    on_step(step, info)
                if step == cfg.steps - 1:
                    on_phase("evaluating", {"steps": cfg.steps})

        orch = Orchestrator(
            cfg, data, host=host, port=port, spawn=not remote_workers, on_step=steps_fn,
            run_dir=run_dir, keys_dir=keys, state_url=state, insecure=insecure,
            lease_s=lease_s,
        )  # fmt: skip
        if on_phase is not None:
            on_phase("run folder", {"run_dir": str(orch.run_dir)})
    except KeyboardInterrupt:
        raise Interrupted(None) from None
    return _drive(orch, on_phase)


def resume(
    run_dir: str | Path,
    standby: bool = False,
    on_step: StepFn | None = None,
    on_phase: PhaseFn | None = None,
    listen: str | None = None,
    lease_s: float = 5.0,
) -> dict:
    """Take over a run whose orchestrator is gone (swarm/failover.py) and finish it; its
    RunResult JSON. standby: wait for the holder's lease to lapse, however long."""
    from swarmpress.swarm.failover import read_run_file
    from swarmpress.swarm.state import StateStore

    info = read_run_file(Path(run_dir))
    store = StateStore(info["state"])
    try:
        cfg = SwarmConfig(**store.load(info["run_id"]).state["config"])
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{run_dir}: the run's saved config does not load: {exc}") from None
    finally:
        store.close()
    try:
        if on_phase is not None:
            on_phase("data", {"text": cfg.text, "tokenizer": cfg.tokenizer})
        data = load_data(cfg)
        if on_phase is not None:
            on_phase("taking over", {"run_dir": str(run_dir), "standby": standby,
                                     "steps": cfg.steps})  # fmt: skip
        said = [0.0]

        def wait(why: str) -> None:  # a line now and then, not one per poll
            if on_phase is not None and time.monotonic() - said[0] > 10:
                said[0] = time.monotonic()
                on_phase("waiting", {"why": why})

        orch = Orchestrator.resume(run_dir, data, on_step=on_step, standby=standby,
                                   on_wait=wait, listen=listen, lease_s=lease_s)  # fmt: skip
    except KeyboardInterrupt:
        raise Interrupted(None) from None
    return _drive(orch, on_phase)


def _drive(orch: Orchestrator, on_phase: PhaseFn | None) -> dict:
    """Run an orchestrator to its result; Ctrl-C: stop it, raise Interrupted (partial)."""
    watch = None
    if on_phase is not None:
        watch = _StartWatch(orch, on_phase)
        watch.start()
    try:
        with _sigint_notice(on_phase, orch):
            try:
                return orch.run().to_json()
            except KeyboardInterrupt:
                # orch.run() stopped the workers on its way out; make sure (a Ctrl-C
                # without the notice handler may have cut that short), then report.
                _reap(orch)
                result = partial_result(orch, _phase_of(orch))
                if orch.own_dir:  # its keys and logs; an interrupted run is no failure
                    shutil.rmtree(orch.run_dir, ignore_errors=True)
                raise Interrupted(result) from None
    finally:
        if watch is not None:
            watch.stop()


def with_codec(cfg: SwarmConfig, codec: str) -> SwarmConfig:
    """cfg with `codec` on activations and gradients (the weight-delta codec stays)."""
    return cfg.model_copy(update={"codec_activation": codec, "codec_gradient": codec})


def compare(
    cfg: SwarmConfig,
    codecs: list[str],
    on_step: Callable[[str, int, dict], None] | None = None,
    on_phase: Callable[[str, str, dict], None] | None = None,
) -> list[dict]:
    """The same run (seed, data, routing policy) once per codec, in order. Ctrl-C raises
    Interrupted with `results`: the finished runs and the partial one."""
    if not codecs:
        raise ConfigError("compare needs at least one codec")
    runs = [build_config(None, **with_codec(cfg, c).model_dump()) for c in codecs]  # validated
    if on_phase is not None:
        on_phase(codecs[0], "data", {"text": cfg.text, "tokenizer": cfg.tokenizer})
    data = load_data(cfg)
    results = []
    for codec, run_cfg in zip(codecs, runs, strict=True):
        step_fn = None if on_step is None else (lambda s, info, c=codec: on_step(c, s, info))
        phase_fn = None if on_phase is None else (lambda p, info, c=codec: on_phase(c, p, info))
        label = {"label": codec, "codec_spec": codec_spec(codec)}
        try:
            res = train(run_cfg, data, on_step=step_fn, on_phase=phase_fn)
        except Interrupted as exc:  # the finished runs, then the interrupted one
            exc.results = results + ([exc.result | label] if exc.result is not None else [])
            raise
        results.append(res | label)
    return results


__all__ = [
    "ConfigError",
    "DataError",
    "Interrupted",
    "SwarmError",
    "compare",
    "load_data",
    "partial_result",
    "train",
]
