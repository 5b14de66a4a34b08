"""Solution environments: the Apex lists, built as their own venvs, and the upload check
that refuses imports they do not hold."""

import json
import subprocess
import sys

import pytest

from swarmpress.arena import envs
from swarmpress.arena.sandbox import SandboxUnavailable, pick_engine
from swarmpress.arena.validate import SolutionError, imports, inspect_solution, parse

APEX_MODULES = {"torch", "numpy", "scipy", "zstd", "zstandard", "brotli", "lz4", "fastapi",
                "uvicorn", "multipart", "python_multipart", "pydantic", "loguru",
                "asyncio_mqtt"}  # fmt: skip
FUNCS = "def compress_data(d):\n    return d\n\n\ndef decompress_data(d):\n    return d\n"


@pytest.mark.parametrize("name", envs.names())
def test_the_built_environment_holds_what_its_snapshot_says(name):
    env = envs.get(name)
    if not env.is_built():
        pytest.skip(f"{name} is not built here (`swarmpress arena env build`)")
    built = {m for m in env.modules() if m not in sys.stdlib_module_names}
    assert built == set(env.snapshot.read_text().split())


def test_the_matrix_compression_environment_is_the_apex_list_and_nothing_of_ours():
    env = envs.get("apex-matrix-compression")
    assert env.modules() >= APEX_MODULES
    for ours in ("swarmpress", "numba", "transformers", "constriction", "sqlalchemy"):
        assert ours not in env.modules()
    assert "9f7eb79b" in env.matches() and "v4.0.34" in env.matches()
    if env.is_built():  # the venv itself cannot import them either
        code = "import importlib.util as u, json; print(json.dumps([u.find_spec(m) is None " \
               "for m in ('swarmpress', 'numba', 'transformers')]))"  # fmt: skip
        out = subprocess.run([str(env.python), "-I", "-c", code], capture_output=True, text=True)
        assert json.loads(out.stdout) == [True, True, True]


def test_the_iota_environment_is_the_published_list():
    env = envs.get("apex-iota-simulator")
    assert {"fastapi", "uvicorn", "pydantic", "orjson", "numpy", "httpx"} <= env.modules()
    assert "9e8f330b" in env.matches()


def test_unknown_environments_and_unbuilt_ones_say_what_to_do(tmp_path, monkeypatch):
    with pytest.raises(envs.EnvError, match="no solution environment 'nope'"):
        envs.get("nope")
    monkeypatch.setenv("SWARMPRESS_ARENA_ENVS", str(tmp_path))
    env = envs.get("apex-iota-simulator")
    assert not env.is_built() and "fastapi" in env.modules()  # the committed snapshot
    with pytest.raises(envs.EnvError, match="swarmpress arena env build apex-iota-simulator"):
        env.require()


def _check(code: str, track: str = "lossy") -> str:
    env = envs.get("apex-matrix-compression")
    return inspect_solution(code.encode(), 65536, track, env.modules(), env.name)


@pytest.mark.parametrize(
    "line, module",
    [("import numba", "numba"), ("from transformers import AutoModel", "transformers"),
     ("import swarmpress.codecs", "swarmpress"), ("x = __import__('sqlalchemy')", "sqlalchemy"),
     ("import importlib\nm = importlib.import_module('constriction')", "constriction")],
)  # fmt: skip
def test_an_upload_importing_what_the_environment_lacks_is_refused_naming_it(line, module):
    with pytest.raises(SolutionError, match=f"imports '{module}'"):
        _check(line + "\n" + FUNCS)


def test_optional_imports_standard_library_and_apex_packages_pass():
    code = "try:\n    import numba\nexcept ImportError:\n    numba = None\n"
    code += "import json, struct, zstd, torch, brotli\nfrom scipy import fft\n" + FUNCS
    assert _check(code) == "functions"
    with pytest.raises(SolutionError, match="relative import"):
        _check("from . import x\n" + FUNCS)


def test_a_file_that_starts_a_server_runs_as_a_server_even_with_the_functions():
    server = (
        "import argparse, uvicorn\nfrom fastapi import FastAPI\n" + FUNCS +
        "ROUTES = ['/health', '/compress', '/decompress']\n"
        "if __name__ == '__main__':\n    p = argparse.ArgumentParser()\n"
        "    p.add_argument('--port', type=int, default=8080)\n"
        "    uvicorn.run(FastAPI(), host='0.0.0.0', port=p.parse_args().port)\n"
    )  # fmt: skip
    assert _check(server) == "server"
    assert _check(server.replace("if __name__ == '__main__':", "if True:")) == "functions"


def test_hostile_sources_are_refused_with_a_reason_not_a_crash():
    with pytest.raises(SolutionError, match=r"nests too deeply|does not parse"):
        parse(b"x = " + b"1+" * 100_000 + b"1\n", 10**7)
    with pytest.raises(SolutionError, match="does not parse"):
        parse(b"x = 1\x00\n", 100)
    with pytest.raises(SolutionError, match="65537 bytes; the limit is 65536"):
        parse(b"#" * 65537, 65536)
    deep = "def f():\n" + "".join("  " * i + "if x:\n" for i in range(1, 90)) + "  " * 90 + "y\n"
    assert imports(parse(deep.encode(), 10**6)) == []


def test_an_unknown_engine_is_refused_and_auto_names_every_reason(monkeypatch):
    with pytest.raises(ValueError, match="unknown sandbox engine"):
        pick_engine("docker")
    from swarmpress.arena.sandbox import session

    monkeypatch.setattr(session, "engine_unavailable", lambda e: f"{e} is missing here")
    with pytest.raises(SandboxUnavailable, match=r"gvisor: gvisor is missing.*bwrap: bwrap is"):
        pick_engine("auto")
