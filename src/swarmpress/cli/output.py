"""The one output helper (`emit`: a rich table or --json) and the one progress helper."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from typing import Any

from rich.table import Table

from swarmpress.cli.common import console, err_console


def emit(
    data: Any,
    as_json: bool,
    render: Callable[[], Any] | None = None,
    *,
    indent: int | None = 2,
    **dumps: Any,
) -> None:
    """The one output helper: `data` as JSON on stdout with --json, else what render() draws
    (a rich renderable or a string; None prints nothing)."""
    if as_json:
        print(json.dumps(data, indent=indent, **dumps))
        return
    shown = render() if render is not None else None
    if isinstance(shown, str):
        console.print(shown, highlight=False, soft_wrap=True)
    elif shown is not None:
        console.print(shown)


def table(
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    title: str | None = None,
    right: Iterable[str] = (),
    **options: Any,
) -> Table:
    """A rich table: these columns (those in `right` right-aligned), one row per item."""
    right = set(right)
    t = Table(title=title, **options)
    for col in columns:
        t.add_column(col, justify="right" if col in right else "left")
    for row in rows:
        t.add_row(*(v if not isinstance(v, int | float) else str(v) for v in row))
    return t


class Steps:
    """What a command's progress callback updates: one line per key (one by default)."""

    def __init__(self, bar: Any, description: str, total: float | None) -> None:
        self._bar, self._description, self._total = bar, description, total
        self._tasks: dict[str, Any] = {}

    def _task(self, key: str) -> Any:
        if key not in self._tasks:
            label = f"[bold]{key}[/] " if key else ""
            self._tasks[key] = self._bar.add_task(self._description, total=self._total, label=label)
        return self._tasks[key]

    def update(self, description: str | None = None, *, key: str = "", **fields: Any) -> None:
        """New text (and completed=, total=) for the line of `key`."""
        self._bar.update(self._task(key), description=description, **fields)

    def advance(self, steps: float = 1, *, key: str = "") -> None:
        self._bar.advance(self._task(key), steps)


@contextmanager
def progress(description: str = "", total: float | None = None, hide: bool = False):
    """The one progress helper: transient lines on stderr (stdout stays clean for --json);
    a bar and a count when `total` is known, elapsed time always. Yields `Steps`."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    bar = Progress(
        SpinnerColumn(),
        TextColumn("{task.fields[label]}{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=hide,
    )
    with bar:
        yield Steps(bar, description, total)
