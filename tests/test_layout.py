"""The code layout's rules that a reader should not have to check by hand.

No module uses another module's private names: neither `from swarmpress.x import _name`
nor `module._name` on an imported swarmpress module. What two modules share is public
(no underscore) in one place.

Inside codecs the rooms are layered: core/ imports neither entropy/ nor families/, and
entropy/ imports no codec family.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "swarmpress"

# Known cases in files this change does not own, to be cleared: "path relative to src/".
ALLOWED: set[str] = set()


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(dotted: str) -> bool:
    base = SRC.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _absolute(node: ast.ImportFrom, here: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    parts = here.split(".")
    if not is_package:
        parts.pop()
    parts = parts[: len(parts) - (node.level - 1)]
    return ".".join(parts + ([node.module] if node.module else []))


def _violations(path: Path, text: str | None = None) -> list[str]:
    here = _module_name(path)
    if text is None:
        text = path.read_text(encoding="utf-8")
    tree = ast.parse(text, filename=str(path))
    is_package = path.name == "__init__.py"
    modules: dict[str, str] = {}  # local name -> swarmpress module it is bound to
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] != "swarmpress":
                    continue
                if alias.asname:
                    modules[alias.asname] = alias.name
                else:
                    modules["swarmpress"] = "swarmpress"
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(node, here, is_package)
            if source.split(".")[0] != "swarmpress":
                continue
            for alias in node.names:
                if _is_private(alias.name) and source != here:
                    found.append(f"line {node.lineno}: from {source} import {alias.name}")
                full = f"{source}.{alias.name}"
                if _is_module(full):
                    modules[alias.asname or alias.name] = full
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        chain: list[str] = []
        cur: ast.expr = node
        while isinstance(cur, ast.Attribute):
            chain.append(cur.attr)
            cur = cur.value
        if not isinstance(cur, ast.Name) or cur.id not in modules:
            continue
        chain.reverse()
        target = modules[cur.id]
        for attr in chain:
            if _is_private(attr):
                if target != here:
                    found.append(f"line {node.lineno}: {target}.{attr}")
                break
            if not _is_module(f"{target}.{attr}"):
                break
            target = f"{target}.{attr}"
    return sorted(set(found))


def test_private_names_stay_in_their_module() -> None:
    bad = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        hits = _violations(path)
        if hits and rel not in ALLOWED:
            bad[rel] = hits
    assert not bad, "private names used across modules:\n" + "\n".join(
        f"{k}: {'; '.join(v)}" for k, v in bad.items()
    )


def _imported_modules(path: Path) -> set[str]:
    here = _module_name(path)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(node, here, path.name == "__init__.py")
            found.add(source)
            found.update(
                f"{source}.{a.name}" for a in node.names if _is_module(f"{source}.{a.name}")
            )
    return found


def test_codec_rooms_are_layered() -> None:
    below = {
        "core": ("swarmpress.codecs.entropy", "swarmpress.codecs.families"),
        "entropy": ("swarmpress.codecs.families",),
    }
    bad = []
    for room, forbidden in below.items():
        files = sorted((PACKAGE / "codecs" / room).rglob("*.py"))
        assert files, room
        for path in files:
            for mod in _imported_modules(path):
                if mod.startswith(forbidden) or mod == "swarmpress.codecs":
                    bad.append(f"{path.relative_to(SRC).as_posix()} imports {mod}")
    assert not bad, "\n".join(bad)


def test_the_checker_sees_both_forms() -> None:
    text = (
        "import swarmpress.codecs as C\n"
        "from swarmpress.codecs import _hidden\n"
        "from swarmpress import codecs\n"
        "import swarmpress\n"
        "x = C._secret + codecs._other + codecs.__name__ + swarmpress.codecs._third\n"
    )
    found = _violations(PACKAGE / "layout_probe.py", text)
    assert any("import _hidden" in f for f in found)
    for name in ("_secret", "_other", "_third"):
        assert any(f"swarmpress.codecs.{name}" in f for f in found), name
    assert not any("__name__" in f for f in found)
