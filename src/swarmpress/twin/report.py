"""What a twin run leaves behind: the Apex-style simulation data file (activation, miner,
route and balance logs), time series, a timeline plot of activations across layers, and
the comparison plot of several runs."""

from __future__ import annotations

import json
from pathlib import Path

from swarmpress.twin.sim import RunResult


def simulation_data(res: RunResult) -> dict:
    """The Apex-style simulation data: result summary plus every log the run recorded."""
    return {
        "result": res.to_json(),
        "activation_logs": res.logs.get("activations", []),
        "miner_metrics": res.logs.get("miners", []),
        "route_logs": res.logs.get("routes", []),
        "balance_logs": res.logs.get("balance", []),
        "series": res.series,
    }


def write_outputs(res: RunResult, out: str | Path) -> list[Path]:
    """simulation.json, timeline.png and series.png into out; returns the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = out / "simulation.json"
    data.write_text(json.dumps(simulation_data(res)) + "\n")
    return [data, timeline_plot(res, out / "timeline.png"), series_plot(res, out / "series.png")]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def timeline_plot(res: RunResult, path: Path, max_activations: int = 60) -> Path:
    """Each activation's forward (blue) and backward (orange) passes, layer by layer."""
    plt = _plt()
    spans = [s for s in res.logs.get("spans", []) if s[5] == 0]
    acts = sorted({s[0] for s in spans})[:max_activations]
    keep = set(acts)
    fig, ax = plt.subplots(figsize=(11, 5))
    for act, layer, direction, start, end, _ in spans:
        if act in keep:
            y = layer + (0.15 if direction else -0.15)
            ax.plot([start, end], [y, y], color="#d9822b" if direction else "#1f6feb", lw=2)
    ax.set_xlabel("simulated seconds (epoch 0)")
    ax.set_ylabel("layer")
    ax.set_yticks(range(res.n_layers))
    ax.set_title(f"{res.scenario}: first {len(acts)} activations, {res.policy}, codec {res.codec} "
                 "(blue forward, orange backward)")  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def series_plot(res: RunResult, path: Path) -> Path:
    plt = _plt()
    s = res.series
    fig, ax = plt.subplots(figsize=(11, 4))
    for key, label in (("queued", "queued work"), ("cached", "cached activations"),
                       ("in_flight", "in flight")):  # fmt: skip
        ax.plot(s["t"], s[key], label=label, lw=1)
    ax.set_xlabel("simulated seconds")
    ax.legend()
    ax.set_title(f"{res.scenario}: queues and caches over time ({res.policy})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def compare_plot(rows: list[dict], path: str | Path) -> Path:
    """Median total epoch time per configuration, with the spread over seeds."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(rows)), 4))
    labels = [r["label"] for r in rows]
    med = [r["median_total_epoch_time"] for r in rows]
    lo = [r["median_total_epoch_time"] - r["min_total_epoch_time"] for r in rows]
    hi = [r["max_total_epoch_time"] - r["median_total_epoch_time"] for r in rows]
    ax.bar(labels, med, yerr=[lo, hi], color="#1f6feb", capsize=4)
    ax.set_ylabel("total epoch time, s (median, min-max over seeds)")
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
