"""The `swarmpress` command: a thin shell over the library, one sub-command per layer.

Exit codes: 0 success, 1 a run finished but failed its own check, 2 bad input (unknown
codec or model, missing or malformed corpus, bad option), 3 an internal error.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from swarmpress.cli_common import (
    EXIT_FAILED,
    EXIT_INTERNAL,
    JsonOpt,
    console,
    err_console,
    fail,
)

app = typer.Typer(
    help="Compress what crosses the wire in decentralized training.",
    epilog="Exit codes: 0 success, 1 a run finished but failed its own check, "
    "2 bad input (unknown codec or model, missing or malformed corpus, bad option), "
    "3 internal error.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from swarmpress import __version__

        print(f"swarmpress {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", callback=_print_version, is_eager=True
        ),
    ] = False,
) -> None:
    """Compress what crosses the wire in decentralized training."""


# ----------------------------------------------------------------------------- codecs
@app.command("codecs")
def codecs_cmd(as_json: JsonOpt = False) -> None:
    """List the registered codecs and their parameters."""
    from swarmpress.codecs import list_codecs

    info = list_codecs()
    if as_json:
        print(json.dumps(info, indent=2))
        return
    table = Table(title="swarmpress codecs")
    table.add_column("codec")
    table.add_column("kind")
    table.add_column("parameters")
    table.add_column("summary")
    for c in info:
        params = ", ".join(f"{p['name']}={p['default']}" for p in c["params"]) or "-"
        kind = "lossless" if c["lossless"] else "lossy"
        if c["stateful"]:
            kind += ", stateful"
        table.add_row(c["id"], kind, params, c["summary"])
    console.print(table)


# ----------------------------------------------------------------------------- corpus
corpus_app = typer.Typer(
    help="Build activation/gradient corpora from real models.", no_args_is_help=True
)
app.add_typer(corpus_app, name="corpus")


def _parse_layers(spec: str | None) -> list[int] | None:
    if spec is None:
        return None
    try:
        layers = [int(p) for p in spec.replace(" ", "").split(",") if p]
    except ValueError:
        raise fail(
            f"--layers takes comma-separated integers such as 0,2,4,6, not {spec!r}"
        ) from None
    if not layers:
        raise fail("--layers is empty; pass boundaries such as 0,2,4,6")
    return layers


_SHORT = {"activation": "act", "gradient": "grad", "bfloat16": "bf16", "float32": "f32"}


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" or n >= 100 else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"  # pragma: no cover


@corpus_app.command("build")
def corpus_build_cmd(
    out: Annotated[str, typer.Option("--out", help="Corpus directory to write.")],
    model: Annotated[
        str,
        typer.Option(
            "--model",
            help="'minilm' (all-MiniLM-L6-v2), 'smollm2' (SmolLM2-135M-Instruct), "
            "a local .gguf file or a model directory.",
        ),
    ] = "minilm",
    layers: Annotated[
        str | None, typer.Option("--layers", help="Boundaries, e.g. 0,2,4,6 (0 = embeddings).")
    ] = None,
    text: Annotated[
        str | None,
        typer.Option("--text", help="A .txt file or directory (default: pydoc_data.topics)."),
    ] = None,
    seqs: Annotated[int, typer.Option("--seqs", help="Sequences per tensor.")] = 4,
    seq_len: Annotated[int, typer.Option("--seq-len", help="Tokens per sequence.")] = 256,
    seed: Annotated[int, typer.Option("--seed", help="Seed for text choice and generators.")] = 0,
    no_synthetic: Annotated[
        bool,
        typer.Option("--no-synthetic", help="Skip the synthetic Llama-like stress-case family."),
    ] = False,
    apex: Annotated[
        str | None, typer.Option("--apex", help="Also export the corpus in the Apex layout here.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Capture activations and gradients from a real model (plus the synthetic stress case)."""
    import time

    from rich import box
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from swarmpress.corpus.build import build_corpus, summarize
    from swarmpress.corpus.store import CorpusError

    layer_list = _parse_layers(layers)
    start = time.perf_counter()
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=as_json,
    )
    try:
        with bar:
            task = bar.add_task("starting", total=None)

            def progress(desc: str, done: int, total: int) -> None:
                bar.update(task, description=desc, completed=done, total=total)

            path = build_corpus(
                out,
                model=model,
                layers=layer_list,
                text=text,
                seqs=seqs,
                seq_len=seq_len,
                seed=seed,
                synthetic=not no_synthetic,
                progress=progress,
            )
        rows = summarize(path)
        apex_csv = None
        if apex is not None:
            from swarmpress.corpus.apex import export_apex

            apex_csv = export_apex(path, apex)
    except CorpusError as exc:
        raise fail(str(exc)) from None
    seconds = time.perf_counter() - start
    total = sum(r["bytes"] for r in rows)
    if as_json:
        print(
            json.dumps(
                {
                    "out": str(path),
                    "seconds": round(seconds, 3),
                    "total_bytes": total,
                    "apex_manifest": str(apex_csv) if apex_csv else None,
                    "tensors": rows,
                },
                indent=2,
            )
        )
        return
    table = Table(
        title=f"corpus {path}", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True
    )
    for col in ("model", "L", "role", "dtype", "shape", "size", "rms", "absmax"):
        right = col in ("L", "size", "rms", "absmax")
        table.add_column(col, justify="right" if right else "left", no_wrap=True)
    for r in rows:
        table.add_row(
            r["model"],
            str(r["layer"]),
            _SHORT.get(r["role"], r["role"]),
            _SHORT.get(r["dtype"], r["dtype"]),
            "x".join(str(s) for s in r["shape"]),
            _human_bytes(r["bytes"]),
            f"{r['rms']:.3g}",
            f"{r['absmax']:.3g}" + ("" if r["finite"] else " NON-FINITE"),
        )
    console.print(table)
    console.print(
        f"{len(rows)} tensors, {_human_bytes(total)}, built in {seconds:.1f} s -> {path}"
        + (f"; Apex export: {apex_csv}" if apex_csv else ""),
        highlight=False,
    )


