"""`swarmpress codecs`: the registered codecs and their parameters."""

from __future__ import annotations

from swarmpress.cli.options import JsonOpt
from swarmpress.cli.output import emit, table


def _kind(c: dict) -> str:
    return ("lossless" if c["lossless"] else "lossy") + (", stream" if c["stream"] else "")


def codecs_cmd(as_json: JsonOpt = False) -> None:
    """List the registered codecs and their parameters."""
    from swarmpress.codecs import list_codecs

    info = list_codecs()
    rows = [
        (c["id"], _kind(c), ", ".join(f"{p['name']}={p['default']}" for p in c["params"]) or "-",
         c["summary"])
        for c in info
    ]  # fmt: skip
    emit(info, as_json, lambda: table(("codec", "kind", "parameters", "summary"), rows,
                                      title="swarmpress codecs"))  # fmt: skip
