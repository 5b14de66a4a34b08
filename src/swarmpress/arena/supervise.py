"""Evaluation workers as processes: run one until stopped, or keep several alive beside the
server (`WorkerPool`), restarting any that dies; a dead worker's job is retried once its
lease runs out (see jobqueue.py), so nothing is lost.

A worker the pool starts learns its parent from env SWARMPRESS_ARENA_PARENT and arms a death
signal, so it ends when the server does, even when the server is SIGKILLed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

PARENT_ENV = "SWARMPRESS_ARENA_PARENT"


def die_with_parent() -> None:
    """End this process when the one that started it ends (Linux PR_SET_PDEATHSIG)."""
    import ctypes

    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != int(os.environ[PARENT_ENV]):
        os._exit(0)  # the parent died before the death signal was armed


def run_worker(home: Path, db: str | None = None, slot: int = 0) -> None:
    """Evaluate queued submissions until SIGTERM (SandboxUnavailable when no sandbox can
    run here)."""
    from swarmpress.arena.sandbox import check_available
    from swarmpress.arena.service import Arena
    from swarmpress.arena.worker import Worker

    check_available()
    if os.environ.get(PARENT_ENV):
        die_with_parent()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    Worker(Arena(home, db), slot=slot).run(stop)


class WorkerPool:
    """`count` worker processes, started with command(slot), kept alive until `stop`.

    The command is the caller's (a worker command line of its own, say `swarmpress arena
    worker --home H --slot N`); on_restart(slot, returncode) hears of each restart."""

    def __init__(
        self,
        command: Callable[[int], Sequence[str]],
        count: int,
        on_restart: Callable[[int, int], None] | None = None,
        every_s: float = 1.0,
    ) -> None:
        self.command, self.count = command, count
        self.on_restart, self.every_s = on_restart, every_s
        self.procs: list[subprocess.Popen] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _spawn(self, slot: int) -> subprocess.Popen:
        env = {**os.environ, PARENT_ENV: str(os.getpid())}
        return subprocess.Popen(list(self.command(slot)), stdin=subprocess.DEVNULL, env=env)

    def _supervise(self) -> None:
        while not self._stop.wait(self.every_s):
            for slot, p in enumerate(self.procs):
                if p.poll() is not None:
                    if self.on_restart is not None:
                        self.on_restart(slot, p.returncode)
                    self.procs[slot] = self._spawn(slot)

    def start(self) -> WorkerPool:
        self.procs = [self._spawn(slot) for slot in range(self.count)]
        self._thread = threading.Thread(target=self._supervise, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop restarting, SIGTERM every worker, SIGKILL those still there after timeout."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.every_s + 5)
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()

    def __enter__(self) -> WorkerPool:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
