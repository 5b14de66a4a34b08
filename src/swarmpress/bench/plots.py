"""The bench's two pictures, drawn with matplotlib's Agg canvas (no display, no pyplot state).

- `ratio_vs_similarity.png`: one panel per role, on that role's typical tensor: every codec
  and anchor as a point (lossless ones at similarity 1), the lossy methods swept over their
  quality settings as curves (blockq bits 2..8, SZ3/ZFP error bounds, apex-style-int8
  levels), the Gaussian RD bound as a dashed curve and the field-entropy bound as a star
  at similarity 1.
- `transfer_time.png`: end-to-end time to ship the typical tensor (codec time + latency +
  compressed bytes / bandwidth) against link speed from 1 MB/s to 10 GB/s with 50 ms
  latency, one line per codec and anchor plus "raw"; a dot marks each one's break-even
  bandwidth, below which it beats sending raw bytes.

The physical references (memcpy, zstd-1) are in the tables only.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from swarmpress.bench.results import BenchResult, Measurement
from swarmpress.codecs.core.metrics import transfer_time

LATENCY_S = 0.05
BANDWIDTH_RANGE = (1e6, 1e10)  # bytes per second


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def _colors(n: int) -> Iterator[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab20"]
    for i in range(n):
        yield cmap(i % 20)


def _style(m: Measurement | None, lossless: bool) -> dict[str, Any]:
    marker = "o" if lossless else "s"
    if m is not None and m.kind == "anchor":
        marker = "^" if lossless else "D"
    return {"marker": marker, "linestyle": "none", "markersize": 6}


def plot_ratio_vs_similarity(result: BenchResult, path: str | Path) -> Path | None:
    """Ratio vs similarity per role on the sweep tensors; None when there is nothing to draw."""
    sweep_tensors: dict[str, str] = dict(result.meta.get("sweep_tensors") or {})
    if not sweep_tensors:
        return None
    target = float(result.meta.get("target_similarity", 0.99))
    roles = list(sweep_tensors)
    labels = list(
        dict.fromkeys([m.codec for m in result.measurements] + [p.method for p in result.sweep])
    )
    color = dict(zip(labels, _colors(len(labels)), strict=True))
    fig = _figure(6.0 * len(roles), 5.0)
    axes = fig.subplots(1, len(roles), squeeze=False)[0]
    for ax, role in zip(axes, roles, strict=True):
        tensor = sweep_tensors[role]
        sims: list[float] = []
        for method in dict.fromkeys(p.method for p in result.sweep):
            pts = sorted(
                (p for p in result.sweep if p.method == method and p.tensor == tensor),
                key=lambda p: p.similarity,
            )
            pts = [p for p in pts if math.isfinite(p.similarity) and math.isfinite(p.ratio)]
            if not pts:
                continue
            bound = method == "gaussian-rd-bound"
            ax.plot(
                [p.similarity for p in pts],
                [max(p.ratio, 1e-4) for p in pts],
                linestyle="--" if bound else "-",
                marker="" if bound else ".",
                color="black" if bound else color[method],
                alpha=0.9 if bound else 0.6,
                label=f"{method} (sweep)" if not bound else "Gaussian RD bound (KLT)",
            )
            sims += [p.similarity for p in pts]
        for m in result.measurements:
            if m.tensor != tensor or not m.ok or not math.isfinite(m.similarity):
                continue
            if m.kind == "reference":  # memcpy/zstd-1 are in the tables, not the plots
                continue
            ax.plot(
                [m.similarity], [max(m.ratio, 1e-4)], color=color[m.codec],
                label=m.codec, **_style(m, m.lossless),
            )  # fmt: skip
            sims.append(m.similarity)
        ent = next((b.entropy for b in result.bounds if b.tensor == tensor), None)
        if ent is not None:
            ax.plot([1.0], [ent.ratio], marker="*", markersize=13, color="black",
                    linestyle="none", label="field-entropy bound")  # fmt: skip
        finite = [s for s in sims if math.isfinite(s)]
        lo = max(min(finite, default=target) - 0.005, 0.9)
        ax.set_xlim(min(lo, target - 0.005), 1.0015)
        ax.axvline(target, color="grey", linestyle=":", linewidth=1)
        ax.set_yscale("log")
        ax.set_xlabel("Apex similarity (higher is better)")
        ax.set_ylabel("ratio = compressed / original (lower is better)")
        ax.set_title(f"{role}: {tensor}", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6, loc="lower right", ncol=2)
    fig.suptitle("Ratio vs similarity (points beyond the left edge are off the chart)", fontsize=10)
    out = Path(path)
    fig.savefig(out)
    return out


def plot_transfer_time(
    result: BenchResult, path: str | Path, latency: float = LATENCY_S
) -> Path | None:
    """Transfer time of the typical tensor vs link speed; None when there is no typical tensor."""
    tensor = result.meta.get("typical_tensor")
    ms = [m for m in result.measurements if m.tensor == tensor and m.ok and m.kind != "reference"]
    if not tensor or not ms:
        return None
    size = ms[0].original_bytes
    bw = np.logspace(math.log10(BANDWIDTH_RANGE[0]), math.log10(BANDWIDTH_RANGE[1]), 200)
    fig = _figure(9.0, 5.5)
    ax = fig.subplots()
    ax.plot(bw / 1e6, transfer_time(size, bw, latency), color="black", linewidth=2, label="raw")
    for m, c in zip(ms, _colors(len(ms)), strict=True):
        secs = m.compress_s + m.decompress_s
        t = transfer_time(size, bw, latency, m.ratio, secs)
        ax.plot(bw / 1e6, t, color=c, linestyle="-" if m.lossless else "--", label=m.codec)
        b = m.break_even_bps
        if math.isfinite(b) and BANDWIDTH_RANGE[0] <= b <= BANDWIDTH_RANGE[1]:
            ax.plot([b / 1e6], [transfer_time(size, b, latency, m.ratio, secs)], "o", color=c)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("link bandwidth (MB/s)")
    ax.set_ylabel("end-to-end time (s): codec + latency + bytes / bandwidth")
    ax.set_title(
        f"{tensor} ({size / 1e6:.2f} MB), latency {latency * 1e3:.0f} ms; "
        "dots: break-even bandwidth",
        fontsize=9,
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    out = Path(path)
    fig.savefig(out)
    return out


def write_plots(result: BenchResult, directory: str | Path) -> tuple[dict[str, str], str | None]:
    """Draw every plot into directory: ({name: file name}, reason when plots were skipped)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        return {}, f"matplotlib is not importable ({exc})"
    directory = Path(directory)
    made: dict[str, str] = {}
    for name, fn in (
        ("ratio_vs_similarity", plot_ratio_vs_similarity),
        ("transfer_time", plot_transfer_time),
    ):
        out = fn(result, directory / f"{name}.png")
        if out is not None:
            made[name] = out.name
    return made, None
