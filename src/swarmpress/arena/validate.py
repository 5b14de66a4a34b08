"""Checks on an uploaded solution file before it is stored: size, text, syntax, form and
imports, so that a file that cannot run is refused before it uses any quota.

Forms (DESIGN.md "Arena contract"), decided the way Apex runs a file:
* server: the file starts a server when run (`if __name__ == "__main__":`) and names the
  track's routes and a --port flag: it runs as `python FILE --port N`, like Apex's
  Dockerfile. Apex's published files define the functions too and still run this way.
* functions: top-level `compress_data` and `decompress_data`, called in the harness.
* routing track: always a server (/health, /route, /balance-orchestrator, --port).

Imports are checked against the competition's solution environment (envs.py): a module
it does not hold is named in the refusal. An import guarded by `try: ... except
ImportError` (or a broader handler) is optional and allowed, as it would run in Apex.
"""

from __future__ import annotations

import ast
import sys

from swarmpress.errors import UsageError

FUNCTIONS, SERVER, ROUTER = "functions", "server", "router"
ROUTES = {
    "routing": {"/health", "/route", "/balance-orchestrator"},
    "compression": {"/health", "/compress", "/decompress"},
}
_OPTIONAL = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}


class SolutionError(UsageError, ValueError):
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


def _has_main(tree: ast.Module) -> bool:
    """Whether the module has a top-level `if __name__ == "__main__":` block."""
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Compare):
            parts = [node.test.left, *node.test.comparators]
            names = {p.id for p in parts if isinstance(p, ast.Name)}
            consts = {p.value for p in parts if isinstance(p, ast.Constant)}
            if "__name__" in names and "__main__" in consts:
                return True
    return False


def _catches_import_error(node: ast.Try) -> bool:
    for h in node.handlers:
        if h.type is None:
            return True
        types = h.type.elts if isinstance(h.type, ast.Tuple) else [h.type]
        if any(isinstance(t, ast.Name) and t.id in _OPTIONAL for t in types):
            return True
    return False


def imports(tree: ast.Module) -> list[tuple[str, int, bool]]:
    """(top-level module, line, optional) for every import in the file, including
    `__import__("x")` and `importlib.import_module("x")` with a constant name."""
    found: list[tuple[str, int, bool]] = []
    stack: list[tuple[ast.AST, bool]] = [(tree, False)]  # iterative: deep trees are fine
    while stack:
        node, optional = stack.pop()
        if isinstance(node, ast.Import):
            found.extend((a.name.partition(".")[0], node.lineno, optional) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                raise SolutionError(
                    f"line {node.lineno}: a relative import; a solution is one file"
                )
            found.append((str(node.module).partition(".")[0], node.lineno, optional))
        elif isinstance(node, ast.Call) and node.args:
            f, arg = node.func, node.args[0]
            name = getattr(f, "id", None) or getattr(f, "attr", "")
            if (
                name in ("__import__", "import_module")
                and isinstance(arg, ast.Constant)
                and isinstance(arg.value, str)
            ):
                found.append((arg.value.partition(".")[0], node.lineno, optional))
        if isinstance(node, ast.Try):
            guarded = optional or _catches_import_error(node)
            stack += [(c, guarded) for c in node.body]
            stack += [(c, optional) for part in (node.handlers, node.orelse, node.finalbody)
                      for c in part]  # fmt: skip
        else:
            stack += [(c, optional) for c in ast.iter_child_nodes(node)]
    return sorted(found, key=lambda f: f[1])


def check_imports(tree: ast.Module, modules: frozenset[str] | None, env_name: str = "") -> None:
    """SolutionError naming the first required module the environment does not hold."""
    if modules is None:
        return
    have = modules | set(sys.stdlib_module_names) | {"__future__"}
    for name, line, optional in imports(tree):
        if name not in have and not optional:
            raise SolutionError(
                f"line {line}: imports {name!r}, which the solution environment "
                f"{env_name or ''} does not have (`swarmpress arena env show "
                f"{env_name}` lists what it has)".replace("  ", " ")
            )


def parse(code: bytes, max_bytes: int) -> ast.Module:
    """The file's syntax tree; SolutionError for empty, oversized, non-UTF-8 or unparsable
    files (including ones nested too deeply for the parser)."""
    if not code:
        raise SolutionError("the solution file is empty")
    if len(code) > max_bytes:
        raise SolutionError(f"the solution is {len(code)} bytes; the limit is {max_bytes}")
    try:
        text = code.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SolutionError(f"the solution is not UTF-8 text (byte {exc.start})") from None
    try:
        return ast.parse(text)
    except SyntaxError as exc:
        raise SolutionError(f"the solution does not parse: line {exc.lineno}: {exc.msg}") from None
    except (RecursionError, MemoryError):
        raise SolutionError("the solution nests too deeply to parse") from None
    except ValueError as exc:  # e.g. NUL bytes in the source
        raise SolutionError(f"the solution does not parse: {exc}") from None


def inspect_solution(
    code: bytes,
    max_bytes: int = 65_536,
    track: str = "lossy",
    modules: frozenset[str] | None = None,
    env_name: str = "",
) -> str:
    """The form a valid solution runs in ("functions", "server" or, on the routing track,
    "router"); SolutionError naming the problem otherwise. modules: what the solution
    environment holds (None: imports are not checked)."""
    tree = parse(code, max_bytes)
    strings = _strings(tree)
    server = _has_main(tree) and "--port" in strings
    if track == "routing":
        if server and ROUTES["routing"] <= strings:
            check_imports(tree, modules, env_name)
            return ROUTER
        raise SolutionError(
            "a routing solution is an HTTP server with /health, /route and "
            "/balance-orchestrator, started as `python FILE --port N` (the twin contract)"
        )
    if server and ROUTES["compression"] <= strings:
        form = SERVER
    elif {"compress_data", "decompress_data"} <= _names(tree):
        form = FUNCTIONS
    else:
        raise SolutionError(
            "the solution defines neither compress_data(data) and decompress_data(data) nor "
            "a server with /health, /compress and /decompress started as "
            "`python FILE --port N`"
        )
    check_imports(tree, modules, env_name)
    return form
