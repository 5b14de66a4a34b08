"""Rewrite the README's headline block from a `swarmpress bench --json` file.

Usage: python benchmarks/headline.py docs/results/embedded/bench.json README.md
The block between `<!-- headline:start -->` and `<!-- headline:end -->` is replaced by a
compact bf16 table per real model of the corpus (SmolLM2 first: the Llama-architecture model
a pipeline actually ships; then MiniLM), so the README always quotes a committed report.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

START, END = "<!-- headline:start -->", "<!-- headline:end -->"


def _fmt(v: float | str | None, spec: str) -> str:
    if v is None or isinstance(v, str):
        return "-" if v is None else v
    return format(v, spec)


MODELS = ("SmolLM2-135M-Instruct", "all-MiniLM-L6-v2")


def headline(bench: dict, report_dir: str) -> str:
    """Markdown: per real model, one row per codec/anchor, activation and gradient side by
    side."""
    meta = bench["meta"]
    out = [
        f"bf16 tensors of the embedded corpus, similarity target "
        f"{meta.get('target_similarity', 0.99)}; from "
        f"[`{report_dir}/report.md`]({report_dir}/report.md) "
        f"(command and machine there). Ratio = compressed / original, lower is better; "
        "MB/s = compress / decompress on one core, activations; break-even = the link speed "
        "below which the codec makes a transfer faster (activations).",
    ]
    models = [m for m in MODELS if any(a.get("model") == m for a in bench["aggregates"])]
    for model in models or [None]:
        out += ["", f"**{model or 'model family'}**", "", *_table(bench, model)]
    return "\n".join(out)


def _bandwidth(bps: float | None) -> str:
    """A break-even bandwidth for the table: MB/s, "never" (no saving) or "-" (unknown)."""
    if not isinstance(bps, (int, float)) or bps != bps:
        return "-"
    if bps <= 0:
        return "never"
    return "any" if bps == float("inf") else f"{bps / 1e6:.0f} MB/s"


def _mine(rec: dict, model: str | None) -> bool:
    if rec["dtype"] != "bfloat16" or rec["family"] != "model":
        return False
    return model is None or rec.get("model") == model


def _table(bench: dict, model: str | None) -> list[str]:
    rows: dict[str, dict] = {}
    for a in bench["aggregates"]:
        if _mine(a, model):
            r = rows.setdefault(a["codec"], {"kind": a["kind"], "lossless": a["lossless"]})
            r[a["role"]] = a
    bounds = {b["role"]: b for b in bench["bound_aggregates"] if _mine(b, model)}
    order = sorted(rows, key=lambda k: (not rows[k]["lossless"], rows[k]["kind"] != "codec", k))
    out = [
        "| codec | kind | ratio activations | ratio gradients | min similarity | MB/s "
        "| break-even | Apex score (act) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in order:
        r = rows[name]
        act, grad = r.get("activation", {}), r.get("gradient", {})
        kind = ("lossless" if r["lossless"] else "lossy") + f" {r['kind']}"
        sims = [x["min_similarity"] for x in (act, grad) if x]
        score = act.get("mean_lossless_score") if r["lossless"] else act.get("mean_lossy_score")
        be = act.get("break_even_bps")
        out.append(
            f"| {name} | {kind} | {_fmt(act.get('mean_ratio'), '.3f')} | "
            f"{_fmt(grad.get('mean_ratio'), '.3f')} | {_fmt(min(sims) if sims else None, '.4f')} | "
            f"{_fmt(act.get('compress_mbps'), '.0f')} / "
            f"{_fmt(act.get('decompress_mbps'), '.0f')} | "
            f"{_bandwidth(be)} | "
            f"{_fmt(score, '.3f')} |"
        )
    for key, label in (
        ("entropy_ratio", "limit: field entropy (lossless)"),
        ("rd_ratio", "limit: Gaussian RD after KLT @ target (lossy)"),
    ):
        out.append(
            f"| {label} | bound | {_fmt(bounds.get('activation', {}).get(key), '.3f')} | "
            f"{_fmt(bounds.get('gradient', {}).get(key), '.3f')} | | | | |"
        )
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    bench_path, readme_path = Path(argv[1]), Path(argv[2])
    bench = json.loads(bench_path.read_text())
    text = readme_path.read_text()
    if START not in text or END not in text:
        print(f"{readme_path} has no {START} ... {END} block", file=sys.stderr)
        return 2
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    block = headline(bench, str(bench_path.parent))
    readme_path.write_text(f"{head}{START}\n{block}\n{END}{tail}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
