"""The `swarmpress` command: a thin shell over the library, one sub-command per layer.

Exit codes: 0 success, 1 a run finished but failed its own check, 2 bad input (unknown
codec or model, missing or malformed corpus, bad option), 3 an internal error.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="Compress what crosses the wire in decentralized training.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    """Print a one-line error and return the Exit to raise."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")]


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
corpus_app = typer.Typer(help="Build activation/gradient corpora from real models.", no_args_is_help=True)
app.add_typer(corpus_app, name="corpus")


# ----------------------------------------------------------------------------- bench
# (`swarmpress bench` is defined below by the bench section.)


def main() -> None:
    """Entry point: run the app, turning unexpected errors into exit code 3 with one line."""
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
