"""Multi-process jobs for the torch integration tests: gloo on loopback, 2-4 ranks.

Each job runs in processes started by torch.multiprocessing.spawn and writes its results
as JSON for the test to check; nothing here is timed.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _peak_kib() -> int:
    """This process's peak resident memory (VmHWM, KiB): unlike ru_maxrss it does not start
    at the peak of the process that spawned it (Linux carries that across the exec)."""
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, world: int, port: int, fn: Callable[..., Any], out: str, kw: dict) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    result = fn(rank, world, **kw)
    Path(f"{out}.{rank}").write_text(json.dumps(result))
    # Every rank is done before any tears down, and the process ends without running
    # C++ destructors: gloo's threads sometimes abort the interpreter's teardown
    # ("terminate called without an active exception") after all the work is done.
    dist.barrier()
    dist.destroy_process_group()
    os._exit(0)


def run(fn: Callable[..., Any], world: int, tmp: Path, **kw: Any) -> list[Any]:
    """fn(rank, world, **kw) on `world` gloo ranks; each rank's JSON-able result."""
    out = str(tmp / f"{fn.__name__}")
    mp.spawn(_entry, args=(world, free_port(), fn, out, kw), nprocs=world, join=True)
    return [json.loads(Path(f"{out}.{r}").read_text()) for r in range(world)]


