"""What an orchestrator writes to its state store at every step, and how a successor reads
it back: the run's config and address, the last step decided (the step messages as sent, so
a successor can send them again: workers ignore a step they applied), membership (name,
stage, address, pid, readiness), what every worker applied per step, the faults, the
steps' records, merge steps and the routing policy's own state.

Why a step is enough: a step's decision is written before any worker hears it, and the
samples of the step under way are routed again by the successor under a new epoch's
attempt numbers, so work of the lost orchestrator is never committed (workers apply only
committed attempts) and none is applied twice. The run folder holds `run.json` (the run
id and the store's URL, mode 0600) and the orchestrator's key file.
"""

from __future__ import annotations

import json
import os
import random
import socket
import uuid
from pathlib import Path
from typing import Any

from swarmpress.errors import AuthError
from swarmpress.swarm.auth import write_private
from swarmpress.swarm.framing import check_address, check_name
from swarmpress.swarm.protocol import Step, WorkerStats
from swarmpress.swarm.report import FaultLog, StepInfo
from swarmpress.swarm.state import StateError

FORMAT = 1  # the state's layout; a successor refuses another
RUN_FILE = "run.json"
ATTEMPT_SPAN = 1000  # attempt numbers per epoch: epoch e routes attempts from (e-1)*SPAN
SERVICE_KEPT = 2000  # service-time samples kept per (stage, direction) in the state


def new_run_id() -> str:
    return uuid.uuid4().hex


def here() -> str:
    """This process's host, boot and PID namespace: where a pid means the same process."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        pidns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return f"{socket.gethostname()}/?"
    return f"{socket.gethostname()}/{boot}/{pidns}"


def owner_name() -> str:
    """Who holds a lease: where (host, boot, PID namespace) and process id, so that a
    successor in the same place can see that this process is gone and take over without
    waiting for the lease to lapse."""
    return f"{here()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def owner_gone(owner: str) -> bool:
    """Whether the lease holder is a process of this host, boot and PID namespace that no
    longer exists (anywhere else, a pid says nothing: the lease must lapse)."""
    parts = owner.rsplit(":", 2)
    if len(parts) != 3:
        return False
    where, pid_text, _ = parts
    if where != here() or "?" in where or not pid_text.isdigit():
        return False
    return int(pid_text) != os.getpid() and pid_gone(int(pid_text))


def pid_gone(pid: int) -> bool:
    """Whether the process `pid` of this PID namespace has exited (or is a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):
        return False
    return _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def write_run_file(run_dir: Path, run_id: str, url: str, address: str) -> Path:
    """run.json: what `--resume DIR` needs to find the run (mode 0600 whatever was there:
    the URL may hold a password; never written through a link)."""
    body = {"run_id": run_id, "state": url, "address": address, "format": FORMAT}
    return write_private(run_dir / RUN_FILE, json.dumps(body))


def read_run_file(run_dir: Path) -> dict[str, Any]:
    """run.json's fields; StateError naming the problem."""
    path = Path(run_dir) / RUN_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StateError(f"{run_dir} is not a swarm run folder (no {RUN_FILE})") from None
    except (OSError, ValueError) as exc:
        raise StateError(f"{path}: unreadable ({exc})") from None
    ok = isinstance(raw, dict) and all(isinstance(raw.get(k), str) for k in ("run_id", "state"))
    if not ok:
        raise StateError(f"{path}: not a swarm run file (needs run_id and state)")
    if raw.get("format") != FORMAT:
        raise StateError(f"{path}: format {raw.get('format')!r}; this version reads {FORMAT}")
    return raw


def snapshot(orch: Any) -> dict[str, Any]:
    """The orchestrator's durable state as JSON-ready data."""
    return {
        "format": FORMAT,
        "config": orch.cfg.model_dump(),
        "address": orch.address,
        "spawn": orch.spawn,
        "keys_dir": orch.keys_dir,
        "insecure": orch.insecure,
        "next_step": orch.next_step,
        "decision": orch.decision,
        "finished": orch.finished,
        "stopped": orch.stopped,
        "slots": [_slot(s) for s in orch.slots.values()],
        "ring": _ring(orch),
        "gen": orch.gen,
        "kills": orch.kills,
        "applied": [[step, name, n] for (step, name), n in sorted(orch.applied_by.items())],
        "faults": orch.faults.to_json(),
        "steps": [s.to_json() for s in orch.steps],
        "merged_at": sorted(orch.merged_at),
        "rejected": list(orch.rejected),
        "train_seconds": orch.train_seconds(),
        "takeovers": list(orch.takeovers),
        "service": {f"{k[0]}:{k[1]}": v[-SERVICE_KEPT:] for k, v in orch.service.items()},
        "router": _router_state(orch.router),
    }


