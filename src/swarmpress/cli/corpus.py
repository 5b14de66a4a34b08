"""`swarmpress corpus ...`: build activation/gradient corpora from real models, and export
one in the Apex layout."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Group
from rich.text import Text

from swarmpress.cli.common import fail
from swarmpress.cli.options import JsonOpt, opt
from swarmpress.cli.output import emit, progress, table

corpus_app = typer.Typer(
    help="Build activation/gradient corpora from real models.", no_args_is_help=True
)


def _parse_layers(spec: str | None) -> list[int] | None:
    if spec is None:
        return None
    try:
        layers = [int(p) for p in spec.replace(" ", "").split(",") if p]
    except ValueError:
        raise fail(
            f"--layers takes comma-separated integers such as 0,2,4,6, not {spec!r}"
        ) from None
    if not layers:
        raise fail("--layers is empty; pass boundaries such as 0,2,4,6")
    return layers


_SHORT = {"activation": "act", "gradient": "grad", "bfloat16": "bf16", "float32": "f32"}


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" or n >= 100 else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"  # pragma: no cover


def _corpus_table(path, rows: list[dict]):
    from rich import box

    cells = [
        (r["model"], str(r["layer"]), _SHORT.get(r["role"], r["role"]),
         _SHORT.get(r["dtype"], r["dtype"]), "x".join(str(s) for s in r["shape"]),
         human_bytes(r["bytes"]), f"{r['rms']:.3g}",
         f"{r['absmax']:.3g}" + ("" if r["finite"] else " NON-FINITE"))
        for r in rows
    ]  # fmt: skip
    t = table(("model", "L", "role", "dtype", "shape", "size", "rms", "absmax"), cells,
              title=f"corpus {path}", right=("L", "size", "rms", "absmax"),
              box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)  # fmt: skip
    for col in t.columns:
        col.no_wrap = True
    return t


ModelOpt = opt(str, "--model", "'minilm' (all-MiniLM-L6-v2), 'smollm2' (SmolLM2-135M-Instruct), "
               "a local .gguf file or a model directory.")  # fmt: skip
LayersOpt = opt(str | None, "--layers", "Boundaries, e.g. 0,2,4,6 (0 = embeddings).")
TextOpt = opt(str | None, "--text", "A .txt file or directory (default: pydoc_data.topics).")
NoSyntheticOpt = opt(bool, "--no-synthetic", "Skip the synthetic Llama-like stress-case family.")
ApexOpt = opt(str | None, "--apex", "Also export the corpus in the Apex layout here.")


@corpus_app.command("build")
def corpus_build_cmd(
    out: Annotated[str, typer.Option("--out", help="Corpus directory to write.")],
    model: ModelOpt = "minilm",
    layers: LayersOpt = None,
    text: TextOpt = None,
    seqs: Annotated[int, typer.Option("--seqs", help="Sequences per tensor.")] = 4,
    seq_len: Annotated[int, typer.Option("--seq-len", help="Tokens per sequence.")] = 256,
    seed: Annotated[int, typer.Option("--seed", help="Seed for text choice and generators.")] = 0,
    no_synthetic: NoSyntheticOpt = False,
    apex: ApexOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Capture activations and gradients from a real model (plus the synthetic stress case)."""
    import time

    from swarmpress.corpus.build import build_corpus, summarize

    layer_list = _parse_layers(layers)
    start = time.perf_counter()
    with progress("starting", hide=as_json) as steps:
        path = build_corpus(
            out, model=model, layers=layer_list, text=text, seqs=seqs, seq_len=seq_len,
            seed=seed, synthetic=not no_synthetic,
            progress=lambda desc, done, total: steps.update(desc, completed=done, total=total),
        )  # fmt: skip
    rows = summarize(path)
    apex_csv = None
    if apex is not None:
        from swarmpress.corpus.apex import export_apex

        apex_csv = export_apex(path, apex)
    seconds = time.perf_counter() - start
    total = sum(r["bytes"] for r in rows)
    summary = {
        "out": str(path),
        "seconds": round(seconds, 3),
        "total_bytes": total,
        "apex_manifest": str(apex_csv) if apex_csv else None,
        "tensors": rows,
    }
    line = f"{len(rows)} tensors, {human_bytes(total)}, built in {seconds:.1f} s -> {path}"
    line += f"; Apex export: {apex_csv}" if apex_csv else ""
    emit(summary, as_json, lambda: Group(_corpus_table(path, rows), Text(line)))


@corpus_app.command("export-apex")
def corpus_export_apex_cmd(
    corpus_dir: Annotated[str, typer.Argument(help="Corpus directory (with manifest.json).")],
    out_dir: Annotated[str, typer.Argument(help="Directory for the .bin files and manifest.csv.")],
    as_json: JsonOpt = False,
) -> None:
    """Write each tensor as flat little-endian bf16 .bin plus manifest.csv (Apex layout)."""
    import csv

    from swarmpress.corpus.apex import export_apex

    csv_path = export_apex(corpus_dir, out_dir)
    with csv_path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    total = sum(2 * int(r["numel"]) for r in rows)
    emit({"manifest": str(csv_path), "files": len(rows), "bytes": total}, as_json,
         lambda: f"wrote {len(rows)} bf16 files ({human_bytes(total)}) and {csv_path}")  # fmt: skip
