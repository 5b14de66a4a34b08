"""Step time of DDP and pipelining, with and without swarmpress, on emulated links (issue 15).

Two gloo ranks on 127.0.0.1 inside a private network namespace (`unshare -n`) whose loopback
is shaped with a token bucket (`tc qdisc ... tbf`; netem is not in this kernel), once per
rate. The script re-runs itself inside each namespace (`--worker RATE`, internal) and then
writes the tables. Per rate:
- link check: one 1 s transfer rank 0 -> rank 1, then both directions at once (the bucket
  sits on `lo`, so the two directions share it: a 2-rank all-reduce, where both ranks send
  at once, gets the rate between them, not the rate each way);
- DDP: an MLP (1024-1024-1024-10, 2.1 M parameters, 8.4 MB of fp32 gradients) trained with
  SGD, batch 64 per rank: plain DDP against `register_comm_hook(DDPState(codec=C),
  ddp_hook)` for C in topk:density=0.1, topk:density=0.02 and lossy;
- pipelining: two stages (Linear-GELU-Linear | GELU-Linear-GELU-Linear, hidden 1024), batch
  256 in 4 micro-batches, so 64 x 1024 fp32 = 256 KiB per activation and per gradient
  frame: torch's PipelineStage against CompressedPipelineStage(activation="lossy",
  gradient="lossy"), under ScheduleGPipe and Schedule1F1B;
- in both, a "raw" reference row: the hook / the compressed stage with the raw codec (no
  compression), which separates their transport cost from the codec's.
Each configuration runs warm-up steps, then as many timed steps as fit in a few seconds
(between --min-steps and --max-steps), spread over three rounds that visit every variant
of a workload in turn (so load from other jobs on this shared machine falls on all alike);
a step's time is the slower rank's, from a barrier to the end of the optimizer step; the
tables show the median. Bytes per step come from the
codec counters (DDPState.stats(), stage.stats()) and, as a check, from the namespace's own
`lo` counter (/proc/net/dev: both ranks, TCP/IP headers and barriers included).
The codec-only cost (encode + decode per rank per step, one thread, on the same model's
gradient buckets and stage tensors) is measured once in this process, without a network.

Needs root (unshare, tc). Run: python benchmarks/torch_links.py
[--rates 10mbit,100mbit,1gbit,unshaped] [--out docs/results/torch] [--quick]
(`--render docs/results/torch/links.json` rewrites links.md from the JSON alone.)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # after the thread limits
import torch.distributed as dist

ROOT = Path(__file__).resolve().parents[1]
DDP_CODECS = ("topk:density=0.1", "topk:density=0.02", "lossy")
PIPE_CODEC = "lossy"
SCHEDULES = ("ScheduleGPipe", "Schedule1F1B")
# "raw" rows are references: the hook / the compressed stage with no compression (raw
# frames, no error feedback), so a reader can tell their transport cost from the codec's
DDP_NAMES = {None: "plain DDP (all-reduce)", "raw": "hook, raw (no compression)"}
MTU = 9000
# The bucket on lo: tbf drops any packet larger than its burst, and lo's default MTU is
# 64 KiB, so a small burst stalls TCP (seen: 4 KiB and 64 KiB bursts time out at 100 Mbit/s
# and up). So lo gets a 9000-byte (jumbo-frame) MTU, and the burst is the larger of four
# full packets (36 KB, a few packets of slack) and 1 ms at the rate (1 Gbit/s needs 125 KB
# to keep up with the kernel's timer). At 10 and 100 Mbit/s the burst is thus 36 KB, which
# lets at most 29 ms resp. 2.9 ms of traffic pass ahead of the rate after an idle spell.
# `latency` bounds the queue (rate x 100 ms); TCP fills it and backs off on the drops.
QUEUE_LATENCY = "100ms"


def rate_bits(rate: str) -> float:
    """'10mbit' -> 1e7 bits/s (tc's decimal units)."""
    units = {"gbit": 1e9, "mbit": 1e6, "kbit": 1e3}
    for suffix, scale in units.items():
        if rate.endswith(suffix):
            return float(rate[: -len(suffix)]) * scale
    raise ValueError(f"rate {rate!r}: use kbit, mbit or gbit (or 'unshaped')")


def tbf_burst(rate: str) -> int:
    """The bucket size in bytes for a rate (see the comment at MTU)."""
    return max(4 * MTU, int(rate_bits(rate) / 8 * 1e-3))


def namespace_script(rate: str) -> str:
    """The shell line that shapes lo in a fresh network namespace (none for 'unshaped')."""
    steps = ["ip link set lo up", f"ip link set lo mtu {MTU}"]
    if rate != "unshaped":
        steps.append(
            f"tc qdisc add dev lo root tbf rate {rate} burst {tbf_burst(rate)} "
            f"latency {QUEUE_LATENCY}"
        )
    return " && ".join(steps)


# ----------------------------------------------------------------------------- models
def sizes(quick: bool) -> dict[str, int]:
    if quick:
        return {"d_in": 256, "hidden": 256, "d_out": 10, "ddp_batch": 32, "pipe_batch": 64,
                "micro": 4}  # fmt: skip
    return {"d_in": 1024, "hidden": 1024, "d_out": 10, "ddp_batch": 64, "pipe_batch": 256,
            "micro": 4}  # fmt: skip


def ddp_model(s: dict[str, int]) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(s["d_in"], s["hidden"]), torch.nn.GELU(),
        torch.nn.Linear(s["hidden"], s["hidden"]), torch.nn.GELU(),
        torch.nn.Linear(s["hidden"], s["d_out"]),
    )  # fmt: skip


