"""`swarmpress arena env ...`: the solution environments entries run in (list, build, show)
and the sandbox engines this machine can use."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.console import Group
from rich.text import Text

from swarmpress.cli.common import EXIT_FAILED, console, guard
from swarmpress.cli.options import JsonOpt
from swarmpress.cli.output import emit, table

env_app = typer.Typer(
    help="Solution environments (the Apex requirements lists, one venv each) and sandboxes.",
    no_args_is_help=True,
)


def _describe(name: str) -> dict:
    from swarmpress.arena import envs

    env = envs.get(name)
    return {
        "name": name,
        "matches": env.matches(),
        "built": env.is_built(),
        "path": str(env.path),
        "modules": len(env.modules()),
    }


@env_app.command("list")
def list_cmd(as_json: JsonOpt = False) -> None:
    """Every environment, whether it is built here, and which sandbox engines can run.

    Exit 0; the engines line says why an engine cannot run (gVisor needs runsc, root and
    a memory cgroup; the bubblewrap fallback needs bwrap, setpriv and libseccomp)."""
    from swarmpress.arena import envs
    from swarmpress.arena.sandbox import ENGINES, engine_unavailable

    rows = [_describe(n) for n in envs.names()]
    engines = {e: engine_unavailable(e) or "ok" for e in ENGINES}
    cells = [(r["name"], "yes" if r["built"] else "no", r["matches"], r["path"]) for r in rows]
    emit({"environments": rows, "engines": engines}, as_json, lambda: Group(
        table(("environment", "built", "matches", "path"), cells),
        *(Text(f"sandbox engine {e}: {why}") for e, why in engines.items()),
    ), indent=1)  # fmt: skip


@env_app.command("build")
def build_cmd(
    names: Annotated[
        list[str] | None, typer.Argument(help="Environments to build (default: all).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create each environment's venv from its requirements (a no-op when built).

    Exit 0 when all are built, 2 for an unknown name, 1 when pip fails."""
    from swarmpress.arena import envs

    todo = names or envs.names()
    for n in todo:
        envs.get(n)  # an unknown name: exit 2 before building anything
    done = []
    for n in todo:
        with guard(code=EXIT_FAILED), console.status(f"building the {n} environment (pip install)"):
            path = envs.build(n)
        done.append({"name": n, "path": str(path)})
        if not as_json:
            console.print(f"{n}: {path}")
    if as_json:
        emit(done, True, indent=1)


@env_app.command("show")
def show_cmd(name: str, as_json: JsonOpt = False) -> None:
    """One environment: the published file it matches and the modules entries may import."""
    from swarmpress.arena import envs

    info = _describe(name)
    modules = sorted(envs.get(name).modules())
    extra = [m for m in modules if m not in sys.stdlib_module_names]
    emit({**info, "modules": modules}, as_json, lambda: "\n".join((
        f"{name}: {info['matches']}",
        f"built: {'yes, ' + info['path'] if info['built'] else 'no'}",
        "modules beyond the standard library: " + ", ".join(extra),
    )), indent=1)  # fmt: skip
