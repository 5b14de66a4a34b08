"""The `swarmpress` command: a thin shell over the library, one sub-command per layer.

One module per command group (codecs, corpus, bench, arena, twin, swarm, data, and the
`commands` catalog); common.py holds what they share: the one error guard, the one output
helper (a table, or JSON with --json), the one progress helper. The commands parse and
print; the library does the work.

Exit codes: 0 success, 1 a run finished but failed its own check, 2 bad input (unknown
codec or model, missing or malformed corpus, bad option), 3 an internal error.
"""

from __future__ import annotations

import signal
import sys
from typing import Annotated

import typer
from rich.markup import escape

from swarmpress.cli.common import EXIT_INTERNAL, GuardedGroup, err_console

app = typer.Typer(
    cls=GuardedGroup,
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


def _register() -> None:
    from swarmpress.cli import arena, bench, catalog, checkpoint, codecs, corpus, data, swarm, twin

    app.command("codecs")(codecs.codecs_cmd)
    app.add_typer(corpus.corpus_app, name="corpus")
    app.command("bench")(bench.bench_cmd)
    app.add_typer(arena.arena_app, name="arena")
    app.add_typer(twin.twin_app, name="twin")
    app.add_typer(swarm.swarm_app, name="swarm")
    app.add_typer(data.data_app, name="data")
    app.add_typer(checkpoint.checkpoint_app, name="checkpoint")
    app.command("commands")(catalog.commands_cmd)


_register()


def main() -> None:
    """Entry point: run the app, turning unexpected errors into exit code 3 with one line.

    Standalone mode already maps usage errors to exit 2 and typer.Exit to its code, and the
    guard around every command (common.guard) what swarmpress refuses; only exceptions no
    command anticipated (bugs) reach the handler below.
    """
    previous = _sigterm_as_ctrl_c()
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except Exception as exc:
        err_console.print(
            f"[bold red]internal error:[/] {type(exc).__name__}: {escape(str(exc))} "
            "(please report it with the command you ran)",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(EXIT_INTERNAL)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _sigterm_as_ctrl_c():
    """SIGTERM (what `timeout`, `docker stop` and systemd send) as Ctrl-C, for every command:
    each stops as it would on Ctrl-C (a swarm run stops its workers and writes its partial
    result) instead of dying with its work. Commands with a SIGTERM rule of their own (data
    jobs, the arena's supervisor) set it while they run. The handler it replaced, or None
    off the main thread (where handlers cannot be set)."""
    try:
        return signal.signal(signal.SIGTERM, _interrupt)
    except ValueError:
        return None
