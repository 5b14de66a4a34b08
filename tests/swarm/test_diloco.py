"""DiLoCo outer optimizer: pseudo-gradients, the Nesterov outer step, replica agreement."""

import pytest
import torch
from torch import nn

from swarmpress.swarm.diloco import OuterOptimizer, flat, unflat


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3, bias=False))


def _perturb(model: nn.Module, seed: int, scale: float = 0.1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


def _weights(model: nn.Module) -> torch.Tensor:
    return flat([p.detach() for p in model.parameters()])


def test_flat_and_unflat_are_inverse():
    like = [torch.randn(2, 3), torch.randn(4), torch.randn(1, 1, 2)]
    vec = flat(like)
    assert vec.shape == (6 + 4 + 2,)
    back = unflat(vec, like)
    for a, b in zip(like, back, strict=True):
        assert torch.equal(a, b)


def test_numel_counts_every_parameter():
    model = _model()
    assert OuterOptimizer(model).numel == 6 * 5 + 5 + 5 * 3


def test_pseudo_gradient_is_anchor_minus_weights():
    model = _model()
    outer = OuterOptimizer(model)
    anchor = _weights(model).clone()
    assert torch.equal(outer.pseudo_gradient(), torch.zeros_like(anchor))
    _perturb(model, seed=1)
    pg = outer.pseudo_gradient()
    assert pg.dtype == torch.float32
    assert pg.shape == (outer.numel,)
    torch.testing.assert_close(pg, anchor - _weights(model), rtol=0, atol=0)
    assert pg.abs().sum() > 0


def test_the_anchor_is_a_copy_not_the_weights():
    model = _model()
    outer = OuterOptimizer(model)
    before = flat(outer.anchor).clone()
    _perturb(model, seed=2)
    assert torch.equal(flat(outer.anchor), before)


def test_step_with_unit_lr_and_no_momentum_moves_to_anchor_minus_delta():
    model = _model()
    outer = OuterOptimizer(model, lr=1.0, momentum=0.0)
    anchor = _weights(model).clone()
    _perturb(model, seed=3)  # local training happened; the step starts from the anchor
    delta = torch.randn(outer.numel)
    outer.step(delta)
    torch.testing.assert_close(_weights(model), anchor - delta)
    # the weights are the new anchor: the next pseudo-gradient is zero
    assert torch.equal(outer.pseudo_gradient(), torch.zeros(outer.numel))


def test_nesterov_momentum_accumulates():
    model = _model()
    lr, mu = 0.5, 0.9
    outer = OuterOptimizer(model, lr=lr, momentum=mu)
    w0 = _weights(model).clone()
    d = torch.randn(outer.numel)
    outer.step(d)  # m = d; step = lr * (d + mu * d)
    torch.testing.assert_close(_weights(model), w0 - lr * (1 + mu) * d)
    w1 = _weights(model).clone()
    outer.step(d)  # m = mu * d + d; step = lr * (d + mu * m)
    m = mu * d + d
    torch.testing.assert_close(_weights(model), w1 - lr * (d + mu * m))


def test_two_replicas_with_the_same_average_end_bit_identical():
    a, b = _model(seed=0), _model(seed=0)
    oa, ob = OuterOptimizer(a), OuterOptimizer(b)
    for rnd in range(3):
        _perturb(a, seed=10 + rnd)  # each replica trains on its own data
        _perturb(b, seed=20 + rnd)
        deltas = [oa.pseudo_gradient(), ob.pseudo_gradient()]
        assert not torch.equal(deltas[0], deltas[1])
        mean = (deltas[0] + deltas[1]) / 2  # the same frames, summed in the same order
        oa.step(mean.clone())
        ob.step(mean.clone())
        assert torch.equal(_weights(a), _weights(b))
        assert torch.equal(flat(oa.momentum), flat(ob.momentum))


@pytest.mark.parametrize("extra", [-1, 1])
def test_a_wrong_size_delta_is_refused(extra):
    model = _model()
    outer = OuterOptimizer(model)
    before = _weights(model).clone()
    with pytest.raises(ValueError, match=f"{outer.numel + extra} values, stage has {outer.numel}"):
        outer.step(torch.zeros(outer.numel + extra))
    assert torch.equal(_weights(model), before)


def test_state_and_load_round_trip():
    src = _model(seed=0)
    outer = OuterOptimizer(src, lr=0.7, momentum=0.9)
    _perturb(src, seed=4)
    outer.step(outer.pseudo_gradient())
    _perturb(src, seed=5)
    state = {k: [t.clone() for t in v] for k, v in outer.state().items()}
    assert flat(state["momentum"]).abs().sum() > 0

    dst = _model(seed=1)  # a fresh replica joining
    joined = OuterOptimizer(dst, lr=0.7, momentum=0.9)
    joined.load(state)
    assert torch.equal(flat(joined.anchor), flat(state["anchor"]))
    assert torch.equal(flat(joined.momentum), flat(state["momentum"]))
    # with the same weights too, both take the same next step
    with torch.no_grad():
        for p, q in zip(dst.parameters(), src.parameters(), strict=True):
            p.copy_(q)
    d = torch.randn(outer.numel)
    outer.step(d.clone())
    joined.step(d.clone())
    assert torch.equal(_weights(src), _weights(dst))


def test_load_of_a_mismatched_state_is_refused():
    outer = OuterOptimizer(_model())
    other = OuterOptimizer(nn.Linear(2, 2))
    with pytest.raises((ValueError, RuntimeError)):
        outer.load(other.state())
