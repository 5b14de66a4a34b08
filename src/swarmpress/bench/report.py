"""Turn a BenchResult into the headline table and a report directory.

`headline_rows` is the one table everybody reads (the CLI prints it, report.md embeds it):
per dtype x role x model group (bf16 groups first; within a dtype and role the real models
side by side in corpus order, e.g. all-MiniLM-L6-v2 then SmolLM2-135M-Instruct, then the
synthetic family labelled "(synthetic stress case)"), every codec and anchor with its mean
ratio, bits per value, minimum similarity, speeds, break-even bandwidth and Apex scores,
then the physical references (`ref: memcpy`, `ref: zstd-1`: speed and ratio of a plain
copy and of zstd level 1 on the same tensors, not codecs and not scored), followed by the
two limits for the same tensors. `model_rows` is the compact comparison (ratio and Apex
score per model, one row per codec). `write_report` writes `report.md`, `bench.json`
(every figure) and the PNG plots into one directory.
"""

from __future__ import annotations

import math
from pathlib import Path

from swarmpress.bench.plots import write_plots
from swarmpress.bench.results import (
    STRESS_FAMILY,
    BenchResult,
    group_key,
    group_label,
    model_order,
)

HEADLINE_COLUMNS = (
    "dtype",
    "role",
    "family",
    "model",
    "codec",
    "kind",
    "n",
    "ratio",
    "bits/val",
    "min sim",
    "comp MB/s",
    "dec MB/s",
    "break-even",
    "lossless score",
    "lossy score",
    "check",
)


def fmt_float(x: float, digits: int = 3) -> str:
    """Fixed-point with `digits` decimals; '-' for NaN, 'inf' for infinity."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.{digits}f}"


def fmt_speed(mbps: float) -> str:
    """MB/s with sensible precision."""
    if math.isnan(mbps):
        return "-"
    if math.isinf(mbps):
        return "inf"
    return f"{mbps:.0f}" if mbps >= 100 else f"{mbps:.1f}"


def fmt_bandwidth(bps: float) -> str:
    """A bandwidth in bytes/s as kB/s, MB/s or GB/s; 'never' when nothing is saved."""
    if math.isnan(bps):
        return "-"
    if math.isinf(bps):
        return "always"
    if bps <= 0:
        return "never"
    for unit, scale in (("GB/s", 1e9), ("MB/s", 1e6), ("kB/s", 1e3)):
        if bps >= scale:
            return f"{bps / scale:.3g} {unit}"
    return f"{bps:.3g} B/s"


def _models(result: BenchResult) -> list[str]:
    """The result's models in corpus order (tensors first, then anything else seen)."""
    return list(dict.fromkeys(model_order(result.tensors) + model_order(result.aggregates)))


