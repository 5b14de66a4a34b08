"""Which codec each tensor role uses on the swarm's wire, and whether a receiver can follow it.

Roles: activations and gradients between stages, the DiLoCo pseudo-gradient (weight-delta)
between replicas, full weights (and optimizer state) to a newcomer. A role's codec is a
codec spec (`swarmpress codecs`) or a swarm shorthand: `none` (raw bytes in a checked
frame), `auto` / `auto:SPEC` (SPEC where it beats raw bytes on this worker's link).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from swarmpress.codecs import (
    CODEC_ALIASES,
    Codec,
    CodecError,
    Role,
    build_codec,
    codec_class,
    unpack_frame,
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


def make_codec(spec: str) -> Codec:
    """A codec from a spec or shorthand; CodecError naming the problem otherwise."""
    return build_codec(codec_spec(spec))


def stream_problem(spec: str) -> str | None:
    """Why a swarm receiver could not decode this codec's frames, or None when it can.

    A swarm receiver decodes every frame on its own, with a fresh decoder built from the
    frame's parameters (decode_tensor): frames of one sender reach different replicas, and
    a replayed sample takes another path. A codec that is stateful only on the sending side
    (topk's error feedback) passes; one whose decoder needs state from earlier frames
    (lossy-stream's basis) does not. Stateless codecs pass by the codec contract; for a
    stateful one the receiver's path is tried on a short stream with structure to learn:
    each frame, decoded alone, must give what a decoder following the whole stream gives.
    """
    codec = make_codec(spec)
    if not codec.stateful:
        return None
    if codec.decoder_state:  # declared by the codec (Codec.decoder_state)
        return (
            "its decoder needs state carried from earlier frames (it declares decoder_state); "
            "every frame must decode on its own"
        )
    # A stateful codec that declares sender-only state: its word is checked on a short
    # stream, so a wrong declaration is refused here rather than as dropped deltas later.
    follower = make_codec(spec)
    rng = np.random.default_rng(0)
    direction = rng.standard_normal((1, _PROBE_CHANNELS)).astype(np.float32)
    for i in range(_PROBE_FRAMES):
        x = rng.standard_normal((_PROBE_ROWS, 1)).astype(np.float32) @ direction
        x += np.float32(1e-6) * rng.standard_normal(x.shape).astype(np.float32)
        try:
            fr = unpack_frame(codec.encode(x, Role.WEIGHT_DELTA))
            want = follower.decode_frame(fr)
        except CodecError as exc:
            return f"it could not be tried on a short stream ({exc})"
        try:
            alone = codec_class(fr.codec_id).from_config(fr.params).decode_frame(fr)
        except CodecError as exc:
            return (
                f"its decoder needs state carried from earlier frames: frame {i + 1} of a "
                f"stream does not decode on its own ({exc})"
            )
        if not np.array_equal(np.asarray(alone), np.asarray(want)):
            return (
                f"its decoder needs state carried from earlier frames: frame {i + 1} of a "
                "stream decodes differently on its own"
            )
    return None


_PROBE_FRAMES, _PROBE_ROWS, _PROBE_CHANNELS = 6, 64, 32


def pays_off(raw_bytes: int, wire_bytes: int, codec_s: float, link: LinkSpec) -> bool:
    """Whether encode + decode + the smaller transfer beat sending the raw bytes on `link`
    (the break-even bandwidth rule: B* = (raw - wire) / codec seconds)."""
    if link.bandwidth_bps is None:
        return False
    return codec_s + 8 * wire_bytes / link.bandwidth_bps < 8 * raw_bytes / link.bandwidth_bps


class RoleCodecs:
    """One codec per tensor role (activation, gradient, weight-delta, full weights)."""

    def __init__(self, activation: str, gradient: str, delta: str, weights: str) -> None:
        self.specs = {
            Role.ACTIVATION: activation,
            Role.GRADIENT: gradient,
            Role.WEIGHT_DELTA: delta,
            WEIGHTS_ROLE: weights,
        }
        self.codecs = {role: make_codec(s) for role, s in self.specs.items()}
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