def pipe_stages(s: dict[str, int]) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    h = s["hidden"]
    first = torch.nn.Sequential(
        torch.nn.Linear(s["d_in"], h), torch.nn.GELU(), torch.nn.Linear(h, h)
    )
    second = torch.nn.Sequential(
        torch.nn.GELU(), torch.nn.Linear(h, h), torch.nn.GELU(), torch.nn.Linear(h, s["d_out"])
    )
    return first, second


# ----------------------------------------------------------------------------- worker side
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def lo_tx_bytes() -> int:
    """Bytes sent on this namespace's lo (both ranks, headers included); /proc/net/dev is
    per namespace, /sys/class/net is not (it belongs to whoever mounted sysfs)."""
    for line in Path("/proc/net/dev").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name.strip() == "lo":
            return int(rest.split()[8])
    return 0


def slowest(t: float) -> float:
    """The largest of this value over the ranks."""
    x = torch.tensor([t], dtype=torch.float64)
    dist.all_reduce(x, op=dist.ReduceOp.MAX)
    return float(x.item())


def interleaved(
    variants: list[tuple[Any, Any]], cfg: dict[str, Any], progress: Any
) -> list[dict[str, Any]]:
    """Time several variants of one workload against the same background load.

    variants: (step, mark) pairs; step() runs one training step, mark() (or None) reads the
    variant's counters once every variant is warm. Each variant first runs cfg["warmup"]
    steps; its timed-step count is what fits in cfg["budget_s"] at its last warm-up's pace
    (between min_steps and max_steps; all ranks agree, the pace being the slowest rank's).
    The timed steps are then spread over cfg["rounds"] rounds that visit every variant in
    turn, so a burst of other work on this shared machine falls on all of them alike. A
    step is timed from a barrier to its end; its time is the slowest rank's.
    """
    paces = []
    for step, _ in variants:
        warm = []
        for _ in range(cfg["warmup"]):
            dist.barrier()
            t = time.perf_counter()
            step()
            warm.append(slowest(time.perf_counter() - t))
        paces.append(warm)
    rounds = cfg["rounds"]
    counts = [
        max(cfg["min_steps"], min(cfg["max_steps"], int(cfg["budget_s"] / max(w[-1], 1e-3))))
        for w in paces
    ]
    for _, mark in variants:
        if mark is not None:
            mark()
    times: list[list[float]] = [[] for _ in variants]
    lo = [0] * len(variants)
    for r in range(rounds):
        for v, (step, _) in enumerate(variants):
            k = counts[v] // rounds + (1 if r < counts[v] % rounds else 0)
            if not k:
                continue
            dist.barrier()
            lo0 = lo_tx_bytes()
            for _ in range(k):
                dist.barrier()
                t = time.perf_counter()
                step()
                times[v].append(time.perf_counter() - t)
            lo[v] += lo_tx_bytes() - lo0
        progress(f"round {r + 1}/{rounds}")
    per_rank: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(per_rank, times)
    out = []
    for v in range(len(variants)):
        worst = [max(ts) for ts in zip(*(p[v] for p in per_rank), strict=True)]
        out.append({
            "steps": counts[v],
            "warmup_s": paces[v],
            "step_s": worst,
            "median_s": statistics.median(worst),
            "min_s": min(worst),
            "max_s": max(worst),
            # barriers add a few hundred bytes per step to the workload's own traffic
            "lo_bytes_per_step": lo[v] / counts[v],
        })  # fmt: skip
    return out


def link_check(rank: int, rate: str) -> dict[str, Any]:
    """Achieved rate one way, then both ways at once, with ~1 s of data at the nominal rate."""
    nbytes = 32 << 20 if rate == "unshaped" else int(min(rate_bits(rate) / 8, 32 << 20))
    buf = torch.zeros(nbytes, dtype=torch.uint8)
    back = torch.zeros(nbytes, dtype=torch.uint8)
    ack = torch.zeros(1, dtype=torch.uint8)
    dist.barrier()
    t = time.perf_counter()
    if rank == 0:
        dist.send(buf, 1)
        dist.recv(ack, 1)
    else:
        dist.recv(buf, 0)
        dist.send(ack, 0)
    one_way = time.perf_counter() - t
    dist.barrier()
    t = time.perf_counter()
    works = [dist.isend(buf, 1 - rank), dist.irecv(back, 1 - rank)]
    for w in works:
        w.wait()
    both = slowest(time.perf_counter() - t)
    return {
        "bytes": nbytes,
        "one_way_mbit_s": nbytes * 8 / one_way / 1e6,
        "both_ways_mbit_s_each": nbytes * 8 / both / 1e6,
    }


