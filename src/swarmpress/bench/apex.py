"""`swarmpress bench --apex`: Apex solution files on an Apex-layout directory, scored the Apex way.

An Apex-layout directory holds flat little-endian bfloat16 `.bin` files and a
`manifest.csv` (as `swarmpress corpus export-apex` writes it; without a manifest every
`.bin` is taken). A solution is a Python file with `compress_data(bytes) -> bytes` and
`decompress_data(bytes) -> bytes` (DESIGN.md, "Arena contract"); it is imported from its
path in this process (a local, trusted file: the sandboxed runner is the arena's job) and
run on the raw bytes of every file, next to the zstd level 3 baseline on the same bytes.

Per file x solution: ratio, compress and decompress seconds (time.perf_counter around one
call, best of a few repeats for small files, as in the main bench), bit-exactness,
similarity, and the Apex lossless score (0 unless bit-exact) and lossy score. A solution
that raises, returns something other than bytes, or decodes to the wrong length is a
recorded failure (both scores 0), never a crash.
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import io
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zstandard
from rich import box
from rich.table import Table

from swarmpress.bench.machine import machine_info
from swarmpress.bench.report import fmt_float
from swarmpress.bench.results import JsonResult
from swarmpress.bench.runner import best_time, repeats_for
from swarmpress.codecs.core import metrics as M
from swarmpress.errors import UsageError

BASELINE = "zstd-3"
MANIFEST = "manifest.csv"
#: progress(done, total, label) after every (file, solution) pair
ProgressFn = Callable[[int, int, str], None]


class ApexError(UsageError, ValueError):
    """Bad input for an Apex bench: a missing or malformed directory or solution file."""


@dataclass
class ApexFile:
    """One tensor of an Apex-layout directory."""

    file: str
    name: str
    role: str
    family: str
    numel: int
    nbytes: int
    shape: str = ""  # informational only: the solutions never see it


@dataclass
class ApexSolution:
    """A loaded solution: its name (file stem, or zstd-3 for the baseline) and functions."""

    name: str
    path: str
    compress: Callable[[bytes], Any]
    decompress: Callable[[bytes], Any]


@dataclass
class ApexMeasurement:
    """One solution on one file."""

    file: str
    solution: str
    original_bytes: int
    compressed_bytes: int = 0
    ratio: float = math.nan
    compress_s: float = math.nan
    decompress_s: float = math.nan
    bit_exact: bool | None = None
    similarity: float = math.nan
    lossless_score: float = 0.0
    lossy_score: float = 0.0
    repeats: int = 0
    error: str | None = None


@dataclass
class ApexSummary:
    """One solution over every file; failures count as score 0."""

    solution: str
    path: str
    n_files: int
    n_errors: int
    n_bit_exact: int
    mean_ratio: float
    total_ratio: float  # total compressed bytes / total original bytes
    mean_compress_s: float
    mean_decompress_s: float
    min_similarity: float
    mean_similarity: float
    mean_lossless_score: float
    mean_lossy_score: float

    @property
    def bit_exact(self) -> bool:
        return self.n_bit_exact == self.n_files


@dataclass
class ApexResult(JsonResult):
    """Every figure of one Apex bench run."""

    meta: dict[str, Any]
    files: list[ApexFile]
    measurements: list[ApexMeasurement]
    summaries: list[ApexSummary] = field(default_factory=list)

    def summary(self, solution: str) -> ApexSummary:
        for s in self.summaries:
            if s.solution == solution:
                return s
        raise KeyError(solution)


# ----------------------------------------------------------------------------- loading
def _safe_name(name: str, root: Path) -> str:
    if not name or Path(name).name != name or name in (".", ".."):
        raise ApexError(f"{root / MANIFEST} names a file outside the directory: {name!r}")
    return name


def load_apex_dir(directory: str | Path) -> list[ApexFile]:
    """The files of an Apex-layout directory, checked: each is 2 * numel bytes of bf16."""
    root = Path(directory).expanduser()
    if not root.is_dir():
        raise ApexError(f"Apex directory {root} does not exist or is not a directory")
    files: list[ApexFile] = []
    manifest = root / MANIFEST
    if manifest.is_file():
        try:
            with manifest.open(newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise ApexError(f"cannot read {manifest}: {exc}") from None
        for i, row in enumerate(rows, start=2):
            name = _safe_name((row.get("file") or "").strip(), root)
            try:
                numel = int(row.get("numel") or -1)
            except ValueError:
                numel = -1
            if numel < 0:
                raise ApexError(f"{manifest} line {i}: numel must be a non-negative integer")
            path = root / name
            if not path.is_file():
                raise ApexError(f"{manifest} line {i}: {name} is missing")
            size = path.stat().st_size
            if size != 2 * numel:
                raise ApexError(
                    f"{path} holds {size} bytes, but the manifest says {numel} bf16 values"
                )
            files.append(
                ApexFile(
                    file=name,
                    name=(row.get("name") or Path(name).stem).strip(),
                    role=(row.get("role") or "").strip(),
                    family=(row.get("family") or "").strip(),
                    numel=numel,
                    nbytes=size,
                    shape=(row.get("shape") or "").strip(),
                )
            )
    else:
        for path in sorted(root.glob("*.bin")):
            size = path.stat().st_size
            if size % 2:
                raise ApexError(f"{path} holds {size} bytes, not a whole number of bf16 values")
            files.append(ApexFile(path.name, path.stem, "", "", size // 2, size))
    if not files:
        raise ApexError(f"{root} has no .bin files (expected the Apex layout: manifest.csv + .bin)")
    return files


def load_solution(path: str | Path, name: str | None = None) -> ApexSolution:
    """Import a solution file from its path and check it defines the two functions."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ApexError(f"solution file {p} does not exist")
    mod_name = f"_swarmpress_apex_solution_{abs(hash(str(p.resolve())))}"
    try:
        spec = importlib.util.spec_from_file_location(mod_name, p)
        if spec is None or spec.loader is None:
            raise ApexError(f"cannot load {p} as a Python file")
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module  # as a normal import would (dataclasses need it)
        with contextlib.redirect_stdout(io.StringIO()):
            spec.loader.exec_module(module)
    except ApexError:
        raise
    except (Exception, SystemExit) as exc:
        sys.modules.pop(mod_name, None)
        raise ApexError(f"cannot import solution {p}: {type(exc).__name__}: {exc}") from None
    funcs = [getattr(module, f, None) for f in ("compress_data", "decompress_data")]
    if not all(callable(f) for f in funcs):
        raise ApexError(f"solution {p} must define compress_data(bytes) and decompress_data(bytes)")
    return ApexSolution(name or p.stem, str(p), funcs[0], funcs[1])


