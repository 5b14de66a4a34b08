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
import threading
import time
import traceback
import zlib
from collections import defaultdict

import torch

from swarmpress.codecs import Role
from swarmpress.swarm.config import SwarmConfig
from swarmpress.swarm.diloco import OuterOptimizer, flat, unflat
from swarmpress.swarm.links import parse_link
from swarmpress.swarm.model import Stage, lm_loss, split
from swarmpress.swarm.transport import Endpoint, check_address
from swarmpress.swarm.wire import (
    WIRE_DTYPES,
    Message,
    RoleCodecs,
    WireError,
    decode_tensor,
    make_codec,
    unpack_tokens,
)

Key = tuple[int, int, int]  # (step, sample, attempt)
CONTROL = {
    "step",
    "drop",
    "dir",
    "stop",
    "resync",
    "resume",
}  # message kinds only the orchestrator may send
# The name each tensor role's traffic is reported under (full weights travel as UNSPECIFIED).
WIRE_ROLE = {
    Role.ACTIVATION: "activation",
    Role.GRADIENT: "gradient",
    Role.WEIGHT_DELTA: "weight-delta",
    Role.UNSPECIFIED: "weights",
}


def lr_at(cfg: SwarmConfig, step: int) -> float:
    """Linear warm-up then cosine decay to a tenth."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / (cfg.warmup + 1)
    span = max(1, cfg.steps - cfg.warmup)
    frac = min(1.0, (step - cfg.warmup) / span)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


class Stats:
    """Cumulative counters a worker reports with every step."""

    def __init__(self) -> None:
        self.bytes = defaultdict(int)  # role -> bytes sent
        self.raw = defaultdict(int)  # role -> bytes those tensors hold at the wire dtype
        self.messages = defaultdict(int)
        self.time = defaultdict(float)  # compute, encode, decode, transfer, wait
        self.samples_applied = 0
        self.bad_inputs = 0
        self.chosen: dict[str, str] = {}  # role -> the codec spec in use (after `auto`)

    def to_json(self) -> dict:
        return {
            "bytes": dict(self.bytes),
            "raw": dict(self.raw),
            "messages": dict(self.messages),
            "time": dict(self.time),
            "samples_applied": self.samples_applied,
            "chosen": self.chosen,
            "bad_inputs": self.bad_inputs,
        }


class StageWorker:
    def __init__(
        self, name: str, stage: int, orch: str, host: str = "127.0.0.1", timeout: float = 60.0
    ) -> None:
        self.name, self.stage_index, self.orch_addr = name, stage, orch
        self.timeout = timeout  # seconds without a word from the orchestrator before leaving
        self.last_orch = time.monotonic()
        self.busy_since: float | None = None
        self.last_progress = time.monotonic()
        self.queued = 0
        self.ep = Endpoint(name, host, tick=self._heartbeat)
        self.ep.connect("orch", orch)
        self.stats = Stats()
        self.lock = threading.Lock()

    # ------------------------------------------------------------------ heartbeat
    def _heartbeat(self) -> list[tuple[str, Message]]:
        age = time.monotonic() - self.last_progress
        ep = getattr(self, "ep", None)
        head = {"progress_age": age, "queued": self.queued, "bad": ep.bad_messages if ep else 0}
        return [("orch", Message("hb", head))]

    def send_orch(self, kind: str, **head) -> None:
        self.ep.send("orch", Message(kind, head), shaped=False)

    # ------------------------------------------------------------------ set-up
    def start(self) -> None:
        self.send_orch("hello", stage=self.stage_index, address=self.ep.address, pid=os.getpid())
        deadline = time.monotonic() + self.timeout
        while True:
            got = self.ep.recv(timeout=max(0.0, deadline - time.monotonic()))
            if got is None:
                raise SystemExit(
                    f"{self.name}: the orchestrator at {self.orch_addr} did not answer within "
                    f"{self.timeout:g} s (is it running, and is the address reachable?)"
                )
            sender, msg = got
            if sender != "orch":
                continue  # a peer that knows this worker already; not yet its business
            if msg.kind == "reject":
                raise SystemExit(f"{self.name}: rejected by the orchestrator: {msg.head['reason']}")
            if msg.kind == "init":
                break
        h = msg.head
        self.cfg = SwarmConfig(**h["config"])
        self.vocab = h["vocab"]
        self.mcfg = self.cfg.model_cfg(self.vocab)
        torch.manual_seed(self.cfg.seed)
        self.model: Stage = split(self.mcfg, self.cfg.stages, self.cfg.seed)[self.stage_index]
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
        )
        self.dtype = WIRE_DTYPES[self.cfg.wire_dtype]
        self.ep.set_link(parse_link(self.cfg.link), seed=zlib.crc32(self.name.encode()))
        for name, addr in h["directory"].items():
            self.ep.connect(name, addr)
        self.step = h["step"]
        self.width = self.mcfg.dim // self.mcfg.bottleneck
        self.cache: dict[Key, tuple[torch.Tensor | None, torch.Tensor]] = {}
        self.pending: dict[Key, list[torch.Tensor]] = {}
        self.fwd: list[tuple[str, Message]] = []
        self.bwd: list[tuple[str, Message]] = []
        self.deltas: dict[int, dict[str, torch.Tensor]] = defaultdict(dict)
        self.merge_wait: dict | None = None
        self.future_steps: dict[int, dict] = {}
        self.state_to: list[str] = []
        self.stopping = False
        self._warm_up()
        self.caught_up = not h.get("catch_up_from")
        if self.caught_up:
            self.send_orch("ready", step=self.step)
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
        probe = make_codec(self.codecs.specs[Role.WEIGHT_DELTA])  # own state: not the stream's
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
            sender, msg = item
            self.busy_since = time.monotonic()
            try:
                if msg.kind == "fwd":
                    self._forward(msg)
                else:
                    self._backward(msg)
            except (WireError, ValueError, TypeError, KeyError, IndexError) as exc:
                # a tensor or header that does not fit what this stage expects: the sample
                # is reported failed (and replayed elsewhere), the worker goes on
                self.stats.bad_inputs += 1
                self.send_orch("failed", key=msg.head.get("key"), reason=str(exc), frm=sender)
            self.last_progress = time.monotonic()
            self.busy_since = None
        self.ep.flush()

    def _has_work(self) -> bool:
        return any(self._current(m) for _, m in self.bwd + self.fwd)

    def _current(self, msg: Message) -> bool:
        key = msg.head.get("key")
        return isinstance(key, list) and len(key) == 3 and key[0] == self.step

    def _next_work(self) -> tuple[str, Message] | None:
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
        self.fwd = [(s, m) for s, m in self.fwd if self._fresh(m)]
        self.bwd = [(s, m) for s, m in self.bwd if self._fresh(m)]
        # work it could do now (none while merging: it is waiting on its peers, not stalled)
        queued = 0 if self.merge_wait else sum(self._current(m) for _, m in self.fwd + self.bwd)
        if queued and not self.queued:
            self.last_progress = time.monotonic()  # idle until now: the stall clock starts here
        self.queued = queued

    def _fresh(self, msg: Message) -> bool:
        key = msg.head.get("key")
        return isinstance(key, list) and len(key) == 3 and key[0] >= self.step

    def _well_formed(self, msg: Message) -> bool:
        """A work message's header as this run writes it: key [step, sample, attempt] and a
        path naming one worker per stage (anything else came from a confused or hostile peer)."""
        key, path = msg.head.get("key"), msg.head.get("path")
        return (
            isinstance(key, list)
            and len(key) == 3
            and all(type(v) is int and v >= 0 for v in key)
            and key[0] <= max(self.step + 1, self.cfg.steps)  # no far-future work to hoard
            and key[1] < self.cfg.microbatches
            and isinstance(path, list)
            and len(path) == self.cfg.stages
            and all(isinstance(p, str) for p in path)
            and isinstance(msg.head.get("eval", False), bool)
        )

    def _dispatch(self, sender: str, msg: Message) -> None:
        """Handle one message; a malformed one is counted and dropped, never raised."""
        try:
            self._dispatch_one(sender, msg)
        except (WireError, ValueError, TypeError, KeyError, IndexError) as exc:
            self.stats.bad_inputs += 1
            print(f"{self.name}: dropped a {msg.kind!r} from {sender}: {exc}", file=sys.stderr)

    def _dispatch_one(self, sender: str, msg: Message) -> None:
        k = msg.kind
        if k in CONTROL and sender != "orch":
            self.stats.bad_inputs += 1  # only the orchestrator steers the run
            return
        if k in ("fwd", "bwd"):
            if not self._well_formed(msg):
                self.stats.bad_inputs += 1
                return
            (self.fwd if k == "fwd" else self.bwd).append((sender, msg))
        elif k == "step":
            self._apply_step(msg.head)
        elif k == "drop":
            for key in msg.head.get("keys", []):
                self.cache.pop(tuple(key), None)
                self.pending.pop(tuple(key), None)
        elif k == "dir":
            for name, addr in msg.head.get("add", {}).items():
                self.ep.connect(name, addr)
            for name in msg.head.get("remove", []):
                self.ep.forget(name)
                if self.merge_wait is not None and name in self.merge_wait["peers"]:
                    self.merge_wait["peers"].remove(name)
        elif k == "delta":
            self._receive_delta(sender, msg)
        elif k == "state":
            if self.caught_up:  # only while it waits for one (at start or after "resync")
                self.stats.bad_inputs += 1
                return
            self._load_state(sender, msg)
        elif k == "resync":
            self.caught_up = False  # its first state came too late: another is on the way
        elif k == "resume":
            self.step = int(msg.head["step"])  # the state it holds is current enough
            self._run_future_steps()
        elif k == "stop":
            self.stopping = True
            self.send_orch("bye", stats=self.stats.to_json(), step=self.step)
        elif k == "_bad":
            self.stats.bad_inputs += 1
        # anything else (hb echoes, unknown kinds from newer peers) is ignored

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

    def _send(self, dst: str, msg: Message, role: str) -> None:
        r = self.ep.send(dst, msg)
        self.stats.bytes[role] += r.nbytes
        self.stats.messages[role] += 1
        self.stats.time["transfer"] += r.link_s

    def _event(self, key, direction: int, started: float) -> None:
        """Tell the orchestrator how long this pass held the worker (decode, compute and
        encode): the service time its routing policy and the twin calibration read."""
        self.send_orch("ev", key=key, dir=direction, dur=time.monotonic() - started)

    def _forward(self, msg: Message) -> None:
        h, key = msg.head, msg.head["key"]
        path, s = h["path"], self.stage_index
        if not isinstance(path, list) or len(path) != self.cfg.stages or path[s] != self.name:
            raise WireError(f"forward message for {key} has a path that does not name me at {s}")
        if len(msg.parts) != (1 if s == 0 else 2):
            raise WireError(f"forward message for {key} has {len(msg.parts)} parts")
        started = time.monotonic()
        tokens = unpack_tokens(msg.parts[0], self.vocab)
        if tokens.shape != (self.cfg.microbatch, self.cfg.seq_len):
            raise WireError(f"token block of shape {tuple(tokens.shape)}")
        x = None
        if s > 0:
            x = self._decode(msg.parts[1], (self.cfg.microbatch, self.cfg.seq_len, self.width))
        evaluating = bool(h.get("eval"))
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
            self.send_orch("loss", key=key, loss=loss.item(), eval=evaluating)
            if evaluating:
                return
            self._keep_grads(tuple(key))
            if s == 0:
                self._event(key, 0, started)
                self.send_orch("done", key=key)
                return
            grad = self._encode(x.grad, Role.GRADIENT)
            self._event(key, 0, started)
            self._send(path[s - 1], Message("bwd", {"key": key, "path": path}, [grad]), "gradient")
            return
        if not evaluating:
            self.cache[tuple(key)] = (x, out)
        blob = self._encode(out, Role.ACTIVATION)
        if not evaluating:
            self._event(key, 0, started)
        head = {"key": key, "path": path, "eval": evaluating}
        self._send(path[s + 1], Message("fwd", head, [msg.parts[0], blob]), "activation")

    def _backward(self, msg: Message) -> None:
        key = tuple(msg.head["key"])
        if len(msg.parts) != 1:
            raise WireError(f"backward message for {list(key)} has {len(msg.parts)} parts")
        entry = self.cache.pop(key, None)
        if entry is None:
            return  # dropped or already replayed elsewhere
        x, out = entry
        started = time.monotonic()
        grad = self._decode(msg.parts[0], tuple(out.shape))
        c0 = time.monotonic()
        out.backward(grad)
        self.stats.time["compute"] += time.monotonic() - c0
        self._keep_grads(key)
        if self.stage_index == 0:
            self._event(list(key), 1, started)
            self.send_orch("done", key=list(key))
            return
        blob = self._encode(x.grad, Role.GRADIENT)
        self._event(list(key), 1, started)
        path = msg.head["path"]
        self._send(
            path[self.stage_index - 1],
            Message("bwd", {"key": list(key), "path": path}, [blob]),
            "gradient",
        )

    def _keep_grads(self, key: Key) -> None:
        self.pending[key] = [
            p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
            for p in self.params
        ]
        for p in self.params:
            p.grad = None

    # ------------------------------------------------------------------ steps and merges
    def _apply_step(self, h: dict) -> None:
        step = h["step"]
        if not isinstance(step, int):
            raise ValueError(f"step message without a step number: {h!r}")
        if step > self.step:  # still busy with an earlier step (a merge): apply it after
            self.future_steps[step] = h
            return
        if step < self.step:
            return  # a duplicate or a step this replica joined after
        self.step_started = time.monotonic()
        keys = sorted(tuple(k) for k in h.get("commit", []))
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
        self.pending = {k: v for k, v in self.pending.items() if k[0] > step}
        self.cache = {k: v for k, v in self.cache.items() if k[0] > step}
        self.send_orch(
            "stepped", step=step, applied=len(have), missing=missing, stats=self.stats.to_json()
        )
        self.state_to = list(h.get("send_state", []))
        merge = h.get("merge")
        if merge:
            self._start_merge(step, [p for p in merge["peers"] if p != self.name])
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
        h = self.future_steps.pop(self.step, None)
        if h is not None:
            self._apply_step(h)

    def _start_merge(self, step: int, peers: list[str]) -> None:
        delta = self.outer.pseudo_gradient()
        blob = self._encode(delta, Role.WEIGHT_DELTA) if peers else None
        mine = decode_tensor(blob) if blob is not None else delta
        self.deltas[step][self.name] = mine
        for p in peers:
            self._send(p, Message("delta", {"round": step}, [blob]), "weight-delta")
        self.merge_wait = {"step": step, "peers": set(peers), "t0": time.monotonic()}

    def _receive_delta(self, sender: str, msg: Message) -> None:
        rnd = msg.head.get("round")
        if (
            not isinstance(rnd, int)
            or not self.step - 1 <= rnd <= self.step + 1
            or len(msg.parts) != 1
        ):
            self.stats.bad_inputs += 1
            return
        try:
            self.deltas[rnd][sender] = self._decode(msg.parts[0], (self.outer.numel,))
        except WireError:
            self.stats.bad_inputs += 1

    def _try_finish_merge(self) -> None:
        w = self.merge_wait
        got = self.deltas.get(w["step"], {})
        if not w["peers"] <= set(got):
            return
        names = sorted({self.name} | (w["peers"] & set(got)))
        total = got[names[0]].clone()
        for n in names[1:]:
            total.add_(got[n])
        self.outer.step(total / len(names))
        self.send_orch("merged", step=w["step"], replicas=len(names))
        self.deltas = defaultdict(dict, {r: d for r, d in self.deltas.items() if r > w["step"]})
        self.merge_wait = None
        self._after_step(w["step"])

    # ------------------------------------------------------------------ catch-up
    def _state_tensors(self) -> list[torch.Tensor]:
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
        parts = [self._encode(t, Role.UNSPECIFIED) for t in self._state_tensors()]
        head = {"step": self.step + 1, "adam_step": steps[0] if steps else 0.0}
        self._send(dst, Message("state", head, parts), "weights")

    def _wait_state(self) -> None:
        """Before serving, take a live replica's weights and optimizer state."""
        deadline = time.monotonic() + 300
        while not self.caught_up:
            if time.monotonic() > deadline:
                raise SystemExit(f"{self.name}: no weights arrived from a live replica in 300 s")
            got = self.ep.recv(timeout=0.1)
            if got is not None:
                self._dispatch(*got)

    def _load_state(self, sender: str, msg: Message) -> None:
        """Weights, DiLoCo anchor and momentum, Adam moments from a replica of this stage;
        then tell the orchestrator the step they belong to (it asks again if that step has
        passed meanwhile)."""
        n = sum(p.numel() for p in self.params)
        step, adam_step = msg.head.get("step"), msg.head.get("adam_step", 0.0)
        if len(msg.parts) != 5 or type(step) is not int or not isinstance(adam_step, int | float):
            raise WireError(f"state message from {sender} is malformed")
        tensors = [decode_tensor(b, (n,)) for b in msg.parts]  # all decode before any is used
        with torch.no_grad():
            for p, v in zip(self.params, unflat(tensors[0], self.params), strict=True):
                p.copy_(v)
        self.outer.load(
            {"anchor": unflat(tensors[1], self.params), "momentum": unflat(tensors[2], self.params)}
        )
        if adam_step:
            moments = zip(
                self.params, unflat(tensors[3], self.params), unflat(tensors[4], self.params),
                strict=True,
            )  # fmt: skip
            for p, a, b in moments:
                self.opt.state[p] = {
                    "step": torch.tensor(adam_step),
                    "exp_avg": a.clone(),
                    "exp_avg_sq": b.clone(),
                }
        self.step = step
        self.pending.clear()
        self.cache.clear()
        self.caught_up = True
        self.send_orch("ready", step=self.step)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="swarmpress-swarm-worker", description=StageWorker.__doc__)
    ap.add_argument("--orch", required=True, help="orchestrator address, tcp://HOST:PORT")
    ap.add_argument("--stage", type=int, required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--host", default="127.0.0.1", help="address this worker listens on")
    ap.add_argument(
        "--timeout", type=float, default=60.0,
        help="seconds to wait for the orchestrator (at start, and between its heartbeats)",
    )  # fmt: skip
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    sys.setswitchinterval(0.0005)  # hand the GIL to the I/O thread quickly (message latency)
    try:
        check_address(a.orch)
        w = StageWorker(a.name, a.stage, a.orch, a.host, a.timeout)
    except (OSError, ValueError) as exc:
        print(f"{a.name}: {exc}", file=sys.stderr)
        return 2
    try:
        w.start()
        w.run()
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return 2
    except Exception:
        w.send_orch("crash", reason=traceback.format_exc(limit=3))
        w.ep.flush(1.0)
        raise
    finally:
        w.ep.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