def headline_rows(result: BenchResult) -> list[dict[str, str]]:
    """The headline table as rows of formatted strings keyed by HEADLINE_COLUMNS.

    "model" holds `group_label(family, model)`: the model name, or for the synthetic family
    its generator name marked "(synthetic stress case)".
    """
    rows: list[dict[str, str]] = []
    models = _models(result)
    groups = sorted(
        {(a.dtype, a.role, a.family, a.model) for a in result.aggregates}
        | {(b.dtype, b.role, b.family, b.model) for b in result.bound_aggregates},
        key=lambda g: group_key(*g, models),
    )
    target = float(result.meta.get("target_similarity", 0.99))
    for dtype, role, family, model in groups:
        label = group_label(family, model)
        for a in result.aggregates:
            if (a.dtype, a.role, a.family, a.model) != (dtype, role, family, model):
                continue
            notes = []
            ref = a.kind == "reference"
            if ref:
                notes.append("physical reference, not a codec")
            if a.lossless:
                notes.append("bit-exact" if a.bit_exact else "NOT BIT-EXACT")
            elif a.n_tensors > a.n_errors:
                ok = a.n_tensors - a.n_errors - a.n_below_target
                notes.append(f"{ok}/{a.n_tensors - a.n_errors} > {target:g}")
            if a.n_errors:
                notes.append(f"{a.n_errors} errors")
            rows.append(
                {
                    "dtype": dtype,
                    "role": role,
                    "family": family,
                    "model": label,
                    "codec": f"ref: {a.codec}" if ref else a.codec,
                    "kind": "reference"
                    if ref
                    else f"{'lossless' if a.lossless else 'lossy'} {a.kind}",
                    "n": str(a.n_tensors),
                    "ratio": fmt_float(a.mean_ratio, 3),
                    "bits/val": fmt_float(a.mean_bits_per_value, 2),
                    "min sim": fmt_float(a.min_similarity, 5),
                    "comp MB/s": fmt_speed(a.compress_mbps),
                    "dec MB/s": fmt_speed(a.decompress_mbps),
                    "break-even": fmt_bandwidth(a.break_even_bps),
                    "lossless score": (
                        fmt_float(a.mean_lossless_score, 3) if a.lossless and not ref else "-"
                    ),
                    "lossy score": "-" if ref else fmt_float(a.mean_lossy_score, 3),
                    "check": ", ".join(notes),
                }
            )
        for b in result.bound_aggregates:
            if (b.dtype, b.role, b.family, b.model) != (dtype, role, family, model):
                continue
            blank = dict.fromkeys(HEADLINE_COLUMNS[HEADLINE_COLUMNS.index("ratio") :], "")
            base = {
                "dtype": dtype,
                "role": role,
                "family": family,
                "model": label,
                "n": str(b.n_tensors),
            }
            rows.append(
                {
                    **blank,
                    **base,
                    "codec": "bound: field entropy",
                    "kind": "lossless limit",
                    "ratio": fmt_float(b.entropy_ratio, 3),
                    "bits/val": fmt_float(b.entropy_bits_per_value, 2),
                    "check": f"exponent {fmt_float(b.exponent_bits, 2)} bits",
                }
            )
            rows.append(
                {
                    **blank,
                    **base,
                    "codec": f"bound: Gaussian RD @{fmt_float(b.target_similarity, 3)}",
                    "kind": "lossy limit",
                    "ratio": fmt_float(b.rd_ratio, 3),
                    "bits/val": fmt_float(b.rd_bits_per_value, 2),
                    "check": (
                        f"{b.n_rows_below_channels}/{b.n_tensors} rows < channels: optimistic"
                        if b.n_rows_below_channels
                        else ""
                    ),
                }
            )
    return rows


def _short_label(family: str, model: str) -> str:
    """A model's name in column headers: the synthetic family marked "(stress)"."""
    return f"{model or family} (stress)" if family == STRESS_FAMILY else model or family


