"""Run `swarmpress ARGS` inside the test process, as the console script would run it.

A command line that only reads its arguments, talks HTTP or drives subprocesses needs no
interpreter of its own, and starting one costs 1.5-3 s on 2 cores (torch, numba, ...).
The result is what subprocess.run(..., capture_output=True, text=True) returns: the exit
code of swarmpress.cli.main (the entry point: typer's usage errors 2, typer.Exit codes,
unexpected errors 3), its stdout and its stderr; an exception that escapes main() is
printed as its traceback with exit 1, as the interpreter would. tests/test_entry_points.py
runs `python -m swarmpress` itself, and the arena's server and workers, the swarm's workers
and every sandbox stay real processes.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import threading
import traceback


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`swarmpress *args` in this process: CompletedProcess(argv, code, stdout, stderr).

    subprocess.TimeoutExpired after timeout seconds, as subprocess.run(timeout=...) raised:
    a command that hangs fails the test instead of hanging it (it runs on a daemon thread
    for that; the thread is left behind)."""
    from swarmpress.cli import main

    argv = ["swarmpress", *args]
    out, err = io.StringIO(), io.StringIO()
    code: list[int] = []

    def run() -> None:
        try:
            main()
            code.append(0)
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                code.append(exc.code or 0)
            else:  # sys.exit("message"): printed to stderr, exit 1
                print(exc.code, file=sys.stderr)
                code.append(1)
        except BaseException:
            traceback.print_exc()
            code.append(1)

    saved = sys.argv, sys.excepthook
    sys.argv = argv
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            t = threading.Thread(target=run, name="swarmpress-cli", daemon=True)
            t.start()
            t.join(timeout)
    finally:
        sys.argv, sys.excepthook = saved
    if t.is_alive():
        raise subprocess.TimeoutExpired(argv, timeout, out.getvalue(), err.getvalue())
    return subprocess.CompletedProcess(argv, code[0], out.getvalue(), err.getvalue())
