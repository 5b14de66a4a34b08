"""The `uplink` preset: one replica per stage, so its DiLoCo outer step must leave the
weights as they are (nothing to merge), and its codec must shrink bf16 traffic."""

from __future__ import annotations

import torch
from torch import nn

from swarmpress.codecs import Role
from swarmpress.swarm.config import build_config
from swarmpress.swarm.diloco import OuterOptimizer
from swarmpress.swarm.role_codecs import WIRE_DTYPES, RoleCodecs
from swarmpress.swarm.tensors import decode_tensor


def test_the_outer_step_of_a_single_replica_keeps_its_weights():
    cfg = build_config("uplink")
    torch.manual_seed(0)
    model = nn.Linear(8, 5)
    outer = OuterOptimizer(model, lr=cfg.outer_lr, momentum=cfg.outer_momentum)
    for _ in range(3):  # three rounds: no momentum builds up either
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1 * torch.randn_like(p))
        trained = [p.detach().clone() for p in model.parameters()]
        outer.step(outer.pseudo_gradient())
        for before, after in zip(trained, model.parameters(), strict=True):
            torch.testing.assert_close(after, before, rtol=0, atol=1e-6)


def test_the_uplink_codec_sends_a_fraction_of_the_bf16_bytes():
    cfg = build_config("uplink")
    codecs = RoleCodecs(cfg.codec_activation, cfg.codec_gradient, cfg.codec_delta,
                        cfg.codec_weights)  # fmt: skip
    torch.manual_seed(0)
    x = torch.randn(cfg.microbatch, cfg.seq_len, cfg.dim) * (1 + 3 * torch.rand(cfg.dim))
    dtype = WIRE_DTYPES[cfg.wire_dtype]
    raw = x.numel() * torch.tensor([], dtype=dtype).element_size()
    for role in (Role.ACTIVATION, Role.GRADIENT):
        blob = codecs.encode(x, role, dtype)
        assert len(blob) < 0.4 * raw  # about a quarter of raw bf16 on this tensor
        y = decode_tensor(blob)
        assert y.shape == x.shape
        xf, yf = x.to(dtype).double().flatten(), y.double().flatten()
        cos = torch.nn.functional.cosine_similarity(xf, yf, dim=0)
        sim = cos * (1 - (xf - yf).norm() / xf.norm())
        assert sim > 0.95 - 1e-6  # the preset's quality target, met on this tensor
