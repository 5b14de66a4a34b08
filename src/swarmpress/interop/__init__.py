"""swarmpress codecs inside other tools' formats (the `interop` extra).

- `swarmpress.interop.numcodecs`: the codecs as numcodecs codecs ("swarmpress.lossless",
  "swarmpress.lossy", "swarmpress.zstd"), found by `numcodecs.get_codec` through the
  "numcodecs.codecs" entry point and usable as zarr compressors (docs/zarr.md).

Nothing is imported here, so `import swarmpress.interop` needs no optional package.
"""
