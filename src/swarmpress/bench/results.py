"""Bench results as plain dataclasses: per-tensor measurements, aggregates, JSON.

Everything a report or a later analysis needs is here and nothing is computed twice: the
runner fills `Measurement`s and `TensorBounds`, `aggregate` groups them per codec x family
x model x role x dtype, and `BenchResult.to_json` writes every figure. JSON has no infinities,
so non-finite floats are written as the strings "inf", "-inf" and "nan" (float() reads them).

Groups are per model, not only per family: the default corpus has two real models in family
"model" (all-MiniLM-L6-v2 and SmolLM2-135M-Instruct) whose means must not mix, and the
synthetic family, a stress case (`group_label` marks it). Every measurement, aggregate and
bound carries `model`; bench.json files written before it existed lack the key (readers
should treat a missing `model` as "the whole family").
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swarmpress.bench.bounds import TensorBounds

DTYPE_ORDER = ("bfloat16", "float16", "float32")
ROLE_ORDER = ("activation", "gradient", "weight-delta")
FAMILY_ORDER = ("model", "synthetic")
STRESS_FAMILY = "synthetic"  # generated tensors with exaggerated statistics: a stress case


@dataclass
class TensorMeta:
    """What the bench knows about one corpus tensor."""

    name: str
    family: str
    model: str
    layer: int
    role: str
    dtype: str
    shape: list[int]
    numel: int
    nbytes: int


@dataclass
class Measurement:
    """One codec or anchor on one tensor: size, quality, speed and the Apex scores."""

    tensor: str
    codec: str  # codec spec ("blockq:bits=4"), anchor ("zstd-3") or reference ("memcpy")
    kind: str  # "codec" | "anchor" | "reference" (a physical reference, not a codec)
    lossless: bool
    family: str
    role: str
    dtype: str
    original_bytes: int
    model: str = ""  # the corpus entry's model (the generator name for synthetic tensors)
    compressed_bytes: int = 0
    ratio: float = math.nan
    bits_per_value: float = math.nan
    similarity: float = math.nan
    cosine: float = math.nan
    rel_l2: float = math.nan
    max_abs_error: float = math.nan
    psnr: float = math.nan
    compress_s: float = math.nan
    decompress_s: float = math.nan
    compress_mbps: float = math.nan  # original MB (1e6 bytes) per second
    decompress_mbps: float = math.nan
    break_even_bps: float = math.nan  # bytes per second
    lossless_score: float = 0.0
    lossy_score: float = 0.0
    bit_exact: bool | None = None  # checked for lossless codecs and anchors only
    meets_target: bool | None = None  # similarity > target (lossy only)
    repeats: int = 0
    setting: str = ""  # e.g. the tuned error bound of a lossy anchor
    tuning_evals: int = 0
    error: str | None = None  # the exception when the codec failed on this tensor

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class SweepPoint:
    """One quality setting of a lossy method (or a bound) on one tensor, for plots."""

    method: str  # "blockq", "sz3", "zfp", "gaussian-rd-bound", ...
    setting: str
    tensor: str
    role: str
    dtype: str
    ratio: float
    similarity: float


@dataclass
class Aggregate:
    """One codec or anchor over the tensors of one family x model x role x dtype group."""

    codec: str
    kind: str
    lossless: bool
    family: str
    model: str
    role: str
    dtype: str
    n_tensors: int
    n_errors: int
    mean_ratio: float
    mean_bits_per_value: float
    min_similarity: float
    mean_similarity: float
    max_rel_l2: float
    compress_mbps: float  # total original MB / total compress seconds
    decompress_mbps: float
    break_even_bps: float  # total saved bytes / total codec seconds
    mean_lossless_score: float
    mean_lossy_score: float
    bit_exact: bool | None
    n_below_target: int


@dataclass
class BoundAggregate:
    """Mean limits over the tensors of one family x model x role x dtype group."""

    family: str
    model: str
    role: str
    dtype: str
    n_tensors: int
    entropy_bits_per_value: float
    entropy_ratio: float
    exponent_bits: float
    rd_bits_per_value: float
    rd_ratio: float
    target_similarity: float
    n_rows_below_channels: int = 0  # tensors whose RD bound is optimistic (rank-limited)


class JsonResult:
    """Mixin for result dataclasses: strict JSON (no NaN/inf literals) to a dict or a file."""

    def to_json(self) -> dict[str, Any]:
        return jsonable(dataclasses.asdict(self))

    def write_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=1, allow_nan=False) + "\n")
        return path


@dataclass
class BenchResult(JsonResult):
    """Every figure of one bench run."""

    meta: dict[str, Any]
    tensors: list[TensorMeta]
    measurements: list[Measurement]
    bounds: list[TensorBounds]
    sweep: list[SweepPoint] = field(default_factory=list)
    aggregates: list[Aggregate] = field(default_factory=list)
    bound_aggregates: list[BoundAggregate] = field(default_factory=list)
    lossless_failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """False when a lossless method was not bit-exact or a swarmpress codec raised."""
        return not self.lossless_failures and not self.codec_errors

    @property
    def codec_errors(self) -> list[str]:
        """'codec on tensor: error' for every swarmpress codec that raised on a tensor."""
        return [
            f"{m.codec} on {m.tensor}: {m.error}"
            for m in self.measurements
            if m.kind == "codec" and m.error is not None
        ]


def jsonable(obj: Any) -> Any:
    """Recursively replace non-finite floats by "inf"/"-inf"/"nan" and tuples by lists."""
    if isinstance(obj, float):
        if math.isnan(obj):
            return "nan"
        if math.isinf(obj):
            return "inf" if obj > 0 else "-inf"
        return obj
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if hasattr(obj, "item") and hasattr(obj, "dtype"):  # numpy scalar
        return jsonable(obj.item())
    if hasattr(obj, "tolist"):  # numpy array
        return jsonable(obj.tolist())
    return obj


def _order(value: str, order: tuple[str, ...]) -> int:
    return order.index(value) if value in order else len(order)


def group_key(
    dtype: str, role: str, family: str, model: str = "", model_order: Sequence[str] = ()
) -> tuple[int, str, int, str, int, str, int, str]:
    """Sort key for groups: bf16 first, then activation before gradient, real models before
    the synthetic family, models in `model_order` (corpus order), so each model's group sits
    beside the other models' groups of the same dtype and role."""
    return (
        _order(dtype, DTYPE_ORDER),
        dtype,
        _order(role, ROLE_ORDER),
        role,
        _order(family, FAMILY_ORDER),
        family,
        _order(model, tuple(model_order)),
        model,
    )