def ddp_variants(rank: int, s: dict[str, int], cfg: dict, progress: Any) -> list[dict]:
    """Plain DDP, the hook with the raw codec (no compression, no error feedback: the hook's
    own cost) and the hook with each of DDP_CODECS, timed in interleaved rounds."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    from swarmpress.torch import DDPState, ddp_hook

    codecs: list[str | None] = [None, "raw", *DDP_CODECS]
    g = torch.Generator().manual_seed(100 + rank)
    xs = torch.randn(4, s["ddp_batch"], s["d_in"], generator=g)
    ys = torch.randn(4, s["ddp_batch"], s["d_out"], generator=g)
    states, variants, models = [], [], []
    before: list[dict[str, Any]] = []
    for codec in codecs:
        model = DDP(ddp_model(s))
        state = None
        if codec is not None:
            state = DDPState(codec=codec, error_feedback=codec != "raw")
            model.register_comm_hook(state, ddp_hook)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        it = [0]

        def step(model: Any = model, opt: Any = opt, it: list[int] = it) -> None:
            i = it[0] % 4
            it[0] += 1
            loss = torch.nn.functional.mse_loss(model(xs[i]), ys[i])
            opt.zero_grad()
            loss.backward()
            opt.step()

        def mark(state: Any = state) -> None:
            before.append(dict(state.stats()) if state is not None else {})

        states.append(state)
        models.append(model)
        variants.append((step, mark))
    # the warm-up (2 steps by default) matters here: DDP rebuilds its buckets after the first
    # step, and the hook its residuals with them
    results = interleaved(variants, cfg, progress)
    world = dist.get_world_size()
    for codec, state, model, b, res in zip(codecs, states, models, before, results, strict=True):
        grad_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        res["codec"] = codec
        res["variant"] = DDP_NAMES.get(codec, f"hook, {codec}")
        res["grad_bytes"] = grad_bytes
        res["allreduce_bytes_per_rank"] = 2 * (world - 1) * grad_bytes / world
        if state is None:
            res["wire_bytes_per_rank"] = res["allreduce_bytes_per_rank"]
        else:
            after, n = state.stats(), res["steps"]
            res["wire_bytes_per_rank"] = (after["wire_bytes"] - b["wire_bytes"]) / n
            res["buckets_per_step"] = (after["buckets"] - b["buckets"]) / n
            res["hook_allreduce_bytes_per_rank"] = (
                after["allreduce_bytes"] - b["allreduce_bytes"]
            ) / n
    return results


def pipe_variants(
    rank: int, schedule: str, s: dict[str, int], cfg: dict, progress: Any
) -> list[dict[str, Any]]:
    """torch's PipelineStage, CompressedPipelineStage with raw frames (its transport alone)
    and with PIPE_CODEC both ways, under one schedule, timed in interleaved rounds."""
    from torch.distributed import pipelining as pp

    from swarmpress.torch import CompressedPipelineStage

    world = dist.get_world_size()
    mb = s["pipe_batch"] // s["micro"]
    h = s["hidden"]
    g = torch.Generator().manual_seed(7)
    xs = torch.randn(4, s["pipe_batch"], s["d_in"], generator=g)
    ys = torch.randn(4, s["pipe_batch"], s["d_out"], generator=g)
    codecs: list[str | None] = [None, "raw", PIPE_CODEC]
    stages, variants = [], []
    marks: list[tuple[int, int]] = []

    def sent(stage: Any) -> tuple[int, int]:
        """(frames, bytes) this rank's compressed stage sent so far."""
        if not hasattr(stage, "stats"):
            return 0, 0
        st = stage.stats()["activations_sent" if rank == 0 else "gradients_sent"]
        return st["frames"], st["wire_bytes"]

    for codec in codecs:
        module = pipe_stages(s)[rank]
        # static metadata: the second stage's input and the first stage's output carry
        # gradients
        example_in = torch.zeros(mb, s["d_in"] if rank == 0 else h, requires_grad=rank > 0)
        example_out = torch.zeros(mb, h if rank == 0 else s["d_out"], requires_grad=True)
        kw = {"input_args": example_in, "output_args": example_out}
        if codec is None:
            stage = pp.PipelineStage(module, rank, world, torch.device("cpu"), **kw)
        else:
            stage = CompressedPipelineStage(
                module, rank, world, torch.device("cpu"), activation=codec, gradient=codec,
                **kw,
            )  # fmt: skip
        sched = getattr(pp, schedule)(
            stage, n_microbatches=s["micro"], loss_fn=torch.nn.functional.mse_loss
        )
        opt = torch.optim.SGD(module.parameters(), lr=0.01, momentum=0.9)
        it = [0]

        def step(sched: Any = sched, opt: Any = opt, stage: Any = stage, it: Any = it) -> None:
            i = it[0] % 4
            it[0] += 1
            opt.zero_grad()
            if rank == 0:
                sched.step(xs[i])
            else:
                sched.step(target=ys[i])
            opt.step()
            if hasattr(stage, "flush"):
                stage.flush()  # every frame of this step taken before the clock stops

        stages.append(stage)
        variants.append((step, lambda stage=stage: marks.append(sent(stage))))
    results = interleaved(variants, cfg, progress)
    raw = mb * h * 4  # one fp32 activation or gradient of a micro-batch
    for codec, stage, (f0, b0), res in zip(codecs, stages, marks, results, strict=True):
        f1, b1 = sent(stage)
        n = res["steps"]
        counts: list[Any] = [None] * world
        dist.all_gather_object(counts, ((f1 - f0) / n, (b1 - b0) / n))
        res["schedule"] = schedule
        res["codec"] = codec
        res["variant"] = f"CompressedPipelineStage {codec}" if codec else "PipelineStage"
        res["raw_bytes_per_step"] = 2 * s["micro"] * raw
        if codec is None:
            res["frames_per_step"] = 2 * s["micro"]
            res["bytes_per_step"] = 2 * s["micro"] * raw
        else:
            res["frames_per_step"] = sum(c[0] for c in counts)
            # + the 8-byte length message each frame is preceded by
            res["bytes_per_step"] = sum(c[1] for c in counts) + 8 * res["frames_per_step"]
            res["stats"] = stage.stats()
    return results