@corpus_app.command("export-apex")
def corpus_export_apex_cmd(
    corpus_dir: Annotated[str, typer.Argument(help="Corpus directory (with manifest.json).")],
    out_dir: Annotated[str, typer.Argument(help="Directory for the .bin files and manifest.csv.")],
    as_json: JsonOpt = False,
) -> None:
    """Write each tensor as flat little-endian bf16 .bin plus manifest.csv (Apex layout)."""
    import csv

    from swarmpress.corpus.apex import export_apex
    from swarmpress.corpus.store import CorpusError

    try:
        csv_path = export_apex(corpus_dir, out_dir)
    except CorpusError as exc:
        raise fail(str(exc)) from None
    with csv_path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    total = sum(2 * int(r["numel"]) for r in rows)
    if as_json:
        print(json.dumps({"manifest": str(csv_path), "files": len(rows), "bytes": total}, indent=2))
        return
    console.print(
        f"wrote {len(rows)} bf16 files ({_human_bytes(total)}) and {csv_path}", highlight=False
    )


# ----------------------------------------------------------------------------- bench
def _bench_command(
    corpus: str | None,
    codecs: str | None,
    no_anchors: bool,
    no_references: bool,
    target: float,
    json_out: str | None,
    report: str | None,
    quick: bool,
) -> str:
    """The canonical command line a bench run was made with (for report.md)."""
    import shlex

    parts = ["swarmpress", "bench"]
    for flag, value in (("--corpus", corpus), ("--codecs", codecs), ("--json", json_out)):
        if value is not None:
            parts += [flag, value]
    if report is not None:
        parts += ["--report", report]
    if no_anchors:
        parts.append("--no-anchors")
    if no_references:
        parts.append("--no-references")
    if target != 0.99:
        parts += ["--target-similarity", repr(target)]
    if quick:
        parts.append("--quick")
    return shlex.join(parts)


