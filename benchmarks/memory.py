"""Peak memory of each codec's encode and decode, as a multiple of the input tensor's size.

Measured with tracemalloc, which sees numpy's and Python's allocations (not those inside
constriction's or zstd's native code), on one tensor of the embedded corpus per dtype.
Run: python benchmarks/memory.py [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import tracemalloc

from rich.console import Console
from rich.table import Table

from swarmpress.bench.specs import build_codec, default_codec_specs
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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args()
    corpus = load_corpus(default_corpus())
    picks = [corpus.select(role="activation", dtype=d, layer=3)[0] for d in ("bfloat16", "float32")]
    rows = []
    for entry in picks:
        x = corpus.load(entry)
        for spec in default_codec_specs():
            codec = build_codec(spec)
            codec.decode(codec.encode(x))  # warm-up: imports, JIT, caches
            blob, enc_peak = peak(lambda c=codec, t=x: c.encode(t))
            _, dec_peak = peak(lambda c=codec, b=blob: c.decode(b))
            rows.append(
                {
                    "codec": spec,
                    "tensor": entry.name,
                    "input_bytes": x.nbytes,
                    "encode_peak_x": enc_peak / x.nbytes,
                    "decode_peak_x": dec_peak / x.nbytes,
                }
            )
    table = Table(title="peak memory / input size (tracemalloc)")
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