def _slot(s: Any) -> dict[str, Any]:
    return {"name": s.name, "stage": s.stage, "id": s.id, "address": s.address, "pid": s.pid,
            "alive": s.alive, "ready": s.ready, "said_hello": s.said_hello,
            "catch_up_from": s.catch_up_from, "stepped": s.stepped,
            "stats": s.stats.to_json()}  # fmt: skip


def _ring(orch: Any) -> dict[str, str]:
    if orch.ring is None:
        return {}
    return {n: k.decode() for n in [*orch.slots, "orch"] if (k := orch.ring.public(n))}


def _int(v: Any) -> int:
    if type(v) is not int:
        raise TypeError(f"{v!r} is not an integer")
    return v


def _router_state(router: Any) -> dict[str, Any]:
    """The policy's random state and its plain counters (round-robin turns and the like);
    the pending router's decaying load estimates are measurements of the lost process's
    clock and start empty again (they fade within a round trip anyway)."""
    out: dict[str, Any] = {}
    rng = getattr(router, "rng", None)
    if isinstance(rng, random.Random):
        version, internal, gauss = rng.getstate()
        out["rng"] = [version, list(internal), gauss]
    turn = getattr(router, "turn", None)
    if isinstance(turn, dict):
        out["turn"] = [[int(k), int(v)] for k, v in turn.items()]
    return out


def admit_keys(ring: Any, state: dict[str, Any]) -> None:
    """Admit the workers' public keys a snapshot holds into a successor's key ring: before
    it listens, since a worker refused in one handshake is never dialled again by libzmq
    (transport.py re-dials, a second later); StateError for a key that is not one."""
    saved = state.get("ring")
    if not isinstance(saved, dict):
        raise StateError("the run's saved key ring does not read: not a map of names to keys")
    try:
        for name, key in saved.items():
            if not isinstance(name, str) or not isinstance(key, str):
                raise ValueError(f"entry {name!r}: names and keys are text")
            if name != "orch":
                ring.add(check_name(name), key.encode())
    except (AuthError, ValueError) as exc:
        raise StateError(f"the run's saved key ring does not read: {exc}") from None


def restore(orch: Any, state: dict[str, Any], slot_type: type) -> None:
    """Put a snapshot back into a freshly made orchestrator (same config); StateError if
    the snapshot does not fit."""
    try:
        _restore(orch, state, slot_type)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise StateError(f"the run's saved state does not fit this version: {exc!r}") from None


def _restore(orch: Any, state: dict[str, Any], slot_type: type) -> None:
    if state.get("format") != FORMAT:
        raise ValueError(f"state format {state.get('format')!r}, this version reads {FORMAT}")
    orch.next_step = int(state["next_step"])
    orch.decision = state["decision"]
    if orch.decision is not None:
        for head in orch.decision["messages"].values():
            Step.parse(head)  # every saved step message still reads
    orch.finished = bool(state["finished"])
    for raw in state["slots"]:
        slot = slot_type(raw["name"], _int(raw["stage"]), _int(raw["id"]))
        slot.address = None if raw["address"] is None else check_address(raw["address"])
        slot.pid = None if raw["pid"] is None else _int(raw["pid"])
        if slot.pid is not None and not 0 < slot.pid < 1 << 22:
            raise ValueError(f"slot {slot.name!r}: pid {slot.pid} out of range")
        slot.alive, slot.ready, slot.said_hello = raw["alive"], raw["ready"], raw["said_hello"]
        slot.catch_up_from, slot.stepped = raw["catch_up_from"], int(raw["stepped"])
        slot.stats = WorkerStats.parse("state", raw["stats"])
        orch.slots[slot.name] = slot
    if orch.ring is not None:
        admit_keys(orch.ring, state)
    orch.gen, orch.kills = int(state["gen"]), int(state["kills"])
    orch.applied_by = {(int(s), str(n)): int(c) for s, n, c in state["applied"]}
    orch.faults = FaultLog(**state["faults"])
    orch.steps = [StepInfo(**s) for s in state["steps"]]
    orch.merged_at = set(state["merged_at"])
    orch.rejected = list(state["rejected"])
    orch.train_before = float(state["train_seconds"])
    orch.takeovers = list(state["takeovers"])
    for key, vals in state["service"].items():
        stage, _, direction = key.partition(":")
        orch.service[(int(stage), int(direction))] = [float(v) for v in vals]
    router = state["router"]
    if "rng" in router and isinstance(getattr(orch.router, "rng", None), random.Random):
        version, internal, gauss = router["rng"]
        orch.router.rng.setstate((version, tuple(internal), gauss))
    if "turn" in router and isinstance(getattr(orch.router, "turn", None), dict):
        orch.router.turn = {int(k): int(v) for k, v in router["turn"]}


__all__ = [
    "ATTEMPT_SPAN", "FORMAT", "RUN_FILE", "here", "new_run_id", "owner_gone", "owner_name",
    "pid_gone",
    "read_run_file", "restore", "snapshot", "write_run_file",
]  # fmt: skip
