"""`swarmpress swarm ...`: real pipeline-parallel training over compressed, emulated links
(train, compare), twin calibration from a real run (calibrate), and a stage worker that
joins a run on another machine (worker)."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from swarmpress.cli.common import EXIT_FAILED, console, err_console, fail, guard
from swarmpress.cli.options import JsonOpt, flags, grouped, opt
from swarmpress.cli.output import Steps, emit, progress, table

# What `swarm train`, `compare` and `calibrate` run on when neither the preset, the TOML
# file nor --link names a link: a consumer uplink (config.CONSUMER_UPLINK, kept in step).
DEFAULT_LINK = "20mbit:50ms"
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C

swarm_app = typer.Typer(
    help="Pipeline-parallel training across processes over compressed, emulated links.",
    no_args_is_help=True,
)

ConfigArg = Annotated[
    Path | None,
    typer.Argument(help="TOML file with swarm settings (any field of `swarm presets`; a "
                   "\\[swarm] table or top-level keys). Flags override it.", show_default=False),
]  # fmt: skip
PresetOpt = opt(str, "--preset", "Embedded starting point: tiny (2 stages x 2 replicas, trains "
                "in about a minute on 2 cores), small, or uplink (a consumer uplink, 20 Mbit/s "
                "and 50 ms, bfloat16 on the wire, 3 stages, a lossy codec that pays there; "
                "`swarm presets` shows every field).")  # fmt: skip


def _config(config: Path | None, preset: str, run: dict[str, Any], **codecs: str | None):
    """The run's SwarmConfig: the preset, then the TOML file, then the flags given; a run
    whose link none of them names runs on DEFAULT_LINK, a consumer uplink."""
    from swarmpress.swarm.config import build_config

    given = {k: v for k, v in codecs.items() if v}
    with guard("bad swarm config"):
        cfg = build_config(preset, config, **run, **given)
        if "link" not in cfg.model_fields_set:
            cfg = build_config(preset, config, **run, **given, link=DEFAULT_LINK)
    return cfg


class Live:
    """A run's progress on stderr from its first second: start-up phases (tokenizing the
    text, workers spawned, said hello, ready), then every step (loss, s/step, workers).
    On a terminal one live line per key (the progress helper); anywhere else (a pipe, a
    log, CI) plain lines with the seconds since the command started, at most one a second
    per key for steps, every phase change at once. stdout stays clean for --json."""

    def __init__(self, steps: Steps | None, total: int | None = None) -> None:
        self.steps, self.total = steps, total
        self.t0 = time.monotonic()
        self.lock = threading.RLock()  # phases come from other threads too
        self.last_line: dict[str, float] = {}
        self.stepped: set[str] = set()

    def show(self, text: str, key: str = "", completed: int | None = None,
             every: float = 0.0) -> None:  # fmt: skip
        with self.lock:
            if self.steps is not None:
                fields: dict[str, Any] = {} if self.total is None else {"total": self.total}
                if completed is not None:
                    fields["completed"] = completed
                self.steps.update(text, key=key, **fields)
                return
            now = time.monotonic()
            if every and now - self.last_line.get(key, -1e9) < every:
                return
            self.last_line[key] = now
            lead = f"[{now - self.t0:6.1f} s] " + (f"{key}: " if key else "")
            err_console.print(lead + text, markup=False, highlight=False, soft_wrap=True)

    def phase(self, phase: str, info: dict, key: str = "") -> None:
        if self.total is None and isinstance(info.get("steps"), int):
            self.total = info["steps"]  # a run taken over: its length comes from its state
        if phase == "training" and key in self.stepped:
            return  # the steps say more
        self.show(phase_text(phase, info), key)

    def step(self, step: int, info: dict, key: str = "") -> None:
        self.stepped.add(key)
        loss = info.get("loss")
        text = f"step {step + 1}/{self.total}"
        text += f"  loss {loss:.3f}" if loss is not None else ""
        text += f"  {info['seconds']:.2f} s/step  {info['live_workers']} workers"
        last = self.total is not None and step + 1 >= self.total
        self.show(text, key, completed=step + 1, every=0 if step == 0 or last else 1.0)


def phase_text(phase: str, info: dict) -> str:
    """One line for a run's phase (swarm.run: data, starting, training, evaluating,
    interrupted)."""
    if phase == "config":
        return "reading the configuration"
    if phase == "data":
        return f"tokenizing the training text ({info['text']}, tokenizer {info['tokenizer']})"
    if phase == "starting":
        if not info.get("spawned"):
            return "starting the orchestrator"
        return (f"starting workers: {info['spawned']}/{info['want']} up, {info['hello']} said "
                f"hello, {info['ready']}/{info['want']} ready")  # fmt: skip
    if phase == "training":
        return "training: all workers ready, first step under way"
    if phase == "evaluating":
        return "evaluating the held-out loss, then stopping the workers"
    if phase == "run folder":
        return f"run folder {info['run_dir']} (if this process dies: --resume it)"
    if phase == "taking over":
        how = "standing by for" if info.get("standby") else "taking over"
        return f"{how} the run in {info['run_dir']}"
    if phase == "waiting":
        return f"waiting: {info['why']}"
    if phase == "interrupted":
        if info.get("again"):
            return "still stopping the workers (at most about 15 s), then the partial result"
        return (f"interrupted after {info['steps_done']}/{info['steps']} steps: stopping the "
                "workers, then writing the partial result")  # fmt: skip
    return phase


@contextlib.contextmanager
def live_progress() -> Iterator[Live]:
    """Live on the progress helper when stderr is a terminal, plain lines otherwise."""
    if err_console.is_terminal:
        with progress() as steps:
            yield Live(steps)
    else:
        yield Live(None)


def _mb(n: float) -> str:
    return f"{n / 1e6:.2f}"


def _row(r: dict) -> list[str]:
    b = r["bytes_on_wire"]
    raw = r["raw_bytes"]
    ratio = (b["activation"] + b["gradient"]) / max(1, raw["activation"] + raw["gradient"])
    f = r["faults"]
    return [
        r.get("label", r["codec"]["activation"]),
        "-" if r["final_loss"] is None else f"{r['final_loss']:.4f}",
        str(r["steps"]),
        "-" if r["seconds_per_step"] is None else f"{r['seconds_per_step']:.3f}",
        _mb(b["activation"]),
        _mb(b["gradient"]),
        _mb(b["weight-delta"]),
        f"{ratio:.3f}",
        f"{f['killed']}/{f['replayed']}/{_once(f['exactly_once'])}",
    ]


def _once(ok: bool | None) -> str:
    return "-" if ok is None else "yes" if ok else "NO"


COLUMNS = ("codec", "eval loss", "steps", "s/step", "act MB", "grad MB", "delta MB",
           "wire/raw", "killed/replayed/exactly-once")  # fmt: skip


def _finish(results: list[dict], as_json: bool, single: bool, out: Path | None) -> None:
    """Write --out, print the table (or JSON); exit 130 after Ctrl-C (the result is then
    partial: `interrupted` says how far it got), 1 if samples were lost."""
    shown = results[0] if single else results
    if out is not None:
        from swarmpress.swarm.report import plot

        out.mkdir(parents=True, exist_ok=True)
        (out / "result.json").write_text(json.dumps(shown, indent=2))
        plot(results, out)
    r0 = results[0]
    title = (f"swarm: {r0['config']['stages']} stages x {r0['config']['replicas']} replicas, "
             f"link {r0['link']['spec']}, data {r0['data']['text']}")  # fmt: skip
    emit(shown, as_json, lambda: table(COLUMNS, map(_row, results), title=title,
                                       right=COLUMNS[1:]))  # fmt: skip
    if out is not None and not as_json:
        console.print(f"result.json, loss.png and time.png in {out}")
    cut = next((r["interrupted"] for r in results if "interrupted" in r), None)
    if cut is not None:
        where = f"; partial result in {out / 'result.json'}" if out is not None else ""
        err_console.print(f"interrupted during {cut['phase']} after {cut['steps_done']} of "
                          f"{cut['steps']} steps{where}", highlight=False)  # fmt: skip
        raise typer.Exit(EXIT_INTERRUPTED)
    bad = [r.get("label", "run") for r in results if r["faults"]["exactly_once"] is False]
    if bad:
        err_console.print(f"[bold red]samples lost or counted twice[/] in: {', '.join(bad)}")
        raise typer.Exit(EXIT_FAILED)


OutOpt = opt(Path | None, "--out", "Write result.json, loss.png and time.png here.")

# The settings of a run a flag may override (any SwarmConfig field is also settable in the
# TOML file) and the codec of each role: groups the commands get as a dict of the flags given.
RUN_FLAGS = flags(
    steps=(int, "--steps", "Optimizer steps."),
    link=(str, "--link", "Emulated link between workers: BANDWIDTH[:LATENCY[:JITTER]], "
          "e.g. 100mbit:50ms or 10gbit:1ms:0.2ms; `none` for no shaping. Default: the "
          f"preset's or config file's link, else a consumer uplink, {DEFAULT_LINK} (20 Mbit/s "
          "each way per worker, 50 ms one way)."),
    stages=(int, "--stages", "Pipeline stages."),
    replicas=(int, "--replicas", "Workers per stage."),
    microbatch=(int, "--microbatch", "Sequences per micro-batch."),
    microbatches=(int, "--microbatches", "Micro-batches per step."),
    bottleneck=(int, "--bottleneck", "Learned bottleneck factor at stage boundaries "
                "(1: none; k: activations are dim/k wide)."),
    wire_dtype=(str, "--wire-dtype", "float32, bfloat16 or float16: the dtype tensors are "
                "cast to before their codec."),
    router=(str, "--router", "Twin routing policy that picks each micro-batch's replicas "
            "(see `twin policies`)."),
    kill_every=(int, "--kill-every", "SIGKILL one replica every N steps (fault drill; "
                "0: never)."),
    merge_every=(int, "--merge-every", "DiLoCo outer step every H steps."),
    seed=(int, "--seed", "Seed of data order and init."),
    text=(str, "--text", "Training text: a file, a directory of .txt/.jsonl, or `pydoc` "
          "(the standard library's pydoc_data.topics)."),
)  # fmt: skip
CODEC_FLAGS = flags(
    codec=(str, "--codec", "Codec for activations and gradients: none, lossy, lossless, or "
           "any spec (`swarmpress codecs`)."),
    activation_codec=(str, "--activation-codec", "Codec for activations only."),
    gradient_codec=(str, "--gradient-codec", "Codec for gradients only."),
    delta_codec=(str, "--delta-codec", "Codec for the DiLoCo pseudo-gradients."),
)  # fmt: skip


@swarm_app.command("train")
@grouped("run", RUN_FLAGS)
@grouped("codecs", CODEC_FLAGS)
def train_cmd(
    config: ConfigArg = None,
    preset: PresetOpt = "tiny",
    run: dict | None = None,
    codecs: dict | None = None,
    listen: Annotated[
        str | None,
        typer.Option(
            "--listen",
            help="HOST:PORT the orchestrator listens on (default: loopback, any free port).",
        ),
    ] = None,
    remote_workers: Annotated[
        bool,
        typer.Option(
            "--remote-workers",
            help="Spawn no workers: wait for `swarmpress "
            "swarm worker --orch tcp://HOST:PORT --stage N` on other machines.",
        ),
    ] = False,
    keys: Annotated[
        Path | None,
        typer.Option(
            "--keys",
            help="The folder `swarmpress swarm keys` made: dial-in workers must then present "
            "their key file (CurveZMQ); without it they join unauthenticated (loopback only, "
            "or with --insecure).",
        ),
    ] = None,
    insecure: Annotated[
        bool,
        typer.Option(
            "--insecure",
            help="Let workers dial in without keys on an address other hosts can reach "
            "(anyone who reaches it can then stop or steer the run).",
        ),
    ] = False,
    run_dir: Annotated[
        Path | None,
        typer.Option(
            "--run-dir",
            help="The run's folder: worker logs, keys, run.json and (by default) the "
            "orchestrator's state, written at every step. Default: a temporary folder, "
            "removed when the run finishes cleanly.",
        ),
    ] = None,
    state: Annotated[
        str | None,
        typer.Option(
            "--state",
            help="Where the orchestrator's state goes at every step: a database URL "
            "(postgresql://USER@HOST/DB for a standby on another machine). Default: SQLite "
            "in the run folder.",
        ),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            "--resume",
            help="Take over the run in this folder whose orchestrator is gone (killed, "
            "crashed) and finish it: its workers carry on, no sample is lost or applied "
            "twice. Waits at most two leases for a live holder.",
        ),
    ] = None,
    standby: Annotated[
        Path | None,
        typer.Option(
            "--standby",
            help="Stand by for the run in this folder: take it over when its orchestrator "
            "stops renewing its lease (default lease 5 s), however long that takes.",
        ),
    ] = None,
    out: OutOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Train across stage workers: loss, time per step, bytes on the wire per role.

    Bytes on the wire are set against the raw bytes the same tensors hold (wire/raw). The
    link is a consumer uplink (20mbit:50ms: 20 Mbit/s, 50 ms one way) unless the preset,
    the config file or --link says otherwise. Progress goes to stderr from the start;
    Ctrl-C stops the workers and writes the partial result (steps done, loss curve, bytes)
    to --out and stdout, exit 130.

    The orchestrator is no single point of failure: its state is written at every step
    (--run-dir, --state); killed, `--resume DIR` or a `--standby DIR` started beforehand
    finishes the run (docs/failover.md)."""
    from swarmpress.swarm.run import train

    if resume is not None or standby is not None:
        _take_over(resume, standby, config, preset, run, codecs, listen, remote_workers,
                   keys, run_dir, state, out, as_json)  # fmt: skip
        return
    if remote_workers and not listen:
        raise fail("--remote-workers needs --listen HOST:PORT so workers can reach the run")
    c = codecs or {}

    def go() -> dict:
        with live_progress() as live:
            live.phase("config", {})
            cfg = _config(config, preset, run or {},
                          codec_activation=c.get("activation_codec") or c.get("codec"),
                          codec_gradient=c.get("gradient_codec") or c.get("codec"),
                          codec_delta=c.get("delta_codec"))  # fmt: skip
            live.total = cfg.steps
            return train(cfg, on_step=live.step, listen=listen, remote_workers=remote_workers,
                         keys=keys, on_phase=live.phase, run_dir=run_dir, state=state,
                         insecure=insecure)  # fmt: skip

    res = _result_or_partial(go)
    res["label"] = _label_of(res)
    _finish([res], as_json, single=True, out=out)