def worker_rank(rank: int, world: int, port: int, rate: str, cfg: dict, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
        timeout=datetime.timedelta(seconds=600),
    )  # fmt: skip
    s = sizes(cfg["quick"])
    start = time.perf_counter()

    def say(msg: str) -> None:
        if rank == 0:
            print(f"  [{rate} {time.perf_counter() - start:4.0f} s] {msg}", flush=True)

    try:
        result: dict[str, Any] = {"rate": rate, "link": link_check(rank, rate)}
        lc = result["link"]
        say(f"link check: {lc['one_way_mbit_s']:.1f} Mbit/s one way, "
            f"{lc['both_ways_mbit_s_each']:.1f} Mbit/s each way at once")  # fmt: skip
        result["ddp"] = ddp_variants(rank, s, cfg, lambda m: say(f"DDP {m}"))
        for r in result["ddp"]:
            say(f"DDP {r['variant']}: median {r['median_s']:.3f} s over {r['steps']} steps, "
                f"{r['wire_bytes_per_rank'] / 1e6:.3f} MB/rank/step")  # fmt: skip
        result["pipeline"] = []
        for schedule in SCHEDULES:
            rows = pipe_variants(rank, schedule, s, cfg, lambda m, c=schedule: say(f"{c} {m}"))
            result["pipeline"] += rows
            for r in rows:
                say(f"{schedule} {r['variant']}: median {r['median_s']:.3f} s over "
                    f"{r['steps']} steps, {r['frames_per_step']:.0f} frames, "
                    f"{r['bytes_per_step'] / 1e6:.3f} MB/step")  # fmt: skip
        dist.barrier()  # both ranks done before either writes or tears down
        if rank == 0:
            Path(out).write_text(json.dumps(result))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def worker(rate: str, cfg: dict, out: str) -> None:
    """Inside the namespace: the two ranks, spawned."""
    import torch.multiprocessing as mp

    os.environ["GLOO_SOCKET_IFNAME"] = "lo"  # the namespace has no other interface
    mp.spawn(worker_rank, args=(2, free_port(), rate, cfg, out), nprocs=2, join=True)


