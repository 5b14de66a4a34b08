"""Thread scaling of the default `lossy` codec: encode and decode speed at 1..N threads.

On the SmolLM2 tensors of the default corpus (bf16, 1 x 800 x 576), each codec setting is
timed by wall clock (best of --repeat), with 1 thread measured in the same run as the
baseline, and the frames are checked to be identical across thread counts.
Run: python benchmarks/threads.py [--threads 1,2] [--repeat 7] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from rich.console import Console
from rich.table import Table

import swarmpress as sp
from swarmpress.corpus.build import default_corpus
from swarmpress.corpus.store import load_corpus


def best_of(fn, repeat: int) -> float:
    """Shortest wall-clock time of fn over repeat runs."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", default="1,2", help="thread counts to time, e.g. 1,2,4")
    p.add_argument("--codec", default="lossy", help="codec spec (default: lossy)")
    p.add_argument("--model", default="SmolLM2-135M-Instruct", help="corpus model to use")
    p.add_argument("--repeat", type=int, default=7, help="runs per figure (best is kept)")
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args()
    counts = [int(t) for t in args.threads.split(",")]
    corpus = load_corpus(default_corpus())
    entries = [e for e in corpus.entries if e.model == args.model and e.dtype == "bfloat16"]
    if not entries:
        print(f"no bf16 tensors of model {args.model!r} in the default corpus", file=sys.stderr)
        return 2
    tensors = [corpus.load(e) for e in entries]
    total = sum(t.nbytes for t in tensors)
    rows = []
    frames0 = None
    for n in counts:
        codec = sp.get_codec(args.codec, threads=n)
        frames = [codec.encode(t) for t in tensors]
        if frames0 is None:
            frames0 = frames
        identical = frames == frames0
        enc = sum(best_of(lambda t=t, c=codec: c.encode(t), args.repeat) for t in tensors)
        dec = sum(best_of(lambda f=f, c=codec: c.decode(f), args.repeat) for f in frames)
        rows.append(
            {
                "threads": n,
                "encode_mbps": total / enc / 1e6,
                "decode_mbps": total / dec / 1e6,
                "identical_frames": identical,
            }
        )
    base = rows[0]
    for r in rows:
        r["encode_speedup"] = r["encode_mbps"] / base["encode_mbps"]
        r["decode_speedup"] = r["decode_mbps"] / base["decode_mbps"]
    table = Table(
        title=f"{args.codec} on {len(tensors)} {args.model} bf16 tensors ({total / 1e6:.1f} MB)"
    )
    for col in ("threads", "encode MB/s", "decode MB/s", "speed-up enc/dec", "same frames"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            str(r["threads"]),
            f"{r['encode_mbps']:.0f}",
            f"{r['decode_mbps']:.0f}",
            f"{r['encode_speedup']:.2f}x / {r['decode_speedup']:.2f}x",
            "yes" if r["identical_frames"] else "NO",
        )
    Console().print(table)
    if args.json:
        meta = {"codec": args.codec, "model": args.model, "tensors": len(tensors), "bytes": total}
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, "rows": rows}, fh, indent=2)
    return 0 if all(r["identical_frames"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
