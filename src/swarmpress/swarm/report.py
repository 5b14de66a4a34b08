"""A swarm run's measurements as one JSON object, and its plots (loss curve, time split).

seconds_per_step leaves out the first step (start-up, first-use compilation) unless it is
the only one; bytes_on_wire is what the workers handed to their links, per role, frames
and message headers included.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROLES = ("activation", "gradient", "weight-delta", "weights")
TIMES = ("compute", "encode", "decode", "step", "wait", "transfer")
MAX_REASONS = 50  # fault reasons kept (the first ones)


@dataclass(frozen=True)
class StepInfo:
    """One optimizer step as the orchestrator saw it (what on_step receives as JSON)."""

    step: int
    seconds: float
    loss: float | None  # mean training loss of the committed micro-batches
    replays: int  # attempts beyond the first, summed over the micro-batches
    merge: bool  # the step ended in a DiLoCo merge
    live_workers: int

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "seconds": self.seconds,
            "loss": self.loss,
            "replays": self.replays,
            "merge": self.merge,
            "live_workers": self.live_workers,
        }


@dataclass
class FaultLog:
    """What went wrong during a run, counted as it happens."""

    killed: int = 0  # SIGKILLed by the fault drill
    dead: int = 0  # declared dead (exited, no heartbeat, stalled, crashed, killed)
    stalled: int = 0  # work queued but no progress
    replayed: int = 0  # sample attempts sent again
    failed_inputs: int = 0  # samples a worker could not process
    timeouts: int = 0  # samples not committed in time
    replacements: int = 0  # workers spawned for dead ones
    reasons: list[str] = field(default_factory=list)  # the first MAX_REASONS, in order

    def reason(self, text: str) -> None:
        if len(self.reasons) < MAX_REASONS:
            self.reasons.append(text)

    def to_json(self) -> dict[str, Any]:
        return {
            "killed": self.killed,
            "dead": self.dead,
            "stalled": self.stalled,
            "replayed": self.replayed,
            "failed_inputs": self.failed_inputs,
            "timeouts": self.timeouts,
            "replacements": self.replacements,
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True)
class StageService:
    """Seconds a pass holds a worker of one stage (decode + compute + encode)."""

    stage: int
    forward: float | None
    backward: float | None
    forward_median: float | None
    backward_median: float | None
    passes: int

    def to_json(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "forward": self.forward,
            "backward": self.backward,
            "forward_median": self.forward_median,
            "backward_median": self.backward_median,
            "passes": self.passes,
        }


@dataclass(frozen=True)
class WorkerReport:
    name: str
    stage: int
    alive: bool
    ready: bool
    caught_up_from: str | None
    samples_applied: int
    codecs: dict[str, str]  # role -> codec spec in use (after `auto`)
    bad_inputs: int

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "stage": self.stage,
            "alive": self.alive,
            "ready": self.ready,
            "caught_up_from": self.caught_up_from,
            "samples_applied": self.samples_applied,
            "codecs": dict(self.codecs),
            "bad_inputs": self.bad_inputs,
        }


@dataclass(frozen=True)
class RunResult:
    """A swarm run's measurements; to_json() is what `swarm train --json` prints."""

    codec: dict[str, str]  # role -> codec spec as configured
    link: dict[str, Any]
    steps: int
    final_loss: float | None  # mean held-out loss after the last step
    train_loss: float | None
    seconds_per_step: float | None
    median_seconds_per_step: float | None
    train_seconds: float
    bytes_on_wire: dict[str, int]  # per role, and "total"
    raw_bytes: dict[str, int]  # the same tensors at the wire dtype
    wire_ratio: dict[str, float]
    service_s: list[StageService]
    service_jitter: float
    step_overhead_s: float
    time_split: dict[str, float]
    loss_curve: list[float | None]
    step_seconds: list[float]
    faults: dict[str, Any]  # FaultLog.to_json() plus exactly_once and what was unreadable
    workers: list[WorkerReport]
    data: dict[str, Any]
    config: dict[str, Any]
    label: str | None = None  # the run's name in a comparison
    codec_spec: str | None = None  # the codec a comparison row ran (shorthands resolved)

    @property
    def exactly_once(self) -> bool:
        return bool(self.faults["exactly_once"])

    def to_json(self) -> dict[str, Any]:
        out = {
            "codec": dict(self.codec),
            "link": dict(self.link),
            "steps": self.steps,
            "final_loss": self.final_loss,
            "train_loss": self.train_loss,
            "seconds_per_step": self.seconds_per_step,
            "median_seconds_per_step": self.median_seconds_per_step,
            "train_seconds": self.train_seconds,
            "bytes_on_wire": dict(self.bytes_on_wire),
            "raw_bytes": dict(self.raw_bytes),
            "wire_ratio": dict(self.wire_ratio),
            "service_s": [s.to_json() for s in self.service_s],
            "service_jitter": self.service_jitter,
            "step_overhead_s": self.step_overhead_s,
            "time_split": dict(self.time_split),
            "loss_curve": list(self.loss_curve),
            "step_seconds": list(self.step_seconds),
            "faults": dict(self.faults),
            "workers": [w.to_json() for w in self.workers],
            "data": dict(self.data),
            "config": dict(self.config),
        }
        if self.label is not None:
            out["label"] = self.label
        if self.codec_spec is not None:
            out["codec_spec"] = self.codec_spec
        return out


