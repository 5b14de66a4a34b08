"""`swarmpress arena ...`: run an arena (init, serve, worker) and use one (submit, status,
leaderboard, download, lineage, keys), plus export-solution. Client commands take --server
(env SWARMPRESS_ARENA_URL) and --key (env SWARMPRESS_ARENA_KEY).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.text import Text
from rich.tree import Tree

from swarmpress.cli.arena_env import env_app
from swarmpress.cli.common import EXIT_FAILED, console, err_console, fail
from swarmpress.cli.options import JsonOpt, grouped, opt
from swarmpress.cli.output import emit, table

arena_app = typer.Typer(
    help="The open compression arena: serve one, submit to one, export codecs as solutions.",
    no_args_is_help=True,
)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
arena_app.add_typer(keys_app, name="keys")
arena_app.add_typer(env_app, name="env")

HomeOpt = opt(Path, "--home", "Arena directory: config, pool, logs and the SQLite db.")
DbOpt = opt(str | None, "--db", "Database URL (default: SQLite in --home); postgresql://... "
            "lets workers on several machines share one arena.")  # fmt: skip
SidArg = Annotated[int, typer.Argument(help="Submission id.")]
ServerOpt = opt(str | None, "--server", "Arena URL (default: env SWARMPRESS_ARENA_URL or "
                "http://127.0.0.1:8765).")  # fmt: skip
KeyOpt = opt(str | None, "--key", "API key (default: env SWARMPRESS_ARENA_KEY).")
CompOpt = opt(str, "--competition -c", "Competition name.")
# Where the arena is and who asks: the options of every client command, as one group.
CLIENT_FLAGS = {"server": (ServerOpt, None), "key": (KeyOpt, None)}


def _client(remote: dict | None):
    from swarmpress.arena.client import ArenaClient

    remote = remote or {}
    return ArenaClient(remote.get("server"), remote.get("key"))


def _open_arena(home: Path, db: str | None):
    from swarmpress.arena.service import Arena

    return Arena(home, db)


# ----------------------------------------------------------------------------- running one
@arena_app.command("init")
def init_cmd(
    home: HomeOpt,
    corpus: Annotated[
        Path | None,
        typer.Option(
            "--corpus",
            help="Cut the pool from this private corpus (made by `swarmpress corpus build`) "
            "instead of drawing it; the embedded default corpus is refused.",
        ),
    ] = None,
    text: Annotated[
        Path | None,
        typer.Option(
            "--text",
            help="Draw the sequences from your own text: a .txt/.md file, a folder of "
            "them or a data pack (default: the standard library's pydoc_data.topics).",
        ),
    ] = None,
    sequences: Annotated[
        int, typer.Option("--sequences", min=1, help="Held-out sequences (4 pieces each).")
    ] = 12,
    seq_len: Annotated[int, typer.Option("--seq-len", min=8, help="Tokens per sequence.")] = 256,
) -> None:
    """Create an arena home with the default competitions and a secret held-out pool.

    A random secret (pool/secret, mode 0600, never served) picks the text, the layers and
    the rounds, so the pool differs in every home and nobody can rebuild it.
    """
    from swarmpress.arena.service import init_home

    if corpus is not None and text is not None:
        raise fail("give --corpus or --text, not both")
    with console.status("drawing the held-out pool (MiniLM on secret-chosen text)"):
        made = init_home(home, corpus, text=text, sequences=sequences, seq_len=seq_len)
    console.print(f"{'created' if made else 'kept the existing'} arena in {home}")


@arena_app.command("worker")
def worker_cmd(
    home: HomeOpt,
    db: DbOpt = None,
    slot: Annotated[int, typer.Option("--slot", help="Sandbox uid/CPU slot.")] = 0,
) -> None:
    """Evaluate queued submissions until stopped (run several, here or on other machines)."""
    from swarmpress.arena.supervise import run_worker

    run_worker(home, db, slot)


def _worker_command(home: Path, db: str | None, slot: int) -> list[str]:
    """The command line of a local worker `serve` starts (and restarts) in slot `slot`."""
    argv = [sys.executable, "-m", "swarmpress.cli", "arena", "worker", "--home", str(home)]
    return argv + ["--slot", str(slot)] + (["--db", db] if db else [])


@arena_app.command("serve")
def serve_cmd(
    home: HomeOpt,
    port: Annotated[
        int, typer.Option("--port", help="HTTP port (0: any free one).", min=0, max=65535)
    ] = 8765,
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    db: DbOpt = None,
    workers: Annotated[
        int, typer.Option("--workers", help="Worker processes to run here (0: none).", min=0)
    ] = 2,
) -> None:
    """Serve the API and dashboard, with local workers; creates the arena if --home is empty.

    The port is taken first: when it is in use (exit 2) nothing is created. An arena
    without a valid admin key gets one, printed once, only then; a lost admin key is
    replaced with `arena keys create NAME --admin --home DIR`."""
    import uvicorn

    from swarmpress.arena.api import create_app, listen
    from swarmpress.arena.service import init_home
    from swarmpress.arena.supervise import WorkerPool

    try:
        sock = listen(host, port)
    except (OSError, OverflowError) as exc:  # OverflowError: a port past 65535
        raise fail(f"cannot listen on {host}:{port}: {getattr(exc, 'strerror', None) or exc}"
                   ) from None  # fmt: skip
    port = sock.getsockname()[1]  # the one taken when --port is 0
    with sock:
        if not (home / "arena.toml").exists():
            with console.status("creating the arena (building the pool from the embedded "
                                "corpus)"):  # fmt: skip
                init_home(home)
        arena = _open_arena(home, db)
        if not arena.has_admin():
            key = arena.create_key("admin", admin=True)
            console.print(f"admin key (shown once): [bold]{key}[/]", highlight=False)

        def restarted(slot: int, code: int) -> None:
            err_console.print(f"worker {slot} exited with {code}; restarting it")

        server = uvicorn.Server(uvicorn.Config(create_app(arena), host=host, port=port,
                                               log_level="warning"))  # fmt: skip
        with WorkerPool(lambda i: _worker_command(home, db, i), workers, on_restart=restarted):
            console.print(f"arena at http://{host}:{port}/ with {workers} worker(s)",
                          highlight=False)  # fmt: skip
            server.run(sockets=[sock])


@arena_app.command("openapi")
def openapi_cmd(
    out: Annotated[Path | None, typer.Option("--out", help="Write here instead of stdout.")] = None,
) -> None:
    """Print the API's OpenAPI schema (JSON)."""
    from swarmpress.arena.api import create_app

    text = json.dumps(create_app(None).openapi(), indent=1) + "\n"
    if out is None:
        print(text, end="")
    else:
        out.write_text(text)


