"""The report directory: report.md with the headline table, bench.json, and the PNG plots."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from swarmpress.bench import report as rep
from swarmpress.bench.results import BenchResult

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_report_directory(quick_result: BenchResult, tmp_path: Path):
    out = rep.write_report(quick_result, tmp_path / "report")
    names = {p.name for p in out.iterdir()}
    assert {"report.md", "bench.json", "ratio_vs_similarity.png", "transfer_time.png"} <= names
    for png in ("ratio_vs_similarity.png", "transfer_time.png"):
        data = (out / png).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000
    json.loads((out / "bench.json").read_text())
    text = (out / "report.md").read_text()
    machine = quick_result.meta["machine"]
    for needle in (
        "pytest",  # the command that made it
        machine["cpu"],
        f"Python {machine['python']}",
        f"numpy {machine['numpy']}",
        machine["date"],
        "## Headline",
        "bound: field entropy",
        "bound: Gaussian RD",
        "zipnn-style",
        "![ratio vs similarity](ratio_vs_similarity.png)",
        "![transfer time](transfer_time.png)",
    ):
        assert needle in text, needle
    assert "LOSSLESS CHECK FAILED" not in text


def test_headline_rows_bf16_first_and_bounds_per_group(quick_result: BenchResult):
    rows = rep.headline_rows(quick_result)
    assert set(rows[0]) == set(rep.HEADLINE_COLUMNS)
    dtypes = [r["dtype"] for r in rows]
    assert dtypes[0] == "bfloat16" and dtypes.index("float32") > dtypes.count("bfloat16") - 1
    groups = {(r["dtype"], r["role"], r["family"]) for r in rows}
    assert len(groups) == 8
    bounds = [r for r in rows if r["codec"].startswith("bound:")]
    assert len(bounds) == 2 * len(groups)
    zstd = next(r for r in rows if r["codec"] == "zstd")
    assert zstd["check"] == "bit-exact" and zstd["lossless score"] != "-"


def test_failures_are_loud_in_the_report(quick_result: BenchResult):
    import copy

    broken = copy.deepcopy(quick_result)
    broken.lossless_failures = ["codec liar on t: claims lossless but is NOT bit-exact"]
    text = rep.render_markdown(broken, {}, "matplotlib is not importable (test)")
    assert "## LOSSLESS CHECK FAILED" in text and "NOT bit-exact" in text
    assert "Plots skipped: matplotlib is not importable" in text


@pytest.mark.parametrize(
    "bps, text",
    [(0.0, "never"), (math.inf, "always"), (2.5e6, "2.5 MB/s"), (3e9, "3 GB/s"), (math.nan, "-")],
)
def test_fmt_bandwidth(bps: float, text: str):
    assert rep.fmt_bandwidth(bps) == text
