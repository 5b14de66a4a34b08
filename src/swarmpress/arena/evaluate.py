"""Score one submission on one round's tensors with the Apex formulas, each call sandboxed.

Per tensor: compress in one fresh sandbox, decompress the result in another, then check
and score (lossless: bit-exact, clip((1 - ratio)(1 - t / 1.012)); lossy: similarity above
the competition's threshold, clip(1 - ratio)). A failed call, wrong output or timeout
scores that tensor 0 and records why. The round score is the mean.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from swarmpress.arena.config import Competition
from swarmpress.arena.pool import Pool, PoolEntry
from swarmpress.arena.sandbox import CallResult, Session, run_call
from swarmpress.codecs.core import metrics as M


@dataclass
class TensorResult:
    tensor: str
    ok: bool
    score: float
    ratio: float | None = None
    similarity: float | None = None
    seconds_compress: float | None = None
    seconds_decompress: float | None = None
    reason: str = ""
    log: str = ""


@dataclass
class RoundResult:
    score: float
    tensors: list[TensorResult] = field(default_factory=list)
    engine: str = ""  # the sandbox engine that ran the calls (gvisor or bwrap)


# An entry that cannot load or keeps running out of time is not run on the rest of the
# round (each try costs the worker up to startup_s + wall_s): those tensors score 0.
GIVE_UP_AFTER = 2
_STUCK = ("did not load", "failed to load", "crashed while loading", "timed out")


def bf16_to_f64(data: bytes) -> np.ndarray:
    u = np.frombuffer(data, dtype="<u2", count=len(data) // 2)
    return (u.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


def score_tensor(comp: Competition, name: str, original: bytes, c, d) -> TensorResult:
    """Judge one tensor from its compress result c and decompress result d."""
    r = TensorResult(name, False, 0.0, seconds_compress=c.seconds)
    if not c.ok:
        r.reason = f"compress {c.reason}"
        return r
    r.ratio = M.ratio(len(c.output), len(original))
    r.seconds_decompress = d.seconds if d is not None else None
    if d is None or not d.ok:
        r.reason = f"decompress {d.reason if d is not None else 'not run'}"
        return r
    if len(d.output) != len(original):
        r.reason = f"decompress gave {len(d.output)} bytes, expected {len(original)}"
        return r
    seconds = c.seconds + d.seconds
    if comp.track == "lossless":
        if d.output != original:
            r.reason = "decompressed bytes differ from the original"
            return r
        r.similarity = 1.0
        r.ok, r.score = True, M.lossless_score(r.ratio, seconds)
        return r
    with np.errstate(invalid="ignore", over="ignore"):
        sim = M.similarity(bf16_to_f64(original), bf16_to_f64(d.output))
    r.similarity = sim if math.isfinite(sim) else None
    if not sim > comp.similarity:
        r.reason = f"similarity {sim:.5f} is not above {comp.similarity}"
        return r
    r.ok, r.score = True, float(np.clip(1.0 - r.ratio, 0.0, 1.0))
    return r


def evaluate_routing(
    solution: str | Path, comp: Competition, slot: int = 0, cpu: int | None = None
) -> RoundResult:
    """Routing track: the twin's seeded tasks, run here, against the submission's server in
    a fresh sandbox per task (reached through the harness); the round score is the median
    task score (a failed task scores 0)."""
    from swarmpress.twin.scenario import ScenarioError, load_scenario

    try:
        sc = load_scenario(comp.scenario, comp.scenario_overrides)
    except ScenarioError as exc:
        raise ValueError(f"competition {comp.name}: {exc}") from None
    limits = comp.limits.to_limits()
    results, engine = [], ""
    for seed in range(comp.seeds):
        r = _routing_task(solution, comp, sc, seed, limits, slot, cpu)
        engine = r.pop("engine", engine)
        results.append(TensorResult(**r))
    return RoundResult(float(np.median([r.score for r in results])), results, engine)


def _routing_task(solution, comp: Competition, sc, seed: int, limits, slot, cpu) -> dict:
    from swarmpress.arena.relay import SandboxTransport
    from swarmpress.twin.policies import PolicyFailure
    from swarmpress.twin.remote import RemotePolicy
    from swarmpress.twin.sim import Simulation

    name = f"{sc.name}/seed{seed}"
    # Apex's task budget: 30 s plus 120 s per epoch of wall-clock time, within the limit.
    budget = min(limits.wall_s, 30.0 + 120.0 * sc.workload.epochs)
    with Session(solution, ["relay", "/sub/solution.py"], comp.env_name, limits, slot, cpu,
                 comp.sandbox) as s:  # fmt: skip
        why = s.wait_ready()
        if why:
            out = {"tensor": name, "ok": False, "score": 0.0, "reason": f"router {why}"}
        else:
            transport = SandboxTransport(s, time.monotonic() + budget)
            policy = RemotePolicy(transport, sc.rules.route_call_limit_s)
            try:
                res = Simulation(sc, seed, policy, policy).run().to_json()
            except PolicyFailure as exc:  # raised outside the engine's own handling
                res = {"ok": False, "score": 0.0, "reason": str(exc), "wall_seconds": None}
            out = {"tensor": name, "ok": bool(res["ok"]), "score": float(res["score"]),
                   "seconds_compress": res.get("wall_seconds"),
                   "reason": res.get("reason", "") or ""}  # fmt: skip
    out["log"] = s.log
    out["engine"] = s.details["engine"]
    return out


def evaluate(
    solution: str | Path,
    form: str,
    comp: Competition,
    pool: Pool,
    sample: list[PoolEntry],
    slot: int = 0,
    cpu: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> RoundResult:
    """Run the submission on every sampled tensor; never raises for a bad submission."""
    limits = comp.limits.to_limits()
    results, engine = [], ""

    def call(kind: str, data: bytes) -> CallResult:
        nonlocal engine
        r = run_call(solution, form, kind, data, limits, slot, cpu, comp.env_name, comp.sandbox)
        engine = r.details.get("engine", engine)
        return r

    stuck = 0  # tensors in a row whose compress did not load or ran out of time
    for i, entry in enumerate(sample):
        if stuck >= GIVE_UP_AFTER:
            r = TensorResult(entry.name, False, 0.0, reason=f"compress not run: the entry did "
                             f"not load or timed out on {stuck} tensors in a row")  # fmt: skip
            results.append(r)
            if progress is not None:
                progress(i + 1, len(sample))
            continue
        original = pool.read(entry)
        c = call("compress", original)
        stuck = stuck + 1 if not c.ok and c.reason.startswith(_STUCK) else 0
        d = call("decompress", c.output) if c.ok else None
        r = score_tensor(comp, entry.name, original, c, d)
        r.log = (c.log + (d.log if d is not None else ""))[-limits.log_bytes :]
        results.append(r)
        if progress is not None:
            progress(i + 1, len(sample))
    score = float(np.mean([r.score for r in results])) if results else 0.0
    return RoundResult(score, results, engine)
