"""`swarmpress commands`: every command with its arguments and options, as data."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import typer

from swarmpress.cli.options import JsonOpt
from swarmpress.cli.output import emit, table


def commands_cmd(as_json: JsonOpt = False) -> None:
    """Every command with its arguments and options: flags, types, defaults (a catalog)."""
    catalog = command_catalog()
    rows = [(c["command"], c["help"]) for c in catalog]
    emit(catalog, as_json, lambda: table(("command", "what it does"), rows,
                                         title="swarmpress commands"))  # fmt: skip


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return str(value)


def _type_name(param: Any) -> str:
    """A parameter's value type as a JSON-Schema-like word (integer, number, string ...)."""
    ann = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    if ann is None:  # a plain click parameter
        return str(getattr(getattr(param, "type", None), "name", "string"))
    if typing.get_origin(ann) in (list, tuple):
        ann = typing.get_args(ann)[0]
    names = {int: "integer", float: "number", bool: "boolean", str: "string", Path: "path"}
    return names.get(ann, getattr(ann, "__name__", str(ann)))


def _param(p: Any) -> dict[str, Any]:
    return {
        "name": p.name,
        "kind": getattr(p, "param_type_name", "option"),
        "flags": [*p.opts, *p.secondary_opts],
        "type": _type_name(p),
        "required": bool(p.required),
        "multiple": bool(getattr(p, "multiple", False)),
        "is_flag": bool(getattr(p, "is_flag", False)),
        "default": _json_safe(p.default),
        "help": getattr(p, "help", None),
    }


def command_catalog() -> list[dict]:
    """The command tree as data: one entry per command, with every parameter."""
    from swarmpress.cli import app

    # Duck-typed: typer vendors its own click, whose classes are not click's.
    def walk(cmd: Any, path: list[str]):
        if isinstance(getattr(cmd, "commands", None), dict):
            for name in sorted(cmd.commands):
                yield from walk(cmd.commands[name], [*path, name])
            return
        params = [_param(p) for p in cmd.params if p.name != "help"]
        summary = (cmd.help or "").strip().splitlines()
        yield {"command": " ".join(path), "help": summary[0] if summary else "", "params": params}

    return list(walk(typer.main.get_command(app), ["swarmpress"]))
