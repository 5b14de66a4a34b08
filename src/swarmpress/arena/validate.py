"""Checks on an uploaded solution file before it is stored: size, text, syntax, form.

Two forms are accepted (DESIGN.md "Arena contract"): top-level `compress_data` and
`decompress_data` functions, or a FastAPI server with GET /health, POST /compress,
POST /decompress and a --port flag (the Apex reference baseline form).
"""

from __future__ import annotations

import ast

FUNCTIONS, SERVER, ROUTER = "functions", "server", "router"


class SolutionError(ValueError):
    """An upload that cannot be a solution; the message says what to fix."""


def _names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.ImportFrom):
            names |= {a.asname or a.name for a in node.names}
    return names


def _strings(tree: ast.Module) -> set[str]:
    return {
        n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    }


def inspect_solution(code: bytes, max_bytes: int = 20_000, track: str = "lossy") -> str:
    """The form of a valid solution file ("functions", "server" or, on the routing track,
    "router"); SolutionError otherwise."""
    if not code:
        raise SolutionError("the solution file is empty")
    if len(code) > max_bytes:
        raise SolutionError(f"the solution is {len(code)} bytes; the limit is {max_bytes}")
    try:
        text = code.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SolutionError(f"the solution is not UTF-8 text (byte {exc.start})") from None
    try:
        tree = ast.parse(text)
    except SyntaxError as exc:
        raise SolutionError(f"the solution does not parse: line {exc.lineno}: {exc.msg}") from None
    names = _names(tree)
    strings = _strings(tree)
    if track == "routing":
        if {"/health", "/route", "/balance-orchestrator", "--port"} <= strings:
            return ROUTER
        raise SolutionError(
            "a routing solution is an HTTP server with /health, /route and "
            "/balance-orchestrator started with --port (the twin contract)"
        )
    if {"compress_data", "decompress_data"} <= names:
        return FUNCTIONS
    if {"/health", "/compress", "/decompress", "--port"} <= strings:
        return SERVER
    raise SolutionError(
        "the solution defines neither compress_data(data) and decompress_data(data) nor a "
        "FastAPI server with /health, /compress, /decompress and a --port flag"
    )
