"""A DDP communication hook that sends each gradient bucket as a swarmpress frame.

As PyTorch's PowerSGD hook keeps its state in `PowerSGDState`, the state here is
`DDPState` (the codec, one error-feedback residual per bucket, byte counters), and the hook
is `ddp_hook`:

    model.register_comm_hook(DDPState(codec="topk:density=0.02"), ddp_hook)

Every rank encodes its bucket (plus its residual), the frames are all-gathered (their
lengths first, then the frames padded to the longest), every rank decodes all of them and
takes the mean. Each rank applies the same decoded frames, its own included, so the
replicas stay identical.

A bucket holding NaN or infinity goes uncompressed (a `raw` frame) and leaves the residual
alone, so every rank sees the non-finite mean plain DDP would give (fp16 GradScaler then
skips the step on all ranks together); a bucket the codec cannot encode goes raw too,
counted in `fallbacks`. Every rank checks the same gathered lengths, so a bad length is
refused on all of them alike rather than leaving some waiting in a collective.
"""

from typing import Any

import torch
import torch.distributed as dist

from swarmpress.codecs import CodecError, ErrorFeedback, Role, decode, get_codec
from swarmpress.codecs.core import statedict as sd
from swarmpress.codecs.core.frame import MIN_FRAME
from swarmpress.torch.codecs import CodecLike, stateless

STATE_VERSION = 1
_COUNTERS = ("steps", "raw_bytes", "wire_bytes", "allreduce_bytes", "fallbacks")
_RAW = get_codec("raw")


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
        self.fallbacks = 0  # buckets sent raw: non-finite values, or the codec refused them

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
            "fallbacks": self.fallbacks,
            "fraction_of_allreduce": (
                self.wire_bytes / self.allreduce_bytes if self.allreduce_bytes else None
            ),
        }

    def state_dict(self) -> dict[str, Any]:
        """Residuals per bucket (torch tensors) and counters: torch.save / torch.load keep it
        with the default weights_only=True."""
        feedback = {}
        for index, ef in self.feedback.items():
            sub = ef.state_dict()
            feedback[index] = {**sub, "residual": torch.from_numpy(sub["residual"])}
        return {
            "version": STATE_VERSION,
            "codec": self.codec.get_config(),
            "error_feedback": self.error_feedback,
            "feedback": feedback,
            "counters": {k: getattr(self, k) for k in _COUNTERS},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state_dict(); CodecError if it is malformed or for another codec."""
        state = sd.mapping(state, "DDPState")
        if sd.integer(state, "version", "DDPState", hi=1 << 31) != STATE_VERSION:
            raise CodecError("DDPState: not a state_dict() of this version")
        if state.get("codec") != self.codec.get_config():
            raise CodecError(
                f"DDPState: the state is for codec {state.get('codec')}, "
                f"this hook uses {self.codec.get_config()}"
            )
        feedback = sd.mapping(state.get("feedback"), "DDPState feedback")
        restored = {}
        for index, sub in feedback.items():
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < 1 << 31:
                raise CodecError(f"DDPState: bucket index {index!r} is not an integer >= 0")
            sub = dict(sd.mapping(sub, f"DDPState bucket {index}"))
            if isinstance(sub.get("residual"), torch.Tensor):
                sub["residual"] = sub["residual"].detach().cpu().numpy()
            ef = ErrorFeedback(self.codec)
            ef.load_state_dict(sub)
            restored[index] = ef
        counters = sd.mapping(state.get("counters"), "DDPState counters")
        values = {k: sd.integer(counters, k, "DDPState counters") for k in _COUNTERS}
        self.feedback = restored
        for k, v in values.items():
            setattr(self, k, v)


def _encode(state: DDPState, bucket: dist.GradBucket, tensor: torch.Tensor) -> bytes:
    """The bucket's frame: the codec's (with its feedback), or raw when it holds NaN or
    infinity or the codec refuses it (the residual is then left as it was)."""
    if bool(torch.isfinite(tensor).all()):
        try:
            enc = state.encoder(bucket.index(), tensor.numel())
            return enc.encode(tensor.detach(), Role.GRADIENT)
        except CodecError:
            pass
    state.fallbacks += 1
    return _RAW.encode(tensor.detach(), Role.GRADIENT)


def ddp_hook(state: DDPState, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """Reduce one bucket through the state's codec: all-gather frames, decode, average."""
    tensor = bucket.buffer()
    group = state.process_group
    world = dist.get_world_size(group)
    wire = tensor.device  # gloo gathers host tensors, nccl the bucket's own GPU's
    blob = _encode(state, bucket, tensor)
    sizes = [torch.zeros(1, dtype=torch.int64, device=wire) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([len(blob)], dtype=torch.int64, device=wire), group=group)
    lengths = [int(s.item()) for s in sizes]
    nbytes = tensor.numel() * tensor.element_size()
    limit = 2 * nbytes + (1 << 16)  # no frame of this bucket is larger: raw is nbytes + header
    for rank, n in enumerate(lengths):  # the same lengths on every rank: the same verdict
        if not MIN_FRAME <= n <= limit:
            raise CodecError(
                f"DDP bucket {bucket.index()}: rank {rank} declared a {n}-byte frame for a "
                f"{nbytes}-byte bucket; refused"
            )
    longest = max(lengths)
    mine = torch.zeros(longest, dtype=torch.uint8, device=wire)
    mine[: len(blob)] = torch.frombuffer(bytearray(blob), dtype=torch.uint8).to(wire)
    frames = [torch.empty(longest, dtype=torch.uint8, device=wire) for _ in range(world)]
    dist.all_gather(frames, mine, group=group)
    total = torch.zeros_like(tensor, dtype=torch.float32)
    for rank, (frame, n) in enumerate(zip(frames, lengths, strict=True)):
        part = torch.as_tensor(decode(memoryview(frame[:n].cpu().numpy())))
        if part.shape != tensor.shape or part.dtype != tensor.dtype:
            raise CodecError(
                f"DDP bucket {bucket.index()}: rank {rank} sent a {tuple(part.shape)} "
                f"{part.dtype} tensor, expected {tuple(tensor.shape)} {tensor.dtype}"
            )
        total += part.to(device=tensor.device, dtype=torch.float32)
    tensor.copy_(total / world)
    state.steps += 1
    state.raw_bytes += nbytes
    state.wire_bytes += (world - 1) * (longest + 8)  # ring all-gathers: world - 1 pieces each
    state.allreduce_bytes += 2 * (world - 1) * nbytes // world
    fut: torch.futures.Future[torch.Tensor] = torch.futures.Future()
    fut.set_result(tensor)
    return fut


__all__ = ["DDPState", "ddp_hook"]