def _result_or_partial(go: Callable[[], dict]) -> dict:
    """go()'s result; after Ctrl-C the partial one it carries (exit 130 if there is none)."""
    from swarmpress.swarm.run import Interrupted

    try:
        return go()
    except Interrupted as exc:
        if exc.result is None:
            raise _interrupted_early() from None
        return exc.result
    except KeyboardInterrupt:
        raise _interrupted_early() from None


def _take_over(resume, standby, config, preset, run, codecs, listen, remote_workers, keys,
               run_dir, state, out, as_json) -> None:  # fmt: skip
    """`train --resume DIR` / `--standby DIR`: the run's own config, nothing else."""
    from swarmpress.swarm.run import resume as resume_run

    if resume is not None and standby is not None:
        raise fail("give --resume DIR or --standby DIR, not both")
    stray = [name for name, given in (
        ("a config file", config), ("--preset", preset != "tiny"), ("run flags", run),
        ("codec flags", codecs), ("--remote-workers", remote_workers), ("--keys", keys),
        ("--run-dir", run_dir), ("--state", state),
    ) if given]  # fmt: skip
    if stray:
        raise fail(f"--resume/--standby take the run's own config and state; drop "
                   f"{', '.join(stray)}")  # fmt: skip
    folder = resume or standby

    def go() -> dict:
        with live_progress() as live:
            return resume_run(folder, standby=standby is not None, on_step=live.step,
                              on_phase=live.phase, listen=listen)  # fmt: skip

    res = _result_or_partial(go)
    res["label"] = _label_of(res)
    _finish([res], as_json, single=True, out=out)