def summarize(orch: Any, final_loss: float | None, train_seconds: float) -> RunResult:
    """The run's result from an orchestrator that has finished."""
    cfg = orch.cfg
    bytes_by_role: dict[str, int] = defaultdict(int)
    raw_by_role: dict[str, int] = defaultdict(int)
    times: dict[str, float] = defaultdict(float)
    for slot in orch.slots.values():
        for role, n in slot.stats.bytes.items():
            bytes_by_role[role] += n
        for role, n in slot.stats.raw.items():
            raw_by_role[role] += n
        for name, t in slot.stats.time.items():
            times[name] += t
    secs = [s.seconds for s in orch.steps]
    timed = secs[1:] if len(secs) > 1 else secs
    losses = [s.loss for s in orch.steps]
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
    faults = orch.faults.to_json()
    faults["exactly_once"] = not lost and not missing_reports
    faults["unreadable_messages"] = list(orch.rejected)
    faults["miscounted_steps"] = lost
    return RunResult(
        codec={
            "activation": cfg.codec_activation,
            "gradient": cfg.codec_gradient,
            "weight-delta": cfg.codec_delta,
            "weights": cfg.codec_weights,
        },
        link=cfg.link_spec.to_json(),
        steps=len(orch.steps),
        final_loss=final_loss,
        train_loss=losses[-1] if losses else None,
        seconds_per_step=statistics.fmean(timed) if timed else None,
        median_seconds_per_step=statistics.median(timed) if timed else None,
        train_seconds=train_seconds,
        bytes_on_wire={role: bytes_by_role.get(role, 0) for role in ROLES}
        | {"total": sum(bytes_by_role.values())},
        raw_bytes={role: raw_by_role.get(role, 0) for role in ROLES}
        | {"total": sum(raw_by_role.values())},
        wire_ratio={
            role: bytes_by_role[role] / raw_by_role[role] for role in ROLES if raw_by_role.get(role)
        },
        service_s=_service(orch),
        service_jitter=_jitter(orch),
        step_overhead_s=times.get("step", 0.0)
        / max(1, len(orch.steps) * cfg.replicas * cfg.stages),
        time_split={name: times.get(name, 0.0) for name in TIMES},
        loss_curve=losses,
        step_seconds=secs,
        faults=faults,
        workers=[
            WorkerReport(
                name=s.name,
                stage=s.stage,
                alive=s.alive,
                ready=s.ready,
                caught_up_from=s.catch_up_from,
                samples_applied=s.stats.samples_applied,
                codecs=dict(s.stats.chosen),
                bad_inputs=s.stats.bad_inputs,
            )
            for s in orch.slots.values()
        ],
        data={
            "text": orch.data.label,
            "tokens": int(orch.data.ids.size),
            "vocab": orch.data.vocab,
        },
        config=cfg.model_dump(),
    )


def _service(orch: Any) -> list[StageService]:
    """Mean (and median) seconds a pass holds a worker (decode + compute + encode), per stage."""
    out = []
    for stage in range(orch.cfg.stages):
        fwd = orch.service.get((stage, 0), [])
        bwd = orch.service.get((stage, 1), [])
        out.append(StageService(
            stage=stage,
            forward=statistics.fmean(fwd) if fwd else None,
            backward=statistics.fmean(bwd) if bwd else None,
            forward_median=statistics.median(fwd) if fwd else None,
            backward_median=statistics.median(bwd) if bwd else None,
            passes=len(fwd) + len(bwd),
        ))  # fmt: skip
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


def elapsed(r: dict) -> list[float]:
    """Training seconds at the end of each step (the sum of the step times so far)."""
    out, t = [], 0.0
    for s in r["step_seconds"]:
        t += s
        out.append(t)
    return out


def loss_vs_time(ax: Any, results: list[dict], labels: list[str] | None = None) -> None:
    """Training loss against wall-clock training seconds, one line per run, and each run's
    held-out (eval) loss as a labelled marker where its training ended."""
    for i, r in enumerate(results):
        name = labels[i] if labels else _label(r)
        pts = [(t, v) for t, v in zip(elapsed(r), r["loss_curve"], strict=False) if v is not None]
        (line,) = ax.plot([t for t, _ in pts], [v for _, v in pts], label=f"{name}: train loss")
        if r.get("final_loss") is not None and pts:
            end = pts[-1][0]
            ax.plot([end], [r["final_loss"]], "D", color=line.get_color(),
                    label=f"{name}: eval loss {r['final_loss']:.3f} at {end:.0f} s")  # fmt: skip
            ax.annotate(f"eval {r['final_loss']:.3f}", (end, r["final_loss"]), xytext=(4, 6),
                        textcoords="offset points", fontsize=8, color=line.get_color())  # fmt: skip
    ax.set_xlim(left=0)
    ax.set_xlabel("wall-clock training time (s)")
    ax.set_ylabel("loss")
    ax.legend(fontsize=8)


def plot(results: list[RunResult] | list[dict], out: Path) -> list[Path]:
    """loss.png (loss against wall-clock seconds with the eval loss marked, then loss per
    step; one line per run) and time.png (time split per run), from results or their JSON
    form."""
    results = [r.to_json() if isinstance(r, RunResult) else r for r in results]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    fig, (ax_t, ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    loss_vs_time(ax_t, results)
    ax_t.set_title(f"loss against time, link {results[0]['link']['spec']}")
    for r in results:
        ax.plot(range(len(r["loss_curve"])), r["loss_curve"], label=_label(r))
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title("loss per step")
    ax.legend(fontsize=8)
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
