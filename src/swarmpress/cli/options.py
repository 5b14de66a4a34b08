"""Option types and option groups the commands share (`grouped`: several options, one
parameter)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Annotated, Any, get_type_hints

import typer

JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")
]


def split(values: list[str] | None) -> list[str]:
    """Repeatable options whose values may also be comma-separated, as one list."""
    return [v.strip() for item in values or [] for v in item.split(",") if v.strip()]


def opt(kind: Any, flags: str, help: str, **options: Any) -> Any:
    """An option's annotation: Annotated[kind, typer.Option(*flags.split(), help=help)]."""
    return Annotated[kind, typer.Option(*flags.split(), help=help, **options)]


Flags = dict[str, tuple[Any, Any]]  # option parameter name -> (Annotated type, default)


def flags(**spec: tuple[Any, str, str]) -> Flags:
    """A group of options for `grouped`: name=(kind, flags, help), each unset by default."""
    return {name: (opt(kind | None, fl, text), None) for name, (kind, fl, text) in spec.items()}


def grouped(name: str, flags: Flags, only: Iterable[str] | None = None) -> Callable:
    """Give a command a group of options as one parameter: `name`, a dict of the values set.

    The command's other parameters stay as they are; the group's options (`only` these,
    where given) take the group parameter's place on the command line, with the names and
    flags they always had; options left unset (None) are left out of the dict."""
    keep = list(flags) if only is None else [f for f in flags if f in set(only)]

    def decorate(fn: Callable) -> Callable:
        hints = get_type_hints(fn, include_extras=True)
        params: list[inspect.Parameter] = []
        for p in inspect.signature(fn).parameters.values():
            if p.name != name:
                params.append(p.replace(annotation=hints.get(p.name, p.annotation)))
                continue
            kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
            for f in keep:
                annotation, default = flags[f]
                params.append(inspect.Parameter(f, kind, annotation=annotation, default=default))

        @functools.wraps(fn)
        def command(**kw: Any) -> Any:
            group = {f: kw.pop(f) for f in keep}
            return fn(**kw, **{name: {k: v for k, v in group.items() if v is not None}})

        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        del command.__wrapped__  # typer reads the signature above, not the function's
        return command

    return decorate
