"""`swarmpress swarm ...`: real pipeline-parallel training over compressed, emulated links
(train, compare), twin calibration from a real run (calibrate), and a stage worker that
joins a run on another machine (worker)."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from swarmpress.cli_common import EXIT_FAILED, JsonOpt, console, err_console, fail

swarm_app = typer.Typer(
    help="Pipeline-parallel training across processes over compressed, emulated links.",
    no_args_is_help=True,
)

ConfigArg = Annotated[
    Path | None,
    typer.Argument(help="TOML file with swarm settings (any field of `swarm presets`; a "
                   "\\[swarm] table or top-level keys). Flags override it.", show_default=False),
]  # fmt: skip
PresetOpt = Annotated[
    str, typer.Option("--preset", help="Embedded starting point: tiny (2 stages x 2 replicas, "
                      "trains in about a minute on 2 cores) or small.")
]  # fmt: skip
StepsOpt = Annotated[int | None, typer.Option("--steps", help="Optimizer steps.")]
LinkOpt = Annotated[
    str | None,
    typer.Option("--link", help="Emulated link between workers: BANDWIDTH[:LATENCY[:JITTER]], "
                 "e.g. 100mbit:50ms or 10gbit:1ms:0.2ms; `none` for no shaping."),
]  # fmt: skip
IntOpt = Annotated[int | None, typer.Option()]


def _overrides(**kw: Any) -> dict[str, Any]:
    return {k: v for k, v in kw.items() if v is not None}


def _config(config: Path | None, preset: str, overrides: dict[str, Any]):
    from swarmpress.swarm.config import ConfigError, build_config

    try:
        return build_config(preset, config, **overrides)
    except ConfigError as exc:
        raise fail(f"bad swarm config: {exc}") from None


@contextmanager
def _guard():
    """Turn the swarm's expected failures into one line and a meaningful exit code."""
    from swarmpress.swarm.calibrate import CalibrationError
    from swarmpress.swarm.config import ConfigError
    from swarmpress.swarm.orchestrator import SwarmError
    from swarmpress.swarm.text import DataError

    try:
        yield
    except (ConfigError, DataError) as exc:
        raise fail(str(exc)) from None
    except CalibrationError as exc:
        raise fail(f"cannot calibrate: {exc}") from None
    except SwarmError as exc:
        raise fail(f"the run failed: {exc}", EXIT_FAILED) from None
    except OSError as exc:  # a port in use, an address that is not ours, a folder we cannot write
        raise fail(str(exc)) from None


@contextmanager
def _progress(total: int, label: str, quiet: bool):
    """A step bar showing the latest loss; yields an on_step(label, step, info) callback."""
    bar = Progress(
        TextColumn("[bold]{task.fields[label]}[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=err_console if quiet else console,
        transient=True,
    )
    tasks: dict[str, Any] = {}

    def on_step(name: str, step: int, info: dict) -> None:
        if name not in tasks:
            tasks[name] = bar.add_task("starting", total=total, label=name)
        loss = info.get("loss")
        desc = f"loss {loss:.3f}" if loss is not None else ""
        desc += f"  {info['seconds']:.2f} s/step  {info['live_workers']} workers"
        bar.update(tasks[name], completed=step + 1, description=desc)

    with bar:
        yield on_step


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
        f"{r['seconds_per_step']:.3f}",
        _mb(b["activation"]),
        _mb(b["gradient"]),
        _mb(b["weight-delta"]),
        f"{ratio:.3f}",
        f"{f['killed']}/{f['replayed']}/{'yes' if f['exactly_once'] else 'NO'}",
    ]


COLUMNS = ("codec", "eval loss", "steps", "s/step", "act MB", "grad MB", "delta MB",
           "wire/raw", "killed/replayed/exactly-once")  # fmt: skip


def _table(results: list[dict], title: str) -> Table:
    t = Table(title=title)
    for c in COLUMNS:
        t.add_column(c, justify="left" if c == "codec" else "right")
    for r in results:
        t.add_row(*_row(r))
    return t


def _finish(results: list[dict], as_json: bool, single: bool, out: Path | None) -> None:
    if out is not None:
        from swarmpress.swarm.report import plot

        with _guard():
            out.mkdir(parents=True, exist_ok=True)
            (out / "result.json").write_text(
                json.dumps(results[0] if single else results, indent=2)
            )
            plot(results, out)
    if as_json:
        print(json.dumps(results[0] if single else results, indent=2))
    else:
        r0 = results[0]
        title = (
            f"swarm: {r0['config']['stages']} stages x {r0['config']['replicas']} replicas, "
            f"link {r0['link']['spec']}, data {r0['data']['text']}"
        )
        console.print(_table(results, title))
        if out is not None:
            console.print(f"result.json, loss.png and time.png in {out}")
    bad = [r.get("label", "run") for r in results if not r["faults"]["exactly_once"]]
    if bad:
        err_console.print(f"[bold red]samples lost or counted twice[/] in: {', '.join(bad)}")
        raise typer.Exit(EXIT_FAILED)


