"""`swarmpress arena ...`: run an arena (init, serve, worker) and use one (submit, status,
leaderboard, download, lineage, keys), plus export-solution. Client commands take --server
(env SWARMPRESS_ARENA_URL) and --key (env SWARMPRESS_ARENA_KEY).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from swarmpress.cli_common import EXIT_FAILED, JsonOpt, console, err_console, fail

arena_app = typer.Typer(
    help="The open compression arena: serve one, submit to one, export codecs as solutions.",
    no_args_is_help=True,
)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
arena_app.add_typer(keys_app, name="keys")

HomeOpt = Annotated[
    Path, typer.Option("--home", help="Arena directory: config, pool, logs and the SQLite db.")
]
DbOpt = Annotated[
    str | None,
    typer.Option("--db", help="Database URL (default: SQLite in --home); postgresql://... "
                 "lets workers on several machines share one arena."),
]  # fmt: skip
ServerOpt = Annotated[
    str | None,
    typer.Option("--server", help="Arena URL (default: env SWARMPRESS_ARENA_URL or "
                 "http://127.0.0.1:8765)."),
]  # fmt: skip
KeyOpt = Annotated[
    str | None, typer.Option("--key", help="API key (default: env SWARMPRESS_ARENA_KEY).")
]
CompOpt = Annotated[str, typer.Option("--competition", "-c", help="Competition name.")]


def _client(server: str | None, key: str | None):
    from swarmpress.arena.client import ArenaClient

    return ArenaClient(server, key)


def _guard(fn, *args: Any) -> Any:
    """Run a client call; a refusal or an unreachable server is one line and exit 2."""
    from swarmpress.arena.client import ClientError

    try:
        return fn(*args)
    except ClientError as exc:
        raise fail(str(exc)) from None


def _open_arena(home: Path, db: str | None):
    from swarmpress.arena.config import ArenaConfigError
    from swarmpress.arena.pool import PoolError
    from swarmpress.arena.service import Arena

    try:
        return Arena(home, db)
    except (ArenaConfigError, PoolError) as exc:
        raise fail(str(exc)) from None


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
    from swarmpress.arena.pool import PoolError
    from swarmpress.arena.service import init_home

    if corpus is not None and text is not None:
        raise fail("give --corpus or --text, not both")
    try:
        with console.status("drawing the held-out pool (MiniLM on secret-chosen text)"):
            made = init_home(home, corpus, text=text, sequences=sequences, seq_len=seq_len)
    except PoolError as exc:
        raise fail(str(exc)) from None
    console.print(f"{'created' if made else 'kept the existing'} arena in {home}")


@arena_app.command("worker")
def worker_cmd(
    home: HomeOpt,
    db: DbOpt = None,
    slot: Annotated[int, typer.Option("--slot", help="Sandbox uid/CPU slot.")] = 0,
) -> None:
    """Evaluate queued submissions until stopped (run several, here or on other machines)."""
    from swarmpress.arena.sandbox import SandboxUnavailable, check_available
    from swarmpress.arena.worker import Worker

    try:
        check_available()
    except SandboxUnavailable as exc:
        raise fail(str(exc)) from None
    if os.environ.get("SWARMPRESS_ARENA_PARENT"):
        _die_with_parent()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    Worker(_open_arena(home, db), slot=slot).run(stop)


def _die_with_parent() -> None:
    """A worker started by `serve` ends when the server does (its job is then retried)."""
    import ctypes

    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != int(os.environ["SWARMPRESS_ARENA_PARENT"]):
        os._exit(0)  # the server died before the death signal was armed


def _spawn_worker(home: Path, db: str | None, slot: int) -> subprocess.Popen:
    argv = [sys.executable, "-m", "swarmpress.cli", "arena", "worker", "--home", str(home)]
    argv += ["--slot", str(slot)] + (["--db", db] if db else [])
    env = {**os.environ, "SWARMPRESS_ARENA_PARENT": str(os.getpid())}
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, env=env)


def _supervise(procs: list[subprocess.Popen], make, stop: threading.Event) -> None:
    """Restart workers that die (their jobs are retried once the lease runs out)."""
    while not stop.wait(1.0):
        for i, p in enumerate(procs):
            if p.poll() is not None:
                err_console.print(f"worker {i} exited with {p.returncode}; restarting it")
                procs[i] = make(i)


@arena_app.command("serve")
def serve_cmd(
    home: HomeOpt,
    port: Annotated[int, typer.Option("--port", help="HTTP port.")] = 8765,
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    db: DbOpt = None,
    workers: Annotated[
        int, typer.Option("--workers", help="Worker processes to run here (0: none).", min=0)
    ] = 2,
) -> None:
    """Serve the API and dashboard, with local workers; creates the arena if --home is empty."""
    import uvicorn

    from swarmpress.arena.api import create_app
    from swarmpress.arena.service import init_home

    if not (home / "arena.toml").exists():
        with console.status("creating the arena (building the pool from the embedded corpus)"):
            init_home(home)
    arena = _open_arena(home, db)
    if not arena.has_admin():
        key = arena.create_key("admin", admin=True)
        console.print(f"admin key (shown once): [bold]{key}[/]", highlight=False)
    stop = threading.Event()
    procs = [_spawn_worker(home, db, i) for i in range(workers)]
    sup = threading.Thread(
        target=_supervise, args=(procs, lambda i: _spawn_worker(home, db, i), stop), daemon=True
    )
    sup.start()
    console.print(f"arena at http://{host}:{port}/ with {workers} worker(s)", highlight=False)
    try:
        uvicorn.run(create_app(arena), host=host, port=port, log_level="warning")
    finally:
        stop.set()
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


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
def submit_cmd(
    file: Annotated[Path, typer.Argument(help="Solution .py file (functions or FastAPI form).")],
    competition: CompOpt,
    fork: Annotated[int | None, typer.Option("--fork", help="Id of the submission forked.")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until it is scored.")] = False,
    server: ServerOpt = None,
    key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Submit a solution; prints its id (and with --wait, its result).

    Exit codes: 0 submitted (with --wait: done with a score above 0, so it is ranked);
    1 (with --wait) it failed, or it scored 0 (not ranked); 2 refused by the server
    (key, size, form, rate limit) or the server cannot be reached.
    """
    client = _client(server, key)
    sid = _guard(client.submit, file, competition, fork)
    if not wait:
        print(json.dumps({"id": sid})) if as_json else console.print(f"submitted: id {sid}")
        return
    with console.status(f"submission {sid} queued"):
        while (st := _guard(client.status, sid))["state"] in ("queued", "running"):
            time.sleep(1.0)
    _print_status(st, as_json)
    if st["state"] != "done" or not (st["score"] or 0) > 0:
        raise typer.Exit(EXIT_FAILED)


