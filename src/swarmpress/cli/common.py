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
from typer.core import TyperGroup

from swarmpress.errors import SwarmpressError

console = Console()
err_console = Console(stderr=True)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    """Print a one-line error and return the Exit to raise."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


# ----------------------------------------------------------------------------- errors
# The exit code (and a lead-in, where it helps) the CLI has always given each layer's error,
# by class name: the classes are found on the exception's MRO, so nothing is imported here
# and the most specific class wins (data's AuthError, 2, before its base FetchError, 1).
# An error not named here that derives from SwarmpressError exits with its own `exit_code`.
LAYER_ERRORS: dict[str, tuple[int, str]] = {
    # arena
    "ClientError": (EXIT_USAGE, ""),
    "ArenaError": (EXIT_USAGE, ""),
    "ArenaConfigError": (EXIT_USAGE, ""),
    "PoolError": (EXIT_USAGE, ""),
    "SandboxUnavailable": (EXIT_USAGE, ""),
    "EnvError": (EXIT_USAGE, ""),
    "ExportError": (EXIT_USAGE, ""),  # arena's and data's
    # bench, corpus, codecs
    "ApexError": (EXIT_USAGE, ""),
    "CorpusError": (EXIT_USAGE, ""),
    "CodecError": (EXIT_USAGE, ""),
    # data
    "QueryError": (EXIT_USAGE, ""),
    "SourceError": (EXIT_USAGE, ""),
    "PackError": (EXIT_USAGE, ""),
    "RecordError": (EXIT_USAGE, ""),
    "JobError": (EXIT_USAGE, ""),
    "AuthError": (EXIT_USAGE, ""),  # data's (a FetchError) and arena's (an ArenaError)
    "FetchError": (EXIT_FAILED, ""),
    "StoreError": (EXIT_FAILED, ""),
    # swarm
    "ConfigError": (EXIT_USAGE, ""),
    "DataError": (EXIT_USAGE, ""),
    "CalibrationError": (EXIT_USAGE, "cannot calibrate: "),
    "SwarmError": (EXIT_FAILED, "the run failed: "),
    # twin
    "ScenarioError": (EXIT_USAGE, ""),
    "ProfileError": (EXIT_USAGE, ""),
    "PolicyError": (EXIT_USAGE, ""),
    "PolicyFailure": (EXIT_USAGE, ""),
}


def _known(exc: BaseException, also: tuple[type[BaseException], ...]) -> tuple[int, str] | None:
    """(exit code, lead-in) for an error the CLI reports in one line; None for a bug."""
    for cls in type(exc).__mro__:
        if cls.__name__ in LAYER_ERRORS and cls.__module__.startswith("swarmpress."):
            return LAYER_ERRORS[cls.__name__]
    if isinstance(exc, SwarmpressError):
        return exc.exit_code, ""
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