def baseline_solution(level: int = 3) -> ApexSolution:
    """zstd at `level` on the raw bytes: the reference a solution must beat."""
    c, d = zstandard.ZstdCompressor(level=level), zstandard.ZstdDecompressor()
    return ApexSolution(f"zstd-{level}", "(built in)", c.compress, d.decompress)


# ----------------------------------------------------------------------------- running
def _bf16_to_f64(data: bytes) -> np.ndarray:
    u = np.frombuffer(data, dtype="<u2", count=len(data) // 2)
    return (u.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


def _as_bytes(value: Any, what: str) -> bytes:
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    raise TypeError(f"{what} returned {type(value).__name__}, not bytes")


def measure(sol: ApexSolution, f: ApexFile, data: bytes, x64: np.ndarray, repeats: int):
    """Run one solution on one file's bytes; failures are recorded in .error."""
    m = ApexMeasurement(file=f.file, solution=sol.name, original_bytes=len(data))
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            blob, tc, n = best_time(lambda: _as_bytes(sol.compress(data), "compress_data"), repeats)
            out, td, _ = best_time(lambda: _as_bytes(sol.decompress(blob), "decompress_data"), n)
        m.repeats = n
        m.compressed_bytes = len(blob)
        m.compress_s, m.decompress_s = tc, td
        m.ratio = M.ratio(len(blob), len(data)) if data else math.nan
        if len(out) != len(data):
            raise ValueError(f"decompress_data gave {len(out)} bytes, expected {len(data)}")
        m.bit_exact = out == data
        if data:
            with np.errstate(invalid="ignore", over="ignore"):
                m.similarity = M.similarity(x64, _bf16_to_f64(out))
            m.lossless_score = M.lossless_score(m.ratio, tc + td) if m.bit_exact else 0.0
            m.lossy_score = M.lossy_score(m.ratio, m.similarity)
    except (Exception, SystemExit) as exc:  # a failing solution is a result, not a crash
        m.error = f"{type(exc).__name__}: {exc}"
        m.lossless_score = m.lossy_score = 0.0
    return m


def _mean(values: list[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return sum(vals) / len(vals) if vals else math.nan


def summarize(measurements: list[ApexMeasurement], solutions: list[ApexSolution]):
    """Per-solution summaries, in the order the solutions were given."""
    out = []
    for sol in solutions:
        ms = [m for m in measurements if m.solution == sol.name]
        good = [m for m in ms if m.error is None]
        orig = sum(m.original_bytes for m in good)
        sims = [m.similarity for m in good if not math.isnan(m.similarity)]
        out.append(
            ApexSummary(
                solution=sol.name,
                path=sol.path,
                n_files=len(ms),
                n_errors=len(ms) - len(good),
                n_bit_exact=sum(1 for m in good if m.bit_exact),
                mean_ratio=_mean([m.ratio for m in good]),
                total_ratio=sum(m.compressed_bytes for m in good) / orig if orig else math.nan,
                mean_compress_s=_mean([m.compress_s for m in good]),
                mean_decompress_s=_mean([m.decompress_s for m in good]),
                min_similarity=min(sims, default=math.nan),
                mean_similarity=_mean(sims),
                mean_lossless_score=_mean([m.lossless_score for m in ms]),
                mean_lossy_score=_mean([m.lossy_score for m in ms]),
            )
        )
    return out


def run_apex_bench(
    directory: str | Path,
    solutions: list[str | Path] | None = None,
    *,
    baseline: bool = True,
    quick: bool = False,
    progress: ProgressFn | None = None,
    command: str = "",
) -> ApexResult:
    """Every solution file (plus the zstd-3 baseline) on every file of an Apex directory.

    Raises ApexError for a bad directory or a solution that cannot be imported, before
    any measurement starts.
    """
    t_start = time.perf_counter()
    files = load_apex_dir(directory)
    sols: list[ApexSolution] = [baseline_solution()] if baseline else []
    taken = {s.name for s in sols}
    for path in solutions or []:
        name = Path(path).stem
        i = 2
        while name in taken:
            name, i = f"{Path(path).stem}-{i}", i + 1
        taken.add(name)
        sols.append(load_solution(path, name))
    if not sols:
        raise ApexError("nothing to run: give a solution file or keep the zstd-3 baseline")
    root = Path(directory).expanduser()
    total, done = len(files) * len(sols), 0
    measurements: list[ApexMeasurement] = []
    for f in files:
        try:
            data = (root / f.file).read_bytes()
        except OSError as exc:
            raise ApexError(f"cannot read {root / f.file}: {exc.strerror or exc}") from None
        x64 = _bf16_to_f64(data)
        reps = repeats_for(len(data), quick)
        for sol in sols:
            measurements.append(measure(sol, f, data, x64, reps))
            done += 1
            if progress is not None:
                progress(done, total, f"{f.file} · {sol.name}")
    meta = {
        "command": command,
        "machine": machine_info(),
        "apex_dir": str(root),
        "files": len(files),
        "total_bytes": sum(f.nbytes for f in files),
        "solutions": {s.name: s.path for s in sols},
        "baseline": BASELINE if baseline else None,
        "quick": quick,
        "python": sys.version.split()[0],
        "timing": "time.perf_counter around one call, best of repeats (5 up to 1 MiB, "
        "3 up to 8 MiB, else 1; 1 with --quick), in process",
        "scores": "lossless = clip((1 - ratio) * (1 - t / 1.012), 0, 1) if bit-exact else 0, "
        "t = compress + decompress s; lossy = clip(1 - ratio, 0, 1) if similarity > 0.99",
    }
    result = ApexResult(meta, files, measurements, summarize(measurements, sols))
    result.meta["wall_seconds"] = time.perf_counter() - t_start
    return result


# ----------------------------------------------------------------------------- output
def _fmt_s(s: float) -> str:
    if math.isnan(s):
        return "-"
    return f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s"


def _check(m: ApexMeasurement) -> str:
    if m.error is not None:
        return f"FAILED: {m.error}"
    return "bit-exact" if m.bit_exact else "lossy"


def file_rows(result: ApexResult) -> list[list[str]]:
    """Per file x solution: file, solution, ratio, times, similarity, scores, check."""
    rows = []
    for m in result.measurements:
        rows.append(
            [
                m.file.removesuffix(".bin"),
                m.solution,
                fmt_float(m.ratio, 4),
                _fmt_s(m.compress_s),
                _fmt_s(m.decompress_s),
                fmt_float(m.similarity, 5),
                fmt_float(m.lossless_score, 4),
                fmt_float(m.lossy_score, 4),
                _check(m),
            ]
        )
    return rows


def summary_rows(result: ApexResult) -> list[list[str]]:
    """Per solution: the means over every file."""
    rows = []
    for s in result.summaries:
        check = f"{s.n_bit_exact}/{s.n_files} bit-exact"
        if s.n_errors:
            check += f", {s.n_errors} FAILED"
        rows.append(
            [
                "mean",
                s.solution,
                fmt_float(s.mean_ratio, 4),
                _fmt_s(s.mean_compress_s),
                _fmt_s(s.mean_decompress_s),
                fmt_float(s.min_similarity, 5),
                fmt_float(s.mean_lossless_score, 4),
                fmt_float(s.mean_lossy_score, 4),
                check,
            ]
        )
    return rows


COLUMNS = (
    "file",
    "solution",
    "ratio",
    "compress",
    "decompress",
    "similarity",
    "lossless score",
    "lossy score",
    "check",
)


def apex_table(result: ApexResult) -> Table:
    """A rich table: every file x solution, then the per-solution means (min similarity)."""
    table = Table(
        title=f"swarmpress bench --apex {result.meta.get('apex_dir', '')}",
        caption="ratio = compressed/original; lossless score = (1 - ratio)(1 - t/1.012) if "
        "bit-exact; lossy score = 1 - ratio if similarity > 0.99; the mean row shows the "
        "minimum similarity",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for c in COLUMNS:
        right = c not in ("file", "solution", "check")
        table.add_column(c, justify="right" if right else "left", no_wrap=c != "check")
    last = None
    for row in file_rows(result):
        if last is not None and row[0] != last:
            table.add_section()
        style = "bold red" if row[-1].startswith("FAILED") else None
        table.add_row(*(row if row[0] != last else ["", *row[1:]]), style=style)
        last = row[0]
    table.add_section()
    for row in summary_rows(result):
        table.add_row(*row, style="bold red" if "FAILED" in row[-1] else "bold")
    return table


def render_markdown(result: ApexResult) -> str:
    """The text of the Apex report."""
    meta = result.meta
    mach = meta.get("machine", {})

    def table(rows: list[list[str]]) -> list[str]:
        lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
        return lines

    out = ["# swarmpress bench --apex", "", "Made by:", "", "```"]
    out += [meta.get("command") or "swarmpress bench --apex", "```", ""]
    out += [
        f"- directory: `{meta.get('apex_dir')}` ({meta.get('files')} files, "
        f"{meta.get('total_bytes', 0) / 1e6:.2f} MB of bf16)",
        f"- machine: {mach.get('cpu', '?')}, {mach.get('cores_usable', '?')} usable cores, "
        f"load {mach.get('load_average')}, {mach.get('platform', '?')}",
        f"- date: {mach.get('date', '?')}; timing: {meta.get('timing')}",
        f"- scores: {meta.get('scores')}",
        "",
        "## Means over every file",
        "",
        "(the similarity column shows the minimum over the files)",
        "",
        *table(summary_rows(result)),
        "",
        "## Per file",
        "",
        *table(file_rows(result)),
        "",
    ]
    return "\n".join(out)


def write_apex_report(result: ApexResult, directory: str | Path) -> Path:
    """Write report.md and apex.json into directory (created if needed); return report.md."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    result.write_json(d / "apex.json")
    path = d / "report.md"
    path.write_text(render_markdown(result), encoding="utf-8")
    return path
