"""`lossy` with the tensor on a CUDA device against the host path, same run, same tensors.

The default `lossy` codec quantizes a CUDA tensor where it lives (lossy_torch.py): only the
integer codes and a few sampled rows cross to the host, where the rANS coder packs them.
This script measures that path against the host path (the tensor copied to the host first,
as a caller without the device path would do) on every bf16 corpus tensor, as captured and
stacked to a pipeline batch, and checks that a device frame decodes to the same bits on
the device and on the host.

    python benchmarks/gpu.py --corpus DIR [--stack 1,16] [--threads 1,4] [--repeat 5]
                             [--json out.json]

Exit codes: 0 measured, 2 no CUDA device, 1 a check failed (bits or target).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np


def _best(fn, repeat: int) -> tuple[float, object]:
    """(fastest wall time of repeat calls, last result); CUDA is synchronised around each."""
    import torch

    best, out = float("inf"), None
    for _ in range(repeat):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best, out


class _CoderClock:
    """Time spent in the host rANS coder during device encodes (the rest is device passes,
    transfers and Python)."""

    def __init__(self) -> None:
        from swarmpress.codecs.families.lossy import fast as lossy_fast

        self.total = 0.0
        self.real = lossy_fast.encode_values

        def timed(*a, **k):
            t0 = time.perf_counter()
            try:
                return self.real(*a, **k)
            finally:
                self.total += time.perf_counter() - t0

        lossy_fast.encode_values = timed


def _bits(t) -> np.ndarray:
    import torch

    t = t.detach().cpu().contiguous()
    return (t.view(torch.int16) if t.dtype != torch.float32 else t).numpy().reshape(-1)


def _device_dequantizer_agrees(blob: bytes, dev) -> bool:
    """The device dequantizer (the encoder's model of the decoder) gives the host's bits."""
    import math

    import swarmpress as sp
    from swarmpress.codecs.core import frame
    from swarmpress.codecs.families.lossy import codec as lossy
    from swarmpress.codecs.families.lossy import device as lossy_torch

    fr = frame.unpack(blob)
    rows, chans, _ = lossy.fast_plan(fr.shape, math.prod(fr.shape))
    got = lossy_torch.decode(memoryview(fr.payload)[1:], fr.dtype, fr.shape, rows, chans, dev)
    return bool(np.array_equal(_bits(got), _bits(sp.decode(blob))))


def measure(corpus: Path, stacks: list[int], repeat: int, device: str = "cuda",
            threads: int = 1) -> list[dict]:  # fmt: skip
    """One row per (tensor, stack): host and device encode/decode speeds, ratios, checks."""
    import torch

    import swarmpress as sp
    from swarmpress.corpus.store import load_corpus

    dev = torch.device(device)
    codec = sp.get_codec(f"lossy:threads={threads}")
    clock = _CoderClock()
    c = load_corpus(corpus)
    rows = []
    for e in c.entries:
        if e.dtype != "bfloat16":
            continue
        base = torch.from_numpy(c.load(e).view(np.int16)).view(torch.bfloat16)
        for s in stacks:
            host = torch.cat([base] * s) if s > 1 else base
            cuda = host.to(dev)
            mb = host.numel() * 2 / 1e6
            codec.encode(cuda)  # warm-up: kernels compiled, tables cached
            codec.encode(host)
            clock.total = 0.0
            t_denc, blob_d = _best(lambda c=cuda: codec.encode(c), repeat)
            coder = clock.total / repeat
            t_henc, blob_h = _best(lambda c=cuda: codec.encode(c.cpu()), repeat)
            t_ddec, y_d = _best(lambda b=blob_d: codec.decode(b, device=dev), repeat)
            t_hdec, _y = _best(lambda b=blob_h: codec.decode(b).to(dev), repeat)
            same = _device_dequantizer_agrees(blob_d, dev)
            sim = float(sp.similarity(host, y_d.cpu()))
            rows.append({
                "tensor": e.name, "model": e.model, "role": e.role, "layer": e.layer,
                "shape": list(host.shape), "stack": s, "threads": threads, "mbytes": round(mb, 3),
                "ratio_device": len(blob_d) / (2 * host.numel()),
                "ratio_host": len(blob_h) / (2 * host.numel()),
                "similarity_device": sim,
                "device_dequantizer_matches_host_bits": same,
                "encode_mbps_device": mb / t_denc, "encode_mbps_host": mb / t_henc,
                "decode_mbps_device": mb / t_ddec, "decode_mbps_host": mb / t_hdec,
                "host_coder_share_of_device_encode": coder / t_denc,
            })  # fmt: skip
            r = rows[-1]
            print(
                f"{e.name[:44]:44s} x{s:<3d} t{threads:<2d} {mb:7.2f} MB  "
                f"ratio dev {r['ratio_device']:.3f} "
                f"host {r['ratio_host']:.3f}  enc {r['encode_mbps_device']:7.0f}/"
                f"{r['encode_mbps_host']:5.0f}  dec {r['decode_mbps_device']:7.0f}/"
                f"{r['decode_mbps_host']:5.0f} MB/s (device/host)  coder "
                f"{100 * r['host_coder_share_of_device_encode']:3.0f}%  bits {same}  "
                f"sim {sim:.4f}",
                flush=True,
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, required=True, help="corpus directory (manifest.json)")
    ap.add_argument("--stack", default="1,16", help="row-stacking factors (pipeline batches)")
    ap.add_argument("--repeat", type=int, default=5, help="timed calls per figure (fastest kept)")
    ap.add_argument("--threads", default="1", help="host threads for the coder, e.g. 1,4")
    ap.add_argument("--json", type=Path, help="write the rows and the machine here")
    a = ap.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device: nothing to measure", file=sys.stderr)
        return 2
    stacks = [int(s) for s in a.stack.split(",")]
    rows = [r for t in a.threads.split(",") for r in measure(a.corpus, stacks, a.repeat,
                                                           threads=int(t))]  # fmt: skip
    machine = {
        "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
        "host_threads": a.threads, "cpu_count": os.cpu_count(), "numpy": np.__version__,
    }  # fmt: skip
    if a.json:
        a.json.write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))
    bad = [r for r in rows if not r["device_dequantizer_matches_host_bits"]]
    bad += [r for r in rows if r["similarity_device"] <= 0.99]
    for r in bad:
        print(f"FAILED: {r['tensor']} x{r['stack']}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
