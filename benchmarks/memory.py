"""Peak memory of each codec's encode and decode, as a multiple of the input tensor's size.

Measured with tracemalloc, which sees numpy's and Python's allocations (not those inside
constriction's, zstd's or LAPACK's native code), on one activation tensor of the embedded
corpus per dtype (float16: the float32 tensor, rounded). Each codec encodes and decodes the
tensor once first (imports, JIT, caches); the next call is measured. With --frames N the next
N calls are measured and the largest peak is reported: for a stream codec (and topk behind
its error feedback) that covers its steady-state frames as well as the one after the
warm-up (for `lossy-stream`, frame 1 carries a new channels x channels basis, which the
decoder keeps).
Run: python benchmarks/memory.py [--codecs topk,lossy-stream] [--frames N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import tracemalloc

import numpy as np
from rich.console import Console
from rich.table import Table

import swarmpress as sp
from swarmpress.bench.specs import build_codec, default_codec_specs, split_codec_list
from swarmpress.corpus.build import default_corpus
from swarmpress.corpus.store import load_corpus


def peak(fn) -> tuple[object, int]:
    """(result, peak bytes allocated while fn ran)."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    out = fn()
    _, top = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return out, top


def _ends(codec):
    """(encoder, decoder): a stream codec's two ends, topk behind its error feedback (how
    it is used), any other codec itself."""
    if codec.stream:
        return codec.encoder(), codec.decoder()
    if codec.codec_id == "topk":
        return sp.codecs.ErrorFeedback(codec), codec
    return codec, codec


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--codecs", metavar="SPECS", help="comma-separated codec specs (default: all)")
    p.add_argument("--frames", type=int, default=1, metavar="N", help="calls measured (max)")
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args()
    specs = split_codec_list(args.codecs) if args.codecs else default_codec_specs()
    corpus = load_corpus(default_corpus())
    tensors = []
    for d in ("bfloat16", "float32"):
        entry = corpus.select(role="activation", dtype=d, layer=3)[0]
        tensors.append((entry.name, corpus.load(entry)))
    name, x32 = tensors[-1]
    tensors.append((name.replace("float32", "float16"), x32.astype(np.float16)))
    rows = []
    for tensor_name, x in tensors:
        for spec in specs:
            codec = build_codec(spec)
            enc, dec = _ends(codec)
            dec.decode(enc.encode(x))  # warm-up: imports, JIT, caches (a stream's first frame)
            enc_peak = dec_peak = 0
            for _ in range(max(1, args.frames)):
                blob, e = peak(lambda c=enc, t=x: c.encode(t))
                _, d = peak(lambda c=dec, b=blob: c.decode(b))
                enc_peak, dec_peak = max(enc_peak, e), max(dec_peak, d)
            rows.append(
                {
                    "codec": spec,
                    "tensor": tensor_name,
                    "input_bytes": x.nbytes,
                    "frames": max(1, args.frames),
                    "encode_peak_x": enc_peak / x.nbytes,
                    "decode_peak_x": dec_peak / x.nbytes,
                }
            )
    title = "peak memory / input size (tracemalloc)"
    if args.frames > 1:
        title += f", largest of {args.frames} calls"
    table = Table(title=title)
    for col in ("codec", "tensor", "encode", "decode"):
        table.add_column(col)
    for r in rows:
        mark = lambda v: f"{v:.2f}" + (" !" if v > 3 else "")  # noqa: E731
        table.add_row(r["codec"], r["tensor"], mark(r["encode_peak_x"]), mark(r["decode_peak_x"]))
    Console().print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": " ".join(["python", *sys.argv]), "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