@app.command("bench")
def bench_cmd(
    corpus: Annotated[
        str | None,
        typer.Option(
            "--corpus", metavar="DIR", help="Corpus directory (default: the cached default corpus)."
        ),
    ] = None,
    codecs: Annotated[
        str | None,
        typer.Option(
            "--codecs",
            metavar="SPECS",
            help="Comma-separated codec specs, e.g. zstd,blockq:bits=4:block=32 "
            "(default: every registered codec plus blockq:bits=4).",
        ),
    ] = None,
    no_anchors: Annotated[
        bool,
        typer.Option(
            "--no-anchors",
            help="Skip the external anchor compressors (zstd-3, lz4, brotli, blosc2, zipnn, "
            "SZ3, ZFP, ...). The memcpy/zstd-1 references still run: see --no-references.",
        ),
    ] = False,
    no_references: Annotated[
        bool,
        typer.Option(
            "--no-references",
            help="Skip the physical references (memcpy and zstd-1 on the same bytes, which "
            "show this machine's memory and fast-compressor speed).",
        ),
    ] = False,
    target_similarity: Annotated[
        float,
        typer.Option(
            "--target-similarity",
            help="Apex similarity every lossy method must exceed on each tensor; lossy anchors "
            "are tuned to just clear it (0 < T < 1).",
        ),
    ] = 0.99,
    json_out: Annotated[
        str | None,
        typer.Option(
            "--json", metavar="FILE", help="Write every figure as JSON to FILE ('-': stdout)."
        ),
    ] = None,
    report: Annotated[
        str | None,
        typer.Option(
            "--report", metavar="DIR", help="Write report.md, bench.json and PNG plots to DIR."
        ),
    ] = None,
    quick: Annotated[
        bool,
        typer.Option(
            "--quick",
            help="Smoke run: at most 2 tensors per model x role x dtype, one timing repeat, "
            "fewer lossy-anchor tuning tries, shorter sweeps.",
        ),
    ] = False,
    apex: Annotated[
        str | None,
        typer.Option(
            "--apex",
            metavar="DIR",
            help="Run Apex solution files (and zstd-3) on an Apex-layout directory instead.",
        ),
    ] = None,
    solution: Annotated[
        list[str] | None,
        typer.Option(
            "--solution",
            metavar="FILE",
            help="With --apex: a solution .py with compress_data/decompress_data (repeatable).",
        ),
    ] = None,
) -> None:
    """Every codec next to the anchors and the theoretical limits, on a corpus.

    Measures ratio, bits/value, Apex similarity, compress/decompress MB/s on one core,
    break-even bandwidth and the Apex scores of every codec, anchor and physical reference
    on every tensor, with the field-entropy and Gaussian RD limits beside them; results are
    grouped per dtype x role x model (the synthetic family is a stress case). Prints the
    table; exit code 1 when anything claiming to be lossless was not bit-exact.

    With --apex DIR: every --solution file next to the zstd-3 baseline on the flat bf16
    files of an Apex-layout directory, with the Apex lossless and lossy scores.
    """
    if apex is not None or solution:
        _bench_apex(
            apex, solution or [], corpus, codecs, no_anchors, json_out, report, quick,
            no_references=no_references,
        )  # fmt: skip
        return
    from swarmpress.bench.console import (
        headline_table,
        print_failures,
        progress_bar,
    )
    from swarmpress.bench.report import write_report
    from swarmpress.bench.runner import run_bench
    from swarmpress.bench.specs import build_codec, split_codec_list
    from swarmpress.codecs import CodecError
    from swarmpress.corpus.store import CorpusError, load_corpus

    if not 0.0 < target_similarity < 1.0:
        raise fail(f"--target-similarity must be between 0 and 1, got {target_similarity}")
    specs: list[str] | None = None
    try:
        if codecs is not None:
            specs = split_codec_list(codecs)
            for spec in specs:
                build_codec(spec)
    except CodecError as exc:
        raise fail(str(exc)) from None
    if corpus is None:
        try:
            from swarmpress.corpus.build import default_corpus
        except ImportError as exc:
            raise fail(f"no --corpus given and the default corpus is unavailable ({exc})") from None
        try:
            with err_console.status("loading (or building, once) the default corpus"):
                root = default_corpus()
        except Exception as exc:  # no model weights, no cache dir, ...: say so in one line
            raise fail(f"cannot get the default corpus ({exc}); pass --corpus DIR") from None
    else:
        root = corpus
    try:
        loaded = load_corpus(root)
    except CorpusError as exc:
        raise fail(str(exc)) from None
    command = _bench_command(
        corpus, codecs, no_anchors, no_references, target_similarity, json_out, report, quick
    )
    try:
        with progress_bar(err_console) as progress:
            result = run_bench(
                loaded,
                specs,
                anchors=not no_anchors,
                references=not no_references,
                target_similarity=target_similarity,
                progress=progress,
                quick=quick,
                command=command,
            )
    except (CorpusError, CodecError) as exc:
        raise fail(str(exc)) from None
    _emit(
        result,
        lambda: headline_table(result),
        json_out,
        report,
        lambda d: Path(write_report(result, d)) / "report.md",
    )
    print_failures(result, err_console)
    if not result.ok:
        raise typer.Exit(EXIT_FAILED)


def _emit(result, make_table, json_out: str | None, report: str | None, write) -> None:
    """Shared output of the bench commands: a table or JSON on stdout, JSON file, report."""
    from swarmpress.bench.console import print_table

    try:
        if json_out == "-":
            print(json.dumps(result.to_json(), indent=1, allow_nan=False))
        else:
            print_table(make_table(), console)
            if json_out is not None:
                result.write_json(json_out)
                console.print(f"every figure written to {json_out}", highlight=False)
        if report is not None:
            console.print(f"report written to {write(report)}", highlight=False)
    except OSError as exc:
        raise fail(f"cannot write the bench output: {exc}") from None


