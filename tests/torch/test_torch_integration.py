"""swarmpress inside PyTorch training: Boundary, send/recv, DDP hook, pipelining stages.

The distributed tests run real gloo process groups on loopback (2-3 processes, spawned);
they compare training with and without compression on the same model, data and seed.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import swarmpress as sp
from swarmpress.torch import Boundary, DDPState
from tests.torch.jobs import (
    ddp_job,
    ddp_nonfinite_job,
    forged_peer_job,
    mlp,
    p2p_job,
    pipeline_job,
    regression,
    run,
)


# ----------------------------------------------------------------------------- Boundary
def _train(boundary: Boundary | None, steps: int = 150) -> tuple[float, list[torch.Tensor]]:
    x, y = regression(0)
    xe, ye = regression(1, n=1024)
    torch.manual_seed(0)
    first = torch.nn.Sequential(torch.nn.Linear(32, 128), torch.nn.GELU())
    second = torch.nn.Linear(128, 8)
    cut = boundary if boundary is not None else torch.nn.Identity()
    model = torch.nn.Sequential(first, cut, second)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(5)
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (64,), generator=g)
        loss = torch.nn.functional.mse_loss(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return torch.nn.functional.mse_loss(model(xe), ye).item(), [
            p.detach().clone() for p in first.parameters()
        ]


def test_boundary_trains_like_no_boundary_and_counts_bytes():
    plain, _ = _train(None)
    b = Boundary(activation="lossy", gradient="lossy")
    compressed, _ = _train(b)
    assert abs(compressed - plain) / plain < 0.01, (compressed, plain)
    stats = b.stats()
    # 150 training steps each way, and one more activation: the evaluation's forward pass
    for direction, frames in (("activation", 151), ("gradient", 150)):
        s = stats[direction]
        assert s["frames"] == frames and s["raw_bytes"] == 150 * 64 * 128 * 4 + (
            1024 * 128 * 4 if direction == "activation" else 0)  # fmt: skip
        assert 0 < s["ratio"] < 0.5


def test_gradients_reach_the_parameters_before_the_boundary():
    b = Boundary(activation="lossy", gradient="lossy")
    lin = torch.nn.Linear(16, 32)
    x = torch.randn(8, 16)
    b(lin(x)).pow(2).sum().backward()
    ref = torch.nn.Linear(16, 32)
    ref.load_state_dict(lin.state_dict())
    ref(x).pow(2).sum().backward()
    g, want = lin.weight.grad, ref.weight.grad
    assert g is not None and float(torch.nn.functional.cosine_similarity(
        g.reshape(1, -1), want.reshape(1, -1))) > 0.98  # fmt: skip


def test_a_lossless_boundary_is_exact_and_none_passes_through():
    x = torch.randn(16, 24, requires_grad=True)
    b = Boundary(activation="lossless", gradient="lossless")
    y = b(x)
    assert torch.equal(y, x)
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))
    off = Boundary(activation=None, gradient=None)
    z = torch.randn(4, 4, requires_grad=True)
    assert torch.equal(off(z), z)
    assert off.stats() == {"activation": None, "gradient": None}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_boundary_under_autocast_keeps_the_dtype(dtype):
    lin1, lin2 = torch.nn.Linear(32, 64), torch.nn.Linear(64, 4)
    b = Boundary()
    with torch.autocast("cpu", dtype=dtype):
        h = b(lin1(torch.randn(16, 32)))
        assert h.dtype == dtype
        lin2(h).float().sum().backward()
    assert lin1.weight.grad is not None and torch.isfinite(lin1.weight.grad).all()
    assert b.stats()["gradient"]["raw_bytes"] == 16 * 64 * 2


def test_boundary_follows_a_stream_codec_in_order():
    b = Boundary(activation="lossy-stream", gradient=None)
    rng = np.random.default_rng(0)
    mix = torch.from_numpy(rng.standard_normal((64, 64)) * np.exp(-np.arange(64) / 8)[:, None])
    for _ in range(4):
        x = (torch.randn(256, 64, dtype=torch.float64) @ mix).float()
        assert sp.similarity(x.numpy(), b(x).numpy()) > 0.99
    assert b.stats()["activation"]["frames"] == 4


def test_boundary_refuses_what_it_cannot_carry():
    with pytest.raises(sp.CodecError, match="floating-point"):
        Boundary()(torch.arange(4))
    with pytest.raises(sp.CodecError, match="unknown codec"):
        Boundary(activation="nosuch")


# ----------------------------------------------------------------------------- send / recv
def test_send_and_recv_between_three_ranks(tmp_path):
    res = run(p2p_job, 3, tmp_path)
    assert res[0]["bytes"] > 0
    for r in res[1:]:
        assert len(r["got"]) == 8
        for spec, dtype, _shape, exact, err in r["got"]:
            if spec.startswith("lossless"):
                assert exact, spec
            elif spec == "lossy":
                assert err < 0.15, (spec, err)  # similarity 0.99 ~ relative error near 0.1
            assert dtype in ("torch.bfloat16", "torch.float32", "torch.float16")
        assert [g[2] for g in r["got"][:4]] == [[64, 48], [128, 96], [7, 5, 3], [4096]]


# ----------------------------------------------------------------------------- DDP
@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory):
    """Plain DDP and the hook with topk and lossy: same model, data and seeds, 300 steps."""
    codecs = [None, "topk:density=0.1", "lossy"]
    return run(ddp_job, 2, tmp_path_factory.mktemp("ddp"), codecs=codecs, steps=300, lr=0.05)


@pytest.mark.parametrize(("codec", "budget"), [("topk:density=0.1", 0.10), ("lossy", 0.40)])
def test_ddp_hook_trains_like_plain_ddp_with_a_fraction_of_the_bytes(ddp_runs, codec, budget):
    plain = ddp_runs[0]["None"]["eval_loss"]
    got = ddp_runs[0][codec]
    assert abs(got["eval_loss"] - plain) / plain < 0.01, (got["eval_loss"], plain)
    assert got["eval_loss"] < 0.2 * got["first_loss"]  # it learnt
    stats = got["stats"]
    assert stats["buckets"] >= 300 and stats["fraction_of_allreduce"] < budget
    # every rank applied the same decoded frames: the replicas are identical
    assert ddp_runs[0][codec]["param_sum"] == ddp_runs[1][codec]["param_sum"]


def test_ddp_state_saves_and_restores_its_residuals():
    model = mlp(0)
    state = DDPState(codec="topk:density=0.05")
    x = torch.randn(64, 32)
    grads = torch.cat([p.reshape(-1) for p in torch.autograd.grad(model(x).sum(),
                                                                  model.parameters())])  # fmt: skip
    enc = state.encoder(0, grads.numel())
    enc.encode(grads)
    saved = state.state_dict()
    again = DDPState(codec="topk:density=0.05")
    again.load_state_dict(saved)
    a, b = state.encoder(0, grads.numel()), again.encoder(0, grads.numel())
    assert a.encode(grads) == b.encode(grads)
    with pytest.raises(sp.CodecError, match="codec"):
        DDPState(codec="lossy").load_state_dict(saved)
    with pytest.raises(sp.CodecError, match="stream codec"):
        DDPState(codec="lossy-stream")


# ----------------------------------------------------------------------------- pipelining
@pytest.fixture(scope="module")
def pipeline_runs(tmp_path_factory):
    return run(pipeline_job, 2, tmp_path_factory.mktemp("pp"),
               schedules=["ScheduleGPipe", "Schedule1F1B"], codecs=[None, "lossy"],
               steps=100)  # fmt: skip


@pytest.mark.parametrize("schedule", ["ScheduleGPipe", "Schedule1F1B"])
def test_compressed_pipeline_trains_like_the_uncompressed_one(pipeline_runs, schedule):
    plain = pipeline_runs[1][f"{schedule}/None"]["eval_loss"]
    got = pipeline_runs[1][f"{schedule}/lossy"]["eval_loss"]
    assert abs(got - plain) / plain < 0.01, (got, plain)
    first, last = pipeline_runs[0][f"{schedule}/lossy"]["stats"], pipeline_runs[1][
        f"{schedule}/lossy"]["stats"]  # fmt: skip
    # 100 steps x 4 micro-batches: every activation and gradient crossed as a frame
    assert first["activations_sent"]["frames"] == last["activations_received"]["frames"] == 400
    assert last["gradients_sent"]["frames"] == first["gradients_received"]["frames"] == 400
    assert first["activations_sent"]["ratio"] < 0.5 and last["gradients_sent"]["ratio"] < 0.5


# ----------------------------------------------------------------------------- hostile peers
def test_forged_peers_get_clear_errors_and_cannot_make_the_receiver_allocate(tmp_path):
    res = run(forged_peer_job, 2, tmp_path)[1]
    declared, negative, garbage = res["errors"]
    assert declared[0] == "CodecError" and "magic" in declared[1]
    assert res["rss_growth_kib"] < 512 * 1024  # 6 GiB declared, 10 bytes sent
    assert negative[0] == "CodecError" and "declared a -1-byte frame" in negative[1]
    assert garbage[0] == "CodecError"
    assert res["good"]
    # a bad frame on an irecv channel fails its own handle; the next one still arrives
    assert res["a"][0] == "CodecError" and res["b"]
    assert res["c_d"] == [True, True]  # group=None and group=WORLD are one channel


def test_a_non_finite_bucket_reaches_every_rank_as_plain_ddp_would(tmp_path):
    res = run(ddp_nonfinite_job, 2, tmp_path)
    for r in res:  # the same verdict on every rank, and the run goes on
        assert r["finite"] == [True, True, True, False, True, True]
    assert res[1]["fallbacks"] >= 1


def test_ddp_state_goes_through_torch_save_and_load(tmp_path):
    state = DDPState(codec="topk:density=0.05")
    state.encoder(0, 5000).encode(torch.randn(5000))
    torch.save(state.state_dict(), tmp_path / "s.pt")
    again = DDPState(codec="topk:density=0.05")
    again.load_state_dict(torch.load(tmp_path / "s.pt"))  # weights_only=True by default
    g = torch.randn(5000)
    assert state.encoder(0, 5000).encode(g) == again.encoder(0, 5000).encode(g)
    bad = state.state_dict()
    for feedback, word in (({"abc": {}}, "bucket index"), ({1.7: {}}, "bucket index")):
        with pytest.raises(sp.CodecError, match=word):
            DDPState(codec="topk:density=0.05").load_state_dict({**bad, "feedback": feedback})
    with pytest.raises(sp.CodecError, match="steps"):
        DDPState(codec="topk:density=0.05").load_state_dict(
            {**bad, "counters": {**bad["counters"], "steps": 1.9}}
        )


@pytest.mark.filterwarnings("ignore:.*script_method.*:DeprecationWarning")  # torch's own import
def test_boundary_refuses_double_backward_and_meta_and_compiles():
    b = Boundary("lossless", "lossless")
    x = torch.randn(4, 4, requires_grad=True)
    (g,) = torch.autograd.grad((b(x) * x).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        g.sum().backward()
    with pytest.raises(sp.CodecError, match="meta"):
        b(torch.empty(4, 4, device="meta"))
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), Boundary(), torch.nn.Linear(8, 2))
    out = torch.compile(model)(torch.randn(4, 8))
    out.sum().backward()
    assert model[0].weight.grad is not None
