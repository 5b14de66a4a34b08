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
        "zipnn",
        "apex-style-int8",
        "## Physical references",
        "| ref: memcpy | reference |",
        "| ref: zstd-1 | reference |",
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
    # every codec, anchor and reference row shows its break-even bandwidth
    measured = [r for r in rows if not r["codec"].startswith("bound:") and r["ratio"] != "-"]
    assert all(r["break-even"] not in ("", "-") for r in measured)
    refs = [r for r in rows if r["kind"] == "reference"]
    assert len(refs) == 2 * len(groups)
    for r in refs:
        assert r["codec"] in ("ref: memcpy", "ref: zstd-1")
        assert "not a codec" in r["check"] and r["lossless score"] == r["lossy score"] == "-"
        assert r["comp MB/s"] not in ("", "-") and r["dec MB/s"] not in ("", "-")
    assert all(r["break-even"] == "never" for r in refs if r["codec"] == "ref: memcpy")


def test_console_table_shows_references_and_break_even(quick_result: BenchResult):
    import io

    from rich.console import Console

    from swarmpress.bench.console import headline_table, print_table

    out = io.StringIO()
    print_table(headline_table(quick_result), Console(file=out, width=100))
    text = out.getvalue()
    assert "break-even" in text and "ref: memcpy" in text and "ref: zstd-1" in text
    assert "zipnn" in text and "apex-style-int8" in text


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
