"""`lossy` and `lossy-stream`: quantization that meets a quality target on every tensor.

- codec.py: the `lossy` codec (`LossyCodec`), rate control and the max mode.
- fast.py: the fast mode (sampled rate control, compiled rANS lanes).
- kernels.py: the fast mode's compiled statistics, measurement and quantization loops.
- lowrank.py: the fast mode's low-rank part (a basis every row shares).
- device.py: the fast mode's quantization in torch, on the tensor's own device.
- target.py: the quality target and the step search that meets it (max mode, stream).
- stream.py: `lossy-stream` (`LossyStreamCodec` and its encoder and decoder), a channel
  basis learned from the stream.
"""

from swarmpress.codecs.families.lossy.codec import LossyCodec
from swarmpress.codecs.families.lossy.stream import LossyStreamCodec

__all__ = ["LossyCodec", "LossyStreamCodec"]
