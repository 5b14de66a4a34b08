"""Which codec each tensor role uses on the swarm's wire, and whether a receiver can follow it.

Roles: activations and gradients between stages, the DiLoCo pseudo-gradient (weight-delta)
between replicas, full weights (and optimizer state) to a newcomer. A role's codec is a
codec spec (`swarmpress codecs`) or a swarm shorthand: `none` (raw bytes in a checked
frame), `auto` / `auto:SPEC` (SPEC where it beats raw bytes on this worker's link).
"""

from __future__ import annotations

import time

import torch

from swarmpress.codecs import (
    CODEC_ALIASES,
    BaseCodec,
    Codec,
    ErrorFeedback,
    Role,
    build_codec,
)
from swarmpress.swarm.links import LinkSpec
from swarmpress.swarm.tensors import decode_tensor

# Full weights and optimizer state travel together, under the weights codec.
WEIGHTS_ROLE = Role.WEIGHTS
WIRE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


AUTO = "auto"  # `auto` or `auto:SPEC`: SPEC where it pays on the link, raw where it does not


def codec_spec(spec: str) -> str:
    """The full codec spec for a swarm shorthand (`none`, `lossy`, `auto`) or the spec itself
    (for `auto`, the codec it would use where compression pays)."""
    spec = spec.strip()
    if spec == AUTO or spec.startswith(AUTO + ":"):
        spec = spec[len(AUTO) + 1 :] or "lossy"
    return CODEC_ALIASES.get(spec, spec)


def make_codec(spec: str) -> BaseCodec:
    """A codec from a spec or shorthand; CodecError naming the problem otherwise."""
    return build_codec(codec_spec(spec))


def stream_problem(spec: str) -> str | None:
    """Why a swarm receiver could not decode this codec's frames, or None when it can.

    A swarm receiver decodes every frame on its own (decode_tensor): frames of one sender
    reach different replicas, and a replayed sample takes another path. A stateless codec's
    frames always do (the codec contract); a stream codec's decoder must follow one stream
    in order, so it cannot be used on any swarm role.
    """
    codec = make_codec(spec)
    if not codec.stream:
        return None
    return (
        f"{codec.codec_id} is a stream codec: its decoder must see every frame of one stream "
        "in order, but swarm receivers decode each frame on its own (frames come from any "
        "replica, attempt by attempt); use its stateless form (e.g. lossy)"
    )


def pays_off(raw_bytes: int, wire_bytes: int, codec_s: float, link: LinkSpec) -> bool:
    """Whether encode + decode + the smaller transfer beat sending the raw bytes on `link`
    (the break-even bandwidth rule: B* = (raw - wire) / codec seconds)."""
    if link.bandwidth_bps is None:
        return False
    return codec_s + 8 * wire_bytes / link.bandwidth_bps < 8 * raw_bytes / link.bandwidth_bps


class RoleCodecs:
    """One codec per tensor role (activation, gradient, weight-delta, full weights).

    The weight-delta role is one stream per replica (its DiLoCo pseudo-gradient, round after
    round): with error_feedback its codec is wrapped in ErrorFeedback, so what a round's
    frame did not carry is added to the next round's delta instead of being lost.
    """

    def __init__(
        self, activation: str, gradient: str, delta: str, weights: str, error_feedback: bool = True
    ) -> None:
        self.specs = {
            Role.ACTIVATION: activation,
            Role.GRADIENT: gradient,
            Role.WEIGHT_DELTA: delta,
            WEIGHTS_ROLE: weights,
        }
        self.codecs: dict[Role, Codec | ErrorFeedback] = {
            role: make_codec(s) for role, s in self.specs.items()
        }
        if error_feedback:
            self.codecs[Role.WEIGHT_DELTA] = ErrorFeedback(self.codecs[Role.WEIGHT_DELTA])
        self.chosen = {role: codec_spec(s) for role, s in self.specs.items()}

    def settle(self, role: Role, sample: torch.Tensor, dtype: torch.dtype, link: LinkSpec) -> str:
        """For an `auto` role: time the codec on a tensor shaped like the traffic (best of
        three, decode included) and keep it only if it beats raw bytes on this link."""
        if not self.specs[role].strip().startswith(AUTO):
            return self.chosen[role]
        codec = self.codecs[role]
        t = sample.detach().to(dtype).contiguous()
        best, size = float("inf"), 0
        for _ in range(3):
            t0 = time.perf_counter()
            blob = codec.encode(t, role)
            decode_tensor(blob)
            best = min(best, time.perf_counter() - t0)
            size = len(blob)
        if not pays_off(t.numel() * t.element_size(), size, best, link):
            self.codecs[role] = make_codec("none")
            self.chosen[role] = codec_spec("none")
        return self.chosen[role]

    def encode(self, tensor: torch.Tensor, role: Role, dtype: torch.dtype) -> bytes:
        """The tensor as a frame of the role's codec (optimizer state: the weights' codec),
        cast to the wire dtype first; the codec is told the tensor's own role."""
        t = tensor.detach().to(dtype).contiguous()
        key = Role.WEIGHTS if role is Role.OPTIMIZER_STATE else role
        return self.codecs[key].encode(t, role)
