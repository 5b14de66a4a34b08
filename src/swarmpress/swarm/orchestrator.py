"""The orchestrator: starts (or admits) the stage workers, feeds samples, routes them with a
twin policy, commits each step exactly once, watches for dead or stalled workers, replays
their in-flight samples, brings in replacements and collects the run's measurements.

It holds no model weights. A step is M micro-batches; each gets a path (one replica per
stage) from the routing policy, travels forward and back through the workers, and is
committed when the first stage reports its backward pass done. When all M are committed
the orchestrator tells every worker which attempts to apply, so a sample replayed after a
fault is applied once per stage, and starts the next step at once (workers hold work of a
later step until they have taken their own optimizer step).

It keeps no state only in memory: at every step it writes its state to a store (SQLite in
the run folder, or PostgreSQL by URL; swarm/state.py, swarm/failover.py) before any worker
hears the step, under a lease it renews. Killed, it is replaced by `Orchestrator.resume`
(a restart, or a standby waiting for the lease to lapse): the successor binds the same
address, the workers' sockets reconnect on their own, it asks each where it stands, sends
the last decided step again (workers ignore a step they applied) and routes the step under
way again under new attempt numbers, so no sample is lost or applied twice.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swarmpress.errors import SwarmpressError
from swarmpress.swarm import failover
from swarmpress.swarm.auth import KeyPair, KeyRing, load_run_keys, read_key_file, write_key_file
from swarmpress.swarm.config import SwarmConfig
from swarmpress.swarm.framing import VERSION, Message, check_name
from swarmpress.swarm.protocol import (
    Bye,
    Crash,
    Directory,
    Done,
    Drop,
    Failed,
    Forward,
    Heartbeat,
    Hello,
    Init,
    Key,
    Loss,
    PassEvent,
    ProtocolError,
    Ready,
    Reject,
    Resume,
    Resync,
    Standing,
    Step,
    Stepped,
    Stop,
    Unreadable,
    WorkerStats,
    read,
)
from swarmpress.swarm.report import FaultLog, RunResult, StepInfo, summarize
from swarmpress.swarm.state import Fenced, Lease, StateError, StateStore
from swarmpress.swarm.succession import StoreLost, Succession
from swarmpress.swarm.text import TokenData
from swarmpress.swarm.tokens import pack_tokens
from swarmpress.swarm.transport import Endpoint, PeerAuth
from swarmpress.twin.policies import ROUTERS
from swarmpress.twin.tracker import PROCESSING, Tracker


class SwarmError(SwarmpressError, RuntimeError):
    """A run that cannot go on (a stage without replicas, workers that never came up)."""


@dataclass
class Slot:
    """One worker process as the orchestrator sees it."""

    name: str
    stage: int
    id: int
    proc: subprocess.Popen | None = None
    log: Path | None = None
    address: str | None = None
    alive: bool = True
    ready: bool = False
    said_hello: bool = False
    last_hb: float = field(default_factory=time.monotonic)
    progress_age: float = 0.0  # from its last heartbeat: seconds since it made progress
    queued: int = 0  # from its last heartbeat: work it could do
    stats: WorkerStats = field(default_factory=WorkerStats)
    catch_up_from: str | None = None
    stepped: int = -1  # the last step it reported applied
    pid: int | None = None  # its process (what a successor orchestrator can kill)
    standing: bool = False  # answered a successor orchestrator's rejoin

    @property
    def active(self) -> bool:  # what twin policies read
        return self.alive and self.ready


@dataclass
class Attempt:
    key: Key
    path: tuple[str, ...]
    sent: float
    loss: float | None = None


class LayerView(list):
    """A stage's slots with `.active` listing the routable ones (as the twin's LayerView)."""

    @property
    def active(self) -> list[Slot]:
        return [s for s in self if s.active]


class Orchestrator(Succession):
    """The run's conductor (module docstring); its durable state and the take-over by a
    successor are swarm/succession.py's half."""

    slot_type = Slot

    def __init__(
        self,
        cfg: SwarmConfig,
        data: TokenData,
        host: str = "127.0.0.1",
        port: int = 0,
        spawn: bool = True,
        on_step: Callable[[int, dict], None] | None = None,
        run_dir: str | Path | None = None,
        auth: bool | None = None,
        keys_dir: str | Path | None = None,
        state_url: str | None = None,
        lease_s: float = 5.0,
        insecure: bool = False,
        _lease: Lease | None = None,
    ) -> None:
        """state_url: where the state goes at every step (default: SQLite in the run
        folder); lease_s: how long a successor waits after the last renewal before it
        takes over; insecure: let workers dial in without keys on an address other hosts
        can reach (anyone there can then steer the run). A successor is made with
        Orchestrator.resume, not here."""
        if not spawn and keys_dir is None and not insecure and not _loopback(host):
            raise SwarmError(
                f"workers would dial in to {host} without keys: anyone who reaches it could "
                "steer or stop the run; make keys with `swarmpress swarm keys` and pass "
                "them (--keys), or accept the risk with --insecure",
                exit_code=2,
            )
        self.cfg, self.data, self.spawn, self.on_step = cfg, data, spawn, on_step
        self.slots: dict[str, Slot] = {}
        # a Ctrl-C or SIGTERM that lands while a worker is made waits until it is stored
        # (run.py's handler sets interrupt_held): raised in between, it left a worker that
        # nothing knew to stop
        self.spawning = False
        self.interrupt_held = False
        # CurveZMQ: for workers it spawns (the default) the orchestrator makes every key and
        # hands each worker its own key file; for workers that dial in, the run's keys come
        # from `swarm keys` (keys_dir); dial-in runs without keys_dir are unauthenticated.
        self.keys: KeyPair | None = None  # None: an unauthenticated run
        self.ring: KeyRing | None = None
        self.own_dir = run_dir is None  # a temporary log folder, removed after a clean run
        self.run_dir = Path(run_dir or tempfile.mkdtemp(prefix="swarmpress-swarm-")).resolve()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.keys_dir = None if keys_dir is None else str(Path(keys_dir).resolve())
        self.insecure = insecure
        if keys_dir is not None:
            self.keys, self.ring = load_run_keys(keys_dir)
        elif _lease is not None and (self.run_dir / "keys" / "orch.key").exists():
            _, self.keys, _, _ = read_key_file(self.run_dir / "keys" / "orch.key")
            self.ring = KeyRing.of({"orch": self.keys.public})
            failover.admit_keys(self.ring, _lease.state)  # before the socket listens
        elif _lease is None and (spawn if auth is None else auth):
            self.keys = KeyPair.generate()
            self.ring = KeyRing.of({"orch": self.keys.public})
            # what a successor orchestrator proves itself to the workers with
            write_key_file(self.run_dir / "keys" / "orch.key", "orch", self.keys,
                           self.keys.public)  # fmt: skip
        peer_auth = PeerAuth(self.keys, self.ring) if self.keys else None
        self.ep = Endpoint("orch", host, port, tick=self._heartbeat, tick_s=cfg.heartbeat_s,
                           auth=peer_auth)  # fmt: skip
        self.address = self.ep.address
        self.t0 = time.monotonic()
        self.router = ROUTERS[cfg.router]()
        link = cfg.link_spec
        self.router.reset(cfg.seed, lambda a, b: link.latency_s, 5)
        self.tracker = Tracker()
        self.open_events: dict[tuple, Any] = {}
        self.attempts: dict[int, Attempt] = {}  # sample -> current attempt
        self.committed: dict[int, Attempt] = {}
        self.eval_losses: dict[int, float] = {}
        self.catch_up: dict[int, list[str]] = defaultdict(list)  # donor stage -> newcomers
        self.faults = FaultLog()
        self.applied_by: dict[tuple[int, str], int] = {}  # (step, worker) -> samples applied
        self.steps: list[StepInfo] = []
        self.gen = 0
        self.kills = 0
        self.kill_due = False  # the fault drill's next kill, waiting for a settled moment
        self.step = 0
        self.training = False
        self.eval_paths: dict[int, Attempt] = {}
        self.service: dict[tuple[int, int], list[float]] = defaultdict(list)  # (stage, dir)
        self.merged_at: set[int] = set()  # steps that ended in a merge
        self.rejected: list[str] = []  # why messages from peers were dropped (the first 20)
        # -- durable state (swarm/state.py) and what a successor needs from it
        self.next_step = 0  # the first step not yet decided
        self.decision: dict[str, Any] | None = None  # the last step decided, as sent
        self.finished = False
        self.stopped = False  # stopped with its workers (Ctrl-C, a failure): not resumable
        self.train_before = 0.0  # training seconds of earlier orchestrators of this run
        self.t_train: float | None = None
        self.takeovers: list[dict[str, Any]] = []  # each successor: epoch, when, how long
        self.save_seconds: list[float] = []  # time spent writing the state, per step
        self.fenced = False
        self.lease_s = lease_s
        self.lease: Lease | None = _lease
        self.epoch = _lease.epoch if _lease is not None else 1
        self.run_id = _lease.run_id if _lease is not None else failover.new_run_id()
        self.state_url = state_url or f"sqlite:///{self.run_dir.resolve() / 'state.db'}"
        self.store: StateStore | None = None
        self.renewed = time.monotonic()
        self.moved_from: str | None = None  # a successor listening elsewhere: where it was
        self.rejoining = False  # asking the workers where they stand (after a take-over)

    @property
    def applied(self) -> dict[tuple[int, int], int]:
        """Samples applied per (step, stage), summed over the stage's replicas."""
        out: dict[tuple[int, int], int] = defaultdict(int)
        for (step, name), n in self.applied_by.items():
            slot = self.slots.get(name)
            if slot is not None:
                out[(step, slot.stage)] += n
        return out

    @property
    def attempt_base(self) -> int:
        """This orchestrator's first attempt number: a successor's never meet its
        predecessor's, so work the predecessor routed is never committed."""
        return (self.epoch - 1) * failover.ATTEMPT_SPAN

    # ------------------------------------------------------------------ workers
    def _heartbeat(self) -> list[tuple[str, Message]]:
        """Runs on the I/O thread: tells every live worker the run is still on."""
        live = [s.name for s in list(self.slots.values()) if s.alive and s.said_hello]
        return [(name, Heartbeat().envelope()) for name in live]

    def _spawn(self, stage: int, name: str) -> Slot:
        slot = Slot(name, stage, len(self.slots))
        if not self.spawn:
            self.slots[name] = slot
            return slot
        slot.log = self.run_dir / f"{name}.log"
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        cmd = [sys.executable, "-m", "swarmpress.swarm.worker", "--orch", self.address,
               "--stage", str(stage), "--name", name, "--timeout", "30"]  # fmt: skip
        if self.keys is not None:
            kp = KeyPair.generate()
            self.ring.add(name, kp.public)
            key = write_key_file(self.run_dir / "keys" / f"{name}.key", name, kp,
                                 self.keys.public)  # fmt: skip
            cmd += ["--key", str(key)]
        with open(slot.log, "wb") as fh, self._interrupts_held():
            # its own session: a terminal's Ctrl-C reaches the orchestrator, which stops
            # the workers in order (their last counters come back), not every process
            slot.proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)  # fmt: skip
            slot.pid = slot.proc.pid
            self.slots[name] = slot  # known before a held interrupt is raised
        return slot

    @contextlib.contextmanager
    def _interrupts_held(self):
        """Hold an interrupt (see `spawning`) for the block, then raise it."""
        self.spawning = True
        try:
            yield
        finally:
            self.spawning = False
            if self.interrupt_held:
                self.interrupt_held = False
                raise KeyboardInterrupt

    def _tail(self, slot: Slot) -> str:
        if slot.log is None or not slot.log.exists():
            return ""
        lines = slot.log.read_text(errors="replace").strip().splitlines()
        return " | ".join(lines[-3:])

    def start_workers(self, timeout: float | None = None) -> None:
        """Spawn stages x replicas workers (or wait for that many to dial in) until ready."""
        if self.spawn:
            for s in range(self.cfg.stages):
                for r in range(self.cfg.replicas):
                    self._spawn(s, f"s{s}r{r}")
        timeout = self.cfg.start_timeout_s if timeout is None else timeout
        deadline = time.monotonic() + timeout
        want = self.cfg.stages * self.cfg.replicas
        while sum(s.ready for s in self.slots.values()) < want:
            if time.monotonic() > deadline:
                missing = [s.name for s in self.slots.values() if not s.ready]
                why = f"; {'; '.join(self.rejected[-3:])}" if self.rejected else ""
                short = want - sum(s.ready for s in self.slots.values())
                raise SwarmError(
                    f"{short} of {want} workers not ready after "
                    f"{timeout:.0f} s ({', '.join(missing) or 'none said hello'}){why}"
                )
            self.pump(0.05)
            for slot in self.slots.values():
                if slot.proc is not None and slot.proc.poll() is not None and not slot.ready:
                    raise SwarmError(
                        f"worker {slot.name} exited during start-up: {self._tail(slot)}"
                    )

    def _hello(self, sender: str, m: Hello) -> None:
        try:
            check_name(sender)
            if sender == "orch":
                raise ValueError("'orch' names the orchestrator")
        except ValueError as exc:  # nothing to answer: no worker can be called that
            self._reject_msg(f"hello refused: {exc}"[:300])
            return
        if not 0 <= m.stage < self.cfg.stages:
            self._reject(sender, m, f"stage {m.stage!r} is not in 0..{self.cfg.stages - 1}")
            return
        slot = self.slots.get(sender)
        if slot is None:
            if self.spawn:
                self._reject(sender, m, f"unknown worker name {sender!r}")
                return
            slot = Slot(sender, m.stage, len(self.slots))
            self.slots[sender] = slot
        if slot.said_hello:
            return
        slot.said_hello, slot.address, slot.last_hb = True, m.address, time.monotonic()
        if slot.pid is None:
            slot.pid = m.pid
        self.ep.connect(sender, slot.address)
        live = {s.name: s.address for s in self.slots.values() if s.alive and s.address}
        donor = None
        if self.training:
            donor = next((s.name for s in self._stage(m.stage) if s.active), None)
            if donor is None:
                raise SwarmError(f"stage {m.stage} has no live replica to copy weights from")
            self.catch_up[m.stage].append(sender)
        slot.catch_up_from = donor
        init = Init(self.cfg.model_dump(), self.data.vocab, tuple(live.items()), self.step, donor,
                    self._keys_of(list(live)))  # fmt: skip
        self._tell(sender, init)
        for other in self.slots.values():
            if other.alive and other.said_hello and other.name != sender:
                self._tell(other.name, Directory(add=((sender, slot.address),),
                                                 keys=self._keys_of([sender])))  # fmt: skip

    def _keys_of(self, names: list[str]) -> tuple[tuple[str, str], ...]:
        """The public keys of these peers (empty in an unauthenticated run)."""
        if self.ring is None:
            return ()
        return tuple((n, k.decode()) for n in names if (k := self.ring.public(n)) is not None)

    def _tell(self, name: str, message: Any) -> None:
        """A control message to one worker (unshaped: control is not link traffic). Never
        on a lease that may have lapsed (a process paused for longer, a successor may hold
        the run): renewed first, which raises Fenced if it was taken."""
        self._keep_lease(self.lease_s / 2)
        self.ep.send(name, message.envelope(), shaped=False)

    def _reject(self, sender: str, m: Hello, reason: str) -> None:
        self._reject_msg(f"refused {sender!r}: {reason}")
        self.ep.connect(sender, m.address)
        self._tell(sender, Reject(reason))

    def _stage(self, stage: int) -> list[Slot]:
        return [s for s in self.slots.values() if s.stage == stage]

    def _live(self) -> list[Slot]:
        return [s for s in self.slots.values() if s.alive and s.ready]

    # ------------------------------------------------------------------ messages
    def pump(self, timeout: float, check: bool = True) -> None:
        """Handle everything that arrived (waiting up to timeout for the first), then check
        the workers' health."""
        self._keep_lease(self.lease_s / 4)
        got = self.ep.recv(timeout=timeout)
        while got is not None:
            self._handle(*got)
            got = self.ep.recv(timeout=0)
        if check:
            self._check_health()

    def _reject_msg(self, reason: str) -> None:
        if len(self.rejected) < 20:
            self.rejected.append(reason)

    def _handle(self, sender: str, msg: Message) -> None:
        """Handle one message; one whose fields do not fit is recorded and dropped."""
        try:
            m = read(msg)
        except ProtocolError as exc:
            self._reject_msg(f"malformed {msg.kind!r} from {sender!r}: {exc}"[:300])
            return
        match m:
            case Unreadable(reason=reason):  # did not parse (another version, garbage)
                self._reject_msg(f"unreadable message from {sender!r}: {reason}")
                return
            case Hello():
                self._hello(sender, m)
                return
        slot = self.slots.get(sender)
        if slot is None or not slot.alive:
            return
        slot.last_hb = time.monotonic()
        match m:
            case Heartbeat(progress_age=age, queued=queued):
                slot.progress_age, slot.queued = age or 0.0, queued or 0
            case Ready(step=step):
                self._ready(slot, step)
            case PassEvent():
                self._event(slot, m)
            case Loss():
                self._loss(m)
            case Done(key=key):
                self._done(key)
            case Failed(key=key, reason=reason):
                self.faults.failed_inputs += 1
                self.faults.reason(f"{sender}: {reason[:300]}")
                if key is not None:
                    self._abandon_key(key, replay=True)
            case Stepped(step=step, applied=applied, stats=stats):
                slot.stats = stats
                self.applied_by[(step, slot.name)] = applied
                slot.stepped = max(slot.stepped, step)
            case Standing():
                self._standing(slot, m)
            case Bye(stats=stats):
                slot.stats = stats
            case Crash(reason=reason):
                if not self.training:
                    raise SwarmError(f"worker {sender} crashed during start-up: {reason[-600:]}")
                self.faults.reason(f"{sender} crashed: {reason[-300:]}")
                self._dead(slot, "crashed")
            case _:
                pass  # merged (the workers' own business), kinds of newer peers

    def _ready(self, slot: Slot, step: int) -> None:
        """A worker is set up; a newcomer also says which step its copied state is for."""
        if not self.training or step >= self.step:
            slot.ready = True
            return
        if not any(step <= m < self.step for m in self.merged_at):
            # Steps passed while its state travelled, but no merge: its weights are a
            # replica's of a little earlier (replicas differ between merges anyway) and
            # its anchor is the current one. It serves from this step on.
            self._tell(slot.name, Resume(self.step))
            slot.ready = True
            return
        # A merge moved the anchor meanwhile: fresh state from a live replica at the end of
        # this step.
        self._tell(slot.name, Resync())
        self.catch_up[slot.stage].append(slot.name)

    def _event(self, slot: Slot, m: PassEvent) -> None:
        """A finished pass: into the tracking buffer (what routing policies read), placed
        by this clock (the worker's may differ), and into the service-time record."""
        if m.seconds >= 3600:
            return
        now = time.monotonic() - self.t0
        tr = self.tracker
        key, dur = m.key, m.seconds
        ev = tr.open(key[1], m.direction, PROCESSING, now - dur, slot.id, slot.id, slot.stage)
        tr.close(ev, now)
        if self.training and key[0] > 0:  # step 0 pays first-use costs; it is not timed
            self.service[(slot.stage, m.direction)].append(dur)

    def _loss(self, m: Loss) -> None:
        key = m.key
        if m.eval:
            if key[0] == self.cfg.steps:
                self.eval_losses[key[1]] = m.loss
            return
        att = self.attempts.get(key[1])
        if att is not None and att.key == key:
            att.loss = m.loss

    def _done(self, key: Key) -> None:
        if key[0] != self.step:
            return
        att = self.attempts.get(key[1])
        if att is not None and att.key == key and key[1] not in self.committed:
            self.committed[key[1]] = att

    # ------------------------------------------------------------------ routing
    def _route(self, sample: int, attempt: int, step: int, evaluating: bool = False) -> None:
        layers = [LayerView(self._stage(s)) for s in range(self.cfg.stages)]
        for s, layer in enumerate(layers):
            if not layer.active:
                raise SwarmError(f"stage {s} has no live replica")
        now = time.monotonic() - self.t0
        path = tuple(m.name for m in self.router.route(sample, None, layers, self.tracker, now))
        key = (step, sample, attempt)
        index = (step if not evaluating else 10**6 + step) * self.cfg.microbatches + sample
        tokens = self.data.sample(
            self.cfg.seed,
            index,
            self.cfg.microbatch,
            self.cfg.seq_len,
            split="eval" if evaluating else "train",
        )
        self._tell(path[0], Forward(key, path, evaluating, pack_tokens(tokens)))
        if not evaluating:
            self.attempts[sample] = Attempt(key, path, time.monotonic())
        else:
            self.eval_paths[sample] = Attempt(key, path, time.monotonic())

    def _abandon_key(self, key: Key, replay: bool) -> None:
        att = self.attempts.get(key[1])
        if att is None or att.key != key or key[0] != self.step:
            return
        self._abandon(att, replay)

    def _abandon(self, att: Attempt, replay: bool) -> None:
        for name in att.path:
            slot = self.slots[name]
            if slot.alive:
                self._tell(name, Drop((att.key,)))
        self.committed.pop(att.key[1], None)
        if replay:
            self.faults.replayed += 1
            self._route(att.key[1], att.key[2] + 1, att.key[0])

    # ------------------------------------------------------------------ faults
    def _check_health(self) -> None:
        now = time.monotonic()
        for slot in list(self.slots.values()):
            if not slot.alive:
                continue
            if slot.proc is not None and slot.proc.poll() is not None:
                if not self.training:
                    raise SwarmError(
                        f"worker {slot.name} exited during start-up ({slot.proc.returncode}): "
                        f"{self._tail(slot)}"
                    )
                self._dead(slot, f"process exited with {slot.proc.returncode}")
            elif slot.said_hello and now - slot.last_hb > self.cfg.dead_after_s:
                self._dead(slot, f"no heartbeat for {now - slot.last_hb:.1f} s")
            elif slot.queued and slot.progress_age > self.cfg.dead_after_s:
                self.faults.stalled += 1
                self._dead(
                    slot,
                    f"stalled: no progress for {slot.progress_age:.1f} s with work queued",
                )
        for att in list(self.attempts.values()):
            if att.key[1] not in self.committed and now - att.sent > self.cfg.sample_timeout_s:
                self.faults.timeouts += 1
                self._abandon(att, replay=True)

    def _dead(self, slot: Slot, why: str) -> None:
        slot.alive = False
        self.faults.dead += 1
        self.faults.reason(f"{slot.name}: {why}")
        if slot.proc is not None and slot.proc.poll() is None:
            slot.proc.kill()
        elif slot.proc is None and self.spawn and slot.pid is not None:
            self._kill_inherited(slot)  # a predecessor's worker
        self.ep.forget(slot.name)
        for other in self.slots.values():
            if other.alive and other.said_hello:
                self._tell(other.name, Directory(remove=(slot.name,)))
        for newcomers in self.catch_up.values():
            if slot.name in newcomers:
                newcomers.remove(slot.name)
        for other in self._stage(slot.stage):  # newcomers it was to send its state to
            waiting = other.alive and other.said_hello and not other.ready
            if waiting and other.catch_up_from == slot.name:
                other.catch_up_from = None  # another replica sends it at the end of this step
                if other.name not in self.catch_up[slot.stage]:
                    self.catch_up[slot.stage].append(other.name)
        for att in list(self.attempts.values()):
            if att.key[0] == self.step and slot.name in att.path:
                self._abandon(att, replay=True)
        if self.spawn and self.cfg.respawn and (slot.ready or slot.said_hello):
            self.gen += 1
            base = slot.name.split("g")[0]
            self._spawn(slot.stage, f"{base}g{self.gen}")
            self.faults.replacements += 1
        if not any(s.active for s in self._stage(slot.stage)):
            raise SwarmError(
                f"stage {slot.stage} lost its last live replica ({slot.name}: {why}); "
                "its weights are gone: run with replicas >= 2 to survive a failure"
            )

    def _inject_fault(self, step: int) -> None:
        """Kill one replica (SIGKILL) of a stage that has another, in turn across stages."""
        stages = [
            s for s in range(self.cfg.stages) if len([x for x in self._stage(s) if x.active]) >= 2
        ]
        if not stages:
            return
        stage = stages[self.kills % len(stages)]
        victims = [x for x in self._stage(stage) if x.active and x.proc is not None]
        if not victims:
            return
        victim = victims[(self.kills // len(stages)) % len(victims)]
        self.kills += 1
        self.faults.killed += 1
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait()
        self._dead(victim, "killed by the fault drill (SIGKILL)")

    # ------------------------------------------------------------------ the run
    def run_step(self, step: int) -> StepInfo:
        self.step = step
        t_start = time.monotonic()
        self.attempts.clear()
        self.committed.clear()
        for i in range(self.cfg.microbatches):
            self._route(i, self.attempt_base, step)
        if self.cfg.kill_every and step > 0 and step % self.cfg.kill_every == 0:
            self.kill_due = True
        while len(self.committed) < self.cfg.microbatches:
            self.pump(0.02)
            busy = self.committed or time.monotonic() - t_start > 0.5
            if self.kill_due and busy and self._previous_step_settled(step):
                self._inject_fault(step)
                self.kill_due = False
        merge = (step + 1) % self.cfg.merge_every == 0 or step == self.cfg.steps - 1
        if merge:
            self.merged_at.add(step)
        losses = [a.loss for a in self.committed.values() if a.loss is not None]
        info = StepInfo(
            step=step,
            seconds=time.monotonic() - t_start,
            loss=sum(losses) / len(losses) if losses else None,
            replays=sum(a.key[2] - self.attempt_base for a in self.committed.values()),
            merge=merge,
            live_workers=len(self._live()),
        )
        self.steps.append(info)
        self._send_step(step, merge)  # saved first: a successor knows what workers heard
        if self.takeovers and self.takeovers[-1].get("first_step_s") is None:
            t = self.takeovers[-1]  # the failover's end: the successor's first step
            t["first_step_s"] = round(time.time() - t["taken_at"], 3)
        if self.on_step is not None:
            self.on_step(step, info.to_json())
        return info

    def _previous_step_settled(self, step: int) -> bool:
        """Whether every live replica has reported applying the previous step. The drill
        kills only then, so what it measures is the replay of in-flight work; a crash
        before that report loses the replica's share of the previous step with its
        weights, and the run's report says so (exactly_once false)."""
        return all(s.stepped >= step - 1 for s in self.slots.values() if s.active)

    def _send_step(self, step: int, merge: bool) -> None:
        messages: dict[str, Step] = {}
        per_worker: dict[str, list[Key]] = defaultdict(list)
        for att in self.committed.values():
            for name in att.path:
                per_worker[name].append(att.key)
        for stage in range(self.cfg.stages):
            replicas = [s for s in self._stage(stage) if s.active]
            donors = {}
            for newcomer in self.catch_up.pop(stage, []):
                if replicas:
                    donors.setdefault(replicas[0].name, []).append(newcomer)
                    self.slots[newcomer].catch_up_from = replicas[0].name
            peers = tuple(s.name for s in replicas) if merge else None
            for slot in replicas:
                commit = tuple(per_worker.get(slot.name, ()))
                messages[slot.name] = Step(step, commit, tuple(donors.get(slot.name, ())), peers)
        self.next_step = step + 1
        self.decision = {"step": step, "messages": {n: m.head() for n, m in messages.items()}}
        self.save()
        for name, message in messages.items():
            self._tell(name, message)

    def evaluate(self, timeout: float = 120.0) -> float | None:
        """Mean loss of held-out micro-batches through the pipeline after the last step."""
        self.eval_paths = {}
        self.eval_losses.clear()
        n = self.cfg.microbatches
        for i in range(n):
            self._route(i, 0, self.cfg.steps, evaluating=True)
        end = time.monotonic() + timeout
        while len(self.eval_losses) < n and time.monotonic() < end:
            self.pump(0.02)
            for i, att in self.eval_paths.items():
                if i not in self.eval_losses and any(not self.slots[p].alive for p in att.path):
                    self._route(i, att.key[2] + 1, self.cfg.steps, evaluating=True)
        if len(self.eval_losses) < n:
            return None
        return sum(self.eval_losses.values()) / n

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop every worker (not when a successor took the run over: they are its now)."""
        if self.fenced:
            self.ep.close()
            return
        if self.store is not None and not self.finished:
            # the workers (and the weights only they hold) go: nothing left to resume
            self.stopped = True
            try:
                self.save()
                self.store.release(self.run_id, self.epoch)
            except (Fenced, StoreLost):  # a successor holds (or may hold) the run now
                self.fenced = True
                self.ep.close()
                return
            except StateError:
                pass
        for slot in self.slots.values():
            if slot.alive and slot.said_hello:
                self._tell(slot.name, Stop())
            elif slot.proc is not None and not slot.said_hello:
                # it holds nothing yet and hears no `stop` before its hello: waiting for it
                # only let a `docker stop` (SIGKILL 10 s after SIGTERM) orphan it
                with contextlib.suppress(OSError):
                    slot.proc.kill()
        end = time.monotonic() + timeout
        for slot in self.slots.values():
            if slot.proc is None:
                continue
            try:
                slot.proc.wait(timeout=max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                slot.proc.kill()
                slot.proc.wait()
        inherited = [s for s in self.slots.values() if s.proc is None and s.pid and s.alive]
        while inherited and time.monotonic() < end:  # a predecessor's: they say bye
            with contextlib.suppress(SwarmError, StateError):
                self.pump(0.05, check=False)
            inherited = [s for s in inherited if not failover.pid_gone(s.pid)]
        if self.spawn:
            for slot in inherited:
                self._kill_inherited(slot)
        with contextlib.suppress(SwarmError, StateError):  # final reports of slow stoppers
            self.pump(0.1, check=False)
        self.ep.close()

    def run(self) -> RunResult:
        """Train to the last step and evaluate (a successor: from where the run was)."""
        try:
            if self.store is None:
                self.start_workers()
                self._open_state()
            else:
                self._rejoin()
            self.training = True
            self.t_train = time.monotonic()
            for step in range(self.next_step, self.cfg.steps):
                self.run_step(step)
            self.attempts.clear()  # all committed: a death from here on replays nothing
            final = self.evaluate()
            train_seconds = self.train_seconds()
            self.finished = True
            self.save()
            self.store.release(self.run_id, self.epoch)
        except Fenced as exc:
            self.fenced = True
            msg = f"{exc}; this orchestrator stops (the workers are its successor's)"
            raise SwarmError(msg) from None
        except StoreLost as exc:
            self.fenced = True  # a successor may take the run: its workers stay
            raise SwarmError(str(exc)) from None
        except (SwarmError, StateError) as exc:
            if self.own_dir:
                self.own_dir = False  # keep the workers' logs (and the state) for later
                raise SwarmError(f"{exc} (worker logs in {self.run_dir})") from None
            raise
        finally:
            self.shutdown()
            if self.store is not None:
                self.store.close()
        if self.own_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)
        return self.result(final, train_seconds)

    def result(self, final_loss: float | None, train_seconds: float) -> RunResult:
        res = summarize(self, final_loss, train_seconds)
        saves = sorted(self.save_seconds)
        res.faults["takeovers"] = list(self.takeovers)
        res.faults["state_save_s"] = saves[len(saves) // 2] if saves else None
        res.faults["dropped_work"] = sum(s.stats.dropped_work for s in self.slots.values())
        return res


def _loopback(host: str) -> bool:
    """Whether `host` is only reachable from this machine."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


__all__ = ["VERSION", "Orchestrator", "StoreLost", "SwarmError"]
