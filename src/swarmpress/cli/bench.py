"""`swarmpress bench`: every codec next to the anchors and the theoretical limits, on a
corpus; or, with --apex, Apex solution files on an Apex-layout directory."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import typer

from swarmpress.cli.common import EXIT_FAILED, console, err_console, fail, guard
from swarmpress.cli.options import opt
from swarmpress.cli.output import emit, progress


def _command_line(values: dict[str, Any]) -> str:
    """The canonical `swarmpress bench ...` a run was made with (for its report): each option
    given, in order; a list repeats its option, True is a bare flag."""
    parts = ["swarmpress", "bench"]
    for flag, value in values.items():
        for v in value if isinstance(value, list) else [value]:
            if v is True:
                parts.append(flag)
            elif v is not None and v is not False:
                parts += [flag, str(v)]
    return shlex.join(parts)


def _output(result: Any, json_out: str | None, report: str | None, render, write) -> None:
    """A bench result: a table (or JSON with --json -), the JSON file, the report."""
    from swarmpress.bench.console import print_table

    with guard("cannot write the bench output"):
        as_json = json_out == "-"
        emit(result.to_json() if as_json else None, as_json,
             lambda: print_table(render(), console), indent=1, allow_nan=False)  # fmt: skip
        if json_out not in (None, "-"):
            result.write_json(json_out)
            console.print(f"every figure written to {json_out}", highlight=False)
        if report is not None:
            console.print(f"report written to {write(report)}", highlight=False)


CorpusOpt = opt(str | None, "--corpus", "Corpus directory (default: the cached default "
                "corpus).", metavar="DIR")  # fmt: skip
CodecsOpt = opt(str | None, "--codecs", "Comma-separated codec specs, e.g. "
                "zstd,blockq:bits=4:block=32 (default: every registered codec plus "
                "blockq:bits=4).", metavar="SPECS")  # fmt: skip
NoAnchorsOpt = opt(bool, "--no-anchors", "Skip the external anchor compressors (zstd-3, lz4, "
                   "brotli, blosc2, zipnn, SZ3, ZFP, ...). The memcpy/zstd-1 references still "
                   "run: see --no-references.")  # fmt: skip
NoReferencesOpt = opt(bool, "--no-references", "Skip the physical references (memcpy and "
                      "zstd-1 on the same bytes, which show this machine's memory and "
                      "fast-compressor speed).")  # fmt: skip
TargetOpt = opt(float, "--target-similarity", "Apex similarity every lossy method must "
                "exceed on each tensor; lossy anchors are tuned to just clear it "
                "(0 < T < 1).")  # fmt: skip
JsonFileOpt = opt(str | None, "--json", "Write every figure as JSON to FILE ('-': stdout).",
                  metavar="FILE")  # fmt: skip
ReportOpt = opt(str | None, "--report", "Write report.md, bench.json and PNG plots to DIR.",
                metavar="DIR")  # fmt: skip
QuickOpt = opt(bool, "--quick", "Smoke run: at most 2 tensors per model x role x dtype, one "
               "timing repeat, fewer lossy-anchor tuning tries, shorter sweeps.")  # fmt: skip
ApexOpt = opt(str | None, "--apex", "Run Apex solution files (and zstd-3) on an Apex-layout "
              "directory instead.", metavar="DIR")  # fmt: skip
SolutionOpt = opt(list[str] | None, "--solution", "With --apex: a solution .py with "
                  "compress_data/decompress_data (repeatable).", metavar="FILE")  # fmt: skip


def bench_cmd(
    corpus: CorpusOpt = None,
    codecs: CodecsOpt = None,
    no_anchors: NoAnchorsOpt = False,
    no_references: NoReferencesOpt = False,
    target_similarity: TargetOpt = 0.99,
    json_out: JsonFileOpt = None,
    report: ReportOpt = None,
    quick: QuickOpt = False,
    apex: ApexOpt = None,
    solution: SolutionOpt = None,
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
        not_apex = {"--corpus": corpus, "--codecs": codecs, "--no-anchors": no_anchors,
                    "--no-references": no_references}  # fmt: skip
        _bench_apex(apex, solution or [], not_apex, json_out, report, quick)
        return
    from swarmpress.bench.console import headline_table, print_failures
    from swarmpress.bench.report import write_report
    from swarmpress.bench.runner import run_bench
    from swarmpress.bench.specs import build_codec, split_codec_list
    from swarmpress.corpus.store import load_corpus

    if not 0.0 < target_similarity < 1.0:
        raise fail(f"--target-similarity must be between 0 and 1, got {target_similarity}")
    specs = None if codecs is None else split_codec_list(codecs)
    for spec in specs or []:
        build_codec(spec)
    loaded = load_corpus(corpus if corpus is not None else _default_corpus())
    command = _command_line({
        "--corpus": corpus, "--codecs": codecs, "--json": json_out, "--report": report,
        "--no-anchors": no_anchors, "--no-references": no_references,
        "--target-similarity": None if target_similarity == 0.99 else repr(target_similarity),
        "--quick": quick,
    })  # fmt: skip
    with progress("bench") as steps:
        result = run_bench(
            loaded, specs, anchors=not no_anchors, references=not no_references,
            target_similarity=target_similarity, quick=quick, command=command,
            progress=lambda done, total, label: steps.update(label, completed=done, total=total),
        )  # fmt: skip
    _output(result, json_out, report, lambda: headline_table(result),
            lambda d: Path(write_report(result, d)) / "report.md")  # fmt: skip
    print_failures(result, err_console)
    if not result.ok:
        raise typer.Exit(EXIT_FAILED)


def _default_corpus() -> Path:
    """The cached default corpus (built once), or exit 2 saying why it is not there."""
    try:
        from swarmpress.corpus.build import default_corpus
    except ImportError as exc:
        raise fail(f"no --corpus given and the default corpus is unavailable ({exc})") from None
    try:
        with err_console.status("loading (or building, once) the default corpus"):
            return default_corpus()
    except Exception as exc:  # no model weights, no cache dir, ...: say so in one line
        raise fail(f"cannot get the default corpus ({exc}); pass --corpus DIR") from None


def _bench_apex(
    apex: str | None,
    solutions: list[str],
    not_apex: dict[str, Any],
    json_out: str | None,
    report: str | None,
    quick: bool,
) -> None:
    """`swarmpress bench --apex DIR [--solution FILE ...]` (see swarmpress.bench.apex)."""
    from swarmpress.bench.apex import apex_table, run_apex_bench, write_apex_report

    if apex is None:
        raise fail("--solution needs --apex DIR (an Apex-layout directory of bf16 .bin files)")
    for flag, given in not_apex.items():
        if given:
            raise fail(f"{flag} does not apply to --apex runs (they run solution files)")
    command = _command_line({"--apex": apex, "--solution": solutions, "--json": json_out,
                             "--report": report, "--quick": quick})  # fmt: skip
    with progress("bench") as steps:
        result = run_apex_bench(
            apex, solutions, quick=quick, command=command,
            progress=lambda done, total, label: steps.update(label, completed=done, total=total),
        )  # fmt: skip
    _output(result, json_out, report, lambda: apex_table(result),
            lambda d: write_apex_report(result, d))  # fmt: skip
    for s in result.summaries:
        if s.n_errors:
            err_console.print(
                f"[bold red]{s.solution}[/] failed on {s.n_errors} of {s.n_files} files "
                "(see the check column)",
                highlight=False,
            )
