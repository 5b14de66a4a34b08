"""One stage replica: a process that runs its slice of the model for whatever arrives.

The worker says hello to the orchestrator, receives the run's config (or the address of
a live replica to copy weights from), then loops: backward work first (it frees cache
and unblocks the stages below), then forward work, never work of a later step before its
own optimizer step. Gradients are kept per sample attempt and applied only for the
attempts the orchestrator commits in its step message, in sorted order, so a sample
replayed after a fault is counted once and the sum does not depend on arrival order.
Every tensor it sends goes through the codec of its role; whatever it receives that does
not decode is reported as a failed sample, never raised.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import traceback
import zlib
from collections import defaultdict
from dataclasses import dataclass, field

import torch
from threadpoolctl import threadpool_limits

from swarmpress.codecs import Role
from swarmpress.errors import AuthError
from swarmpress.swarm.auth import KeyRing, read_key_file
from swarmpress.swarm.config import SwarmConfig
from swarmpress.swarm.diloco import OuterOptimizer, flat, unflat
from swarmpress.swarm.framing import Message, WireError, check_address, check_name
from swarmpress.swarm.links import parse_link
from swarmpress.swarm.model import Stage, lm_loss, split
from swarmpress.swarm.protocol import (
    FROM_ORCHESTRATOR,
    Backward,
    Bye,
    Crash,
    Delta,
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
    Merged,
    PassEvent,
    ProtocolError,
    Ready,
    Reject,
    Rejoin,
    Resume,
    Resync,
    Standing,
    State,
    Step,
    Stepped,
    Stop,
    Unreadable,
    WorkerStats,
    read,
)
from swarmpress.swarm.role_codecs import WEIGHTS_ROLE, WIRE_DTYPES, RoleCodecs, make_codec
from swarmpress.swarm.tensors import decode_tensor
from swarmpress.swarm.tokens import unpack_tokens
from swarmpress.swarm.transport import Endpoint, PeerAuth

# The name each tensor role's traffic is reported under.
WIRE_ROLE = {
    Role.ACTIVATION: "activation",
    Role.GRADIENT: "gradient",
    Role.WEIGHT_DELTA: "weight-delta",
    WEIGHTS_ROLE: "weights",
    Role.OPTIMIZER_STATE: "weights",  # sent with the weights, counted with them
}
Work = tuple[str, Forward | Backward]  # (sender, message)
# The roles of _state_tensors(): weights, anchor, outer momentum, Adam's two moments.
_STATE_ROLES = (WEIGHTS_ROLE, WEIGHTS_ROLE) + (Role.OPTIMIZER_STATE,) * 3
APPLIED_KEPT = 64  # steps whose applied-sample counts a worker keeps (told to a new orchestrator)


def _work_bytes(m: Forward | Backward) -> int:
    """Bytes a queued piece of work holds."""
    if isinstance(m, Forward):
        return len(m.tokens) + len(m.activation or b"")
    return len(m.gradient)


def lr_at(cfg: SwarmConfig, step: int) -> float:
    """Linear warm-up then cosine decay to a tenth."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / (cfg.warmup + 1)
    span = max(1, cfg.steps - cfg.warmup)
    frac = min(1.0, (step - cfg.warmup) / span)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


@dataclass
class Stats:
    """Cumulative counters a worker reports with every step."""

    bytes: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    raw: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    messages: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    time: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    samples_applied: int = 0
    bad_inputs: int = 0
    dropped_work: int = 0  # work refused because this worker already held its bound
    chosen: dict[str, str] = field(default_factory=dict)  # role -> codec spec (after `auto`)

    def snapshot(self) -> WorkerStats:
        return WorkerStats(
            bytes=dict(self.bytes),
            raw=dict(self.raw),
            messages=dict(self.messages),
            time=dict(self.time),
            samples_applied=self.samples_applied,
            chosen=dict(self.chosen),
            bad_inputs=self.bad_inputs,
            dropped_work=self.dropped_work,
        )


@dataclass
class Pulse:
    """What the heartbeat tells the orchestrator; the I/O thread reads it on every tick."""

    last_progress: float = field(default_factory=time.monotonic)
    queued: int = 0  # work the worker could do now
    ep: Endpoint | None = None

    def beat(self) -> list[tuple[str, Message]]:
        age = time.monotonic() - self.last_progress
        bad = self.ep.bad_messages if self.ep is not None else 0
        return [("orch", Heartbeat(age, self.queued, bad).envelope())]


