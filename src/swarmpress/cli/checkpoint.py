"""`swarmpress checkpoint ...`: compress a .safetensors checkpoint tensor by tensor and give
it back byte for byte (the library: swarmpress.torch.checkpoint, docs/checkpoint.md)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Group
from rich.text import Text

from swarmpress.cli.options import JsonOpt, opt
from swarmpress.cli.output import emit, progress, table

checkpoint_app = typer.Typer(
    help="Compress safetensors checkpoints losslessly, tensor by tensor, and give them back "
    "byte for byte. bf16/fp16/fp32 tensors go through a lossless swarmpress codec, other "
    "dtypes through Zstandard; each tensor is one checked frame.",
    epilog="Exit codes: 0 success, 1 a tensor did not decode to the bytes it was compressed "
    "from, 2 bad input (not a safetensors or checkpoint file, truncated, corrupted, a header "
    "that lies, an output that exists without --force).",
    no_args_is_help=True,
)

ThreadsOpt = opt(int, "--threads", "Tensors coded at once (memory: about this many tensors).",
                 min=1)  # fmt: skip
ForceOpt = opt(bool, "--force", "Replace OUT if it exists.")
InArg = Annotated[str, typer.Argument(help="The file to read.", show_default=False)]


def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


def _render(summary: dict[str, Any], line: str) -> Group:
    from rich import box

    rows = [
        (dtype, row["tensors"], _mb(row["bytes"]), _mb(row["compressed"]), f"{row['ratio']:.4f}")
        for dtype, row in summary["by_dtype"].items()
    ]
    t = table(("dtype", "tensors", "original", "compressed", "ratio"), rows,
              right=("tensors", "original", "compressed", "ratio"), box=box.SIMPLE_HEAD,
              pad_edge=False)  # fmt: skip
    return Group(t, Text(line))


def _line(r: dict[str, Any], verb: str) -> str:
    return (
        f"{verb} {r['tensors']} tensors: {_mb(r['original_bytes'])} original, "
        f"{_mb(r['compressed_bytes'])} compressed, ratio {r['ratio']:.4f}, "
        f"{r['seconds']:.2f} s ({r['mb_per_s']:,.0f} MB/s of original bytes)"
    )


@checkpoint_app.command("compress")
def compress_cmd(
    src: InArg,
    dst: Annotated[str, typer.Argument(help="The compressed checkpoint to write.")],
    codec: Annotated[
        str | None,
        typer.Option(
            "--codec",
            help="Lossless codec spec for bf16/fp16/fp32 tensors "
            "(default: lossless:mode=fast; lossless, zstd, raw ...).",
            show_default=False,
        ),
    ] = None,
    threads: ThreadsOpt = 1,
    force: ForceOpt = False,
    verify: Annotated[
        bool, typer.Option("--verify", help="Decode every tensor again and check it (exit 1).")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Compress IN.safetensors into OUT, tensor by tensor (bit-exact)."""
    from swarmpress.torch.checkpoint import DEFAULT_CODEC, compress_checkpoint, verify_checkpoint

    with progress("compressing", hide=as_json) as steps:
        report = compress_checkpoint(
            src, dst, codec=codec or DEFAULT_CODEC, threads=threads, force=force,
            progress=lambda name, done, total: steps.update(name, completed=done, total=total),
        )  # fmt: skip
    summary = report.to_dict()
    line = _line(summary, "compressed") + f" -> {dst}"
    if verify:
        with progress("verifying", hide=as_json) as steps:
            checked = verify_checkpoint(
                dst, threads=threads,
                progress=lambda name, done, total: steps.update(name, completed=done, total=total),
            )  # fmt: skip
        summary["verified"] = {"seconds": round(checked.seconds, 4), "ok": True}
        line += f"; verified in {checked.seconds:.2f} s"
    emit(summary, as_json, lambda: _render(summary, line))


@checkpoint_app.command("decompress")
def decompress_cmd(
    src: InArg,
    dst: Annotated[str, typer.Argument(help="The .safetensors file to write.")],
    threads: ThreadsOpt = 1,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Give back the original .safetensors file of IN, byte for byte, as OUT."""
    from swarmpress.torch.checkpoint import decompress_checkpoint

    with progress("decompressing", hide=as_json) as steps:
        report = decompress_checkpoint(
            src, dst, threads=threads, force=force,
            progress=lambda name, done, total: steps.update(name, completed=done, total=total),
        )  # fmt: skip
    summary = report.to_dict()
    emit(summary, as_json, lambda: _render(summary, _line(summary, "decompressed") + f" -> {dst}"))


@checkpoint_app.command("verify")
def verify_cmd(src: InArg, threads: ThreadsOpt = 1, as_json: JsonOpt = False) -> None:
    """Decode every tensor of IN and check it against its original bytes' CRC (exit 1 if not)."""
    from swarmpress.torch.checkpoint import verify_checkpoint

    with progress("verifying", hide=as_json) as steps:
        report = verify_checkpoint(
            src, threads=threads,
            progress=lambda name, done, total: steps.update(name, completed=done, total=total),
        )  # fmt: skip
    summary = report.to_dict()
    emit(summary, as_json, lambda: _render(summary, _line(summary, "verified")))


@checkpoint_app.command("info")
def info_cmd(src: InArg, as_json: JsonOpt = False) -> None:
    """List the tensors of a compressed checkpoint: dtype, shape, sizes, frame kind."""
    from swarmpress.torch.checkpoint import CheckpointReader

    with CheckpointReader(src) as reader:
        rows = reader.describe()
        doc = {
            "path": str(reader.path),
            "original_bytes": reader.original_size,
            "compressed_bytes": reader.size,
            "metadata": reader.metadata,
            "tensors": rows,
        }

    def render() -> Any:
        cells = [
            (r["name"], r["dtype"], "x".join(map(str, r["shape"])) or "scalar", r["bytes"],
             r["compressed"], f"{r['compressed'] / r['bytes']:.3f}" if r["bytes"] else "-",
             r["kind"])
            for r in rows
        ]  # fmt: skip
        t = table(("tensor", "dtype", "shape", "bytes", "compressed", "ratio", "frame"), cells,
                  title=str(reader.path), right=("bytes", "compressed", "ratio"))  # fmt: skip
        ratio = reader.size / reader.original_size
        return Group(t, Text(f"{len(rows)} tensors, ratio {ratio:.4f}"))

    emit(doc, as_json, render)