# ----------------------------------------------------------------------------- bench --apex
def _bench_apex(
    apex: str | None,
    solutions: list[str],
    corpus: str | None,
    codecs: str | None,
    no_anchors: bool,
    json_out: str | None,
    report: str | None,
    quick: bool,
    *,
    no_references: bool = False,
) -> None:
    """`swarmpress bench --apex DIR [--solution FILE ...]` (see swarmpress.bench.apex)."""
    import shlex

    from swarmpress.bench.apex import ApexError, apex_table, run_apex_bench, write_apex_report
    from swarmpress.bench.console import progress_bar

    if apex is None:
        raise fail("--solution needs --apex DIR (an Apex-layout directory of bf16 .bin files)")
    for flag, given in (
        ("--corpus", corpus),
        ("--codecs", codecs),
        ("--no-anchors", no_anchors),
        ("--no-references", no_references),
    ):
        if given:
            raise fail(f"{flag} does not apply to --apex runs (they run solution files)")
    parts = ["swarmpress", "bench", "--apex", apex]
    for path in solutions:
        parts += ["--solution", path]
    for flag, value in (("--json", json_out), ("--report", report)):
        if value is not None:
            parts += [flag, value]
    if quick:
        parts.append("--quick")
    try:
        with progress_bar(err_console) as progress:
            result = run_apex_bench(
                apex, solutions, quick=quick, progress=progress, command=shlex.join(parts)
            )
    except ApexError as exc:
        raise fail(str(exc)) from None
    _emit(
        result, lambda: apex_table(result), json_out, report, lambda d: write_apex_report(result, d)
    )
    for s in result.summaries:
        if s.n_errors:
            err_console.print(
                f"[bold red]{s.solution}[/] failed on {s.n_errors} of {s.n_files} files "
                "(see the check column)",
                highlight=False,
            )


# ----------------------------------------------------------------------------- arena
from swarmpress.cli_arena import arena_app  # noqa: E402
from swarmpress.cli_arena_env import env_app  # noqa: E402
from swarmpress.cli_data import data_app  # noqa: E402
from swarmpress.cli_swarm import swarm_app  # noqa: E402
from swarmpress.cli_twin import twin_app  # noqa: E402

arena_app.add_typer(env_app, name="env")
app.add_typer(arena_app, name="arena")
app.add_typer(twin_app, name="twin")
app.add_typer(swarm_app, name="swarm")
app.add_typer(data_app, name="data")


@app.command("commands")
def commands_cmd(as_json: JsonOpt = False) -> None:
    """Every command with its arguments and options: flags, types, defaults (a catalog)."""
    catalog = command_catalog()
    if as_json:
        print(json.dumps(catalog, indent=2))
        return
    t = Table(title="swarmpress commands")
    t.add_column("command")
    t.add_column("what it does")
    for c in catalog:
        t.add_row(c["command"], c["help"])
    console.print(t)


def _json_safe(value):
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return str(value)


def _type_name(param) -> str:
    """A parameter's value type as a JSON-Schema-like word (integer, number, string ...)."""
    import typing

    ann = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    if ann is None:  # a plain click parameter
        return str(getattr(getattr(param, "type", None), "name", "string"))
    if typing.get_origin(ann) in (list, tuple):
        ann = typing.get_args(ann)[0]
    names = {int: "integer", float: "number", bool: "boolean", str: "string", Path: "path"}
    return names.get(ann, getattr(ann, "__name__", str(ann)))


def command_catalog() -> list[dict]:
    """The command tree as data: one entry per command, with every parameter."""

    # Duck-typed: typer vendors its own click, whose classes are not click's.
    def walk(cmd, path: list[str]):
        if isinstance(getattr(cmd, "commands", None), dict):
            for name in sorted(cmd.commands):
                yield from walk(cmd.commands[name], [*path, name])
            return
        params = []
        for p in cmd.params:
            if p.name == "help":
                continue
            params.append({
                "name": p.name,
                "kind": getattr(p, "param_type_name", "option"),
                "flags": [*p.opts, *p.secondary_opts],
                "type": _type_name(p),
                "required": bool(p.required),
                "multiple": bool(getattr(p, "multiple", False)),
                "is_flag": bool(getattr(p, "is_flag", False)),
                "default": _json_safe(p.default),
                "help": getattr(p, "help", None),
            })  # fmt: skip
        summary = (cmd.help or "").strip().splitlines()
        yield {"command": " ".join(path), "help": summary[0] if summary else "", "params": params}

    return list(walk(typer.main.get_command(app), ["swarmpress"]))


def main() -> None:
    """Entry point: run the app, turning unexpected errors into exit code 3 with one line.

    Standalone mode already maps usage errors to exit 2 and typer.Exit to its code; only
    exceptions no command anticipated reach the handler below.
    """
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except Exception as exc:
        err_console.print(
            f"[bold red]internal error:[/] {type(exc).__name__}: {exc} "
            "(please report it with the command you ran)",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(EXIT_INTERNAL)


if __name__ == "__main__":
    main()
