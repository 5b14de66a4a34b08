"""Evaluation workers: claim a job, run the submission on its round's tensors, record.

Any number of workers, on one machine or many (sharing a PostgreSQL database), pull from
the durable queue in jobqueue.py. A worker renews its lease while it evaluates; if it dies,
the lease runs out and another worker takes the job again from the start. Results are
stored in one transaction that first checks the lease is still this worker's, so a slow
worker whose job was handed on cannot overwrite the newer run.
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
import uuid
from pathlib import Path

from swarmpress.arena import jobqueue
from swarmpress.arena.evaluate import evaluate, evaluate_routing
from swarmpress.arena.service import Arena


class Worker:
    """One evaluation loop; slot picks its sandbox uid and CPU."""

    def __init__(self, arena: Arena, slot: int = 0, lease_s: float | None = None) -> None:
        self.arena = arena
        self.slot = slot
        # read once when the worker starts: $SWARMPRESS_ARENA_LEASE, else 30 s
        self.lease_s = jobqueue.lease_seconds() if lease_s is None else lease_s
        self.name = f"{socket.gethostname()}:{os.getpid()}:{slot}:{uuid.uuid4().hex[:6]}"
        ncpu = len(os.sched_getaffinity(0))
        self.cpu = sorted(os.sched_getaffinity(0))[slot % ncpu]

    def run_once(self) -> bool:
        """Evaluate one job; False when the queue was empty."""
        job = jobqueue.claim(self.arena.Session, self.name, self.lease_s)
        if job is None:
            return False
        comp = self.arena.competition_of(job)
        if self.arena.give_up(job, comp):
            return True
        sub, comp = self.arena.mark_started(job.id)
        lost = threading.Event()
        done = threading.Event()

        def heartbeat() -> None:
            while not done.wait(self.lease_s / 3):
                if not jobqueue.renew(self.arena.Session, job.id, self.name, self.lease_s):
                    lost.set()
                    return

        beat = threading.Thread(target=heartbeat, daemon=True)
        beat.start()
        try:
            with tempfile.TemporaryDirectory(prefix="swarmpress-job-") as tmp:
                path = Path(tmp) / "solution.py"
                path.write_bytes(sub.code)
                if comp.track == "routing":
                    outcome = evaluate_routing(path, comp, self.slot, self.cpu)
                else:
                    pool, n = self.arena.pool, comp.tensors_per_round
                    sample = pool.sample(comp.name, sub.round, n)
                    outcome = evaluate(path, sub.form, comp, pool, sample, self.slot, self.cpu)
        finally:
            done.set()
            beat.join()
        if lost.is_set():
            return True  # another worker owns it now; its run will be recorded
        log = "".join(f"--- {r.tensor}: {r.reason or 'ok'}\n{r.log}" for r in outcome.tensors)
        self.arena.record(job.id, self.name, outcome, log=log[-comp.limits.log_bytes :])
        return True

    def run(self, stop: threading.Event | None = None, poll_s: float = 0.5) -> None:
        """Work until stop is set (forever by default)."""
        stop = stop or threading.Event()
        while not stop.is_set():
            if not self.run_once():
                stop.wait(poll_s)


def wait_idle(arena: Arena, timeout: float = 600.0) -> bool:
    """Block until no job is queued or leased (for tests and batch runs)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        depth = arena.queue_depth()
        if not depth.get("queued") and not depth.get("leased"):
            return True
        time.sleep(0.2)
    return False