def _common(
    steps, link, stages, replicas, microbatch, microbatches, bottleneck, wire_dtype, router,
    kill_every, merge_every, seed, text,
) -> dict[str, Any]:  # fmt: skip
    return _overrides(
        steps=steps, link=link, stages=stages, replicas=replicas, microbatch=microbatch,
        microbatches=microbatches, bottleneck=bottleneck, wire_dtype=wire_dtype, router=router,
        kill_every=kill_every, merge_every=merge_every, seed=seed, text=text,
    )  # fmt: skip


StagesOpt = Annotated[int | None, typer.Option("--stages", help="Pipeline stages.")]
ReplicasOpt = Annotated[int | None, typer.Option("--replicas", help="Workers per stage.")]
MbOpt = Annotated[int | None, typer.Option("--microbatch", help="Sequences per micro-batch.")]
MbsOpt = Annotated[int | None, typer.Option("--microbatches", help="Micro-batches per step.")]
BnOpt = Annotated[
    int | None, typer.Option("--bottleneck", help="Learned bottleneck factor at stage "
                             "boundaries (1: none; k: activations are dim/k wide).")
]  # fmt: skip
DtOpt = Annotated[
    str | None, typer.Option("--wire-dtype", help="float32, bfloat16 or float16: the dtype "
                             "tensors are cast to before their codec.")
]  # fmt: skip
RouterOpt = Annotated[
    str | None, typer.Option("--router", help="Twin routing policy that picks each micro-"
                             "batch's replicas (see `twin policies`).")
]  # fmt: skip
KillOpt = Annotated[
    int | None, typer.Option("--kill-every", help="SIGKILL one replica every N steps (fault "
                             "drill; 0: never).")
]  # fmt: skip
MergeOpt = Annotated[
    int | None, typer.Option("--merge-every", help="DiLoCo outer step every H steps.")
]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Seed of data order and init.")]
TextOpt = Annotated[
    str | None, typer.Option("--text", help="Training text: a file, a directory of .txt/"
                             ".jsonl, or `pydoc` (the standard library's pydoc_data.topics).")
]  # fmt: skip
OutOpt = Annotated[
    Path | None, typer.Option("--out", help="Write result.json, loss.png and time.png here.")
]


