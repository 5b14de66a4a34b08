"""swarmpress inside your own PyTorch training (docs/torch.md).

- boundary.py: `Boundary`, a compressed pipeline cut inside one process (autograd).
- p2p.py: `send` / `recv` / `isend` / `irecv` of compressed tensors over torch.distributed.
- pipeline.py: `CompressedPipelineStage` for torch.distributed.pipelining schedules.
- ddp.py: `DDPState` and `ddp_hook`, a DDP communication hook with error feedback.
- codecs.py: the codec pair one direction of a link uses (stateless or a stream's ends).
- checkpoint.py: safetensors checkpoints compressed tensor by tensor, bit-exact.
"""

from swarmpress.torch.boundary import Boundary
from swarmpress.torch.checkpoint import (
    CheckpointReader,
    compress_checkpoint,
    decompress_checkpoint,
    load_tensor,
    verify_checkpoint,
)
from swarmpress.torch.ddp import DDPState, ddp_hook
from swarmpress.torch.p2p import irecv, isend, recv, send
from swarmpress.torch.pipeline import CompressedPipelineStage

__all__ = [
    "Boundary",
    "CheckpointReader",
    "CompressedPipelineStage",
    "DDPState",
    "compress_checkpoint",
    "ddp_hook",
    "decompress_checkpoint",
    "irecv",
    "isend",
    "load_tensor",
    "recv",
    "send",
    "verify_checkpoint",
]
