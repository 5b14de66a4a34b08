"""The codec families, one module or package each; importing this package registers them.

- raw.py: `raw`, the tensor's bytes in a checked frame.
- zstd.py: `zstd`, the raw bytes through Zstandard (the Apex baseline).
- blockq.py: `blockq`, block absmax quantization to int8/int4.
- topk.py: `topk`, chunked top-k sparsification (stateless; pair it with ErrorFeedback).
- lossless/: `lossless`, bit-exact field modelling (max and fast modes).
- lossy/: `lossy` (quality-targeted quantization: max, fast and device modes) and
  `lossy-stream` (a channel basis learned from the stream).
"""

from swarmpress.codecs.families import blockq, lossless, lossy, raw, topk, zstd

__all__ = ["blockq", "lossless", "lossy", "raw", "topk", "zstd"]
