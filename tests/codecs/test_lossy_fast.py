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


def test_fp16_near_the_top_of_its_range_encodes_without_warnings():
    import warnings

    import swarmpress as sp

    x = np.full((256, 64), 65504.0, dtype=np.float16)
    x[::7, 3] = -65504.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a caller running with -W error gets a frame too
        blob = sp.get_codec("lossy").encode(x)
    assert sp.similarity(x, sp.decode(blob)) > 0.99


def test_a_forged_step_that_overflows_float16_is_refused():
    import struct

    import pytest

    import swarmpress as sp

    rng = np.random.default_rng(3)
    x = rng.standard_normal((512, 64)).astype(np.float16)
    fr = sp.codecs.unpack_frame(sp.get_codec("lossy").encode(x))
    payload = bytearray(fr.payload)
    assert payload[0] == 2  # the fast mode; its header starts with the step
    struct.pack_into("<d", payload, 1, 1e5)
    forged = sp.codecs.pack_frame(fr.codec_id, fr.params, fr.dtype, fr.container, fr.shape,
                                  bytes(payload))  # fmt: skip
    with pytest.raises(sp.CodecError, match="beyond float16"):
        sp.decode(forged)


def test_rows_wider_than_a_decode_block_are_projected_at_most_twice(monkeypatch):
    import swarmpress as sp
    from swarmpress.codecs.families.lossy import fast, lowrank

    # the smallest decode block (one chunk, 32K values): these rows are wider than it
    monkeypatch.setattr(fast, "DECODE_BLOCK_VALUES", 1)

    rows, chans = 256, 40_000  # a row wider than a 32K-value chunk
    rng = np.random.default_rng(0)
    u = rng.standard_normal((rows, 6)).astype(np.float32)
    v = rng.standard_normal((6, chans)).astype(np.float32)
    x = (u @ v + 0.05 * rng.standard_normal((rows, chans), dtype=np.float32)).astype(np.float16)
    blob = sp.get_codec("lossy").encode(x)
    payload = sp.codecs.unpack_frame(blob).payload
    assert payload[1 + 9] & 0x02, "expected a low-rank part"
    projected = []
    real = lowrank.project

    def counting(coeffs, basis, step):
        projected.append(coeffs.shape[0])
        return real(coeffs, basis, step)

    monkeypatch.setattr(lowrank, "project", counting)
    y = sp.decode(blob)
    assert sum(projected) <= 2 * rows, sum(projected)
    assert sp.similarity(x, y) > 0.99


def test_a_long_flat_tensor_is_coded_in_rows_and_old_frames_still_decode():
    """A flat tensor (a DDP bucket, a bias, optimizer state) was one channel of a million
    values (10-20x slower); it is now coded as rows of consecutive values (mode byte 4).
    Frames in the one-channel layout (mode 2) still decode."""
    import pytest

    import swarmpress as sp
    from swarmpress.codecs import pack_frame, unpack_frame
    from swarmpress.codecs.core.tensors import DType
    from swarmpress.codecs.families.lossy import fast
    from swarmpress.codecs.families.lossy.codec import blocked_layout

    rng = np.random.default_rng(7)
    x = (rng.standard_normal(1 << 17) * np.repeat(rng.gamma(2.0, size=128), 1024)).astype(
        np.float32
    )
    blob = sp.get_codec("lossy").encode(x)
    fr = unpack_frame(blob)
    assert fr.payload[0] == 4 and blocked_layout(x.size) == (128, 1024)
    y = sp.decode(blob)
    assert y.shape == x.shape and sp.similarity(x, y) > 0.99
    # the one-channel frame an earlier build wrote for the same tensor
    old = bytes([2]) + fast.encode(x, DType.FLOAT32, x.size, 1, "similarity", 0.99, 1)
    legacy = pack_frame("lossy", fr.params, fr.dtype, fr.container, fr.shape, old)
    assert sp.similarity(x, sp.decode(legacy)) > 0.99
    # a blocked frame for a size that has no blocked layout is refused
    odd = pack_frame("lossy", fr.params, fr.dtype, fr.container, (x.size + 1,), fr.payload)
    with pytest.raises(sp.CodecError, match="blocked layout"):
        sp.decode(odd)
    # small flat tensors keep the one-channel layout
    assert unpack_frame(sp.get_codec("lossy").encode(x[:1000])).payload[0] == 2