@dataclass
class MergeWait:
    """A DiLoCo merge under way: the replicas whose pseudo-gradient it still needs."""

    step: int
    peers: set[str]
    t0: float


def connect(
    name: str, orch: str, host: str = "127.0.0.1", auth: PeerAuth | None = None
) -> tuple[Endpoint, Pulse]:
    """The worker's endpoint (listening, heartbeating) and its pulse; OSError, or
    ValueError for an orchestrator address that is not tcp://HOST:PORT."""
    check_address(orch)
    pulse = Pulse()
    pulse.ep = Endpoint(name, host, tick=pulse.beat, auth=auth)
    pulse.ep.connect("orch", orch)
    return pulse.ep, pulse


def join(ep: Endpoint, orch: str, stage: int, timeout: float = 60.0) -> Init:
    """Say hello to the orchestrator and wait for its init; SystemExit saying why not."""
    ep.send("orch", Hello(stage, ep.address, os.getpid()).envelope(), shaped=False)
    deadline = time.monotonic() + timeout
    while True:
        got = ep.recv(timeout=max(0.0, deadline - time.monotonic()))
        if got is None:
            raise SystemExit(
                f"{ep.name}: the orchestrator at {orch} did not answer within "
                f"{timeout:g} s (is it running, and is the address reachable?)"
            )
        sender, msg = got
        if sender != "orch":
            continue  # a peer that knows this worker already; not yet its business
        try:
            m = read(msg)
        except ProtocolError as exc:
            raise SystemExit(f"{ep.name}: the orchestrator sent {exc}") from None
        match m:
            case Reject(reason=reason):
                raise SystemExit(f"{ep.name}: rejected by the orchestrator: {reason}")
            case Init():
                return m


