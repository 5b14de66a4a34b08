"""Stateful streaming benchmark: `lossy-stream` over N tensors from one pipeline boundary.

Captures N consecutive batches at one layer boundary of a real model (default: MiniLM on
pydoc_data.topics, the embedded corpus's model and text), then codes them in order with
`lossy-stream` (one encoder, one decoder, the decoder following from the frames alone),
with stateless `lossy` on each tensor, and reports both next to the bench's Gaussian KLT
bound for every tensor. Run: python benchmarks/stream_bench.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

import swarmpress as sp
from swarmpress.bench.bounds import tensor_bounds
from swarmpress.codecs.core.tensors import BF16
from swarmpress.corpus.capture import capture


def _batches(model: str, layer: int, n: int, batch: int, seq_len: int, role: str, seed: int):
    cap = capture(model, layers=[layer], seqs=n * batch, seq_len=seq_len, seed=seed)
    t = (cap.activations if role == "activation" else cap.gradients)[layer]
    import torch

    arr = t.to(torch.bfloat16).view(torch.int16).numpy().view(BF16)
    return [np.ascontiguousarray(arr[i * batch : (i + 1) * batch]) for i in range(n)]


def run(args: argparse.Namespace) -> dict:
    """Code the stream; return every per-tensor figure and the means."""
    tensors = _batches(
        args.model, args.layer, args.tensors, args.batch, args.seq_len, args.role, args.seed
    )
    stream = sp.get_codec("lossy-stream")
    enc, dec = stream.encoder(), stream.decoder()
    stateless = sp.get_codec("lossy")
    rows = []
    with Progress(transient=True) as progress:
        task = progress.add_task("coding the stream", total=len(tensors))
        for i, x in enumerate(tensors):
            t0 = time.perf_counter()
            blob = enc.encode(x, role=args.role)
            t1 = time.perf_counter()
            y = dec.decode(blob)
            t2 = time.perf_counter()
            plain = stateless.encode(x, role=args.role)
            rows.append(
                {
                    "index": i,
                    "stream_ratio": len(blob) / x.nbytes,
                    "stream_similarity": sp.similarity(x, y),
                    "stateless_ratio": len(plain) / x.nbytes,
                    "klt_bound_ratio": tensor_bounds(x, 0.99).rd.ratio,
                    "encode_s": t1 - t0,
                    "decode_s": t2 - t1,
                }
            )
            progress.advance(task)
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "index"}
    mean["min_stream_similarity"] = float(min(r["stream_similarity"] for r in rows))
    return {
        "command": " ".join(["python", *sys.argv]),
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "settings": vars(args),
        "tensors": rows,
        "mean": mean,
        "gap_to_bound": mean["stream_ratio"] - mean["klt_bound_ratio"],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="minilm", help="model name or local directory")
    p.add_argument("--layer", type=int, default=3, help="hidden_states boundary index")
    p.add_argument("--role", choices=("activation", "gradient"), default="activation")
    p.add_argument("--tensors", type=int, default=24, help="stream length")
    p.add_argument("--batch", type=int, default=4, help="sequences per tensor")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", metavar="FILE", help="write every figure as JSON")
    args = p.parse_args()
    result = run(args)
    table = Table(title=f"lossy-stream, {args.tensors} x {args.role} at layer {args.layer}")
    for col in ("tensor", "stream", "stateless", "KLT bound", "sim", "enc s", "dec s"):
        table.add_column(col, justify="right")
    for r in result["tensors"]:
        table.add_row(
            str(r["index"]),
            f"{r['stream_ratio']:.4f}",
            f"{r['stateless_ratio']:.4f}",
            f"{r['klt_bound_ratio']:.4f}",
            f"{r['stream_similarity']:.5f}",
            f"{r['encode_s']:.2f}",
            f"{r['decode_s']:.2f}",
        )
    m = result["mean"]
    table.add_row(
        "mean",
        f"{m['stream_ratio']:.4f}",
        f"{m['stateless_ratio']:.4f}",
        f"{m['klt_bound_ratio']:.4f}",
        f"{m['min_stream_similarity']:.5f}",
        "",
        "",
    )
    Console().print(table)
    Console().print(f"gap to the KLT bound: {result['gap_to_bound']:+.4f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
