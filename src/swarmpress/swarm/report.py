"""A swarm run's measurements as one JSON object, and its plots (loss curve, time split).

seconds_per_step leaves out the first step (start-up, first-use compilation) unless it is
the only one; bytes_on_wire is what the workers handed to their links, per role, frames
and message headers included.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

ROLES = ("activation", "gradient", "weight-delta", "weights")
TIMES = ("compute", "encode", "decode", "step", "wait", "transfer")


def summarize(orch: Any, final_loss: float | None, train_seconds: float) -> dict:
    """The run's result object (what `swarm train --json` prints)."""
    cfg = orch.cfg
    bytes_by_role: dict[str, int] = defaultdict(int)
    raw_by_role: dict[str, int] = defaultdict(int)
    times: dict[str, float] = defaultdict(float)
    for slot in orch.slots.values():
        for role, n in slot.stats.get("bytes", {}).items():
            bytes_by_role[role] += n
        for role, n in slot.stats.get("raw", {}).items():
            raw_by_role[role] += n
        for name, t in slot.stats.get("time", {}).items():
            times[name] += t
    secs = [s["seconds"] for s in orch.steps]
    timed = secs[1:] if len(secs) > 1 else secs
    losses = [s["loss"] for s in orch.steps]
    lost = {
        f"{step}/{stage}": n
        for (step, stage), n in sorted(orch.applied.items())
        if n != cfg.microbatches
    }
    missing_reports = sum(
        1
        for step in range(len(orch.steps))
        for stage in range(cfg.stages)
        if (step, stage) not in orch.applied
    )
    faults = dict(orch.faults)
    faults["exactly_once"] = not lost and not missing_reports
    faults["unreadable_messages"] = list(orch.rejected)
    faults["miscounted_steps"] = lost
    return {
        "codec": {
            "activation": cfg.codec_activation,
            "gradient": cfg.codec_gradient,
            "weight-delta": cfg.codec_delta,
            "weights": cfg.codec_weights,
        },
        "link": cfg.link_spec.to_json(),
        "steps": len(orch.steps),
        "final_loss": final_loss,
        "train_loss": losses[-1] if losses else None,
        "seconds_per_step": statistics.fmean(timed) if timed else None,
        "median_seconds_per_step": statistics.median(timed) if timed else None,
        "train_seconds": train_seconds,
        "bytes_on_wire": {role: bytes_by_role.get(role, 0) for role in ROLES}
        | {"total": sum(bytes_by_role.values())},
        "raw_bytes": {role: raw_by_role.get(role, 0) for role in ROLES}
        | {"total": sum(raw_by_role.values())},
        "wire_ratio": {
            role: bytes_by_role[role] / raw_by_role[role] for role in ROLES if raw_by_role.get(role)
        },
        "service_s": _service(orch),
        "service_jitter": _jitter(orch),
        "step_overhead_s": times.get("step", 0.0)
        / max(1, len(orch.steps) * cfg.replicas * cfg.stages),
        "time_split": {name: times.get(name, 0.0) for name in TIMES},
        "loss_curve": losses,
        "step_seconds": secs,
        "faults": faults,
        "workers": [
            {
                "name": s.name,
                "stage": s.stage,
                "alive": s.alive,
                "ready": s.ready,
                "caught_up_from": s.catch_up_from,
                "samples_applied": s.stats.get("samples_applied", 0),
                "codecs": s.stats.get("chosen", {}),
                "bad_inputs": s.stats.get("bad_inputs", 0),
            }
            for s in orch.slots.values()
        ],
        "data": {
            "text": orch.data.label,
            "tokens": int(orch.data.ids.size),
            "vocab": orch.data.vocab,
        },
        "config": cfg.model_dump(),
    }


def _service(orch: Any) -> list[dict]:
    """Mean (and median) seconds a pass holds a worker (decode + compute + encode), per stage."""
    out = []
    for stage in range(orch.cfg.stages):
        fwd = orch.service.get((stage, 0), [])
        bwd = orch.service.get((stage, 1), [])
        out.append({
            "stage": stage,
            "forward": statistics.fmean(fwd) if fwd else None,
            "backward": statistics.fmean(bwd) if bwd else None,
            "forward_median": statistics.median(fwd) if fwd else None,
            "backward_median": statistics.median(bwd) if bwd else None,
            "passes": len(fwd) + len(bwd),
        })  # fmt: skip
    return out


def _jitter(orch: Any) -> float:
    """Pass-to-pass variation of service times: the standard deviation of log seconds
    around each (stage, direction)'s own mean, pooled."""
    resid = []
    for durs in orch.service.values():
        logs = [math.log(d) for d in durs if d > 0]
        if len(logs) >= 2:
            mu = statistics.fmean(logs)
            resid += [v - mu for v in logs]
    return math.sqrt(statistics.fmean(r * r for r in resid)) if resid else 0.0


def plot(results: list[dict], out: Path) -> list[Path]:
    """loss.png (loss per step, one line per run) and time.png (time split per run)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in results:
        ax.plot(range(len(r["loss_curve"])), r["loss_curve"], label=_label(r))
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title(f"swarm training, link {r['link']['spec']}")
    ax.legend()
    fig.tight_layout()
    loss_png = out / "loss.png"
    fig.savefig(loss_png, dpi=120)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 4))
    left = [0.0] * len(results)
    names = [_label(r) for r in results]
    for part in TIMES:
        vals = [r["time_split"][part] for r in results]
        ax.barh(names, vals, left=left, label=part)
        left = [a + b for a, b in zip(left, vals, strict=True)]
    ax.set_xlabel("worker-seconds")
    ax.legend(fontsize=8)
    fig.tight_layout()
    time_png = out / "time.png"
    fig.savefig(time_png, dpi=120)
    plt.close(fig)
    return [loss_png, time_png]


def _label(r: dict) -> str:
    a, g = r["codec"]["activation"], r["codec"]["gradient"]
    return a if a == g else f"{a}/{g}"
