"""What makes the orchestrator no single point of failure (docs/failover.md): its state
written at every step under a fenced lease, and the successor that takes a run over (a
restart, or a standby waiting for the lease to lapse), asks the workers where they stand
and carries on. A mixin of Orchestrator: these methods read and write its fields.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from swarmpress.swarm import failover
from swarmpress.swarm.config import SwarmConfig
from swarmpress.swarm.protocol import Rejoin, Standing, Step
from swarmpress.swarm.state import Fenced, Held, Lease, StateError, StateStore
from swarmpress.swarm.text import TokenData


class StoreLost(StateError):
    """The state store was away for longer than the lease: stop steering the run."""


class Succession:
    """The durable-state and take-over half of Orchestrator."""

    slot_type: type  # the orchestrator's Slot, which restore() makes

    def _keep_lease(self, every: float) -> None:
        """Renew the lease if the last renewal is older than `every`; Fenced if a successor
        took the run over meanwhile."""
        if self.store is not None and time.monotonic() - self.renewed > every:
            self._durably(lambda: self.store.renew(self.run_id, self.epoch, self.lease_s))

    def _durably(self, write: Callable[[], None]) -> None:
        """A write to the store, tried again while the lease still holds (a store that is
        away for less than that costs a pause, not the run); then StoreLost: this
        orchestrator stops steering and leaves the workers running for a successor.
        Fenced is raised at once."""
        while True:
            try:
                write()
                self.renewed = time.monotonic()
                return
            except Fenced:
                raise
            except StateError as exc:
                if time.monotonic() - self.renewed > 0.8 * self.lease_s:
                    raise StoreLost(
                        f"{exc}; the state store was away for longer than the lease "
                        f"({self.lease_s:g} s): this orchestrator stops steering and leaves "
                        f"the workers running; once the store is back, "
                        f"`swarmpress swarm train --resume {self.run_dir}` carries on"
                    ) from None
                time.sleep(0.1)

    def train_seconds(self) -> float:
        """Training time of this run so far, across orchestrators."""
        if self.t_train is None:
            return self.train_before
        return self.train_before + time.monotonic() - self.t_train

    def save(self) -> None:
        """Write the state (and renew the lease); Fenced if a successor took over."""
        if self.store is None:
            return
        t0 = time.monotonic()
        state = failover.snapshot(self)
        self._durably(lambda: self.store.save(self.run_id, self.epoch, state, self.lease_s))
        self.save_seconds.append(self.renewed - t0)

    def _open_state(self) -> None:
        """The run's state row, made once its workers are ready (a run that never trained
        has nothing to resume), and run.json saying where it is."""
        self.store = StateStore(self.state_url)
        owner = failover.owner_name()
        self.store.create(self.run_id, owner, failover.snapshot(self), self.lease_s)
        self.renewed = time.monotonic()
        failover.write_run_file(self.run_dir, self.run_id, self.state_url, self.address)

    @classmethod
    def resume(
        cls,
        run_dir: str | Path,
        data: TokenData,
        on_step: Callable[[int, dict], None] | None = None,
        standby: bool = False,
        lease_s: float = 5.0,
        poll_s: float = 0.5,
        on_wait: Callable[[str], None] | None = None,
        see_pids: bool = True,
        listen: str | None = None,
    ) -> Any:
        """The successor of a run's orchestrator: takes the run over once its lease lapsed
        (at once if the holder was a process of this host that is gone, unless see_pids
        is off); standby: wait for that as long as it takes, else Held after one lease.
        listen: HOST:PORT to listen on (default: the predecessor's address; if that is
        taken, any port of its host in a CurveZMQ run, whose workers are told where)."""
        run_dir = Path(run_dir)
        info = failover.read_run_file(run_dir)
        store = StateStore(info["state"])
        owner = failover.owner_name()
        t_asked = time.monotonic()
        deadline = t_asked + 2 * lease_s + 1
        while True:
            seen = store.load(info["run_id"])
            if seen.state.get("finished"):
                raise StateError(f"run {info['run_id']} in {run_dir} has finished")
            if seen.state.get("stopped"):
                raise StateError(
                    f"run {info['run_id']} in {run_dir} was stopped (interrupted, or it "
                    "failed) and its workers with it: their weights are gone, nothing to resume"
                )
            gone = see_pids and failover.owner_gone(seen.owner)
            left = seen.lease_until - store.clock()
            if left > 0 and not gone:
                why = f"run {seen.run_id} is held by {seen.owner} for {left:.1f} s more"
                if not standby and time.monotonic() > deadline:
                    raise Held(why)
                if on_wait is not None:
                    on_wait(why)
                time.sleep(poll_s)
                continue
            # listen first, take the lease then: a successor that cannot listen leaves the
            # run to its holder (a paused one that wakes) or to the next successor
            orch = cls._successor(seen, data, run_dir, on_step, lease_s, listen)
            try:
                if gone:
                    store.release(seen.run_id, seen.epoch)  # its holder is dead: no wait
                lease = store.take_over(info["run_id"], owner, lease_s)
                break
            except Held:
                orch.ep.close()  # another successor was quicker
                if not standby and time.monotonic() > deadline:
                    raise
        t_taken = time.monotonic()
        orch.epoch, orch.lease = lease.epoch, lease
        before = lease.state["address"]
        orch.moved_from = before if orch.address != before else None
        orch.own_dir = False
        failover.restore(orch, lease.state, cls.slot_type)
        orch.store = store
        orch.takeovers.append({
            "epoch": lease.epoch, "owner": owner, "taken_at": time.time(),
            "waited_s": round(t_taken - t_asked, 3), "first_step_s": None,
        })  # fmt: skip
        orch.save()
        return orch

    @classmethod
    def _successor(
        cls, seen: Lease, data: TokenData, run_dir: Path, on_step: Any, lease_s: float,
        listen: str | None,
    ) -> Any:  # fmt: skip
        """A successor listening where the workers can reach it (see resume)."""
        cfg = SwarmConfig(**seen.state["config"])
        before = seen.state["address"]
        host, _, port = (listen or before.removeprefix("tcp://")).rpartition(":")
        make = functools.partial(cls, cfg, data, host=host, spawn=seen.state["spawn"],
                                 on_step=on_step, run_dir=run_dir, lease_s=lease_s,
                                 keys_dir=seen.state.get("keys_dir"), _lease=seen,
                                 insecure=seen.state.get("insecure", False))  # fmt: skip
        try:
            return make(port=int(port))
        except OSError:
            authenticated = seen.state.get("keys_dir") or (run_dir / "keys" / "orch.key").exists()
            if listen is not None or not authenticated:
                raise StateError(
                    f"cannot listen on {host}:{port}, where the run's workers reach their "
                    "orchestrator (is the old one still alive? an open run's successor must "
                    "listen there); the run is left to its holder"
                ) from None
            return make(port=0)  # the workers hear the new address from a proven key

    def _rejoin(self) -> None:
        """After a take-over: reach every worker the state names, learn where it stands,
        send the last decided step again; newcomers still catching up are replaced."""
        now = time.monotonic()
        self.training = True  # a death from here on is a fault of a running run
        self.rejoining = True
        joining = []
        for slot in list(self.slots.values()):
            if slot.alive and slot.ready and slot.address:
                slot.last_hb = now
                self.ep.connect(slot.name, slot.address)
                self._tell(slot.name, self._rejoin_msg())
            elif slot.alive:
                joining.append(slot)
        for slot in joining:
            self._dead(slot, "it was still joining when its orchestrator was lost")
        asked = now
        # A worker's link to the lost orchestrator reconnects on its own, but on a busy
        # machine its first heartbeat may take longer than dead_after_s: until patience
        # runs out, silence here is not death (health checks wait for the answers).
        patience = 3 * self.cfg.dead_after_s + 5
        while any(s.alive and s.ready and not s.standing for s in self.slots.values()):
            if time.monotonic() - now > patience:
                for slot in list(self.slots.values()):
                    if slot.alive and slot.ready and not slot.standing:
                        self._dead(slot, "it did not answer the new orchestrator")
                break
            self.pump(0.05, check=False)
            if time.monotonic() - asked > 1.0:  # the first may have met a socket still joining
                asked = time.monotonic()
                for slot in self.slots.values():
                    if slot.alive and slot.ready and not slot.standing:
                        self._tell(slot.name, self._rejoin_msg())
        if self.decision is not None:
            for name, head in self.decision["messages"].items():
                slot = self.slots.get(name)
                if slot is not None and slot.alive and slot.ready:
                    m = Step.parse(head)
                    self._tell(name, Step(m.step, m.commit, (), m.merge_peers))
        self.rejoining = False

    def _kill_inherited(self, slot: Any) -> None:
        """SIGKILL a worker a predecessor spawned (if that pid is still this run's)."""
        _kill_worker(slot.pid, slot.name, self._marks(slot))

    def _marks(self, slot: Any) -> set[str]:
        """What a worker process of this run spawned for `slot` has on its command line."""
        key = self.run_dir / "keys" / f"{slot.name}.key"
        return {str(key), self.address} | ({self.moved_from} if self.moved_from else set())

    def _rejoin_msg(self) -> Rejoin:
        return Rejoin(self.epoch, self.address if self.moved_from else None)

    def _standing(self, slot: Any, m: Standing) -> None:
        """A worker's answer to rejoin (only then, once): the applied counts its
        predecessor missed (never replacing one it had) and its counters."""
        if not self.rejoining or slot.standing:
            self._reject_msg(f"standing from {slot.name!r} that was not asked for")
            return
        slot.standing = True
        slot.stats = m.stats
        slot.stepped = max(slot.stepped, min(m.step, self.next_step) - 1)
        for step, n in m.applied:
            if step < self.next_step and n <= self.cfg.microbatches:
                self.applied_by.setdefault((step, slot.name), n)


def _kill_worker(pid: int, name: str, marks: set[str]) -> None:
    """SIGKILL a worker a predecessor spawned, if that pid is still that worker: this
    run's worker module, this name, and this run's orchestrator address or key file."""
    try:
        cmd = [a.decode(errors="replace") for a in
               Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")]  # fmt: skip
    except OSError:
        return
    named = any(a == "--name" and b == name for a, b in itertools.pairwise(cmd))
    if "swarmpress.swarm.worker" in cmd and named and marks & set(cmd):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


__all__ = ["StoreLost", "Succession"]