def model_rows(result: BenchResult, dtype: str = "bfloat16") -> tuple[list[str], list[list[str]]]:
    """The models side by side for one dtype: (columns, rows), one row per codec, anchor and
    reference and role, with each model's mean ratio and Apex score (the lossless score for
    lossless methods, the lossy one otherwise). Empty rows when the dtype has fewer than two
    models. Every other figure of each model is in its headline group."""
    aggs = [a for a in result.aggregates if a.dtype == dtype]
    labels = list(dict.fromkeys(_short_label(a.family, a.model) for a in aggs))
    if len(labels) < 2:
        return [], []
    columns = ["role", "codec", "kind"]
    columns += [f"{lab} ratio" for lab in labels] + [f"{lab} Apex" for lab in labels]
    cells: dict[tuple[str, str], dict[str, tuple[str, str]]] = {}
    kinds: dict[tuple[str, str], str] = {}
    for a in aggs:  # already in report order: role, model, codec
        key = (a.role, a.codec)
        ref = a.kind == "reference"
        kinds[key] = "reference" if ref else f"{'lossless' if a.lossless else 'lossy'} {a.kind}"
        score = "-" if ref else a.mean_lossless_score if a.lossless else a.mean_lossy_score
        cells.setdefault(key, {})[_short_label(a.family, a.model)] = (
            fmt_float(a.mean_ratio, 3),
            score if isinstance(score, str) else fmt_float(score, 3),
        )
    roles = list(dict.fromkeys(a.role for a in aggs))
    rows = []
    for role in roles:
        for (r, codec), per in cells.items():
            if r != role:
                continue
            name = f"ref: {codec}" if kinds[(r, codec)] == "reference" else codec
            rows.append(
                [role, name, kinds[(r, codec)]]
                + [per.get(lab, ("", ""))[0] for lab in labels]
                + [per.get(lab, ("", ""))[1] for lab in labels]
            )
        bounds = {
            _short_label(b.family, b.model): b
            for b in result.bound_aggregates
            if b.dtype == dtype and b.role == role
        }
        if bounds:
            target = next(iter(bounds.values())).target_similarity
            for name, kind, attr in (
                ("bound: field entropy", "lossless limit", "entropy_ratio"),
                (f"bound: Gaussian RD @{fmt_float(target, 3)}", "lossy limit", "rd_ratio"),
            ):
                rows.append(
                    [role, name, kind]
                    + [fmt_float(getattr(bounds[lab], attr), 3) if lab in bounds else ""
                       for lab in labels]
                    + [""] * len(labels)
                )  # fmt: skip
    return columns, rows


def _corpus_lines(result: BenchResult) -> list[str]:
    """One bullet per model of the run: tensors, shapes, dtypes, layers; the synthetic family
    marked as the stress case it is (with the purpose the corpus builder recorded)."""
    source = (result.meta.get("corpus") or {}).get("source") or {}
    purpose = (source.get("synthetic") or {}).get("purpose") if isinstance(source, dict) else None
    lines = []
    for model in _models(result):
        ts = [t for t in result.tensors if t.model == model]
        if not ts:
            continue
        family = ts[0].family
        shapes = ", ".join(dict.fromkeys("x".join(map(str, t.shape)) for t in ts))
        dtypes = "/".join(dict.fromkeys(t.dtype for t in ts))
        layers = ", ".join(str(v) for v in sorted({t.layer for t in ts}))
        what = f"family `{family}`"
        if family == "synthetic":
            what = f"synthetic family, **{purpose or 'stress case'}**"
        lines.append(
            f"  - `{model}` ({what}): {len(ts)} tensors, shape {shapes}, {dtypes}, "
            f"layer(s) {layers}"
        )
    return lines


