"""One error base: every exception class swarmpress defines derives from SwarmpressError, so a
caller (and the CLI's one guard) can catch anything swarmpress refuses with one class and
read its exit code. Errors two layers share are defined once (swarmpress.errors)."""

import importlib
import inspect
import pkgutil

import pytest

import swarmpress
from swarmpress.errors import AuthError, ExportError, SwarmpressError, UsageError

# Exception classes that do not derive from SwarmpressError, each with the reason. A class
# named here that now derives from it fails the test below, so the list only shrinks.
ALLOWED: dict[str, str] = {
    # private control-flow signals: raised and caught inside their own module, never seen
    # by a caller (making them SwarmpressErrors would let `except SwarmpressError` eat them)
    "swarmpress.data.jobs._Stop": "ends a collect round from the progress callback",
    "swarmpress.twin.sim._Stalled": "ends a simulated epoch that cannot progress",
}


def _modules() -> tuple[list, list[str]]:
    mods, missing = [], []
    for info in pkgutil.walk_packages(swarmpress.__path__, "swarmpress."):
        try:
            mods.append(importlib.import_module(info.name))
        except ImportError as exc:  # an optional dependency this environment lacks
            missing.append(f"{info.name} ({exc})")
    return mods, missing


def _exception_classes() -> dict[str, type]:
    found = {}
    for mod in _modules()[0]:
        for obj in vars(mod).values():
            ours = inspect.isclass(obj) and obj.__module__ == mod.__name__
            if ours and issubclass(obj, Exception) and not issubclass(obj, Warning):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return found


CLASSES = _exception_classes()


def test_the_walk_finds_the_layers_errors():
    names = set(CLASSES)
    for expected in ("arena.service.ArenaError", "data.store.StoreError", "bench.apex.ApexError",
                     "twin.scenario.ScenarioError", "corpus.store.CorpusError"):  # fmt: skip
        assert f"swarmpress.{expected}" in names
    assert any(n.endswith(".CodecError") for n in names)  # wherever codecs/ puts it
    assert len(names) > 35


def test_every_exception_derives_from_swarmpress_error():
    stray = sorted(n for n, cls in CLASSES.items()
                   if not issubclass(cls, SwarmpressError) and n not in ALLOWED)  # fmt: skip
    assert not stray, f"derive these from swarmpress.errors.SwarmpressError: {stray}"


def test_the_allow_list_holds_only_what_still_needs_it():
    stale = sorted(n for n in ALLOWED if n in CLASSES and issubclass(CLASSES[n], SwarmpressError))
    gone = sorted(n for n in ALLOWED if n not in CLASSES)
    assert not stale and not gone, f"remove from ALLOWED: {stale + gone}"


@pytest.mark.parametrize("name", sorted(n for n in CLASSES if n not in ALLOWED))
def test_exit_codes_are_the_cli_codes(name):
    assert CLASSES[name].exit_code in (1, 2, 3)


def test_bad_input_errors_exit_2_and_keep_their_builtin_base():
    from swarmpress.arena.config import ArenaConfigError
    from swarmpress.arena.service import ArenaError
    from swarmpress.data.query import QueryError
    from swarmpress.data.sources.http import FetchError
    from swarmpress.data.store import StoreError
    from swarmpress.twin.scenario import ScenarioError

    for cls in (ArenaConfigError, QueryError, ScenarioError):
        assert issubclass(cls, UsageError) and issubclass(cls, ValueError)
        assert cls("x").exit_code == 2
    assert issubclass(ArenaError, UsageError) and ArenaError.status == 400
    for cls in (FetchError, StoreError):  # a run that failed, not bad input
        assert issubclass(cls, RuntimeError) and cls("x").exit_code == 1


def test_shared_errors_are_defined_once_and_importable_where_they_were():
    from swarmpress.arena import export as arena_export
    from swarmpress.arena import service
    from swarmpress.data import export as data_export
    from swarmpress.data.sources import http, x

    assert arena_export.ExportError is data_export.ExportError is ExportError
    assert service.AuthError is http.AuthError is x.AuthError is AuthError
    assert issubclass(ExportError, ValueError) and ExportError("x").exit_code == 2
    assert AuthError("x").exit_code == 2 and AuthError.status == 401
    dupes = [n for n in CLASSES if n.rsplit(".", 1)[1] in ("ExportError", "AuthError")]
    assert dupes == [] or all(CLASSES[n] in (ExportError, AuthError) for n in dupes)


def test_an_error_message_with_markup_characters_is_printed_as_it_is(tmp_path):
    """A user's path or a peer's text may hold rich markup ("[/x]"): printed literally,
    not parsed (which crashed with a MarkupError traceback)."""
    from tests.inprocess import run_cli

    weird = tmp_path / "[/x]" / "[bold]in.jsonl"
    done = run_cli("data", "collect", "--source", "local", "--path", str(weird),
                   "--store", str(tmp_path / "s.db"))  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "[/x]" in done.stderr and "[bold]in.jsonl" in done.stderr
    assert "Traceback" not in done.stderr and "MarkupError" not in done.stderr
