"""Score one submission on one round's tensors with the Apex formulas, each call sandboxed.

Per tensor: compress in one fresh sandbox, decompress the result in another, then check
and score (lossless: bit-exact, clip((1 - ratio)(1 - t / 1.012)); lossy: similarity above
the competition's threshold, clip(1 - ratio)). A failed call, wrong output or timeout
scores that tensor 0 and records why. The round score is the mean.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from swarmpress.arena.config import Competition
from swarmpress.arena.pool import Pool, PoolEntry
from swarmpress.arena.sandbox import run_call
from swarmpress.codecs import metrics as M


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
    """Routing track: the twin's seeded tasks against the submission's server, in the
    sandbox; the round score is the median task score (a failed task scores 0)."""
    import json

    from swarmpress.twin.scenario import ScenarioError, load_scenario

    try:
        sc = load_scenario(comp.scenario, comp.scenario_overrides)
    except ScenarioError as exc:
        raise ValueError(f"competition {comp.name}: {exc}") from None
    task = json.dumps({"scenario": sc.model_dump(), "seeds": list(range(comp.seeds))}).encode()
    call = run_call(solution, "router", "route", task, comp.limits.to_limits(), slot, cpu)
    if not call.ok:
        r = [TensorResult(f"{sc.name}/seed{s}", False, 0.0, reason=f"router {call.reason}",
                          log=call.log) for s in range(comp.seeds)]  # fmt: skip
        return RoundResult(0.0, r)
    tasks = json.loads(call.output)
    results = [
        TensorResult(
            f"{sc.name}/seed{t['seed']}",
            bool(t["ok"]),
            float(t["score"]),
            seconds_compress=t.get("wall_seconds"),
            reason=t.get("reason", ""),
        )
        for t in tasks
    ]
    if results:
        results[0].log = call.log  # one sandbox ran every task: its log once
    return RoundResult(float(np.median([r.score for r in results])), results)


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
    results = []
    for i, entry in enumerate(sample):
        original = pool.read(entry)
        c = run_call(solution, form, "compress", original, limits, slot, cpu)
        d = None
        if c.ok:
            d = run_call(solution, form, "decompress", c.output, limits, slot, cpu)
        r = score_tensor(comp, entry.name, original, c, d)
        r.log = (c.log + (d.log if d is not None else ""))[-limits.log_bytes :]
        results.append(r)
        if progress is not None:
            progress(i + 1, len(sample))
    score = float(np.mean([r.score for r in results])) if results else 0.0
    return RoundResult(score, results)
