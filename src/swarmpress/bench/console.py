"""The headline table and the lossless-failure banner for a terminal (rich), and a progress bar.

Kept out of cli.py so the command stays a thin shell: the same rows as report.md, one
section per dtype x role x model group (headed "bfloat16 · activation" over the model, e.g.
"SmolLM2-135M-Instruct"; the synthetic family's header says "(synthetic stress case)"), with
failures printed loudly in red.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from swarmpress.bench.report import headline_rows
from swarmpress.bench.results import BenchResult
from swarmpress.bench.runner import ProgressFn

_GROUP = ("dtype", "role", "family", "model")  # what starts a new section


def _header(row: dict[str, str]) -> Text:
    """A section's header: "dtype · role" over the model (the group label, its parenthesised
    note on a line of its own), so a long label does not widen the codec column."""
    model = row["model"].replace(" (", "\n(")
    return Text.assemble((f"{row['dtype']} · {row['role']}\n", "bold"), (model, "bold cyan"))


def headline_table(result: BenchResult) -> Table:
    """A compact rich Table of the headline rows, one section per dtype x role x model."""
    target = result.meta.get("target_similarity", 0.99)
    table = Table(
        title=f"swarmpress bench (similarity target {target})",
        caption="ratio = compressed/original (lower is better); MB/s = compress/decompress "
        "of original data, one core; break-even: (1 - ratio) * size / (t_c + t_d), the "
        "bandwidth below which the codec beats raw transfer; Apex = lossless/lossy track "
        "score; ref: = physical reference (memcpy, zstd-1 on the same tensors), not a codec; "
        "one section per model; the synthetic family is a stress case, not a real model",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    table.add_column("codec", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    for c in ("n", "ratio", "bits/val", "min sim", "MB/s c/d", "break-even", "Apex"):
        table.add_column(c, justify="right", no_wrap=True)
    table.add_column("check")
    current: tuple[str, ...] | None = None
    for r in headline_rows(result):
        group = tuple(r[c] for c in _GROUP)
        if group != current:
            if current is not None:
                table.add_section()
            table.add_row(_header(r))
            current = group
        bound = r["codec"].startswith("bound:")
        style = "dim" if bound else "italic" if r["kind"] == "reference" else None
        if "NOT BIT-EXACT" in r["check"] or "errors" in r["check"]:
            style = "bold red"
        speeds = "" if bound else f"{r['comp MB/s']}/{r['dec MB/s']}"
        apex = (
            "" if bound or r["kind"] == "reference" else f"{r['lossless score']}/{r['lossy score']}"
        )
        table.add_row(
            r["codec"].removeprefix("bound: "),
            r["kind"].replace("lossless", "LL").replace("lossy", "LY"),
            r["n"],
            r["ratio"],
            r["bits/val"],
            r["min sim"],
            speeds,
            r["break-even"],
            apex,
            r["check"],
            style=style,
        )
    return table


def print_table(table: Table, console: Console) -> None:
    """Print a wide table; off a terminal (pipes, files) do not squash it to 80 columns."""
    if console.is_terminal:
        console.print(table)
    else:
        wide = console.measure(table, options=console.options.update_width(1000)).maximum
        Console(file=console.file, width=max(console.width, wide)).print(table)


def print_failures(result: BenchResult, console: Console) -> None:
    """Print every lossless failure and codec error in bold red (nothing when there are none)."""
    for title, items in (
        ("LOSSLESS CHECK FAILED", result.lossless_failures),
        ("CODEC FAILED", result.codec_errors),
    ):
        if not items:
            continue
        console.print(
            f"[bold red]{title}[/] for {len(items)} (tensor, codec) pair(s):", highlight=False
        )
        for f in items:
            console.print(f"  [red]{f}[/]", highlight=False)


@contextmanager
def progress_bar(console: Console) -> Iterator[ProgressFn]:
    """A transient rich progress bar over (tensor, codec) pairs; yields the callback."""
    bar = Progress(
        TextColumn("[bold]bench[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=console,
        transient=True,
    )
    task = bar.add_task("", total=None)

    def update(done: int, total: int, label: str) -> None:
        bar.update(task, completed=done, total=total, description=label)

    with bar:
        yield update
