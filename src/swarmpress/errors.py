"""The one error base every layer's errors derive from, with the exit code the CLI returns.

A caller can catch `SwarmpressError` to handle anything swarmpress refuses, and the CLI maps
any of them to a one-line message and its `exit_code` instead of a traceback. Layers define
their own subclasses (CodecError, CorpusError, ...) and set `exit_code` where a different
code means something to scripts.
"""

from __future__ import annotations


class SwarmpressError(Exception):
    """Something swarmpress refused or could not do, said in words a user can act on."""

    exit_code: int = 1  # what the CLI exits with (cli_common: 0 ok, 1 failed, 2 usage, 3 internal)

    def __init__(self, message: str = "", *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(SwarmpressError):
    """A request that cannot mean anything: a bad option, spec or configuration field."""

    exit_code = 2


# Errors two layers raise with one meaning, defined once here (the layers re-export them).
class ExportError(UsageError, ValueError):
    """An export that cannot be written as asked: an unknown codec, format or option, a bad
    value, a file that exists or is too large (arena.export, data.export)."""


class AuthError(UsageError):
    """Credentials missing or refused: no API key or an unknown one (arena.service), a
    token missing or a 401/403 from a source (data.sources). `status`: the HTTP status a
    server answers with."""

    status = 401
