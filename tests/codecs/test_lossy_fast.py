"""fp16 sources in the fast-mode kernels: read as 16 bits, widened a row at a time."""

import numpy as np


def test_the_kernels_widen_every_fp16_bit_pattern_exactly():
    # fp16 sources are read as their 16 bits and widened a row at a time (no float32 copy)
    from swarmpress.codecs.families.lossy import kernels as fk

    h = np.arange(1 << 16, dtype=np.uint32)
    got = np.array([fk.f16_bits(np.uint32(v)) for v in h[::7]], dtype=np.uint32)
    want = h.astype(np.uint16).view(np.float16).astype(np.float32).view(np.uint32)[::7]
    finite = np.isfinite(h.astype(np.uint16).view(np.float16)[::7])
    np.testing.assert_array_equal(got[finite], want[finite])
    assert np.all((got[~finite] & 0x7F800000) == 0x7F800000)


def test_fp16_tensors_encode_and_decode_within_the_memory_bound():
    import tracemalloc

    import swarmpress as sp

    rng = np.random.default_rng(0)
    x = (rng.standard_normal((1024, 384)) * np.exp(rng.standard_normal(384))).astype(np.float16)
    codec = sp.get_codec("lossy")
    blob = codec.encode(x)  # warm: kernels compiled, scratch arrays in place
    y = codec.decode(blob)
    assert y.dtype == np.float16 and sp.similarity(x, y) > 0.99
    tracemalloc.start()
    try:
        codec.encode(x)
        enc_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        codec.decode(blob)
        dec_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert enc_peak < 2.5 * x.nbytes, enc_peak / x.nbytes
    assert dec_peak < 2.5 * x.nbytes, dec_peak / x.nbytes