# ----------------------------------------------------------------------------- codec cost
def _median_s(fn: Any, repeat: int) -> float:
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def codec_cost(cfg: dict) -> dict[str, Any]:
    """Encode + decode seconds per rank per step, one thread, no network: DDP on the
    buckets a one-rank DDP of the same model hands its hook (one encode with error
    feedback, two decodes per bucket, as each of 2 ranks does), pipelining on one
    micro-batch's activation and input gradient (each rank encodes 4 frames and decodes 4)."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    from swarmpress.codecs import ErrorFeedback, Role, decode
    from swarmpress.torch.codecs import stateless

    torch.set_num_threads(1)
    s = sizes(cfg["quick"])
    repeat = 3 if cfg["quick"] else 5
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1
    )
    try:
        model = DDP(ddp_model(s))
        captured: list[torch.Tensor] = []

        def capture(_, bucket):  # type: ignore[no-untyped-def]  (DDP checks the annotation)
            captured.append(bucket.buffer().clone())
            fut: torch.futures.Future[torch.Tensor] = torch.futures.Future()
            fut.set_result(bucket.buffer())
            return fut

        model.register_comm_hook(None, capture)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        g = torch.Generator().manual_seed(100)
        x = torch.randn(s["ddp_batch"], s["d_in"], generator=g)
        y = torch.randn(s["ddp_batch"], s["d_out"], generator=g)
        for _ in range(3):  # the buckets of the third step: after DDP's rebuild
            captured.clear()
            loss = torch.nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        dist.destroy_process_group()
    buckets = list(captured)
    out: dict[str, Any] = {"ddp_buckets": [b.numel() for b in buckets], "ddp": {}}
    for spec in DDP_CODECS:
        codec = stateless(spec, "bench")
        efs = [ErrorFeedback(codec) for _ in buckets]
        for ef, b in zip(efs, buckets, strict=True):
            ef.encode(b, Role.GRADIENT)  # the residuals of a run in progress
        blobs = [ef.encode(b, Role.GRADIENT) for ef, b in zip(efs, buckets, strict=True)]
        enc = _median_s(
            lambda efs=efs: [ef.encode(b, Role.GRADIENT) for ef, b in zip(efs, buckets,
                                                                           strict=True)],
            repeat,
        )  # fmt: skip
        dec = _median_s(lambda blobs=blobs: [decode(b) for b in blobs], repeat)
        out["ddp"][spec] = {"encode_s": enc, "decode_s": 2 * dec, "per_rank_step_s": enc + 2 * dec,
                            "frame_bytes": sum(len(b) for b in blobs)}  # fmt: skip
    first, second = pipe_stages(s)
    mb = s["pipe_batch"] // s["micro"]
    x = torch.randn(mb, s["d_in"], generator=torch.Generator().manual_seed(7))
    act = first(x).detach()
    h = act.clone().requires_grad_(True)
    torch.nn.functional.mse_loss(second(h), torch.zeros(mb, s["d_out"])).backward()
    grad = h.grad.detach()
    codec = stateless(PIPE_CODEC, "bench")
    a_blob, g_blob = codec.encode(act, Role.ACTIVATION), codec.encode(grad, Role.GRADIENT)
    enc_a = _median_s(lambda: codec.encode(act, Role.ACTIVATION), repeat * 4)
    enc_g = _median_s(lambda: codec.encode(grad, Role.GRADIENT), repeat * 4)
    dec_a = _median_s(lambda: decode(a_blob), repeat * 4)
    dec_g = _median_s(lambda: decode(g_blob), repeat * 4)
    m = s["micro"]
    out["pipeline"] = {
        "codec": PIPE_CODEC,
        "activation": {"encode_s": enc_a, "decode_s": dec_a, "frame_bytes": len(a_blob),
                       "raw_bytes": act.numel() * 4},
        "gradient": {"encode_s": enc_g, "decode_s": dec_g, "frame_bytes": len(g_blob),
                     "raw_bytes": grad.numel() * 4},
        # stage 0 encodes the activations and decodes the gradients, stage 1 the reverse
        "stage0_step_s": m * (enc_a + dec_g),
        "stage1_step_s": m * (enc_g + dec_a),
    }  # fmt: skip
    return out


# ----------------------------------------------------------------------------- driver
def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def run_rate(rate: str, cfg: dict, tmp: Path, timeout: int) -> dict[str, Any]:
    """Re-run this script as the worker for one rate inside a fresh shaped namespace."""
    out = tmp / f"{rate}.json"
    qdisc = tmp / f"{rate}.qdisc"
    inner = [sys.executable, str(Path(__file__).resolve()), "--worker", rate,
             "--result", str(out), "--config", json.dumps(cfg)]  # fmt: skip
    script = (f"{namespace_script(rate)} && tc qdisc show dev lo > {shlex.quote(str(qdisc))} "
              f"&& exec {shlex.join(inner)}")  # fmt: skip
    t = time.perf_counter()
    proc = subprocess.run(["unshare", "-n", "sh", "-c", script], timeout=timeout, check=False)
    if not out.exists():
        raise RuntimeError(f"rate {rate}: the namespace run exited with {proc.returncode}")
    result = json.loads(out.read_text())
    # the result is written after every configuration ran and both ranks met at a barrier;
    # a failure after that (process-group teardown) is recorded, not fatal
    result["exit_code"] = proc.returncode
    if proc.returncode != 0:
        print(f"  note: rate {rate} exited with {proc.returncode} after writing its result",
              flush=True)  # fmt: skip
    result["qdisc"] = qdisc.read_text().strip()
    result["namespace_setup"] = namespace_script(rate)
    result["wall_s"] = time.perf_counter() - t
    return result


def fmt_bytes(n: float) -> str:
    if n >= 1e6:
        return f"{n / 1e6:,.2f} MB"
    return f"{n / 1e3:,.1f} kB"


def speedup(base: float, t: float) -> str:
    return f"{base / t:.2f}x"


def report(data: dict[str, Any]) -> str:
    rates = data["rates"]
    m = data["machine"]
    s = data["sizes"]
    lines = [
        "# DDP and pipelining on emulated links, with and without swarmpress (issue 15)",
        "",
        f"Command: `{data['command']}`  ",
        f"Run: {data['started']} (wall {data['wall_s']:.0f} s), load average at start "
        f"{' / '.join(f'{x:.2f}' for x in data['load_average_start'])}, at end "
        f"{' / '.join(f'{x:.2f}' for x in data['load_average_end'])}  ",
        f"Machine: {m['cpu']}, {m['cores']} cores (shared with other jobs), Python "
        f"{m['python']}, torch {m['torch']}, swarmpress {m['swarmpress']}; gloo, 2 ranks, "
        "one torch thread per rank.",
        "",
        "Links: each rate is a private network namespace (`unshare -n`) whose loopback is "
        "shaped by a token bucket (netem is not available in this kernel). The bucket sits on "
        "`lo`, so both directions share it: when both ranks send at once (every DDP step) "
        "each gets about half the rate; the link check below shows it. No delay is added "
        "(loopback RTT is microseconds), so these are bandwidth-bound links, not long ones.",
        "",
        "| rate | qdisc (`tc qdisc show dev lo`) | one way | each way, both at once |",
        "|---|---|---:|---:|",
    ]
    for rate, r in rates.items():
        lc = r["link"]
        lines.append(
            f"| {rate} | `{r['qdisc'] or '(none: unshaped loopback, MTU ' + str(MTU) + ')'}` | "
            f"{lc['one_way_mbit_s']:,.1f} Mbit/s | {lc['both_ways_mbit_s_each']:,.1f} Mbit/s |"
        )
    params = data["ddp_params"]
    lines += [
        "",
        "## DDP",
        "",
        f"MLP {s['d_in']}-{s['hidden']}-{s['hidden']}-{s['d_out']} ({params / 1e6:.2f} M "
        f"parameters, {params * 4 / 1e6:.1f} MB of fp32 gradients), batch {s['ddp_batch']} "
        "per rank, SGD with momentum; the hook is "
        "`model.register_comm_hook(DDPState(codec=C), ddp_hook)` (error feedback on). "
        "bytes/step/rank: for plain DDP the ring all-reduce estimate 2(n-1)/n x gradient "
        "bytes; for the hook DDPState.stats() wire_bytes (the all-gathered frames). lo "
        "bytes/step: what the namespace's `lo` counted per step, both ranks, with TCP/IP "
        "headers. Median step over the timed steps (the slower rank's time per step; the "
        f"variants of a rate take turns in {data['config'].get('rounds', 1)} rounds); "
        "speed-up = plain median / variant median. The raw row is the hook with the raw codec "
        "(no compression, no error feedback): the hook's own cost.",
        "",
        "| rate | variant | median step s | min-max s | steps | bytes/step/rank | of all-reduce "
        "| lo bytes/step | speed-up |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for rate, r in rates.items():
        base = r["ddp"][0]["median_s"]
        for v in r["ddp"]:
            frac = v["wire_bytes_per_rank"] / v["allreduce_bytes_per_rank"]
            lines.append(
                f"| {rate} | {v['variant']} | {v['median_s']:.3f} | "
                f"{v['min_s']:.3f}-{v['max_s']:.3f} | {v['steps']} | "
                f"{fmt_bytes(v['wire_bytes_per_rank'])} | {frac:.3f} | "
                f"{fmt_bytes(v['lo_bytes_per_step'])} | {speedup(base, v['median_s'])} |"
            )
    mb = s["pipe_batch"] // s["micro"]
    lines += [
        "",
        "## Pipelining",
        "",
        f"Two stages, hidden {s['hidden']}, batch {s['pipe_batch']} in {s['micro']} "
        f"micro-batches: each activation and each input gradient is {mb} x {s['hidden']} fp32 "
        f"({mb * s['hidden'] * 4 / 1024:.0f} KiB). torch's `PipelineStage` against "
        f'`CompressedPipelineStage(activation="{PIPE_CODEC}", gradient="{PIPE_CODEC}")`, '
        "static metadata (input_args/output_args). frames and bytes per step: both "
        "directions together (for the compressed stage from stage.stats(), plus the 8-byte "
        "length message before each frame; for torch's stage the raw tensors). The raw rows "
        "are the compressed stage with the raw codec: its transport without compression.",
        "",
        "| rate | schedule | variant | median step s | min-max s | steps | frames/step | "
        "bytes/step | lo bytes/step | speed-up |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for rate, r in rates.items():
        for schedule in SCHEDULES:
            rows = [v for v in r["pipeline"] if v["schedule"] == schedule]
            base = rows[0]["median_s"]
            for v in rows:
                lines.append(
                    f"| {rate} | {schedule} | {v['variant']} | {v['median_s']:.3f} | "
                    f"{v['min_s']:.3f}-{v['max_s']:.3f} | {v['steps']} | "
                    f"{v['frames_per_step']:.0f} | {fmt_bytes(v['bytes_per_step'])} | "
                    f"{fmt_bytes(v['lo_bytes_per_step'])} | {speedup(base, v['median_s'])} |"
                )
    cc = data["codec_cost"]
    pc = cc["pipeline"]
    lines += [
        "",
        "## Codec-only cost",
        "",
        "One thread, no network, same process, median of a few runs. DDP: the buckets a "
        f"one-rank DDP of the same model hands its hook ({len(cc['ddp_buckets'])} buckets of "
        f"{', '.join(f'{n:,}' for n in cc['ddp_buckets'])} values); per rank per step is one "
        "encode (with error feedback) and two decodes per bucket, as in `ddp_hook` with 2 "
        "ranks. Pipelining: one micro-batch's activation and input gradient; per step, stage "
        f"0 encodes {s['micro']} activations and decodes {s['micro']} gradients, stage 1 the "
        "reverse.",
        "",
        "| workload | codec | encode s/step | decode s/step | codec s/step/rank | frame bytes |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for spec, v in cc["ddp"].items():
        lines.append(
            f"| DDP | {spec} | {v['encode_s']:.4f} | {v['decode_s']:.4f} | "
            f"{v['per_rank_step_s']:.4f} | {fmt_bytes(v['frame_bytes'])} |"
        )
    m_ = s["micro"]
    a, gr = pc["activation"], pc["gradient"]
    lines.append(
        f"| pipeline stage 0 | {PIPE_CODEC} | {m_ * a['encode_s']:.4f} | "
        f"{m_ * gr['decode_s']:.4f} | {pc['stage0_step_s']:.4f} | "
        f"{fmt_bytes(a['frame_bytes'])} per activation (of {fmt_bytes(a['raw_bytes'])}) |"
    )
    lines.append(
        f"| pipeline stage 1 | {PIPE_CODEC} | {m_ * gr['encode_s']:.4f} | "
        f"{m_ * a['decode_s']:.4f} | {pc['stage1_step_s']:.4f} | "
        f"{fmt_bytes(gr['frame_bytes'])} per gradient (of {fmt_bytes(gr['raw_bytes'])}) |"
    )
    lines += ["", "## Reading", "", *reading(data)]
    lines += [
        "",
        "Figures: `links.json` next to this file (every step time, warm-up times, codec "
        "counters). Step times on this shared 2-core VM move by several percent between runs; "
        "compare rows of the same rate and run only.",
        "",
    ]
    return "\n".join(lines)


def break_even_mbit(saved_bytes: float, codec_s: float) -> float | None:
    """The shared-bucket rate (Mbit/s) at which the link time saved equals the codec time."""
    return saved_bytes * 8 / codec_s / 1e6 if codec_s > 0 else None


def by_codec(rows: list[dict[str, Any]], codec: str | None) -> dict[str, Any]:
    return next(r for r in rows if r["codec"] == codec)


def reading(data: dict[str, Any]) -> list[str]:
    """Sentences generated from the numbers (so they stay true when the run is redone)."""
    rates = data["rates"]
    cc = data["codec_cost"]
    out = []

    def ups_ddp(codec: str) -> dict[str, float]:
        return {
            rate: by_codec(r["ddp"], None)["median_s"] / by_codec(r["ddp"], codec)["median_s"]
            for rate, r in rates.items()
        }

    def ups_pipe(schedule: str, codec: str) -> dict[str, float]:
        out = {}
        for rate, r in rates.items():
            rows = [v for v in r["pipeline"] if v["schedule"] == schedule]
            out[rate] = by_codec(rows, None)["median_s"] / by_codec(rows, codec)["median_s"]
        return out

    def listing(ups: dict[str, float]) -> str:
        return ", ".join(f"{u:.2f}x at {rate}" for rate, u in ups.items())

    for codec in DDP_CODECS:
        ups = ups_ddp(codec)
        wins = [rate for rate, u in ups.items() if u > 1.05]
        loses = [rate for rate, u in ups.items() if u < 0.95]
        row = by_codec(next(iter(rates.values()))["ddp"], codec)
        # both ranks push their bytes through the one bucket: saved = 2 x per-rank saving
        saved = 2 * (row["allreduce_bytes_per_rank"] - row["wire_bytes_per_rank"])
        be = break_even_mbit(saved, cc["ddp"][codec]["per_rank_step_s"])
        out.append(
            f"- DDP {codec}: {listing(ups)} (faster at {', '.join(wins) or 'no rate'}; "
            f"slower at {', '.join(loses) or 'no rate'}). It sends "
            f"{row['wire_bytes_per_rank'] / row['allreduce_bytes_per_rank']:.3f} of the "
            f"all-reduce's bytes and costs {cc['ddp'][codec]['per_rank_step_s']:.3f} s of codec "
            "work per rank per step on one thread: the bytes it saves are worth that much link "
            f"time at about {be:,.0f} Mbit/s (shared bucket), its break-even estimate."
        )
    out.append(
        f"- DDP hook with the raw codec (same bytes as the all-reduce): {listing(ups_ddp('raw'))}"
        ": the hook's own cost (two all-gathers per bucket, frames copied and decoded on the "
        "host, the mean taken in Python) before any codec work."
    )
    for schedule in SCHEDULES:
        out.append(
            f"- Pipelining, {schedule}: {PIPE_CODEC} both ways "
            f"{listing(ups_pipe(schedule, PIPE_CODEC))}; the stage with raw frames "
            f"{listing(ups_pipe(schedule, 'raw'))}."
        )
    pc = cc["pipeline"]
    row = by_codec(next(iter(rates.values()))["pipeline"], PIPE_CODEC)
    saved = row["raw_bytes_per_step"] - row["bytes_per_step"]
    codec_s = pc["stage0_step_s"] + pc["stage1_step_s"]
    be = break_even_mbit(saved, codec_s)
    out.append(
        f"- The pipeline's frames carry {row['bytes_per_step'] / row['raw_bytes_per_step']:.3f} "
        f"of the raw bytes; the codec work of a step is {pc['stage0_step_s']:.4f} s on stage 0 "
        f"and {pc['stage1_step_s']:.4f} s on stage 1, mostly on the critical path (a frame is "
        "encoded before it leaves and decoded before the next stage computes); on codec time "
        f"alone the saving would pay below about {be:,.0f} Mbit/s."
    )
    fastest = list(rates)[-1]
    raw_ups = [ups_pipe(schedule, "raw")[fastest] for schedule in SCHEDULES]
    if min(raw_ups) < 0.95:
        out.append(
            f"- At {fastest} the raw rows ({', '.join(f'{u:.2f}x' for u in raw_ups)}) show "
            "the compressed stage's transport (a length message and a frame per tensor, host "
            "copies, sends and receives outside torch's batched P2P) costs time of its own, "
            "on top of the codec's, which moves the crossover lower than that estimate."
        )
    unshaped = rates.get("unshaped")
    if unshaped:
        out.append(
            f"- Unshaped loopback (no bucket: {unshaped['link']['one_way_mbit_s']:,.0f} Mbit/s "
            f"one way) shows the floor: plain DDP {unshaped['ddp'][0]['median_s']:.3f} s/step, "
            f"torch's pipeline {unshaped['pipeline'][0]['median_s']:.3f} s/step (GPipe); there "
            "every codec only adds its own time."
        )
    out += [
        "- Caveats: the two ranks share 2 cores with other jobs (load average above), so two "
        "encodes at once can take longer than the one-thread codec figures, and the "
        "compressed rows, whose codec work needs those cores, move most between runs (repeat "
        "a run before trusting a difference under about 1.5x); the bucket on `lo` is shared "
        "by both directions (a 10 Mbit/s row is 10 Mbit/s in total, 5 each way when both "
        f"send); no latency is added; the tbf burst lets up to {4 * MTU / 1000:.0f} kB pass "
        "ahead of the rate after an idle spell (29 ms at 10 Mbit/s), which flatters small "
        "frames a little at the lowest rate. Only time and bytes are measured here: whether "
        "top-k at these densities trains as well is a separate question (the loss tests in "
        "tests/torch check convergence on a small task).",
    ]
    if any(r.get("exit_code") for r in rates.values()):
        bad = [rate for rate, r in rates.items() if r.get("exit_code")]
        out.append(
            f"- The namespace run of {', '.join(bad)} exited non-zero after writing its "
            "result (a worker aborted at process-group teardown, after the last barrier); the "
            "figures were complete."
        )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rates", default="10mbit,100mbit,1gbit,unshaped",
                   help="tc rates (kbit/mbit/gbit) and/or 'unshaped', comma-separated")  # fmt: skip
    p.add_argument("--out", default=None, help="directory for links.md and links.json "
                   "(default docs/results/torch; with --quick a temporary directory)")  # fmt: skip
    p.add_argument("--quick", action="store_true", help="smoke run: small model, few steps")
    p.add_argument("--budget-s", type=float, default=None, help="timed seconds per config")
    p.add_argument("--min-steps", type=int, default=None)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--timeout", type=int, default=900, help="seconds per rate before giving up")
    p.add_argument("--render", metavar="JSON", help="only rewrite links.md from a links.json")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args.worker, json.loads(args.config), args.result)
        return 0
    if args.render:
        src = Path(args.render)
        (src.parent / "links.md").write_text(report(json.loads(src.read_text())))
        print(f"wrote {src.parent / 'links.md'}")
        return 0

    cfg = {
        "quick": args.quick,
        "warmup": 1 if args.quick else 2,
        "budget_s": args.budget_s if args.budget_s is not None else (1.0 if args.quick else 6.0),
        "min_steps": args.min_steps or (2 if args.quick else 3),
        "max_steps": args.max_steps or (3 if args.quick else 30),
        "rounds": 2 if args.quick else 3,
    }
    rates = [r.strip() for r in args.rates.split(",") if r.strip()]
    for r in rates:
        if r != "unshaped":
            rate_bits(r)
    if os.geteuid() != 0:
        print("needs root: unshare -n and tc shape a private loopback", file=sys.stderr)
        return 2
    out_dir = Path(args.out) if args.out else (
        Path(tempfile.mkdtemp(prefix="torch_links_")) if args.quick
        else ROOT / "docs" / "results" / "torch"
    )  # fmt: skip
    from importlib.metadata import version

    started = time.perf_counter()
    load_start = list(os.getloadavg())
    data: dict[str, Any] = {
        "command": shlex.join(
            ["python", "benchmarks/torch_links.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "started": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load_average_start": load_start,
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "swarmpress": version("swarmpress"),
            "kernel": platform.release(),
        },
        "config": cfg,
        "sizes": sizes(args.quick),
        "ddp_params": sum(p.numel() for p in ddp_model(sizes(args.quick)).parameters()),
        "tbf": {
            "mtu": MTU,
            "latency": QUEUE_LATENCY,
            "burst_bytes": {r: tbf_burst(r) for r in rates if r != "unshaped"},
        },
        "rates": {},
    }
    print(f"load average {load_start}; codec-only cost ...", flush=True)
    data["codec_cost"] = codec_cost(cfg)
    for spec, v in data["codec_cost"]["ddp"].items():
        print(f"  DDP {spec}: {v['per_rank_step_s']:.4f} s/rank/step", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for rate in rates:
            print(f"rate {rate}: {namespace_script(rate)}", flush=True)
            data["rates"][rate] = run_rate(rate, cfg, Path(tmp), args.timeout)
            print(f"  done in {data['rates'][rate]['wall_s']:.0f} s", flush=True)
    data["load_average_end"] = list(os.getloadavg())
    data["wall_s"] = time.perf_counter() - started
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "links.json").write_text(json.dumps(data, indent=1) + "\n")
    (out_dir / "links.md").write_text(report(data))
    print(f"wrote {out_dir / 'links.md'} and links.json ({data['wall_s']:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
