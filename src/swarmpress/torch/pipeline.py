"""Compressed stage boundaries for `torch.distributed.pipelining` schedules.

`CompressedPipelineStage` is a `PipelineStage` whose activations (forward) and gradients
(backward) cross as swarmpress frames, each direction with its own codec. A torch stage
sends fixed-shape tensors with P2P ops the schedule batches; a frame's length is known only
once it is encoded, so this stage keeps torch's choice of what goes where and replaces the
transport: its send ops encode and send at once without blocking (length, then frame, on
their own tag), and the receive a schedule asks for is completed when the stage needs the
tensor, at the start of `forward_one_chunk` / `backward_one_chunk`. Sends never block and
each receive waits only for what the peer's own schedule sends, so any schedule that is
deadlock-free with torch's ops stays so (tested with ScheduleGPipe and Schedule1F1B).

Limits: the stage's input and output metadata should be given (input_args/output_args, the
static mode), since torch's dynamic metadata inference exchanges example tensors of its
own; frames decode on the host, then move to the stage's device. A training step ends
with every frame delivered; after forward-only use (eval) call flush() before tearing the
process group down.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.pipelining import PipelineStage

from swarmpress.codecs import CodecError, Role
from swarmpress.torch.codecs import CodecLike, Direction
from swarmpress.torch.p2p import PendingSend, as_torch, isend_frame, recv_frame

ACTIVATION_TAG, GRADIENT_TAG = 0x5350_0001, 0x5350_0002  # "SP" 1 and 2: apart from torch's 0


class CompressedPipelineStage(PipelineStage):
    """A PipelineStage whose boundaries send swarmpress frames.

    activation / gradient: codec spec or object for what this stage sends forward and
    backward (a stream codec is fine: each link is one sender and one receiver, in order);
    the stage it talks to must be built with the same pair. Other arguments are
    PipelineStage's.
    """

    def __init__(
        self,
        submodule: torch.nn.Module,
        stage_index: int,
        num_stages: int,
        device: torch.device,
        *args: Any,
        activation: CodecLike = "lossy",
        gradient: CodecLike = "lossy",
        **kwargs: Any,
    ) -> None:
        super().__init__(submodule, stage_index, num_stages, device, *args, **kwargs)
        self.send_activations = Direction.of(activation)
        self.recv_activations = Direction.of(activation)
        self.send_gradients = Direction.of(gradient)
        self.recv_gradients = Direction.of(gradient)
        self._pending_fwd: dict[int, list[dist.P2POp]] = {}
        self._pending_bwd: dict[int, list[dist.P2POp]] = {}
        self._sends: list[PendingSend] = []

    # ------------------------------------------------------------------ sends
    def get_fwd_send_ops(self, fwd_chunk_id: int) -> list[dist.P2POp]:
        """Encode and send this chunk's activations now; nothing left for the schedule."""
        for op in super().get_fwd_send_ops(fwd_chunk_id):
            self._send(op, self.send_activations, Role.ACTIVATION, ACTIVATION_TAG)
        return []

    def get_bwd_send_ops(self, bwd_chunk_id: int) -> list[dist.P2POp]:
        """Encode and send this chunk's input gradients now; nothing left for the schedule."""
        for op in super().get_bwd_send_ops(bwd_chunk_id):
            self._send(op, self.send_gradients, Role.GRADIENT, GRADIENT_TAG)
        return []

    def _send(self, op: dist.P2POp, link: Direction, role: Role, tag: int) -> None:
        t = op.tensor.detach().contiguous()
        blob = link.encoder.encode(t, role)
        link.count(t, blob)
        self._sends = [s for s in self._sends if not s.is_completed()]
        self._sends.append(isend_frame(blob, op.peer, self.group, tag))

    # ------------------------------------------------------------------ receives
    def get_fwd_recv_ops(self, fwd_chunk_id: int) -> list[dist.P2POp]:
        """Note what to receive; the frames are taken when forward_one_chunk needs them."""
        self._pending_fwd[fwd_chunk_id] = super().get_fwd_recv_ops(fwd_chunk_id)
        return []

    def get_bwd_recv_ops(self, bwd_chunk_id: int) -> list[dist.P2POp]:
        """Note what to receive; the frames are taken when backward_one_chunk needs them."""
        self._pending_bwd[bwd_chunk_id] = super().get_bwd_recv_ops(bwd_chunk_id)
        return []

    def forward_one_chunk(self, fwd_chunk_id: int, *args: Any, **kwargs: Any) -> Any:
        self._receive(self._pending_fwd.pop(fwd_chunk_id, []), self.recv_activations,
                      ACTIVATION_TAG)  # fmt: skip
        return super().forward_one_chunk(fwd_chunk_id, *args, **kwargs)

    def backward_one_chunk(self, bwd_chunk_id: int, *args: Any, **kwargs: Any) -> Any:
        self._receive(self._pending_bwd.pop(bwd_chunk_id, []), self.recv_gradients,
                      GRADIENT_TAG)  # fmt: skip
        return super().backward_one_chunk(bwd_chunk_id, *args, **kwargs)

    def _receive(self, ops: list[dist.P2POp], link: Direction, tag: int) -> None:
        for op in ops:
            blob = recv_frame(op.peer, self.group, tag)
            out = as_torch(link.decoder.decode(blob))
            buf = op.tensor
            if out.shape != buf.shape or out.dtype != buf.dtype:
                raise CodecError(
                    f"stage {self.stage_index}: peer sent a {tuple(out.shape)} {out.dtype} "
                    f"tensor, the stage expects {tuple(buf.shape)} {buf.dtype}"
                )
            link.count(out, blob)
            with torch.no_grad():
                buf.copy_(out)

    # ------------------------------------------------------------------ bookkeeping
    def perform_reduce_grad(self, grad_scale_factor: int) -> None:
        """The schedule's last call of a training step: the step's frames have all been
        received by then (the peer's step needed them), so the step ends with none in flight."""
        super().perform_reduce_grad(grad_scale_factor)
        self.flush()

    def clear_runtime_states(self) -> None:
        """Between steps: every send of the last step has been taken by its peer."""
        self.flush()
        super().clear_runtime_states()

    def flush(self) -> None:
        """Wait until every frame this stage sent has been received."""
        for s in self._sends:
            s.wait()
        self._sends = []

    def stats(self) -> dict[str, Any]:
        """Frames and bytes per direction, sent and received by this stage."""
        return {
            "activations_sent": self.send_activations.stats(),
            "activations_received": self.recv_activations.stats(),
            "gradients_sent": self.send_gradients.stats(),
            "gradients_received": self.recv_gradients.stats(),
        }


__all__ = ["ACTIVATION_TAG", "GRADIENT_TAG", "CompressedPipelineStage"]
