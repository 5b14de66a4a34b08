"""Run every codec and anchor on every corpus tensor and measure it the Apex way.

For each tensor x codec/anchor: ratio, bits/value, similarity, cosine, rel L2, max abs
error, PSNR (DESIGN.md "Metrics"), compress and decompress MB/s, break-even bandwidth
B* = (1 - ratio) * S / (t_compress + t_decompress), the Apex lossless and lossy scores, and
a bit-exactness check for everything that claims to be lossless (a failure is recorded in
`BenchResult.lossless_failures`, never dropped). Per tensor it also runs the physical
references of `references` (memcpy and zstd-1 on the same bytes, kind "reference"; off
with references=False), computes the limits of `bounds`, and on one typical tensor per
role a quality sweep for the ratio-vs-similarity plot (`sweep_entries`: the median-size
bf16 tensor of the role; on the default corpus that is SmolLM2-135M-Instruct L05, the
report names it).

Timing: time.perf_counter around one call, best of a few repeats for small tensors (one
for large ones), one core (codecs run inline; anchors pinned to one thread: blosc2
nthreads=1, zipnn threads=1, SZ3 without OpenMP, ZFP serial; numpy's BLAS and any OpenMP
pool limited to one thread while measuring, see `threads`). Lossy anchors are tuned
first (bounded search, see `anchors.LossyAnchor.tune`) and then timed at the tuned
setting; the tuning time is not counted, the float32 conversion of bf16/fp16 inputs is.
Stateful codecs get a fresh encoder and decoder per tensor and one repeat.

Results are grouped per model as well as per family (`results.aggregate`), and quick mode
keeps at most QUICK_TENSORS_PER_GROUP tensors per family x model x role x dtype, so every
model of the corpus is measured in a quick run too.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from swarmpress.bench import bounds as _bounds
from swarmpress.bench.anchors import Anchor, LossyAnchor, load_anchors
from swarmpress.bench.machine import machine_info
from swarmpress.bench.references import Reference, load_references
from swarmpress.bench.results import (
    BenchResult,
    Measurement,
    SweepPoint,
    TensorMeta,
    aggregate,
    aggregate_bounds,
)
from swarmpress.bench.specs import build_codec, default_codec_specs
from swarmpress.bench.threads import describe as describe_threads
from swarmpress.bench.threads import one_thread
from swarmpress.codecs import BaseCodec, CodecError, codec_class, get_codec
from swarmpress.codecs.core import metrics as M
from swarmpress.codecs.core.tensors import BF16, to_float64
from swarmpress.corpus.store import Corpus, Entry, load_corpus

#: progress(done, total, label) is called after every (tensor, codec) step
ProgressFn = Callable[[int, int, str], None]

BLOCKQ_BITS = (2, 3, 4, 5, 6, 7, 8)
BLOCKQ_BITS_QUICK = (2, 4, 6, 8)
RD_SWEEP_TARGETS = (0.9, 0.95, 0.98, 0.99, 0.995, 0.998, 0.999)
QUICK_TENSORS_PER_GROUP = 2


def repeats_for(nbytes: int, quick: bool = False) -> int:
    """How many timed repeats a tensor of nbytes gets (best one counts)."""
    if quick:
        return 1
    if nbytes <= 1 << 20:
        return 5
    if nbytes <= 8 << 20:
        return 3
    return 1


def best_time(fn: Callable[[], Any], repeats: int, budget_s: float = 1.0) -> tuple[Any, float, int]:
    """(last result, best seconds, calls): up to `repeats` calls, stop early past budget_s."""
    best = math.inf
    out: Any = None
    spent = 0.0
    n = 0
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
        best = min(best, dt)
        spent += dt
        n += 1
        if spent > budget_s:
            break
    return out, best, n


def _bits(arr: np.ndarray) -> np.ndarray:
    return (
        np.ascontiguousarray(arr)
        .reshape(-1)
        .view(np.uint16 if arr.dtype.itemsize == 2 else np.uint32)
    )


def _fill_quality(
    m: Measurement,
    x: np.ndarray,
    x64: np.ndarray,
    y: Any,
    blob_len: int,
    tc: float,
    td: float,
    target: float,
) -> None:
    """Fill size, quality, speed and score fields of m from the original x and decoded y.

    x64 is x as flat float64 (computed once per tensor; the metrics would convert anyway).
    """
    y = np.asarray(y)
    numel = max(x.size, 1)
    m.compressed_bytes = blob_len
    m.ratio = M.ratio(blob_len, m.original_bytes)
    m.bits_per_value = M.bits_per_value(blob_len, numel)
    if y.shape != x.shape or y.dtype != x.dtype:
        raise ValueError(f"decoded {y.dtype} {y.shape}, expected {x.dtype} {x.shape}")
    y64 = to_float64(y)
    with np.errstate(invalid="ignore", over="ignore"):  # NaN/inf tensors give NaN metrics
        m.similarity = M.similarity(x64, y64)
        m.cosine = M.cosine(x64, y64)
        m.rel_l2 = M.rel_l2(x64, y64)
        m.max_abs_error = M.max_abs_error(x64, y64)
        m.psnr = M.psnr(x64, y64)
    m.compress_s, m.decompress_s = tc, td
    m.compress_mbps = m.original_bytes / 1e6 / tc if tc > 0 else math.inf
    m.decompress_mbps = m.original_bytes / 1e6 / td if td > 0 else math.inf
    m.break_even_bps = M.break_even_bandwidth(m.ratio, m.original_bytes, tc + td)
    if m.lossless:
        m.bit_exact = bool(np.array_equal(_bits(x), _bits(y)))
        m.lossless_score = M.lossless_score(m.ratio, tc + td) if m.bit_exact else 0.0
    else:
        m.meets_target = bool(m.similarity > target)
    m.lossy_score = M.lossy_score(m.ratio, m.similarity)


def _warm_up(codec: BaseCodec) -> None:
    """One untimed round trip per dtype, so JIT compilation and lazy imports stay out of
    the timings (the first call of a numba kernel loads or compiles it)."""
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float16, BF16):
        x = rng.standard_normal((64, 64)).astype(dtype)
        with contextlib.suppress(Exception):  # a failing codec is measured (and reported) later
            enc, dec = (codec.encoder(), codec.decoder()) if codec.stream else (codec, codec)
            dec.decode(enc.encode(x))


def _measure_codec(
    label: str,
    codec: BaseCodec,
    entry: Entry,
    x: np.ndarray,
    x64: np.ndarray,
    repeats: int,
    target: float,
) -> Measurement:
    m = _new_measurement(entry, label, "codec", codec.lossless, x)
    try:
        if codec.stream:  # each tensor opens a stream: one encoder and decoder per tensor
            enc, dec = codec.encoder(), codec.decoder()
            repeats = 1
        else:
            enc = dec = codec
        blob, tc, n = best_time(lambda: enc.encode(x, entry.role), repeats)
        y, td, _ = best_time(lambda: dec.decode(blob), repeats)
        m.repeats = n
        _fill_quality(m, x, x64, y, len(blob), tc, td, target)
    except Exception as exc:  # a codec failing on one tensor is a result, not a crash
        m.error = f"{type(exc).__name__}: {exc}"
    return m


def _measure_anchor(
    anchor: Anchor,
    entry: Entry,
    x: np.ndarray,
    x64: np.ndarray,
    repeats: int,
    target: float,
    max_evals: int,
) -> Measurement:
    m = _new_measurement(entry, anchor.name, "anchor", anchor.lossless, x)
    try:
        if isinstance(anchor, LossyAnchor):
            tuned = anchor.tune(x, target, max_evals)
            anchor = tuned.anchor
            m.tuning_evals = tuned.evals
        m.setting = anchor.setting
        a = anchor
        blob, tc, n = best_time(lambda: a.compress(x), repeats)
        y, td, _ = best_time(lambda: a.decompress(blob, x.dtype, x.shape), repeats)
        m.repeats = n
        _fill_quality(m, x, x64, y, len(blob), tc, td, target)
    except Exception as exc:  # an anchor failing on one tensor is a result, not a crash
        m.error = f"{type(exc).__name__}: {exc}"
    return m


def _measure_reference(
    ref: Reference, entry: Entry, x: np.ndarray, x64: np.ndarray, repeats: int, target: float
) -> Measurement:
    m = _new_measurement(entry, ref.name, "reference", True, x)
    m.setting = ref.setting
    try:
        run = ref.run(x, best_time, repeats)
        m.repeats = run.calls
        _fill_quality(
            m, x, x64, run.decoded, run.compressed_bytes, run.compress_s, run.decompress_s, target
        )
    except Exception as exc:  # recorded like any other failure
        m.error = f"{type(exc).__name__}: {exc}"
    return m


def _new_measurement(
    entry: Entry, label: str, kind: str, lossless: bool, x: np.ndarray
) -> Measurement:
    return Measurement(
        tensor=entry.name,
        codec=label,
        kind=kind,
        lossless=lossless,
        family=entry.family,
        role=entry.role,
        dtype=entry.dtype,
        original_bytes=int(x.nbytes),
        model=entry.model,
    )


def _lossless_failure(m: Measurement) -> str | None:
    if not m.lossless:
        return None
    if m.error is not None:
        return f"{m.kind} {m.codec} on {m.tensor}: did not round-trip ({m.error})"
    if m.bit_exact is False:
        return f"{m.kind} {m.codec} on {m.tensor}: claims lossless but is NOT bit-exact"
    return None


def select_entries(corpus: Corpus, quick: bool = False) -> list[Entry]:
    """All entries, or with quick at most QUICK_TENSORS_PER_GROUP per family x model x role
    x dtype (the first ones in corpus order), so every model is in a quick run."""
    if not quick:
        return list(corpus.entries)
    seen: dict[tuple[str, str, str, str], int] = {}
    out = []
    for e in corpus.entries:
        k = (e.family, e.model, e.role, e.dtype)
        if seen.get(k, 0) < QUICK_TENSORS_PER_GROUP:
            seen[k] = seen.get(k, 0) + 1
            out.append(e)
    return out


def sweep_entries(entries: list[Entry]) -> dict[str, Entry]:
    """One typical tensor per role: median size among its bf16 tensors (any dtype if none),
    ties broken by name. Over every model and family: on the default corpus (MiniLM 786 kB,
    SmolLM2 922 kB, synthetic 2 MB) that is SmolLM2-135M-Instruct L05, the real Llama."""
    out: dict[str, Entry] = {}
    for role in dict.fromkeys(e.role for e in entries):
        cands = [e for e in entries if e.role == role]
        bf16 = [e for e in cands if e.dtype == "bfloat16"]
        cands = sorted(bf16 or cands, key=lambda e: (e.nbytes, e.name))
        out[role] = cands[(len(cands) - 1) // 2]
    return out


def _registered(codec_id: str) -> bool:
    try:
        codec_class(codec_id)
    except CodecError:
        return False
    return True


def _sweep_tensor(
    entry: Entry,
    x: np.ndarray,
    anchors: list[Anchor],
    spectrum: _bounds.Spectrum | None,
    quick: bool,
) -> list[SweepPoint]:
    pts: list[SweepPoint] = []

    def add(method: str, setting: str, ratio: float, sim: float) -> None:
        pts.append(SweepPoint(method, setting, entry.name, entry.role, entry.dtype, ratio, sim))

    if _registered("blockq"):
        for bits in BLOCKQ_BITS_QUICK if quick else BLOCKQ_BITS:
            try:
                c = get_codec("blockq", bits=bits)
                blob = c.encode(x, entry.role)
                add("blockq", f"bits={bits}", len(blob) / x.nbytes, M.similarity(x, c.decode(blob)))
            except Exception:  # e.g. non-finite values: no point
                continue
    finite = bool(np.isfinite(np.asarray(x, dtype=np.float32)).all())
    for anchor in anchors:
        if not isinstance(anchor, LossyAnchor) or not finite or x.size == 0:
            continue
        for label, a in anchor.sweep(x, quick):
            try:
                blob = a.compress(x)
                y = a.decompress(blob, x.dtype, x.shape)
                add(anchor.name, label, len(blob) / x.nbytes, M.similarity(x, y))
            except Exception:
                continue
    if spectrum is not None:
        for t in RD_SWEEP_TARGETS:
            rd = _bounds.gaussian_rd_bound(spectrum, t, x.dtype.itemsize)
            add("gaussian-rd-bound", f"sim={t:g}", rd.ratio, t)
    return pts


def run_bench(
    corpus: Corpus | str | Path,
    codecs: list[str] | None = None,
    anchors: bool = True,
    target_similarity: float = 0.99,
    progress: ProgressFn | None = None,
    *,
    references: bool = True,
    quick: bool = False,
    sweep: bool = True,
    max_tune_evals: int | None = None,
    command: str = "",
) -> BenchResult:
    """Measure every codec spec (default: all registered + blockq:bits=4), every anchor
    (anchors=False: none) and the physical references (references=False: none) on every
    tensor of the corpus, plus the bounds; see the module docstring.

    Raises CodecError for an unknown codec or bad spec and CorpusError for a bad corpus,
    before any measurement starts.
    """
    if not 0.0 < target_similarity < 1.0:
        raise ValueError(f"target similarity must be in (0, 1), got {target_similarity}")
    t_start = time.perf_counter()
    if not isinstance(corpus, Corpus):
        corpus = load_corpus(corpus)
    specs = list(dict.fromkeys(codecs if codecs is not None else default_codec_specs()))
    built = [(s, build_codec(s)) for s in specs]
    for _, codec in built:
        _warm_up(codec)
    aset = load_anchors() if anchors else None
    anchor_list = aset.available if aset else []
    refs = load_references() if references else []
    evals = max_tune_evals if max_tune_evals is not None else (8 if quick else 12)
    entries = select_entries(corpus, quick)
    sweepers = sweep_entries(entries) if sweep else {}
    sweep_names = {e.name for e in sweepers.values()}

    total = len(entries) * (len(built) + len(anchor_list) + len(refs) + 1) + len(sweepers)
    done = 0

    def tick(label: str) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total, label)

    tensors: list[TensorMeta] = []
    measurements: list[Measurement] = []
    tbounds: list[_bounds.TensorBounds] = []
    spectra: dict[str, _bounds.Spectrum | None] = {}
    kept: dict[str, np.ndarray] = {}
    for entry in entries:
        x = corpus.load(entry)
        tensors.append(
            TensorMeta(
                entry.name, entry.family, entry.model, entry.layer, entry.role, entry.dtype,
                list(entry.shape), entry.numel, int(x.nbytes),
            )
        )  # fmt: skip
        x64 = to_float64(x)
        reps = repeats_for(x.nbytes, quick)
        with one_thread():  # the timed section: no BLAS/OpenMP worker on a second core
            for label, codec in built:
                measurements.append(
                    _measure_codec(label, codec, entry, x, x64, reps, target_similarity)
                )
                tick(f"{entry.name} · {label}")
            for anchor in anchor_list:
                measurements.append(
                    _measure_anchor(anchor, entry, x, x64, reps, target_similarity, evals)
                )
                tick(f"{entry.name} · {anchor.name}")
            for ref in refs:
                measurements.append(_measure_reference(ref, entry, x, x64, reps, target_similarity))
                tick(f"{entry.name} · {ref.name} (reference)")
        spec: _bounds.Spectrum | None
        try:
            spec = _bounds.channel_spectrum(x)
        except (ValueError, np.linalg.LinAlgError):
            spec = None
        tb = _bounds.tensor_bounds(
            x, target_similarity, tensor=entry.name, family=entry.family, role=entry.role,
            model=entry.model, spectrum=spec,
        )  # fmt: skip
        if spec is None and tb.rd_error is None:
            tb.rd_error = "no channel spectrum (non-finite values)"
        tbounds.append(tb)
        if entry.name in sweep_names:
            spectra[entry.name] = spec
            kept[entry.name] = x
        tick(f"{entry.name} · bounds")

    points: list[SweepPoint] = []
    for role, entry in sweepers.items():
        points += _sweep_tensor(entry, kept[entry.name], anchor_list, spectra[entry.name], quick)
        tick(f"{entry.name} · sweep ({role})")

    failures = [f for m in measurements if (f := _lossless_failure(m)) is not None]
    order = specs + [a.name for a in anchor_list] + [r.name for r in refs]
    typical = sweepers.get("activation") or next(iter(sweepers.values()), None)
    meta: dict[str, Any] = {
        "command": command,
        "machine": machine_info(),
        "corpus": {"root": str(corpus.root), "source": corpus.source, "tensors": len(entries)},
        "target_similarity": target_similarity,
        "codecs": specs,
        "codec_configs": {s: c.get_config() for s, c in built},
        "anchors": {a.name: {"lossless": a.lossless, "library": a.library, "setting": a.setting}
                    for a in anchor_list},
        "anchors_skipped": dict(aset.skipped) if aset else {"all": "disabled (--no-anchors)"},
        "references": {r.name: {"library": r.library, "setting": r.setting} for r in refs},
        "references_skipped": None if references else "disabled (--no-references)",
        "quick": quick,
        "max_tune_evals": evals,
        "sweep_tensors": {r: e.name for r, e in sweepers.items()},
        "typical_tensor": typical.name if typical else None,
        "timing": "time.perf_counter, best of repeats, one core (anchors pinned to one "
                  "thread); lossy-anchor tuning not counted, bf16/fp16 -> f32 conversion counted",
        "threads": describe_threads(),
    }  # fmt: skip
    result = BenchResult(
        meta=meta,
        tensors=tensors,
        measurements=measurements,
        bounds=tbounds,
        sweep=points,
        aggregates=aggregate(measurements, order),
        bound_aggregates=aggregate_bounds(tbounds),
        lossless_failures=failures,
    )
    result.meta["wall_seconds"] = time.perf_counter() - t_start
    return result
