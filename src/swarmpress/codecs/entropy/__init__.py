"""Entropy coders and byte-level helpers, apart from any codec's model of its tensors.

- order0.py: order-0 coding of integer symbol streams (constriction's range coder).
- ctxcoder.py: one categorical model per context, one range coder.
- scalemodel.py: scale-conditioned models of quantized residuals (bucket tables).
- fieldcode.py: a 2-D integer field range-coded with scalemodel buckets.
- rans.py: static-model rANS pieces for compiled loops (tables, reciprocals, bit stack).
- rans_lanes.py: compiled four-lane rANS over chunks of codes (decoder fused with
  dequantization).
- rans_field.py: a field of integer codes coded in fixed chunks by rans_lanes.
- planes.py: float bit-field layouts and byte-plane packing.
- zstdio.py: Zstandard decompression with exact sizes and bounded allocation.

These modules import only codecs.core, never a codec family.
"""
