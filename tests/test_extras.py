"""pyproject's extras match what each layer imports: a layer's third-party imports are all
covered by the core dependencies plus that layer's extra (`pip install swarmpress[twin]`
is enough to use the twin). Read from the source with ast, so it holds whatever is
installed here.

Counted for a layer: every import in its own modules (at module level or inside a function,
where a feature needs it), and the module-level imports of the other layers' modules it
imports at module level (what importing the layer pulls in). The core (codecs, the CLI,
the package root) may only import the core dependencies at module level.
"""

import ast
import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "swarmpress"
LAYERS = ("arena", "data", "twin", "swarm", "corpus", "bench", "torch", "interop")
# Files that never run in this project's environment: Apex solutions run in the sandbox's
# own environment (arena/envs/*.txt), the harness with its interpreter (stdlib only).
FOREIGN = ("arena/solutions/", "arena/sandbox/harness.py")
# import name -> distribution name, where normalizing the name is not enough
DISTRIBUTION = {"zmq": "pyzmq", "yaml": "pyyaml", "PIL": "pillow", "sklearn": "scikit-learn",
                "psycopg": "psycopg"}  # fmt: skip
# Lazy imports a layer makes only to use a package when present (it works without it).
OPTIONAL: dict[str, set[str]] = {
    "codecs": {"torch"},  # torch tensors and the GPU path, when torch is there
}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(req: str) -> str:
    return normalize(re.match(r"[A-Za-z0-9_.-]+", req.strip()).group(0))


PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
CORE = {requirement_name(r) for r in PYPROJECT["dependencies"]}
EXTRAS = {
    k: {requirement_name(r) for r in v} for k, v in PYPROJECT["optional-dependencies"].items()
}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def files() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).as_posix()
        if not rel.startswith(FOREIGN):
            out[module_name(path)] = path
    return out


FILES = files()


def imports(path: Path) -> list[tuple[str, bool]]:
    """(absolute module name, at module level) for each import in the file."""
    tree = ast.parse(path.read_text(), str(path))
    top = {id(n) for n in tree.body}
    for node in tree.body:  # `try: import x` / `if TYPE_CHECKING:` blocks still run at import
        if isinstance(node, ast.Try):
            top |= {id(n) for n in node.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.level:  # relative: resolve against the file's package
                base = module_name(path).split(".")
                if path.name != "__init__.py":
                    base = base[:-1]
                base = base[: len(base) - node.level + 1]
                out.append((".".join([*base, node.module]), id(node) in top))
            else:
                out.append((node.module, id(node) in top))
    return out


def third_party(name: str) -> str | None:
    top = name.split(".")[0]
    if top in sys.stdlib_module_names or top in ("__future__", "swarmpress"):
        return None
    return normalize(DISTRIBUTION.get(top, top))


def needed(layer: str, lazy: bool = True) -> dict[str, set[str]]:
    """distribution -> the files that need it, for a layer as described above (lazy: count
    the imports inside its functions too)."""
    need: dict[str, set[str]] = {}
    own = [m for m in FILES if layer_of(m) == layer]
    seen: set[str] = set()
    todo = list(own)
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        mine = layer_of(mod) == layer and lazy
        for name, at_top in imports(FILES[mod]):
            dist = third_party(name)
            if dist is not None and (at_top or mine):
                if not at_top and name.split(".")[0] in OPTIONAL.get(layer, ()):
                    continue
                need.setdefault(dist, set()).add(FILES[mod].relative_to(SRC).as_posix())
            elif dist is None and name.startswith("swarmpress.") and at_top:
                # the module itself, else the package that holds the imported name
                target = name if name in FILES else name.rsplit(".", 1)[0]
                todo += [target] if target in FILES else []
    return need


def test_the_project_has_an_extra_per_layer_and_all_of_them():
    assert set(LAYERS) <= set(EXTRAS), f"missing extras: {set(LAYERS) - set(EXTRAS)}"
    (everything,) = PYPROJECT["optional-dependencies"]["all"]
    assert requirement_name(everything) == "swarmpress"
    assert set(everything.split("[", 1)[1].rstrip("]").split(",")) == set(LAYERS)


@pytest.mark.parametrize("layer", LAYERS)
def test_a_layers_imports_are_covered_by_core_and_its_extra(layer):
    assert any(layer_of(m) == layer for m in FILES)
    missing = {d: sorted(f) for d, f in needed(layer).items() if d not in CORE | EXTRAS[layer]}
    assert not missing, f"add to the {layer!r} extra (or core): {missing}"


# "": the package root; the CLI imports a layer inside the command that needs it
@pytest.mark.parametrize("core", ["codecs", "cli", "errors", "__main__", ""])
def test_the_core_imports_only_core_dependencies(core):
    need = needed(core, lazy=core == "codecs")
    missing = {d: sorted(f) for d, f in need.items() if d not in CORE}
    assert not missing, f"core modules import non-core packages: {missing}"


def test_the_walk_sees_what_the_layers_really_import():
    assert {"pydantic", "msgspec", "uvicorn"} <= set(needed("twin"))
    assert {"sqlalchemy", "pyarrow", "tokenizers"} <= set(needed("data"))
    assert {"pyzmq", "torch"} <= set(needed("swarm"))