@swarm_app.command("train")
def train_cmd(
    config: ConfigArg = None,
    preset: PresetOpt = "tiny",
    steps: StepsOpt = None,
    codec: Annotated[
        str | None,
        typer.Option(
            "--codec",
            help="Codec for activations and gradients: none, "
            "lossy, lossless, or any spec (`swarmpress codecs`).",
        ),
    ] = None,
    activation_codec: Annotated[
        str | None, typer.Option("--activation-codec", help="Codec for activations only.")
    ] = None,
    gradient_codec: Annotated[
        str | None, typer.Option("--gradient-codec", help="Codec for gradients only.")
    ] = None,
    delta_codec: Annotated[
        str | None, typer.Option("--delta-codec", help="Codec for the DiLoCo pseudo-gradients.")
    ] = None,
    link: LinkOpt = None,
    stages: StagesOpt = None,
    replicas: ReplicasOpt = None,
    microbatch: MbOpt = None,
    microbatches: MbsOpt = None,
    bottleneck: BnOpt = None,
    wire_dtype: DtOpt = None,
    router: RouterOpt = None,
    kill_every: KillOpt = None,
    merge_every: MergeOpt = None,
    seed: SeedOpt = None,
    text: TextOpt = None,
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
    out: OutOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Train across stage workers: loss, time per step, bytes on the wire per role.

    Bytes on the wire are set against the raw bytes the same tensors hold (wire/raw)."""
    from swarmpress.swarm.run import train

    ov = _common(steps, link, stages, replicas, microbatch, microbatches, bottleneck,
                 wire_dtype, router, kill_every, merge_every, seed, text)  # fmt: skip
    ov |= _overrides(codec_activation=activation_codec or codec,
                     codec_gradient=gradient_codec or codec, codec_delta=delta_codec)  # fmt: skip
    cfg = _config(config, preset, ov)
    if remote_workers and not listen:
        raise fail("--remote-workers needs --listen HOST:PORT so workers can reach the run")
    label = cfg.codec_activation if cfg.codec_activation == cfg.codec_gradient else (
        f"{cfg.codec_activation}/{cfg.codec_gradient}")  # fmt: skip
    with _guard(), _progress(cfg.steps, label, as_json) as bar:
        res = train(cfg, on_step=lambda s, i: bar(label, s, i), listen=listen,
                    remote_workers=remote_workers)  # fmt: skip
    res["label"] = label
    _finish([res], as_json, single=True, out=out)


@swarm_app.command("compare")
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
    steps: StepsOpt = None,
    link: LinkOpt = None,
    stages: StagesOpt = None,
    replicas: ReplicasOpt = None,
    microbatch: MbOpt = None,
    microbatches: MbsOpt = None,
    bottleneck: BnOpt = None,
    wire_dtype: DtOpt = None,
    router: RouterOpt = None,
    kill_every: KillOpt = None,
    merge_every: MergeOpt = None,
    seed: SeedOpt = None,
    text: TextOpt = None,
    out: OutOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The same run (seed, data, routing) once per codec: one table, one loss plot.

    --json prints one result object per codec."""
    from swarmpress.codecs import CodecError
    from swarmpress.codecs.specs import split_codec_list
    from swarmpress.swarm.run import compare

    try:
        names = split_codec_list(codecs)
    except CodecError as exc:
        raise fail(f"--codecs: {exc}") from None
    ov = _common(steps, link, stages, replicas, microbatch, microbatches, bottleneck,
                 wire_dtype, router, kill_every, merge_every, seed, text)  # fmt: skip
    cfg = _config(config, preset, ov)
    with _guard(), _progress(cfg.steps, "", as_json) as bar:
        results = compare(cfg, names, on_step=bar)
    _finish(results, as_json, single=False, out=out)


@swarm_app.command("calibrate")
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
    steps: StepsOpt = None,
    codec: Annotated[str | None, typer.Option("--codec", help="Codec for the run.")] = None,
    link: LinkOpt = None,
    stages: StagesOpt = None,
    replicas: ReplicasOpt = None,
    microbatches: MbsOpt = None,
    seed: SeedOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Measure a real run, write it as a twin scenario, compare predicted and measured s/step.

    Measured: service times per stage, the link, wire ratios, the per-message cost."""
    from swarmpress.swarm.calibrate import calibrate, scenario_toml
    from swarmpress.swarm.run import train

    if source is not None:
        try:
            result = json.loads(source.read_text())
        except (OSError, ValueError) as exc:
            raise fail(f"cannot read a run result from {source}: {exc}") from None
        if isinstance(result, list) and len(result) == 1:
            result = result[0]
        if not isinstance(result, dict) or "config" not in result or "service_s" not in result:
            raise fail(f"{source} is not the result.json of `swarmpress swarm train`")
    else:
        ov = _overrides(steps=steps, link=link, stages=stages, replicas=replicas,
                        microbatches=microbatches, seed=seed, codec_activation=codec,
                        codec_gradient=codec)  # fmt: skip
        cfg = _config(config, preset, ov)
        with _guard(), _progress(cfg.steps, "measure", as_json) as bar:
            result = train(cfg, on_step=lambda s, i: bar("measure", s, i))
    with _guard(), console.status("calibrating the twin", spinner="dots"):
        cal = calibrate(result)
        if scenario_out is not None:
            scenario_out.write_text(scenario_toml(cal["scenario"]))
    if as_json:
        print(json.dumps(cal, indent=2))
        return
    c = cal["config"]
    t = Table(title=f"twin vs swarm: {c['stages']} stages x {c['replicas']} replicas, "
              f"link {c['link']}, codec {c['codec']['activation']}")  # fmt: skip
    for col in ("measured s/step", "twin s/step", "error", "message overhead"):
        t.add_column(col, justify="right")
    t.add_row(
        f"{cal['measured_seconds_per_step']:.3f}",
        f"{cal['predicted_seconds_per_step']:.3f}",
        f"{100 * cal['error']:+.1f} %",
        f"{1e3 * cal['message_overhead_s']:.2f} ms",
    )
    console.print(t)
    for w in cal["warnings"]:
        err_console.print(f"[yellow]warning:[/] {w}", highlight=False)
    if scenario_out is not None:
        console.print(f"scenario written to {scenario_out}")


@swarm_app.command("presets")
def presets_cmd(as_json: JsonOpt = False) -> None:
    """The embedded presets and every configurable field with its value."""
    from swarmpress.swarm.config import PRESETS, build_config

    rows = {name: build_config(name).model_dump() for name in PRESETS}
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    t = Table(title="swarm presets")
    t.add_column("field")
    for name in rows:
        t.add_column(name, justify="right")
    for field in next(iter(rows.values())):
        t.add_row(field, *(str(rows[n][field]) for n in rows))
    console.print(t)


@swarm_app.command("worker")
def worker_cmd(
    orch: Annotated[str, typer.Option("--orch", help="The orchestrator: tcp://HOST:PORT.")],
    stage: Annotated[int, typer.Option("--stage", help="The stage this worker serves.")],
    name: Annotated[
        str | None, typer.Option("--name", help="Unique worker name (default: host-pid).")
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

    args = ["--orch", orch, "--stage", str(stage), "--host", host, "--timeout", str(timeout),
            "--name", name or f"{socket.gethostname()}-{os.getpid()}"]  # fmt: skip
    code = worker_main(args)
    if code:
        raise typer.Exit(code)