# ----------------------------------------------------------------------------- using one
@arena_app.command("submit")
@grouped("remote", CLIENT_FLAGS)
def submit_cmd(
    file: Annotated[Path, typer.Argument(help="Solution .py file (functions or FastAPI form).")],
    competition: CompOpt,
    fork: Annotated[int | None, typer.Option("--fork", help="Id of the submission forked.")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until it is scored.")] = False,
    remote: dict | None = None,
    as_json: JsonOpt = False,
) -> None:
    """Submit a solution; prints its id (and with --wait, its result).

    Exit codes: 0 submitted (with --wait: done with a score above 0, so it is ranked);
    1 (with --wait) it failed, or it scored 0 (not ranked); 2 refused by the server
    (key, size, form, rate limit) or the server cannot be reached.
    """
    client = _client(remote)
    sid = client.submit(file, competition, fork)
    if not wait:
        emit({"id": sid}, as_json, lambda: f"submitted: id {sid}", indent=None)
        return
    with console.status(f"submission {sid} queued"):
        while (st := client.status(sid))["state"] in ("queued", "running"):
            time.sleep(1.0)
    emit(st, as_json, lambda: _status_view(st))
    if st["state"] != "done" or not (st["score"] or 0) > 0:
        raise typer.Exit(EXIT_FAILED)


def _num(v: float | None, digits: int = 4) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _status_view(st: dict) -> Group:
    line = Text(f"#{st['id']} {st['filename']} by {st['author']} in {st['competition']}: "
                f"{st['state']}, score {_num(st['score'])}"
                + (f" ({st['error']})" if st["error"] else ""))  # fmt: skip
    if not st["results"]:
        return Group(line)
    rows = [(Text(r["tensor"]), "yes" if r["ok"] else "no", _num(r["score"]), _num(r["ratio"]),
             _num(r["similarity"], 5), _num(r["seconds_compress"], 3),
             _num(r["seconds_decompress"], 3), Text(r["reason"]))
            for r in st["results"]]  # fmt: skip
    return Group(line, table(("tensor", "ok", "score", "ratio", "similarity", "compress s",
                              "decompress s", "reason"), rows))  # fmt: skip


def _show(answer: Any, as_json: bool, view: Callable[[Any], Any]) -> None:
    """A server's answer: as it came with --json, else drawn by view(answer)."""
    emit(answer, as_json, lambda: view(answer))


@arena_app.command("status")
@grouped("remote", CLIENT_FLAGS)
def status_cmd(sid: SidArg, remote: dict | None = None, as_json: JsonOpt = False) -> None:
    """State (queued|running|done|failed), score and per-tensor results of a submission."""
    _show(_client(remote).status(sid), as_json, _status_view)


@arena_app.command("leaderboard")
@grouped("remote", CLIENT_FLAGS)
def leaderboard_cmd(
    competition: CompOpt, remote: dict | None = None, as_json: JsonOpt = False
) -> None:
    """Scored submissions of a competition, best first (the standing leader marked)."""
    board = _client(remote).leaderboard(competition)
    rows = [(str(e["rank"]), str(e["id"]), e["author"], f"{e['score']:.4f}",
             str(e["parent"] or ""), "*" if e["leader"] else "") for e in board]  # fmt: skip
    emit(board, as_json, lambda: table(("#", "id", "author", "score", "fork of", "leader"), rows,
                                       title=competition))  # fmt: skip


@arena_app.command("download")
@grouped("remote", CLIENT_FLAGS)
def download_cmd(
    sid: SidArg,
    out: Annotated[
        str | None,
        typer.Option(
            "--out",
            help="File to write (default: its name). A folder ending in / (it must exist) "
            "gets the file under its name.",
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace the file if it exists (a regular file only).")
    ] = False,
    remote: dict | None = None,
    as_json: JsonOpt = False,
) -> None:
    """Download a revealed submission's code (or your own at any time).

    An existing file is replaced only with --force, and never when it is not a regular file
    (a directory, link, FIFO or device): exit 2. `--out DIR/` (ending in a separator)
    writes into the folder DIR under the submission's name; a DIR that does not exist is
    refused (exit 2), never made, and never taken for a file name. The file appears only
    once complete."""
    from swarmpress.arena.client import check_target, save_file

    folder, path = _download_target(out)
    if path is not None:  # refuse before asking the server
        check_target(path, force)
    name, code = _client(remote).download(sid)
    base = Path(name).name
    target = path or folder / (base if base not in ("", ".", "..") else f"{sid}.py")
    save_file(target, code, force)
    emit({"id": sid, "path": str(target), "bytes": len(code)}, as_json,
         lambda: f"wrote {target} ({len(code)} bytes)", indent=None)  # fmt: skip


def _download_target(out: str | None) -> tuple[Path, Path | None]:
    """(folder, file) of download's --out: the file when --out names one (None: the
    submission's name in folder). pathlib drops a trailing separator, so it is read here:
    `DIR/` means the folder DIR, which must exist (exit 2 otherwise)."""
    if out is None:
        return Path("."), None
    if out.endswith(tuple(sep for sep in (os.sep, os.altsep) if sep)):
        folder = Path(out)
        if not folder.is_dir():
            what = "not a directory" if os.path.lexists(folder) else "no such directory"
            raise fail(f"{out}: {what} (a --out ending in {out[-1]} names a folder that "
                       "exists)")  # fmt: skip
        return folder, None
    return Path("."), Path(out)


def _lineage_tree(lin: dict) -> Tree:
    label = lambda n: f"#{n['id']}  {_num(n['score'])}"  # noqa: E731
    root = Tree(
        " → ".join([label(a) for a in lin["ancestors"]] + [f"[bold]{label(lin['tree'])}[/]"])
    )

    def grow(node: Tree, n: dict) -> None:
        for c in n["children"]:
            grow(node.add(label(c)), c)

    grow(root, lin["tree"])
    return root


@arena_app.command("lineage")
@grouped("remote", CLIENT_FLAGS)
def lineage_cmd(sid: SidArg, as_json: JsonOpt = False, remote: dict | None = None) -> None:
    """The forks a submission comes from and the forks made of it, drawn as a tree."""
    _show(_client(remote).lineage(sid), as_json, _lineage_tree)


KeysHomeOpt = opt(Path | None, "--home", "Use this arena's database directly (no server): "
                  "where a lost admin key is replaced.")  # fmt: skip


def _keys_backend(home: Path | None, db: str | None, remote: dict | None):
    """The arena itself (--home, with --db) or its server: both have create_key, keys and
    revoke_key."""
    if home is not None:
        return _open_arena(home, db)
    if db is not None:
        raise fail("--db needs --home (the arena's competitions and pool)")
    return _client(remote)


@keys_app.command("create")
@grouped("remote", CLIENT_FLAGS)
def keys_create_cmd(
    name: Annotated[str, typer.Argument(help="Who the key is for.")],
    admin: Annotated[bool, typer.Option("--admin", help="May create keys.")] = False,
    home: KeysHomeOpt = None,
    db: DbOpt = None,
    remote: dict | None = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an API key, through the server (admin key) or in the database (--home).

    With --home (and --db) the key is made directly in the arena's database, no server or
    key needed: how a lost admin key is replaced (`--admin`)."""
    made = _keys_backend(home, db, remote).create_key(name, admin)
    emit({"name": name, "key": made}, as_json,
         lambda: f"key for {name}: [bold]{made}[/] (shown once)", indent=None)  # fmt: skip


def _when(t: float | None) -> str:
    if t is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


@keys_app.command("list")
@grouped("remote", CLIENT_FLAGS)
def keys_list_cmd(
    home: KeysHomeOpt = None,
    db: DbOpt = None,
    remote: dict | None = None,
    as_json: JsonOpt = False,
) -> None:
    """The keys: name, created, admin or not, revoked or not (never a key itself).

    Through the server (admin key) or directly in the database with --home."""
    keys = _keys_backend(home, db, remote).keys()
    rows = [(Text(k["name"]), _when(k["created"]), "yes" if k["admin"] else "",
             f"revoked {_when(k['revoked_at'])}" if k["revoked"] else "valid")
            for k in keys]  # fmt: skip
    emit(keys, as_json, lambda: table(("name", "created", "admin", "state"), rows))


@keys_app.command("revoke")
@grouped("remote", CLIENT_FLAGS)
def keys_revoke_cmd(
    name: Annotated[str, typer.Argument(help="Whose keys to revoke (every key of this name).")],
    home: KeysHomeOpt = None,
    db: DbOpt = None,
    remote: dict | None = None,
    as_json: JsonOpt = False,
) -> None:
    """Revoke every key of NAME: the API refuses them from now on.

    Through the server (admin key) or directly in the database with --home. Exit codes:
    0 revoked (or revoked already), 2 no key has that name, or the server refused."""
    done = _keys_backend(home, db, remote).revoke_key(name)

    def view() -> str:
        if done["revoked"]:
            return f"revoked {done['revoked']} key(s) of {name}"
        return f"the {done['keys']} key(s) of {name} were revoked already"

    emit(done, as_json, view, indent=None)


# ----------------------------------------------------------------------------- solutions
@arena_app.command("export-solution")
def arena_export_solution_cmd(
    codec: Annotated[
        str, typer.Option("--codec", help="Codec to export: lossless, lossy or zstd.")
    ],
    out: Annotated[str, typer.Option("--out", metavar="FILE", help="Solution file to write.")],
    option: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="NAME=VALUE",
            help="Override an entry of the solution's CONFIG, e.g. --set target=0.9905.",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Write a codec as one standalone Apex matrix-compression solution file (< 20 KB)."""
    from swarmpress.arena.export import export_solution, solution_config

    options = {}
    for item in option or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise fail(f"--set takes NAME=VALUE, not {item!r}")
        options[name.strip()] = value.strip()
    try:
        path = export_solution(codec, out, **options)
    except OSError as exc:
        raise fail(f"cannot write {out}: {exc.strerror or exc}") from None
    config = solution_config(codec, **options)
    size = path.stat().st_size
    info = {"path": str(path), "bytes": size, "codec": codec, "config": config}
    emit(info, as_json, lambda: f"wrote {path} ({size} bytes, codec {codec}, CONFIG {config})")
