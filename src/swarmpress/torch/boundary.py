"""`Boundary`: a pipeline cut inside one process, for quality studies and as a building block.

Put it between two halves of a model: forward, the activation goes through the activation
codec (encode, then decode), backward, the gradient goes through the gradient codec, so a
training run sees exactly what a compressed pipeline would deliver, and the module counts
the bytes that would have crossed. The value is the identity up to the codec; dtype,
shape and device are kept (bf16/fp16 under autocast, CPU or CUDA).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from swarmpress.codecs import CodecError, Role
from swarmpress.torch.codecs import CodecLike, Direction


class Boundary(nn.Module):
    """Identity in value up to the codecs: activations forward, gradients backward.

    activation / gradient: a codec spec ("lossy", "lossless", "lossy-stream", ...) or codec
    object; None passes that direction through untouched. A stream codec keeps one stream
    per direction (one sender, one receiver, in order), as a real link would.
    """

    def __init__(
        self, activation: CodecLike | None = "lossy", gradient: CodecLike | None = "lossy"
    ) -> None:
        super().__init__()
        self.forward_link = None if activation is None else Direction.of(activation)
        self.backward_link = None if gradient is None else Direction.of(gradient)

    @torch.compiler.disable  # codecs run on host bytes: torch.compile breaks the graph here
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            kind = type(x).__name__ if not isinstance(x, torch.Tensor) else str(x.dtype)
            raise CodecError(f"Boundary takes a floating-point tensor, got {kind}")
        if x.device.type == "meta":
            raise CodecError("Boundary needs a tensor with data, not one on the meta device")
        return _ThroughCodecs.apply(x, self)

    def through(self, x: torch.Tensor, backward: bool) -> torch.Tensor:
        """x through one direction's codec (encode, decode), counted; unchanged if it is off."""
        link = self.backward_link if backward else self.forward_link
        if link is None:
            return x
        role = Role.GRADIENT if backward else Role.ACTIVATION
        t = x.detach().contiguous()
        blob = link.encoder.encode(t, role)
        link.count(t, blob)
        y = link.decoder.decode(blob, t.device)
        return y if y.device == t.device else y.to(t.device)

    def stats(self) -> dict[str, Any]:
        """Frames, bytes before and after each codec, and the ratio, per direction."""
        out: dict[str, Any] = {}
        for name, link in (("activation", self.forward_link), ("gradient", self.backward_link)):
            out[name] = None if link is None else link.stats()
        return out

    def extra_repr(self) -> str:
        a = self.forward_link.codec if self.forward_link else None
        g = self.backward_link.codec if self.backward_link else None
        return f"activation={a!r}, gradient={g!r}"


class _ThroughCodecs(torch.autograd.Function):
    """Forward through the activation codec, backward through the gradient codec."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, boundary: Boundary) -> torch.Tensor:
        ctx.boundary = boundary
        return boundary.through(x, backward=False)

    @staticmethod
    @once_differentiable  # the gradient codec is not differentiable: say so, not a wrong answer
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return ctx.boundary.through(grad, backward=True), None


__all__ = ["Boundary"]