# ----------------------------------------------------------------------------- DDP
def regression(seed: int, n: int = 4096, d: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples (seed) of one smooth regression task that a small MLP learns in ~100 steps."""
    w = torch.randn(d, 8, generator=torch.Generator().manual_seed(1234)) / d**0.5
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = 2.0 * torch.tanh(x @ w) + 0.1 * torch.randn(n, 8, generator=g)
    return x, y


def mlp(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(32, 256), torch.nn.GELU(), torch.nn.Linear(256, 8))


def ddp_job(rank: int, world: int, codecs: list, steps: int, lr: float) -> dict:
    """Train the same model on the same data once per codec (None: plain DDP)."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    from swarmpress.torch import DDPState, ddp_hook

    x, y = regression(0)
    xe, ye = regression(1, n=1024)
    out = {}
    for codec in codecs:
        model = DDP(mlp(0))
        state = None
        if codec is not None:
            state = DDPState(codec=codec)
            model.register_comm_hook(state, ddp_hook)
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
        g = torch.Generator().manual_seed(100 + rank)
        losses = []
        for _ in range(steps):
            idx = torch.randint(0, x.shape[0], (64,), generator=g)
            loss = torch.nn.functional.mse_loss(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        with torch.no_grad():
            eval_loss = torch.nn.functional.mse_loss(model.module(xe), ye).item()
        params = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        out[str(codec)] = {
            "eval_loss": eval_loss,
            "first_loss": losses[0],
            "param_sum": float(params.double().sum()),
            "stats": None if state is None else state.stats(),
        }
    return out


# ----------------------------------------------------------------------------- pipelining
def _halves(seed: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(seed)
    first = torch.nn.Sequential(
        torch.nn.Linear(32, 128), torch.nn.GELU(), torch.nn.Linear(128, 128)
    )
    second = torch.nn.Sequential(torch.nn.GELU(), torch.nn.Linear(128, 8))
    return first, second


def pipeline_job(rank: int, world: int, schedules: list, codecs: list, steps: int) -> dict:
    """A 2-stage pipeline trained once per (schedule, codec); codec None: torch's own stage."""
    from torch.distributed import pipelining as pp

    from swarmpress.torch import CompressedPipelineStage

    x, y = regression(0)
    xe, ye = regression(1, n=1024)
    micro, batch = 4, 64
    out = {}
    for schedule in schedules:
        for codec in codecs:
            module = _halves(0)[rank]
            # the metadata torch needs in its static mode: the second stage's input and the
            # first stage's output carry gradients
            example_in = torch.zeros(batch // micro, 32 if rank == 0 else 128,
                                     requires_grad=rank > 0)  # fmt: skip
            example_out = torch.zeros(batch // micro, 128 if rank == 0 else 8, requires_grad=True)
            if codec is None:
                stage = pp.PipelineStage(
                    module, rank, world, torch.device("cpu"), input_args=example_in,
                    output_args=example_out,
                )  # fmt: skip
            else:
                stage = CompressedPipelineStage(
                    module, rank, world, torch.device("cpu"), input_args=example_in,
                    output_args=example_out, activation=codec, gradient=codec,
                )  # fmt: skip
            loss_fn = torch.nn.functional.mse_loss
            sched = getattr(pp, schedule)(stage, n_microbatches=micro, loss_fn=loss_fn)
            opt = torch.optim.SGD(module.parameters(), lr=0.05, momentum=0.9)
            g = torch.Generator().manual_seed(7)
            for _ in range(steps):
                idx = torch.randint(0, x.shape[0], (batch,), generator=g)
                opt.zero_grad()
                if rank == 0:
                    sched.step(x[idx])
                else:
                    sched.step(target=y[idx])
                opt.step()
            result = {"stats": stage.stats() if codec is not None else None}
            # evaluation: the same pipeline, forward only, on held-out samples
            with torch.no_grad():
                if rank == 0:
                    result["eval_in"] = None
                    dist.send(module(xe), 1)
                else:
                    h = torch.empty(xe.shape[0], 128)
                    dist.recv(h, 0)
                    result["eval_loss"] = torch.nn.functional.mse_loss(module(h), ye).item()
            if hasattr(stage, "flush"):
                stage.flush()
            out[f"{schedule}/{codec}"] = result
    return out


# ----------------------------------------------------------------------------- send / recv
def p2p_job(rank: int, world: int) -> dict:
    """Rank 0 sends tensors of each dtype and codec to every other rank, blocking and not;
    the receivers report what arrived."""
    from swarmpress.torch import irecv, isend, recv, send

    g = torch.Generator().manual_seed(3)
    cases = [
        ("lossless", torch.randn(64, 48, generator=g).to(torch.bfloat16)),
        ("lossy", torch.randn(128, 96, generator=g)),
        ("lossless:mode=fast", torch.randn(7, 5, 3, generator=g).half()),
        ("topk:density=0.1", torch.randn(4096, generator=g)),
    ]
    out: dict[str, Any] = {"bytes": 0, "got": []}
    if rank == 0:
        for dst in range(1, world):
            for spec, t in cases:
                out["bytes"] += send(t, dst, codec=spec)
            pending = [isend(t, dst, codec=spec, tag=5) for spec, t in cases]
            out["bytes"] += sum(p.wait() for p in pending)
        return out
    for _ in range(2):
        tag = 0 if not out["got"] else 5
        pend = [irecv(0, tag=tag) for _ in cases] if tag else None
        for i, (spec, t) in enumerate(cases):
            y = pend[i].wait() if pend else recv(0, tag=tag)
            exact = bool(torch.equal(y, t))
            err = float((y.float() - t.float()).norm() / t.float().norm())
            out["got"].append([spec, str(y.dtype), list(y.shape), exact, err])
    return out


# ----------------------------------------------------------------------------- forged peers
def forged_peer_job(rank: int, world: int) -> dict:
    """Rank 0 plays a forged peer with raw torch.distributed sends; rank 1 receives with
    swarmpress and reports what each receive did (and its peak memory)."""

    from swarmpress.torch import irecv, recv, send

    def raw(length: int, payload: bytes, tag: int = 0) -> None:
        dist.send(torch.tensor([length], dtype=torch.int64), 1, tag=tag)
        if payload:
            dist.send(torch.frombuffer(bytearray(payload), dtype=torch.uint8), 1, tag=tag)

    good = torch.randn(64, 64, generator=torch.Generator().manual_seed(0))
    if rank == 0:
        raw(6 << 30, b"x" * 10)  # declares 6 GiB, sends 10 bytes
        raw(-1, b"")  # a negative length
        raw(100, bytes(range(100)))  # garbage of the declared length
        send(good, 1, codec="lossless")
        raw(100, bytes(100), tag=3)  # irecv: a bad frame, then a good one on the channel
        send(good, 1, codec="lossless", tag=3)
        send(good, 1, codec="lossless", tag=4)  # group None and WORLD: one channel
        send(good * 2, 1, codec="lossless", tag=4)
        dist.barrier()
        return {}
    out: dict[str, Any] = {"errors": []}
    before = _peak_kib()
    for _ in range(3):
        try:
            recv(0)
            out["errors"].append(None)
        except Exception as exc:  # the test checks the type and message
            out["errors"].append([type(exc).__name__, str(exc)])
    out["rss_growth_kib"] = _peak_kib() - before
    out["good"] = bool(torch.equal(recv(0), good))
    a, b = irecv(0, tag=3), irecv(0, tag=3)
    try:
        a.wait()
        out["a"] = None
    except Exception as exc:
        out["a"] = [type(exc).__name__, str(exc)]
    out["b"] = bool(torch.equal(b.wait(), good))
    c, d = irecv(0, tag=4), irecv(0, group=dist.group.WORLD, tag=4)
    out["c_d"] = [bool(torch.equal(d.wait(), good * 2)), bool(torch.equal(c.wait(), good))]
    dist.barrier()
    return out


def ddp_nonfinite_job(rank: int, world: int) -> dict:
    """One rank's gradients turn infinite at step 3: every rank must see the same
    non-finite mean (as plain DDP gives) and training goes on."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    from swarmpress.torch import DDPState, ddp_hook

    model = DDP(mlp(0))
    state = DDPState(codec="topk:density=0.1")
    model.register_comm_hook(state, ddp_hook)
    finite = []
    for step in range(6):
        x = torch.randn(16, 32, generator=torch.Generator().manual_seed(step))
        if step == 3 and rank == 1:
            x[0, 0] = float("inf")
        loss = model(x).sum()
        model.zero_grad()
        loss.backward()
        finite.append(all(bool(torch.isfinite(p.grad).all()) for p in model.parameters()))
    return {"finite": finite, "fallbacks": state.fallbacks}