def _label_of(res: dict) -> str:
    a, g = res["codec"]["activation"], res["codec"]["gradient"]
    return a if a == g else f"{a}/{g}"


@swarm_app.command("compare")
@grouped("run", RUN_FLAGS)
def compare_cmd(
    config: ConfigArg = None,
    preset: PresetOpt = "tiny",
    codecs: Annotated[
        str,
        typer.Option(
            "--codecs",
            help="Comma-separated codecs for activations and "
            "gradients, each a name or spec (e.g. none,lossy,blockq:bits=8).",
        ),
    ] = "none,lossy",
    run: dict | None = None,
    out: OutOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The same run (seed, data, routing) once per codec: one table, one loss plot.

    --json prints one result object per codec. The link is a consumer uplink unless the
    preset, the config file or --link says otherwise. Ctrl-C writes the runs done and the
    partial one, exit 130."""
    from swarmpress.codecs import split_codec_list
    from swarmpress.swarm.run import Interrupted, compare

    with guard("--codecs"):
        names = split_codec_list(codecs)
    try:
        with live_progress() as live:
            live.phase("config", {}, key=names[0] if names else "")
            cfg = _config(config, preset, run or {})
            live.total = cfg.steps
            results = compare(cfg, names, on_step=lambda c, s, i: live.step(s, i, key=c),
                              on_phase=lambda c, p, i: live.phase(p, i, key=c))  # fmt: skip
    except Interrupted as exc:
        if not exc.results:
            raise _interrupted_early() from None
        results = exc.results
    except KeyboardInterrupt:
        raise _interrupted_early() from None
    _finish(results, as_json, single=False, out=out)


def _interrupted_early() -> typer.Exit:
    err_console.print("interrupted before the workers started: no result", highlight=False)
    return typer.Exit(EXIT_INTERRUPTED)


def _read_result(source: Path) -> dict:
    """The result.json of an earlier `swarm train`, or exit 2 saying what is wrong."""
    try:
        result = json.loads(source.read_text())
    except (OSError, ValueError) as exc:
        raise fail(f"cannot read a run result from {source}: {exc}") from None
    if isinstance(result, list) and len(result) == 1:
        result = result[0]
    if not isinstance(result, dict) or "config" not in result or "service_s" not in result:
        raise fail(f"{source} is not the result.json of `swarmpress swarm train`")
    return result


def _calibration_view(cal: dict):
    c = cal["config"]
    title = (f"twin vs swarm: {c['stages']} stages x {c['replicas']} replicas, "
             f"link {c['link']}, codec {c['codec']['activation']}")  # fmt: skip
    cols = ("measured s/step", "twin s/step", "error", "message overhead")
    row = (f"{cal['measured_seconds_per_step']:.3f}", f"{cal['predicted_seconds_per_step']:.3f}",
           f"{100 * cal['error']:+.1f} %", f"{1e3 * cal['message_overhead_s']:.2f} ms")  # fmt: skip
    return table(cols, [row], title=title, right=cols)


@swarm_app.command("calibrate")
@grouped("run", RUN_FLAGS, only=("steps", "link", "stages", "replicas", "microbatches", "seed"))
def calibrate_cmd(
    config: ConfigArg = None,
    preset: PresetOpt = "tiny",
    source: Annotated[
        Path | None,
        typer.Option(
            "--from",
            help="A result.json of an earlier `swarm train` "
            "(default: run one now with the settings given).",
        ),
    ] = None,
    scenario_out: Annotated[
        Path | None,
        typer.Option(
            "--scenario",
            help="Write the twin scenario TOML here (`swarmpress twin run FILE` reads it).",
        ),
    ] = None,
    codec: Annotated[str | None, typer.Option("--codec", help="Codec for the run.")] = None,
    run: dict | None = None,
    as_json: JsonOpt = False,
) -> None:
    """Measure a real run, write it as a twin scenario, compare predicted and measured s/step.

    Measured: service times per stage, the link, wire ratios, the per-message cost."""
    from swarmpress.swarm.calibrate import calibrate, scenario_toml
    from swarmpress.swarm.run import train

    if source is not None:
        result = _read_result(source)
    else:
        with live_progress() as live:
            live.phase("config", {})
            cfg = _config(config, preset, run or {}, codec_activation=codec,
                          codec_gradient=codec)  # fmt: skip
            live.total = cfg.steps
            result = train(cfg, on_step=live.step, on_phase=live.phase)
    with console.status("calibrating the twin", spinner="dots"):
        cal = calibrate(result)
        if scenario_out is not None:
            scenario_out.write_text(scenario_toml(cal["scenario"]))
    emit(cal, as_json, lambda: _calibration_view(cal))
    if not as_json:
        for w in cal["warnings"]:
            err_console.print(f"[yellow]warning:[/] {w}", highlight=False)
        if scenario_out is not None:
            console.print(f"scenario written to {scenario_out}")


@swarm_app.command("presets")
def presets_cmd(as_json: JsonOpt = False) -> None:
    """The embedded presets and every configurable field with its value, as `swarm train`
    runs them (a preset that names no link runs on the consumer uplink)."""
    from swarmpress.swarm.config import PRESETS

    rows = {name: _config(None, name, {}).model_dump() for name in PRESETS}
    cells = [(field, *(str(rows[n][field]) for n in rows)) for field in next(iter(rows.values()))]
    emit(rows, as_json, lambda: table(("field", *rows), cells, title="swarm presets",
                                      right=rows))  # fmt: skip


@swarm_app.command("keys")
def keys_cmd(
    out: Annotated[Path, typer.Option("--out", help="A new folder for the run's keys.")],
    stages: Annotated[int, typer.Option("--stages", min=1, max=64)] = 2,
    replicas: Annotated[int, typer.Option("--replicas", min=1, max=64)] = 2,
    as_json: JsonOpt = False,
) -> None:
    """Make the CurveZMQ keys of a run whose workers dial in: give `swarm train --keys DIR`
    the folder and each worker its own key file (`swarm worker --key DIR/s0r0.key`)."""
    from swarmpress.swarm.auth import make_run_keys

    files = make_run_keys(out, stages, replicas)
    rows = {name: str(path) for name, path in files.items()}
    emit(rows, as_json, lambda: table(("peer", "key file"), list(rows.items()),
                                      title=f"run keys in {out} (keep them private)"))  # fmt: skip


@swarm_app.command("worker")
def worker_cmd(
    orch: Annotated[str, typer.Option("--orch", help="The orchestrator: tcp://HOST:PORT.")],
    stage: Annotated[
        int | None,
        typer.Option("--stage", help="The stage this worker serves (default: the key file's)."),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option("--name", help="Unique worker name (default: the key file's, else host-pid)."),
    ] = None,
    key: Annotated[
        Path | None, typer.Option("--key", help="This worker's key file from `swarm keys`.")
    ] = None,
    host: Annotated[
        str, typer.Option("--host", help="Address this worker listens on (reachable by peers).")
    ] = "127.0.0.1",
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout",
            help="Seconds to wait for the orchestrator, at start "
            "and between its heartbeats, before giving up.",
        ),
    ] = 60.0,
) -> None:
    """Serve one stage of a run started with `swarm train --listen ... --remote-workers`."""
    import os
    import socket

    from swarmpress.swarm.worker import main as worker_main

    args = ["--orch", orch, "--host", host, "--timeout", str(timeout)]
    if key is not None:
        args += ["--key", str(key)]
    if name is not None or key is None:
        args += ["--name", name or f"{socket.gethostname()}-{os.getpid()}"]
    if stage is not None:
        args += ["--stage", str(stage)]
    code = worker_main(args)
    if code:
        raise typer.Exit(code)