def _print_status(st: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(st, indent=2))
        return
    score = "-" if st["score"] is None else f"{st['score']:.4f}"
    console.print(
        f"#{st['id']} {st['filename']} by {st['author']} in {st['competition']}: "
        f"{st['state']}, score {score}" + (f" ({st['error']})" if st["error"] else ""),
        highlight=False,
        markup=False,
    )
    if st["results"]:
        t = Table("tensor", "ok", "score", "ratio", "similarity", "compress s", "decompress s",
                  "reason")  # fmt: skip
        f = lambda v, d=4: "-" if v is None else f"{v:.{d}f}"  # noqa: E731
        for r in st["results"]:
            t.add_row(Text(r["tensor"]), "yes" if r["ok"] else "no", f(r["score"]),
                      f(r["ratio"]), f(r["similarity"], 5), f(r["seconds_compress"], 3),
                      f(r["seconds_decompress"], 3), Text(r["reason"]))  # fmt: skip
        console.print(t)


@arena_app.command("status")
def status_cmd(
    sid: Annotated[int, typer.Argument(help="Submission id.")],
    server: ServerOpt = None,
    key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """State (queued|running|done|failed), score and per-tensor results of a submission."""
    _print_status(_guard(_client(server, key).status, sid), as_json)


@arena_app.command("leaderboard")
def leaderboard_cmd(
    competition: CompOpt, server: ServerOpt = None, key: KeyOpt = None, as_json: JsonOpt = False
) -> None:
    """Scored submissions of a competition, best first (the standing leader marked)."""
    board = _guard(_client(server, key).leaderboard, competition)
    if as_json:
        print(json.dumps(board, indent=2))
        return
    t = Table("#", "id", "author", "score", "fork of", "leader", title=competition)
    for e in board:
        t.add_row(str(e["rank"]), str(e["id"]), e["author"], f"{e['score']:.4f}",
                  str(e["parent"] or ""), "*" if e["leader"] else "")  # fmt: skip
    console.print(t)


@arena_app.command("download")
def download_cmd(
    sid: Annotated[int, typer.Argument(help="Submission id.")],
    out: Annotated[
        Path | None, typer.Option("--out", help="File to write (default: its name).")
    ] = None,
    server: ServerOpt = None,
    key: KeyOpt = None,
) -> None:
    """Download a revealed submission's code (or your own at any time)."""
    name, code = _guard(_client(server, key).download, sid)
    target = out or Path(Path(name).name)
    target.write_bytes(code)
    console.print(f"wrote {target} ({len(code)} bytes)")


@arena_app.command("lineage")
def lineage_cmd(
    sid: Annotated[int, typer.Argument(help="Submission id.")],
    server: ServerOpt = None,
    key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The forks a submission comes from and the forks made of it, drawn as a tree."""
    lin = _guard(_client(server, key).lineage, sid)
    if as_json:
        print(json.dumps(lin, indent=2))
        return
    label = lambda n: f"#{n['id']}  {'-' if n['score'] is None else format(n['score'], '.4f')}"  # noqa: E731
    root = Tree(
        " → ".join([label(a) for a in lin["ancestors"]] + [f"[bold]{label(lin['tree'])}[/]"])
    )

    def grow(node: Tree, n: dict) -> None:
        for c in n["children"]:
            grow(node.add(label(c)), c)

    grow(root, lin["tree"])
    console.print(root)


@keys_app.command("create")
def keys_create_cmd(
    name: Annotated[str, typer.Argument(help="Who the key is for.")],
    admin: Annotated[bool, typer.Option("--admin", help="May create keys.")] = False,
    home: Annotated[
        Path | None, typer.Option("--home", help="Create directly in this arena (no server).")
    ] = None,
    db: DbOpt = None,
    server: ServerOpt = None,
    key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an API key, through the server (admin key) or directly with --home."""
    if home is not None:
        from swarmpress.arena.service import ArenaError

        try:
            made = _open_arena(home, db).create_key(name, admin)
        except ArenaError as exc:
            raise fail(str(exc)) from None
    else:
        made = _guard(_client(server, key).create_key, name, admin)
    if as_json:
        print(json.dumps({"name": name, "key": made}))
    else:
        console.print(f"key for {name}: [bold]{made}[/] (shown once)", highlight=False)


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
    from swarmpress.arena.export import ExportError, export_solution, solution_config

    options = {}
    for item in option or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise fail(f"--set takes NAME=VALUE, not {item!r}")
        options[name.strip()] = value.strip()
    try:
        path = export_solution(codec, out, **options)
        config = solution_config(codec, **options)
    except ExportError as exc:
        raise fail(str(exc)) from None
    except OSError as exc:
        raise fail(f"cannot write {out}: {exc.strerror or exc}") from None
    size = path.stat().st_size
    if as_json:
        info = {"path": str(path), "bytes": size, "codec": codec, "config": config}
        print(json.dumps(info, indent=2))
        return
    console.print(
        f"wrote {path} ({size} bytes, codec {codec}, CONFIG {config})",
        highlight=False,
        soft_wrap=True,
    )
