"""What every `swarmpress` sub-command shares: the consoles, the exit codes and the one error
guard (output.py: the output and progress helpers; options.py: option types and groups).

Exit codes: 0 success, 1 a run finished but failed its own check, 2 bad input, 3 internal.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from swarmpress.errors import SwarmpressError

console = Console()
err_console = Console(stderr=True)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    """Print a one-line error and return the Exit to raise."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


# ----------------------------------------------------------------------------- errors
# Every layer's error derives from SwarmpressError and carries the exit code it means
# (1 failed, 2 bad input); a few get a lead-in that says what was being done.
LEAD_INS: dict[str, str] = {
    "CalibrationError": "cannot calibrate: ",
    "SwarmError": "the run failed: ",
}


def _known(exc: BaseException, also: tuple[type[BaseException], ...]) -> tuple[int, str] | None:
    """(exit code, lead-in) for an error the CLI reports in one line; None for a bug."""
    if isinstance(exc, SwarmpressError):
        names = [cls.__name__ for cls in type(exc).__mro__]
        return exc.exit_code, next((LEAD_INS[n] for n in names if n in LEAD_INS), "")
    if isinstance(exc, (OSError, *also)):  # a port in use, a folder we cannot write, ...
        return EXIT_USAGE, ""
    return None


@contextmanager
def guard(context: str = "", *also: type[BaseException], code: int | None = None) -> Iterator[None]:
    """The one error guard: what swarmpress refuses becomes one line and its exit code.

    It wraps every command (see `GuardedGroup`); a command adds one only to say more:
    `context` leads the message, `also` names more exception types that mean bad input,
    `code` replaces the exit code. Anything else (a bug) passes on to `main`: exit 3."""
    try:
        yield
    except Exception as exc:
        known = None if isinstance(exc, typer.Exit) else _known(exc, also)
        if known is None:
            raise
        exit_code, lead = known
        message = f"{context}: {exc}" if context else f"{lead}{exc}"
        raise fail(message, exit_code if code is None else code) from None


class GuardedGroup(TyperGroup):
    """The root command group: every sub-command runs inside `guard()`."""

    def invoke(self, ctx: Any) -> Any:
        with guard():
            return super().invoke(ctx)
