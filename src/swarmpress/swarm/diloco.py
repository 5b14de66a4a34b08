"""DiLoCo-style outer step: replicas of a stage train alone for H steps, then average their
pseudo-gradients (anchor - weights) and take one Nesterov-momentum step from the anchor.

The pseudo-gradient crosses the wire as one flat vector through the weight-delta codec
(`topk` with error feedback by default, as SparseLoCo does); every replica averages the
decoded vectors in the same order, its own included as the others see it, so replicas
that received the same frames end with bit-identical weights.
"""

from __future__ import annotations

import torch
from torch import nn


def flat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def unflat(vec: torch.Tensor, like: list[torch.Tensor]) -> list[torch.Tensor]:
    out, i = [], 0
    for t in like:
        out.append(vec[i : i + t.numel()].view_as(t))
        i += t.numel()
    return out


class OuterOptimizer:
    """The anchor weights of a stage and the outer momentum, one per replica."""

    def __init__(self, model: nn.Module, lr: float = 0.7, momentum: float = 0.9) -> None:
        self.params = [p for p in model.parameters()]
        self.anchor = [p.detach().clone() for p in self.params]
        self.momentum = [torch.zeros_like(p) for p in self.params]
        self.lr, self.mu = lr, momentum

    @property
    def numel(self) -> int:
        return sum(p.numel() for p in self.params)

    def pseudo_gradient(self) -> torch.Tensor:
        """anchor - weights, flattened (float32)."""
        with torch.no_grad():
            return flat([a - p.detach() for a, p in zip(self.anchor, self.params, strict=True)])

    def step(self, mean_delta: torch.Tensor) -> None:
        """Nesterov step from the anchor with the averaged pseudo-gradient; the weights
        become the new anchor."""
        if mean_delta.numel() != self.numel:
            raise ValueError(
                f"pseudo-gradient of {mean_delta.numel()} values, stage has {self.numel}"
            )
        with torch.no_grad():
            for a, m, p, d in zip(
                self.anchor,
                self.momentum,
                self.params,
                unflat(mean_delta, self.params),
                strict=True,
            ):
                m.mul_(self.mu).add_(d)
                a.sub_(self.lr * (d + self.mu * m))
                p.copy_(a)

    def state(self) -> dict[str, list[torch.Tensor]]:
        return {"anchor": self.anchor, "momentum": self.momentum}

    def load(self, state: dict[str, list[torch.Tensor]]) -> None:
        with torch.no_grad():
            for dst, src in zip(self.anchor, state["anchor"], strict=True):
                dst.copy_(src)
            for dst, src in zip(self.momentum, state["momentum"], strict=True):
                dst.copy_(src)
