"""`lossless`: bit-exact compression of bf16/fp16/fp32 by separating and modelling fields.

- codec.py: the codec (`LosslessCodec`) and its fast mode (byte planes through Zstandard).
- model.py: the max mode, a static model fitted to each tensor.
- model_kernels.py: the max mode's compiled loops (statistics, histogram, rANS).
- plane_kernels.py: the fast mode's compiled byte-plane split and merge.
"""

from swarmpress.codecs.families.lossless.codec import LosslessCodec

__all__ = ["LosslessCodec"]