def model_order(items: Iterable[Any]) -> list[str]:
    """The models of items (anything with a .model) in order of first appearance."""
    return list(dict.fromkeys(getattr(x, "model", "") for x in items))


def group_label(family: str, model: str) -> str:
    """How a group is named in tables: the model, with the synthetic family marked as the
    stress case it is ("synthetic-llama-like (synthetic stress case)")."""
    if family == STRESS_FAMILY:
        return f"{model or family} (synthetic stress case)"
    return model or family


def _mean(values: Iterable[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return sum(vals) / len(vals) if vals else math.nan


def _extreme(fn: Any, values: Iterable[float]) -> float:
    """min or max over the non-NaN values (NaN when there are none)."""
    return fn((v for v in values if not math.isnan(v)), default=math.nan)


def aggregate(measurements: list[Measurement], codec_order: list[str]) -> list[Aggregate]:
    """Group measurements per codec x family x model x role x dtype, in report order
    (`group_key`, models in the order they first appear, codecs in codec_order)."""
    groups: dict[tuple[str, str, str, str, str], list[Measurement]] = {}
    for m in measurements:
        groups.setdefault((m.codec, m.family, m.model, m.role, m.dtype), []).append(m)
    out: list[Aggregate] = []
    for (codec, family, model, role, dtype), ms in groups.items():
        good = [m for m in ms if m.ok]
        tc = sum(m.compress_s for m in good)
        td = sum(m.decompress_s for m in good)
        nbytes = sum(m.original_bytes for m in good)
        saved = sum(m.original_bytes - m.compressed_bytes for m in good)
        if not good or saved <= 0:
            bstar = 0.0 if good else math.nan
        else:
            bstar = saved / (tc + td) if tc + td > 0 else math.inf
        lossless = ms[0].lossless
        exact = [m.bit_exact for m in ms if m.bit_exact is not None]
        out.append(
            Aggregate(
                codec=codec,
                kind=ms[0].kind,
                lossless=lossless,
                family=family,
                model=model,
                role=role,
                dtype=dtype,
                n_tensors=len(ms),
                n_errors=len(ms) - len(good),
                mean_ratio=_mean(m.ratio for m in good),
                mean_bits_per_value=_mean(m.bits_per_value for m in good),
                min_similarity=_extreme(min, (m.similarity for m in good)),
                mean_similarity=_mean(m.similarity for m in good),
                max_rel_l2=_extreme(max, (m.rel_l2 for m in good)),
                compress_mbps=nbytes / 1e6 / tc if tc > 0 else math.inf,
                decompress_mbps=nbytes / 1e6 / td if td > 0 else math.inf,
                break_even_bps=bstar,
                mean_lossless_score=_mean(m.lossless_score for m in good),
                mean_lossy_score=_mean(m.lossy_score for m in good),
                bit_exact=(all(exact) and len(exact) == len(ms)) if lossless else None,
                n_below_target=sum(1 for m in good if m.meets_target is False),
            )
        )
    rank = {c: i for i, c in enumerate(codec_order)}
    models = model_order(measurements)
    out.sort(
        key=lambda a: (
            *group_key(a.dtype, a.role, a.family, a.model, models),
            rank.get(a.codec, len(rank)),
            a.codec,
        )
    )
    return out


def aggregate_bounds(bounds: list[TensorBounds]) -> list[BoundAggregate]:
    """Mean entropy and RD limits per family x model x role x dtype, in report order."""
    groups: dict[tuple[str, str, str, str], list[TensorBounds]] = {}
    for b in bounds:
        groups.setdefault((b.family, b.model, b.role, b.dtype), []).append(b)
    out = []
    for (family, model, role, dtype), bs in groups.items():
        rds = [b.rd for b in bs if b.rd is not None]
        out.append(
            BoundAggregate(
                family=family,
                model=model,
                role=role,
                dtype=dtype,
                n_tensors=len(bs),
                entropy_bits_per_value=_mean(b.entropy.bits_per_value for b in bs),
                entropy_ratio=_mean(b.entropy.ratio for b in bs),
                exponent_bits=_mean(b.entropy.exponent_bits for b in bs),
                rd_bits_per_value=_mean(r.bits_per_value for r in rds),
                rd_ratio=_mean(r.ratio for r in rds),
                target_similarity=rds[0].target_similarity if rds else math.nan,
                n_rows_below_channels=sum(1 for r in rds if r.rows < r.channels),
            )
        )
    models = model_order(bounds)
    out.sort(key=lambda a: group_key(a.dtype, a.role, a.family, a.model, models))
    return out