def _md_table(columns: list[str] | tuple[str, ...], rows: list[list[str]]) -> str:
    def esc(s: str) -> str:
        return str(s).replace("|", "\\|")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def render_markdown(result: BenchResult, plots: dict[str, str], plot_note: str | None) -> str:
    """The text of report.md."""
    meta = result.meta
    mach = meta.get("machine", {})
    out: list[str] = ["# swarmpress bench", ""]
    out += ["Made by:", "", "```", meta.get("command") or "swarmpress bench", "```", ""]
    libs = ", ".join(f"{k} {v}" for k, v in (mach.get("libraries") or {}).items())
    out += [
        f"- date: {mach.get('date', '?')}",
        f"- CPU: {mach.get('cpu', '?')}; cores usable {mach.get('cores_usable', '?')} "
        f"of {mach.get('cores_total', '?')}",
        f"- platform: {mach.get('platform', '?')}; Python {mach.get('python', '?')}, "
        f"numpy {mach.get('numpy', '?')}, swarmpress {mach.get('swarmpress', '?')}",
        f"- libraries: {libs}",
        f"- load average at start (1/5/15 min): {mach.get('load_average')}",
        f"- corpus: `{meta.get('corpus', {}).get('root', '?')}`, "
        f"{meta.get('corpus', {}).get('tensors', '?')} tensors"
        + (" (quick: at most 2 per model x role x dtype)" if meta.get("quick") else "")
        + ":",
        *_corpus_lines(result),
        f"- similarity target: {meta.get('target_similarity')}; bench wall time "
        f"{fmt_float(float(meta.get('wall_seconds', math.nan)), 1)} s",
        f"- timing: {meta.get('timing', '')}"
        + (f"; {meta['threads']}" if meta.get("threads") else ""),
        "",
    ]
    if result.lossless_failures:
        out += ["## LOSSLESS CHECK FAILED", ""]
        out += [f"- **{f}**" for f in result.lossless_failures] + [""]
    out += [
        "## Headline",
        "",
        "Means over the tensors of each group: one group per dtype x role x model (bf16 "
        "first; the models of a dtype and role side by side, so a real model's means never "
        "mix with another's). The synthetic family is a stress case (exaggerated Llama-like "
        "statistics), not a reference for real Llama tensors; SmolLM2-135M-Instruct, where "
        "present, is the real Llama-architecture model, what a pipeline ships. ratio = "
        "compressed / original, min sim = lowest Apex similarity, MB/s of original data on "
        "one core, break-even = B* = (1 - ratio) * S / (t_compress + t_decompress), the "
        "bandwidth below which the codec beats raw transfer (DESIGN.md, Metrics). The `ref:` "
        "rows are physical references measured on the same tensors in the same run, not "
        "codecs: `memcpy` (a plain copy of the bytes, the speed of memory) and `zstd-1` "
        "(zstd level 1). The two `bound:` rows are the limits for the same tensors (see "
        "Bounds).",
        "",
    ]
    rows = headline_rows(result)
    out += [_md_table(HEADLINE_COLUMNS, [[r[c] for c in HEADLINE_COLUMNS] for r in rows]), ""]
    for dtype in dict.fromkeys(a.dtype for a in result.aggregates):
        mcols, mrows = model_rows(result, dtype)
        if not mrows:
            continue
        out += [
            f"## Models side by side ({dtype})",
            "",
            f"Mean ratio and Apex score per model on the {dtype} tensors (the lossless "
            "track score for lossless methods, the lossy one otherwise), and the two limits; "
            "speeds, minimum similarity, bits per value and break-even of each model are in "
            "its Headline group. (stress) marks the synthetic stress-case family.",
            "",
            _md_table(mcols, mrows),
            "",
        ]

    out += ["## Bounds per tensor", ""]
    brows = []
    models = _models(result)
    for b in sorted(
        result.bounds,
        key=lambda b: (*group_key(b.dtype, b.role, b.family, b.model, models), b.tensor),
    ):
        fields = " / ".join(fmt_float(f.bits, 2) for f in b.entropy.fields)
        rd = b.rd
        brows.append(
            [
                b.tensor,
                b.dtype,
                b.role,
                fields,
                fmt_float(b.entropy.bits_per_value, 2),
                fmt_float(b.entropy.ratio, 3),
                fmt_float(rd.bits_per_value, 2) if rd else "-",
                fmt_float(rd.ratio, 3) if rd else (b.rd_error or "-"),
                f"{rd.active_components}/{rd.channels}" if rd else "-",
                f"{rd.rows} rows < {rd.channels} channels: optimistic"
                if rd and rd.rows < rd.channels
                else "",
            ]
        )
    out += [
        _md_table(
            (
                "tensor",
                "dtype",
                "role",
                "sign / exp / mant bits",
                "entropy bits/val",
                "entropy ratio",
                "RD bits/val",
                "RD ratio",
                "KLT components kept",
                "note",
            ),
            brows,
        ),
        "",
        "Field entropy: order-0 entropies of sign, exponent and mantissa summed (what a "
        "per-field entropy coder without context reaches; coders that model context, e.g. "
        "runs of repeated gradient values, can beat it). Gaussian RD: reverse water-filling "
        "over the channel-covariance eigenvalues (channel mean removed) at the relative error "
        "the similarity target allows; it ignores the cost of sending the basis and the mean, "
        "and real (non-Gaussian) data can do better. Derivations: `swarmpress.bench.bounds`.",
        "",
    ]

    versions = {**(mach.get("libraries") or {}), "numpy": mach.get("numpy", "?")}

    def lib(name: str) -> str:
        return f"{name} {versions[name]}" if name in versions else name

    out += [
        "## Anchors",
        "",
        "The real libraries, each on one core, on the raw tensor (no swarmpress frame).",
        "",
    ]
    for name, a in (meta.get("anchors") or {}).items():
        kind = "lossless" if a["lossless"] else "lossy, tuned per tensor"
        out.append(f"- `{name}` ({lib(a['library'])}, {kind}): {a['setting']}")
    for name, why in (meta.get("anchors_skipped") or {}).items():
        out.append(f"- `{name}` skipped: {why}")
    out.append("")
    tuned = [m for m in result.measurements if m.tuning_evals]
    if tuned:
        out += [
            "Lossy anchors: the loosest setting whose similarity (on the output in the "
            "tensor's own dtype) is above the target, at most "
            f"{meta.get('max_tune_evals')} tries per tensor (tuning time not counted in MB/s; "
            "the float32 conversion is). Settings found:",
            "",
        ]
        out += [f"- `{m.codec}` on {m.tensor}: {m.setting} ({m.tuning_evals} tries)" for m in tuned]
        out.append("")

    if meta.get("references_skipped"):
        out += ["## Physical references", "", f"Skipped: {meta['references_skipped']}.", ""]
    if meta.get("references"):
        out += ["## Physical references", ""]
        out += [
            f"- `{name}` ({lib(r['library'])}): {r['setting']}"
            for name, r in meta["references"].items()
        ]
        out += [
            "",
            "Not codecs: they show what this machine's core does with the same bytes in the "
            "same run (memcpy: ratio 1, so its break-even is `never`).",
            "",
        ]
    errors = [m for m in result.measurements if m.error]
    if errors:
        out += ["## Errors", ""]
        out += [f"- `{m.codec}` on {m.tensor}: {m.error}" for m in errors[:100]]
        if len(errors) > 100:
            out.append(f"- ... and {len(errors) - 100} more (bench.json has all)")
        out.append("")

    out += ["## Plots", ""]
    if plot_note:
        out += [f"Plots skipped: {plot_note}", ""]
    sweep_tensors = meta.get("sweep_tensors") or {}
    if sweep_tensors:
        named = "; ".join(f"{role}: `{t}`" for role, t in sweep_tensors.items())
        out += [
            "Sweep tensors (one typical tensor per role, the median-size bf16 tensor over "
            f"every model): {named}. The transfer-time plot uses `{meta.get('typical_tensor')}`.",
            "",
        ]
    if "ratio_vs_similarity" in plots:
        out += [
            "Ratio vs similarity on each role's typical tensor: points are the bench's codecs "
            "and anchors, curves sweep the lossy methods over quality settings, the dashed "
            "curve is the Gaussian RD bound and the star the field-entropy bound.",
            "",
            f"![ratio vs similarity]({plots['ratio_vs_similarity']})",
            "",
        ]
    if "transfer_time" in plots:
        out += [
            "End-to-end time to ship the typical tensor over a link with 50 ms latency: codec "
            "time + latency + compressed bytes / bandwidth; dots mark break-even bandwidths.",
            "",
            f"![transfer time]({plots['transfer_time']})",
            "",
        ]
    out += [
        "Every figure, per tensor and per codec, is in `bench.json` (non-finite numbers are "
        'written as the strings "inf" and "nan").',
        "",
    ]
    return "\n".join(out)


def write_report(result: BenchResult, directory: str | Path) -> Path:
    """Write report.md, bench.json and the PNG plots into directory (created if needed)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    result.write_json(directory / "bench.json")
    plots, note = write_plots(result, directory)
    (directory / "report.md").write_text(render_markdown(result, plots, note))
    return directory