class StageWorker:
    """One stage replica, from the orchestrator's init to its stop; everything it holds is
    declared here: the run (config, model, optimizers, codecs), then the work in flight."""

    def __init__(
        self, ep: Endpoint, pulse: Pulse, stage: int, init: Init, timeout: float = 60.0
    ) -> None:
        # -- who it is, how it hears the orchestrator
        self.ep, self.pulse = ep, pulse
        self.name, self.stage_index = ep.name, stage
        self.timeout = timeout  # seconds without a word from the orchestrator before leaving
        self.last_orch = time.monotonic()
        self.stats = Stats()
        # -- the run: configuration, this stage's slice of the model, optimizers, codecs
        self.cfg = SwarmConfig(**init.config)
        self.vocab = init.vocab
        self.mcfg = self.cfg.model_cfg(self.vocab)
        torch.manual_seed(self.cfg.seed)
        self.model: Stage = split(self.mcfg, self.cfg.stages, self.cfg.seed,
                                  self.cfg.stage_layers)[stage]  # fmt: skip
        self.params = list(self.model.parameters())
        self.opt = torch.optim.AdamW(
            self.params, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay, betas=(0.9, 0.95)
        )
        self.outer = OuterOptimizer(self.model, self.cfg.outer_lr, self.cfg.outer_momentum)
        self.codecs = RoleCodecs(
            self.cfg.codec_activation,
            self.cfg.codec_gradient,
            self.cfg.codec_delta,
            self.cfg.codec_weights,
            self.cfg.error_feedback,
        )
        self.dtype = WIRE_DTYPES[self.cfg.wire_dtype]
        self.width = self.mcfg.dim // self.mcfg.bottleneck
        # -- work in flight
        self.step = init.step
        self.step_started = time.monotonic()
        self.cache: dict[Key, tuple[torch.Tensor | None, torch.Tensor]] = {}  # forward outputs
        self.pending: dict[Key, list[torch.Tensor]] = {}  # gradients kept per attempt
        self.fwd: list[Work] = []
        self.bwd: list[Work] = []
        self.deltas: defaultdict[int, dict[str, torch.Tensor]] = defaultdict(dict)
        self.merge_wait: MergeWait | None = None
        self.future_steps: dict[int, Step] = {}  # step messages that came early
        self.applied_log: dict[int, int] = {}  # step -> samples applied (the last APPLIED_KEPT)
        # What it holds at most: a step's samples a few times over (replays) for this step
        # and the next; anything past the bound is refused and counted (dropped_work).
        self.max_work = 4 * self.cfg.microbatches + 8
        # ... and in bytes: a raw float32 activation per message, twice over (codec frames
        # are smaller; `none` adds a header), plus the token block
        tensor = self.cfg.microbatch * self.cfg.seq_len * self.mcfg.dim * 4
        self.max_work_bytes = self.max_work * (2 * tensor + 8 * self.cfg.microbatch
                                               * self.cfg.seq_len + 4096)  # fmt: skip
        self.state_to: list[str] = []  # newcomers to send state to after this step
        self.stopping = False
        self.caught_up = not init.catch_up_from
        ep.set_link(parse_link(self.cfg.link), seed=zlib.crc32(self.name.encode()))
        self._admit_keys(init.keys)
        self.peers: set[str] = set()  # the peers the orchestrator named (work comes from them)
        for name, addr in init.directory:
            ep.connect(name, addr)
            self.peers.add(name)

    def _admit_keys(self, keys: tuple[tuple[str, str], ...]) -> None:
        """Peers' public keys from the orchestrator (it is the only one who may say them)."""
        if self.ep.auth is None:
            return
        for name, key in keys:
            try:
                self.ep.auth.ring.add(name, key.encode())
            except AuthError:
                self.stats.bad_inputs += 1

    def send_orch(self, message) -> None:
        self.ep.send("orch", message.envelope(), shaped=False)

    # ------------------------------------------------------------------ set-up
    def start(self) -> None:
        """Warm the codecs, take a live replica's state if told to, say ready."""
        self._warm_up()
        if self.caught_up:
            self.send_orch(Ready(self.step))
        else:
            self._wait_state()

    def _warm_up(self) -> None:
        """Encode and decode one tensor per role so compilation is not timed as a step;
        `auto` roles settle here on their codec or raw bytes for this worker's link."""
        shape = (self.cfg.microbatch, self.cfg.seq_len, self.width)
        x = torch.randn(shape)
        for role in (Role.ACTIVATION, Role.GRADIENT):
            decode_tensor(self.codecs.encode(x, role, self.dtype))
            self.stats.chosen[WIRE_ROLE[role]] = self.codecs.settle(
                role, x, self.dtype, self.cfg.link_spec
            )
        probe = make_codec(self.codecs.specs[Role.WEIGHT_DELTA])  # not the stream's feedback
        decode_tensor(probe.encode(torch.randn(4096), Role.WEIGHT_DELTA))

    # ------------------------------------------------------------------ main loop
    def run(self) -> None:
        while not self.stopping:
            self._drain(block=self.merge_wait is not None or not self._has_work())
            if self.merge_wait is not None:
                self._try_finish_merge()
                continue
            item = self._next_work()
            if item is None:
                continue
            sender, m = item
            try:
                match m:
                    case Forward():
                        self._forward(m)
                    case Backward():
                        self._backward(m)
            except WireError as exc:
                # a tensor or token block that does not fit what this stage expects: the
                # sample is reported failed (and replayed elsewhere), the worker goes on
                self.stats.bad_inputs += 1
                self.send_orch(Failed(m.key, str(exc), sender))
            self.pulse.last_progress = time.monotonic()
        self.ep.flush()

    def _has_work(self) -> bool:
        return any(self._current(m) for _, m in self.bwd + self.fwd)

    def _current(self, m: Forward | Backward) -> bool:
        return m.key[0] == self.step

    def _next_work(self) -> Work | None:
        for q in (self.bwd, self.fwd):
            for i, (_, m) in enumerate(q):
                if self._current(m):
                    return q.pop(i)
        return None

    def _drain(self, block: bool) -> None:
        t0 = time.monotonic()
        got = self.ep.recv(timeout=0.05 if block else 0)
        if block and self.merge_wait is None:  # waiting for peers' deltas counts as the step
            self.stats.time["wait"] += time.monotonic() - t0
        while got is not None:
            if got[0] == "orch":
                self.last_orch = time.monotonic()
            self._dispatch(*got)
            got = self.ep.recv(timeout=0)
        if time.monotonic() - self.last_orch > self.timeout:
            raise SystemExit(
                f"{self.name}: no word from the orchestrator for {self.timeout:g} s; leaving"
            )
        # drop work of steps already taken (stale attempts)
        self.fwd = [(s, m) for s, m in self.fwd if m.key[0] >= self.step]
        self.bwd = [(s, m) for s, m in self.bwd if m.key[0] >= self.step]
        # work it could do now (none while merging: it is waiting on its peers, not stalled)
        queued = 0 if self.merge_wait else sum(self._current(m) for _, m in self.fwd + self.bwd)
        if queued and not self.pulse.queued:
            self.pulse.last_progress = time.monotonic()  # idle until now: the stall clock starts
        self.pulse.queued = queued

    def _standing(self) -> Standing:
        """Where this worker stands, for an orchestrator that took the run over."""
        applied = tuple(sorted(self.applied_log.items()))
        return Standing(self.step, self.caught_up, applied, self.stats.snapshot())

    def _well_formed(self, m: Forward | Backward) -> bool:
        """Work as this run writes it (the protocol checked the types): a path naming one
        worker per stage, no far-future work to hoard, a sample of this step's count."""
        return (
            m.key[0] <= self.step + 2
            and m.key[1] < self.cfg.microbatches
            and len(m.path) == self.cfg.stages
        )

    def _dispatch(self, sender: str, msg: Message) -> None:
        """Handle one message; a malformed one is counted and dropped, never raised."""
        try:
            self._handle(sender, read(msg))
        except WireError as exc:  # ProtocolError included: a field that does not fit
            self.stats.bad_inputs += 1
            print(f"{self.name}: dropped a {msg.kind!r} from {sender}: {exc}", file=sys.stderr)

    def _handle(self, sender: str, m: object) -> None:
        if isinstance(m, FROM_ORCHESTRATOR) and sender != "orch":
            self.stats.bad_inputs += 1  # only the orchestrator steers the run
            return
        match m:
            case Forward() | Backward():
                if not self._well_formed(m) or (sender != "orch" and sender not in self.peers):
                    self.stats.bad_inputs += 1
                    return
                queue = self.fwd if isinstance(m, Forward) else self.bwd
                mine = [w for s, w in queue if s == sender]
                held = sum(_work_bytes(w) for w in mine) + _work_bytes(m)
                if len(mine) >= self.max_work or held > self.max_work_bytes:
                    self.stats.dropped_work += 1  # more than a step's work from one sender
                    return
                queue.append((sender, m))
            case Step():
                if m.step > self.step + 2:  # no orchestrator runs that far ahead
                    self.stats.bad_inputs += 1
                    return
                self._apply_step(m)
            case Rejoin(address=address):
                # A successor listening elsewhere: only where its key proves it (CurveZMQ);
                # in an open run anyone could say this, so it must listen where it was.
                if address is not None and self.ep.auth is not None:
                    self.ep.connect("orch", address)
                self.send_orch(self._standing())
            case Drop(keys=keys):
                for key in keys:
                    self.cache.pop(key, None)
                    self.pending.pop(key, None)
            case Directory(add=add, remove=remove, keys=keys):
                self._admit_keys(keys)
                for name, addr in add:
                    self.ep.connect(name, addr)
                    self.peers.add(name)
                for name in remove:
                    self.ep.forget(name)
                    self.peers.discard(name)
                    if self.merge_wait is not None:
                        self.merge_wait.peers.discard(name)
            case Delta():
                self._receive_delta(sender, m)
            case State():
                # only from a peer, and only while it waits for one (at start, after resync)
                if self.caught_up or sender not in self.peers:
                    self.stats.bad_inputs += 1
                    return
                self._load_state(sender, m)
            case Resync():
                self.caught_up = False  # its first state came too late: another is on the way
            case Resume(step=step):
                self.step = step  # the state it holds is current enough
                self._run_future_steps()
            case Stop():
                self.stopping = True
                self.send_orch(Bye(self.stats.snapshot(), self.step))
            case Unreadable():
                self.stats.bad_inputs += 1
            case _:
                pass  # hb echoes, kinds of newer peers, messages meant for the orchestrator

    # ------------------------------------------------------------------ compute
    def _encode(self, tensor: torch.Tensor, role: Role) -> bytes:
        t0 = time.monotonic()
        blob = self.codecs.encode(tensor, role, self.dtype)
        self.stats.time["encode"] += time.monotonic() - t0
        self.stats.raw[WIRE_ROLE[role]] += tensor.numel() * self.dtype.itemsize
        return blob

    def _decode(self, blob: bytes, shape: tuple[int, ...]) -> torch.Tensor:
        t0 = time.monotonic()
        t = decode_tensor(blob, shape)
        self.stats.time["decode"] += time.monotonic() - t0
        return t

    def _send(self, dst: str, message, role: str) -> None:
        r = self.ep.send(dst, message.envelope())
        self.stats.bytes[role] += r.nbytes
        self.stats.messages[role] += 1
        self.stats.time["transfer"] += r.link_s

    def _event(self, key: Key, direction: int, started: float) -> None:
        """Tell the orchestrator how long this pass held the worker (decode, compute and
        encode): the service time its routing policy and the twin calibration read."""
        self.send_orch(PassEvent(key, direction, time.monotonic() - started))

    def _forward(self, m: Forward) -> None:
        key, path, s = m.key, m.path, self.stage_index
        if path[s] != self.name:
            raise WireError(
                f"forward message for {list(key)} has a path that does not name me at {s}"
            )
        if (m.activation is None) != (s == 0):
            parts = 1 if m.activation is None else 2
            raise WireError(f"forward message for {list(key)} has {parts} parts")
        if not m.eval and len(self.cache) + len(self.pending) >= 2 * self.max_work:
            self.stats.dropped_work += 1
            raise WireError(f"forward for {list(key)}: this worker holds its bound of work")
        started = time.monotonic()
        tokens = unpack_tokens(m.tokens, self.vocab)
        if tokens.shape != (self.cfg.microbatch, self.cfg.seq_len):
            raise WireError(f"token block of shape {tuple(tokens.shape)}")
        x = None
        if m.activation is not None:
            x = self._decode(m.activation, (self.cfg.microbatch, self.cfg.seq_len, self.width))
        evaluating = m.eval
        c0 = time.monotonic()
        with torch.set_grad_enabled(not evaluating):
            if x is not None and not evaluating:
                x.requires_grad_(True)
            out = self.model(tokens if s == 0 else x)
            if self.model.is_last:
                loss = lm_loss(out, tokens)
                if not evaluating:
                    loss.backward()
        self.stats.time["compute"] += time.monotonic() - c0
        if self.model.is_last:
            self.send_orch(Loss(key, loss.item(), evaluating))
            if evaluating:
                return
            self._keep_grads(key)
            if s == 0:
                self._event(key, 0, started)
                self.send_orch(Done(key))
                return
            grad = self._encode(x.grad, Role.GRADIENT)
            self._event(key, 0, started)
            self._send(path[s - 1], Backward(key, path, grad), "gradient")
            return
        if not evaluating:
            self.cache[key] = (x, out)
        blob = self._encode(out, Role.ACTIVATION)
        if not evaluating:
            self._event(key, 0, started)
        self._send(path[s + 1], Forward(key, path, evaluating, m.tokens, blob), "activation")

    def _backward(self, m: Backward) -> None:
        key = m.key
        entry = self.cache.pop(key, None)
        if entry is None:
            return  # dropped or already replayed elsewhere
        x, out = entry
        started = time.monotonic()
        grad = self._decode(m.gradient, tuple(out.shape))
        c0 = time.monotonic()
        out.backward(grad)
        self.stats.time["compute"] += time.monotonic() - c0
        self._keep_grads(key)
        if self.stage_index == 0:
            self._event(key, 1, started)
            self.send_orch(Done(key))
            return
        blob = self._encode(x.grad, Role.GRADIENT)
        self._event(key, 1, started)
        self._send(m.path[self.stage_index - 1], Backward(key, m.path, blob), "gradient")

    def _keep_grads(self, key: Key) -> None:
        """Set this sample's gradients aside until a step commits it: the tensors
        themselves (the parameters let go of them, so no copy is needed)."""
        self.pending[key] = [
            p.grad.detach() if p.grad is not None else torch.zeros_like(p) for p in self.params
        ]
        for p in self.params:
            p.grad = None

    # ------------------------------------------------------------------ steps and merges
    def _apply_step(self, m: Step) -> None:
        step = m.step
        if step > self.step:  # still busy with an earlier step (a merge): apply it after
            self.future_steps[step] = m
            return
        if step < self.step or step in self.applied_log:
            # a step this replica joined after, or one it applied already (a successor
            # orchestrator sends the last decided step again; it may come mid-merge)
            return
        self.step_started = time.monotonic()
        keys = sorted(m.commit)
        have = [k for k in keys if k in self.pending]
        missing = len(keys) - len(have)
        if have:
            with torch.no_grad():
                for i, p in enumerate(self.params):
                    g = self.pending[have[0]][i].clone()
                    for k in have[1:]:
                        g.add_(self.pending[k][i])
                    p.grad = g.div_(len(have))
            torch.nn.utils.clip_grad_norm_(self.params, 1.0)
            for group in self.opt.param_groups:
                group["lr"] = lr_at(self.cfg, step)
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
        self.stats.samples_applied += len(have)
        self.applied_log[step] = len(have)
        if len(self.applied_log) > APPLIED_KEPT:
            del self.applied_log[min(self.applied_log)]
        self.pending = {k: v for k, v in self.pending.items() if k[0] > step}
        self.cache = {k: v for k, v in self.cache.items() if k[0] > step}
        self.send_orch(Stepped(step, len(have), missing, self.stats.snapshot()))
        self.state_to = list(m.send_state)
        if m.merge_peers is not None:
            self._start_merge(step, [p for p in m.merge_peers if p != self.name])
        else:
            self._after_step(step)

    def _after_step(self, step: int) -> None:
        for dst in self.state_to:
            self._send_state(dst)
        self.state_to = []
        self.step = step + 1
        self.stats.time["step"] += time.monotonic() - self.step_started
        self._run_future_steps()

    def _run_future_steps(self) -> None:
        """Apply a step message that arrived while this replica was still on an earlier one."""
        for old in [k for k in self.future_steps if k < self.step]:
            del self.future_steps[old]
        m = self.future_steps.pop(self.step, None)
        if m is not None:
            self._apply_step(m)

    def _start_merge(self, step: int, peers: list[str]) -> None:
        delta = self.outer.pseudo_gradient()
        blob = self._encode(delta, Role.WEIGHT_DELTA) if peers else None
        mine = decode_tensor(blob) if blob is not None else delta
        self.deltas[step][self.name] = mine
        for p in peers:
            self._send(p, Delta(step, blob), "weight-delta")
        self.merge_wait = MergeWait(step, set(peers), time.monotonic())

    def _receive_delta(self, sender: str, m: Delta) -> None:
        if not self.step - 1 <= m.round <= self.step + 1:
            self.stats.bad_inputs += 1
            return
        held = self.deltas.get(m.round, {})
        if sender not in self.peers:
            self.stats.bad_inputs += 1
            return
        if sender not in held and len(held) >= 2 * self.cfg.replicas + 2:
            self.stats.dropped_work += 1  # more senders than a stage has replicas
            return
        try:
            self.deltas[m.round][sender] = self._decode(m.blob, (self.outer.numel,))
        except WireError:
            self.stats.bad_inputs += 1

    def _try_finish_merge(self) -> None:
        w = self.merge_wait
        got = self.deltas.get(w.step, {})
        if not w.peers <= set(got):
            return
        names = sorted({self.name} | (w.peers & set(got)))
        total = got[names[0]].clone()
        for n in names[1:]:
            total.add_(got[n])
        self.outer.step(total / len(names))
        self.send_orch(Merged(w.step, len(names)))
        self.deltas = defaultdict(dict, {r: d for r, d in self.deltas.items() if r > w.step})
        self.merge_wait = None
        self._after_step(w.step)

    # ------------------------------------------------------------------ catch-up
    def _state_tensors(self) -> list[torch.Tensor]:
        """Weights, outer anchor, then optimizer state (_STATE_ROLES says which is which)."""
        out = [
            flat([p.detach() for p in self.params]),
            flat(self.outer.anchor),
            flat(self.outer.momentum),
        ]
        for key in ("exp_avg", "exp_avg_sq"):
            out.append(
                flat(
                    [
                        self.opt.state[p][key] if p in self.opt.state else torch.zeros_like(p)
                        for p in self.params
                    ]
                )
            )
        return out

    def _send_state(self, dst: str) -> None:
        steps = [float(self.opt.state[p]["step"]) for p in self.params if p in self.opt.state]
        tensors = self._state_tensors()
        parts = tuple(self._encode(t, r) for t, r in zip(tensors, _STATE_ROLES, strict=True))
        self._send(dst, State(self.step + 1, steps[0] if steps else 0.0, parts), "weights")

    def _wait_state(self) -> None:
        """Before serving, take a live replica's weights and optimizer state."""
        deadline = time.monotonic() + 300
        while not self.caught_up:
            if time.monotonic() > deadline:
                raise SystemExit(f"{self.name}: no weights arrived from a live replica in 300 s")
            got = self.ep.recv(timeout=0.1)
            if got is not None:
                self._dispatch(*got)

    def _load_state(self, sender: str, m: State) -> None:
        """Weights, DiLoCo anchor and momentum, Adam moments from a replica of this stage;
        then tell the orchestrator the step they belong to (it asks again if that step has
        passed meanwhile)."""
        n = sum(p.numel() for p in self.params)
        tensors = [decode_tensor(b, (n,)) for b in m.tensors]  # all decode before any is used
        with torch.no_grad():
            for p, v in zip(self.params, unflat(tensors[0], self.params), strict=True):
                p.copy_(v)
        self.outer.load(
            {"anchor": unflat(tensors[1], self.params), "momentum": unflat(tensors[2], self.params)}
        )
        if m.adam_step:
            moments = zip(
                self.params, unflat(tensors[3], self.params), unflat(tensors[4], self.params),
                strict=True,
            )  # fmt: skip
            for p, a, b in moments:
                self.opt.state[p] = {
                    "step": torch.tensor(m.adam_step),
                    "exp_avg": a.clone(),
                    "exp_avg_sq": b.clone(),
                }
        self.step = m.step
        self.pending.clear()
        self.cache.clear()
        self.caught_up = True
        self.send_orch(Ready(self.step))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="swarmpress-swarm-worker", description=StageWorker.__doc__)
    ap.add_argument("--orch", required=True, help="orchestrator address, tcp://HOST:PORT")
    ap.add_argument("--stage", type=int, help="the stage to serve (default: the key file's)")
    ap.add_argument("--name", help="this worker's name (default: the key file's)")
    ap.add_argument("--host", default="127.0.0.1", help="address this worker listens on")
    ap.add_argument("--key", help="this worker's key file (CurveZMQ; from the orchestrator)")
    ap.add_argument(
        "--timeout", type=float, default=60.0,
        help="seconds to wait for the orchestrator (at start, and between its heartbeats)",
    )  # fmt: skip
    a = ap.parse_args(argv)
    # One compute thread per worker, numpy's BLAS included (its idle pool threads spin and
    # took 4 % more CPU per uplink step): a machine runs a worker per core it lends.
    torch.set_num_threads(1)
    threadpool_limits(1)
    sys.setswitchinterval(0.0005)  # hand the GIL to the I/O thread quickly (message latency)
    try:
        auth = None
        if a.key:
            name, keys, orch_public, stage = read_key_file(a.key)
            if a.name not in (None, name):
                raise ValueError(f"{a.key} is the key file of {name!r}, not {a.name!r}")
            a.name = name
            a.stage = stage if a.stage is None else a.stage
            auth = PeerAuth(keys, KeyRing.of({"orch": orch_public, name: keys.public}))
        if a.name is None or a.stage is None:
            raise ValueError("give --name and --stage, or a --key file that holds them")
        check_name(a.name)
        if a.name == "orch":
            raise ValueError("'orch' is the orchestrator's name (and key), not a worker's")
        ep, pulse = connect(a.name, a.orch, a.host, auth)
    except (OSError, ValueError, AuthError) as exc:
        print(f"{a.name or 'worker'}: {exc}", file=sys.stderr)
        return 2
    try:
        w = StageWorker(ep, pulse, a.stage, join(ep, a.orch, a.stage, a.timeout), a.timeout)
        w.start()
        w.run()
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return 2
    except Exception:
        ep.send("orch", Crash(traceback.format_exc(limit=3)).envelope(), shaped=False)
        ep.flush(1.0)
        raise
    finally:
        ep.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
