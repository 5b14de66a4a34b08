"""The codec contract and its infrastructure: what every codec family builds on.

- base.py: `BaseCodec` (id, parameters, config round trip), `Codec` (stateless
  encode/decode: any frame decodes on its own), `Param`, `Role`.
- stream.py: `StreamCodec`, whose encoder and decoder state objects follow one stream.
- feedback.py: `ErrorFeedback`, the sender-side residual over any stateless codec.
- frame.py: the self-describing, checksummed frame (docs/frame-format.md).
- registry.py: register codecs, look them up by id, decode any frame.
- specs.py: the spec grammar ("blockq:bits=4") that get_codec, the CLI, the swarm and the
  twin accept.
- tensors.py: numpy/torch tensors to canonical arrays and back; dtypes.
- limits.py: resource limits a decoder enforces before it allocates.
- errors.py: `CodecError`, the one exception codecs raise.
- metrics.py: quality, size and speed metrics (the Apex definitions).
- workers.py: threads for the compiled kernels, results independent of the thread count.

Nothing here imports the entropy coders or the codec families.
"""
