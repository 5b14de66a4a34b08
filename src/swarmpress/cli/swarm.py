"""`swarmpress swarm ...`: real pipeline-parallel training over compressed, emulated links
(train, compare), twin calibration from a real run (calibrate), and a stage worker that
joins a run on another machine (worker)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from swarmpress.cli.common import EXIT_FAILED, console, err_console, fail, guard
from swarmpress.cli.options import JsonOpt, flags, grouped, opt
from swarmpress.cli.output import emit, progress, table

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
                "in about a minute on 2 cores) or small.")  # fmt: skip


def _config(config: Path | None, preset: str, run: dict[str, Any], **codecs: str | None):
    """The run's SwarmConfig: the preset, then the TOML file, then the flags given."""
    from swarmpress.swarm.config import build_config

    with guard("bad swarm config"):
        return build_config(preset, config, **run, **{k: v for k, v in codecs.items() if v})


def _on_step(steps):
    """on_step(key, step, info) on the progress helper's line for key: the latest loss."""

    def on_step(key: str, step: int, info: dict) -> None:
        loss = info.get("loss")
        desc = f"loss {loss:.3f}" if loss is not None else ""
        desc += f"  {info['seconds']:.2f} s/step  {info['live_workers']} workers"
        steps.update(desc, key=key, completed=step + 1)

    return on_step


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


def _finish(results: list[dict], as_json: bool, single: bool, out: Path | None) -> None:
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
    bad = [r.get("label", "run") for r in results if not r["faults"]["exactly_once"]]
    if bad:
        err_console.print(f"[bold red]samples lost or counted twice[/] in: {', '.join(bad)}")
        raise typer.Exit(EXIT_FAILED)


OutOpt = opt(Path | None, "--out", "Write result.json, loss.png and time.png here.")

# The settings of a run a flag may override (any SwarmConfig field is also settable in the
# TOML file) and the codec of each role: groups the commands get as a dict of the flags given.
RUN_FLAGS = flags(
    steps=(int, "--steps", "Optimizer steps."),
    link=(str, "--link", "Emulated link between workers: BANDWIDTH[:LATENCY[:JITTER]], "
          "e.g. 100mbit:50ms or 10gbit:1ms:0.2ms; `none` for no shaping."),
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
            "their key file (CurveZMQ); without it they join unauthenticated.",
        ),
    ] = None,
    out: OutOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Train across stage workers: loss, time per step, bytes on the wire per role.

    Bytes on the wire are set against the raw bytes the same tensors hold (wire/raw)."""
    from swarmpress.swarm.run import train

    c = codecs or {}
    cfg = _config(config, preset, run or {},
                  codec_activation=c.get("activation_codec") or c.get("codec"),
                  codec_gradient=c.get("gradient_codec") or c.get("codec"),
                  codec_delta=c.get("delta_codec"))  # fmt: skip
    if remote_workers and not listen:
        raise fail("--remote-workers needs --listen HOST:PORT so workers can reach the run")
    label = cfg.codec_activation if cfg.codec_activation == cfg.codec_gradient else (
        f"{cfg.codec_activation}/{cfg.codec_gradient}")  # fmt: skip
    with progress(total=cfg.steps) as steps:
        bar = _on_step(steps)
        res = train(cfg, on_step=lambda s, i: bar(label, s, i), listen=listen,
                    remote_workers=remote_workers, keys=keys)  # fmt: skip
    res["label"] = label
    _finish([res], as_json, single=True, out=out)


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

    --json prints one result object per codec."""
    from swarmpress.codecs import split_codec_list
    from swarmpress.swarm.run import compare

    with guard("--codecs"):
        names = split_codec_list(codecs)
    cfg = _config(config, preset, run or {})
    with progress(total=cfg.steps) as steps:
        results = compare(cfg, names, on_step=_on_step(steps))
    _finish(results, as_json, single=False, out=out)


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
        cfg = _config(config, preset, run or {}, codec_activation=codec, codec_gradient=codec)
        with progress(total=cfg.steps) as steps:
            bar = _on_step(steps)
            result = train(cfg, on_step=lambda s, i: bar("measure", s, i))
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
    """The embedded presets and every configurable field with its value."""
    from swarmpress.swarm.config import PRESETS, build_config

    rows = {name: build_config(name).model_dump() for name in PRESETS}
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
