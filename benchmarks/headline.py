"""Rewrite the README's headline block from a `swarmpress bench --json` file.

Usage: python benchmarks/headline.py docs/results/embedded/bench.json README.md
The block between `<!-- headline:start -->` and `<!-- headline:end -->` is replaced by a
compact bf16 table (model family) so the README always quotes a committed report.
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


def headline(bench: dict, report_dir: str) -> str:
    """Markdown: one row per codec/anchor, activation and gradient ratios side by side."""
    rows: dict[str, dict] = {}
    for a in bench["aggregates"]:
        if a["dtype"] != "bfloat16" or a["family"] != "model":
            continue
        r = rows.setdefault(a["codec"], {"kind": a["kind"], "lossless": a["lossless"]})
        r[a["role"]] = a
    bounds = {
        b["role"]: b
        for b in bench["bound_aggregates"]
        if b["dtype"] == "bfloat16" and b["family"] == "model"
    }
    order = sorted(rows, key=lambda k: (not rows[k]["lossless"], rows[k]["kind"] != "codec", k))
    meta = bench["meta"]
    out = [
        f"bf16 MiniLM tensors of the embedded corpus, similarity target "
        f"{meta.get('target_similarity', 0.99)}; from "
        f"[`{report_dir}/report.md`]({report_dir}/report.md) "
        f"(command and machine there). Ratio = compressed / original, lower is better; "
        "MB/s = compress / decompress on one core, activations.",
        "",
        "| codec | kind | ratio activations | ratio gradients | min similarity | MB/s "
        "| Apex score (act) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in order:
        r = rows[name]
        act, grad = r.get("activation", {}), r.get("gradient", {})
        kind = ("lossless" if r["lossless"] else "lossy") + f" {r['kind']}"
        sims = [x["min_similarity"] for x in (act, grad) if x]
        score = act.get("mean_lossless_score") if r["lossless"] else act.get("mean_lossy_score")
        out.append(
            f"| {name} | {kind} | {_fmt(act.get('mean_ratio'), '.3f')} | "
            f"{_fmt(grad.get('mean_ratio'), '.3f')} | {_fmt(min(sims) if sims else None, '.4f')} | "
            f"{_fmt(act.get('compress_mbps'), '.0f')} / "
            f"{_fmt(act.get('decompress_mbps'), '.0f')} | "
            f"{_fmt(score, '.3f')} |"
        )
    for key, label in (
        ("entropy_ratio", "limit: field entropy (lossless)"),
        ("rd_ratio", "limit: Gaussian RD after KLT @ target (lossy)"),
    ):
        out.append(
            f"| {label} | bound | {_fmt(bounds.get('activation', {}).get(key), '.3f')} | "
            f"{_fmt(bounds.get('gradient', {}).get(key), '.3f')} | | | |"
        )
    return "\n".join(out)


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
