"""A DDP communication hook that sends each gradient bucket as a swarmpress frame.

As PyTorch's PowerSGD hook keeps its state in `PowerSGDState`, the state here is
`DDPState` (the codec, one error-feedback residual per bucket, byte counters), and the hook
is `ddp_hook`:

    model.register_comm_hook(DDPState(codec="topk:density=0.02"), ddp_hook)

Every rank encodes its bucket (plus its residual), the frames are all-gathered (their
lengths first, then the frames padded to the longest), every rank decodes all of them and
takes the mean. Each rank applies the same decoded frames, its own included, so the
replicas stay identical.
"""

from typing import Any

import torch
import torch.distributed as dist

from swarmpress.codecs import CodecError, ErrorFeedback, Role, decode
from swarmpress.torch.codecs import CodecLike, stateless

STATE_VERSION = 1


class DDPState:
    """The hook's state: codec, per-bucket error feedback and byte counters.

    codec: a stateless codec spec or object ("topk:density=0.02", "lossy", ...).
    error_feedback: keep what a bucket's frame did not carry and add it next step (on by
    default: top-k without it loses most of the gradient for good).
    """

    def __init__(
        self, codec: CodecLike = "topk:density=0.02", process_group: Any = None,
        error_feedback: bool = True,
    ) -> None:  # fmt: skip
        self.codec = stateless(codec, "DDPState")
        self.process_group = process_group
        self.error_feedback = error_feedback
        self.feedback: dict[int, ErrorFeedback] = {}
        self.steps = 0  # buckets reduced
        self.raw_bytes = 0  # bucket bytes this rank would all-reduce
        self.wire_bytes = 0  # bytes this rank handed to the collectives
        self.allreduce_bytes = 0  # what a ring all-reduce of the raw buckets sends per rank

    def encoder(self, index: int, numel: int) -> Any:
        """The bucket's encoder: its error feedback (remade if DDP rebuilt the buckets)."""
        if not self.error_feedback:
            return self.codec
        ef = self.feedback.get(index)
        if ef is None or (ef.residual is not None and ef.residual.size != numel):
            ef = self.feedback[index] = ErrorFeedback(self.codec)
        return ef

    def stats(self) -> dict[str, Any]:
        """Bytes this rank sent against a plain all-reduce of the same buckets."""
        return {
            "codec": self.codec.get_config(),
            "buckets": self.steps,
            "raw_bytes": self.raw_bytes,
            "wire_bytes": self.wire_bytes,
            "allreduce_bytes": self.allreduce_bytes,
            "fraction_of_allreduce": (
                self.wire_bytes / self.allreduce_bytes if self.allreduce_bytes else None
            ),
        }

    def state_dict(self) -> dict[str, Any]:
        """Residuals per bucket and counters, for a checkpoint (torch.save keeps it)."""
        return {
            "version": STATE_VERSION,
            "codec": self.codec.get_config(),
            "error_feedback": self.error_feedback,
            "feedback": {i: ef.state_dict() for i, ef in self.feedback.items()},
            "counters": {
                "steps": self.steps, "raw_bytes": self.raw_bytes,
                "wire_bytes": self.wire_bytes, "allreduce_bytes": self.allreduce_bytes,
            },
        }  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state_dict(); CodecError if it is malformed or for another codec."""
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise CodecError("DDPState: not a state_dict() of this version")
        if state.get("codec") != self.codec.get_config():
            raise CodecError(
                f"DDPState: the state is for codec {state.get('codec')}, "
                f"this hook uses {self.codec.get_config()}"
            )
        feedback = state.get("feedback", {})
        if not isinstance(feedback, dict):
            raise CodecError("DDPState: feedback must be a dict of bucket states")
        restored = {}
        for index, sub in feedback.items():
            ef = ErrorFeedback(self.codec)
            ef.load_state_dict(sub)
            restored[int(index)] = ef
        counters = state.get("counters", {})
        try:
            values = {k: int(counters[k]) for k in ("steps", "raw_bytes", "wire_bytes",
                                                    "allreduce_bytes")}  # fmt: skip
        except (KeyError, TypeError, ValueError):
            raise CodecError("DDPState: counters are missing or not integers") from None
        self.feedback = restored
        self.steps, self.raw_bytes = values["steps"], values["raw_bytes"]
        self.wire_bytes, self.allreduce_bytes = values["wire_bytes"], values["allreduce_bytes"]


def ddp_hook(state: DDPState, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """Reduce one bucket through the state's codec: all-gather frames, decode, average."""
    tensor = bucket.buffer()
    group = state.process_group
    world = dist.get_world_size(group)
    wire = torch.device("cuda", torch.cuda.current_device()) if tensor.is_cuda else None
    wire = wire or torch.device("cpu")
    blob = state.encoder(bucket.index(), tensor.numel()).encode(tensor.detach(), Role.GRADIENT)
    sizes = [torch.zeros(1, dtype=torch.int64, device=wire) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([len(blob)], dtype=torch.int64, device=wire), group=group)
    lengths = [int(s.item()) for s in sizes]
    longest = max(lengths)
    mine = torch.zeros(longest, dtype=torch.uint8, device=wire)
    mine[: len(blob)] = torch.frombuffer(bytearray(blob), dtype=torch.uint8).to(wire)
    frames = [torch.empty(longest, dtype=torch.uint8, device=wire) for _ in range(world)]
    dist.all_gather(frames, mine, group=group)
    total = torch.zeros_like(tensor, dtype=torch.float32)
    for rank, (frame, n) in enumerate(zip(frames, lengths, strict=True)):
        part = torch.as_tensor(decode(frame[:n].cpu().numpy().tobytes()))
        if part.shape != tensor.shape:
            raise CodecError(
                f"DDP bucket {bucket.index()}: rank {rank} sent a tensor of shape "
                f"{tuple(part.shape)}, expected {tuple(tensor.shape)}"
            )
        total += part.to(device=tensor.device, dtype=torch.float32)
    tensor.copy_(total / world)
    nbytes = tensor.numel() * tensor.element_size()
    state.steps += 1
    state.raw_bytes += nbytes
    state.wire_bytes += (world - 1) * (longest + 8)  # ring all-gathers: world - 1 pieces each
    state.allreduce_bytes += 2 * (world - 1) * nbytes // world
    fut: torch.futures.Future[torch.Tensor] = torch.futures.Future()
    fut.set_result(tensor)
    return fut


__all__ = ["DDPState", "ddp_hook"]
