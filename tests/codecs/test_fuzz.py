"""Fuzzing the decoder: thousands of truncated, flipped, spliced and foreign inputs.

Every case must end in CodecError (or, for re-checksummed mutations that stay valid, a
tensor of exactly the declared dtype and shape); nothing else may escape or hang.
"""

import struct
import zlib

import ml_dtypes
import numpy as np
import pytest

import swarmpress as sp
from swarmpress.codecs.core import frame


def _valid_frames():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((16, 24)).astype(np.float32)
    out = []
    for dtype in (np.float32, np.float16, ml_dtypes.bfloat16):
        for name, params in (
            ("zstd", {}),
            ("blockq", {}),
            ("blockq", {"bits": 4, "block": 8}),
            ("lossless", {}),
            ("lossless", {"mode": "fast"}),
            ("lossy", {}),
            ("lossy", {"mode": "fast"}),
        ):
            out.append(sp.get_codec(name, **params).encode(x.astype(dtype)))
    return out


FRAMES = _valid_frames()


def _decode_or_codec_error(blob: bytes) -> None:
    try:
        y = sp.decode(blob)
    except sp.CodecError as exc:
        assert str(exc)  # always a message
        assert "\n" not in str(exc)
        return
    fr = frame.unpack(blob)
    assert y.shape == fr.shape and y.dtype == fr.dtype.numpy


@pytest.mark.parametrize("seed", range(4))
def test_random_mutations_of_valid_frames(seed):
    rng = np.random.default_rng(seed)
    for _ in range(600):
        original = FRAMES[rng.integers(len(FRAMES))]
        blob = bytearray(original)
        kind = rng.integers(4)
        if kind == 0:  # flip bits
            for _ in range(rng.integers(1, 4)):
                i = rng.integers(len(blob) * 8)
                blob[i // 8] ^= 1 << (i % 8)
        elif kind == 1:  # truncate
            blob = blob[: rng.integers(len(blob))]
        elif kind == 2:  # overwrite a run with random bytes
            i = rng.integers(len(blob))
            n = int(rng.integers(1, 16))
            blob[i : i + n] = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        else:  # splice two frames
            other = FRAMES[rng.integers(len(FRAMES))]
            cut = rng.integers(len(blob))
            blob = blob[:cut] + other[rng.integers(len(other)) :]
        if bytes(blob) in FRAMES:  # the mutation rebuilt a valid frame (e.g. splice at 0)
            continue
        with pytest.raises(sp.CodecError):
            sp.decode(bytes(blob))


@pytest.mark.parametrize("seed", range(4))
def test_mutated_payloads_with_valid_checksum(seed):
    """A hostile encoder can fix up the CRC: payload decoders must still never trust it."""
    rng = np.random.default_rng(100 + seed)
    for _ in range(400):
        fr = frame.unpack(FRAMES[rng.integers(len(FRAMES))])
        payload = bytearray(fr.payload)
        if rng.integers(2) and payload:
            for _ in range(rng.integers(1, 6)):
                i = rng.integers(len(payload))
                payload[i] = rng.integers(256)
        else:
            payload = payload[: rng.integers(len(payload) + 1)]
        shape = fr.shape
        if rng.integers(4) == 0:  # lie about the shape too
            shape = (int(rng.integers(0, 10_000)),)
        blob = frame.pack(fr.codec_id, fr.params, fr.dtype, fr.container, shape, bytes(payload))
        _decode_or_codec_error(blob)


def test_random_bytes_and_foreign_formats():
    rng = np.random.default_rng(3)
    foreign = [
        b"",
        b"\x00",
        zlib.compress(b"hello" * 100),
        b"\x28\xb5\x2f\xfd" + bytes(20),  # a zstd magic
        b"PK\x03\x04" + bytes(30),
        b"SWPF",
        b"SWPF" + bytes(100),
        np.ones(100, np.float32).tobytes(),
    ]
    foreign += [
        rng.integers(0, 256, rng.integers(1, 300), dtype=np.uint8).tobytes() for _ in range(1000)
    ]
    foreign += [
        b"SWPF" + rng.integers(0, 256, rng.integers(0, 200), dtype=np.uint8).tobytes()
        for _ in range(1000)
    ]
    for blob in foreign:
        with pytest.raises(sp.CodecError):
            sp.decode(blob)


def test_non_bytes_input_is_refused():
    for bad in (None, 3, "SWPF", np.zeros(4)):
        with pytest.raises(sp.CodecError, match="expected bytes"):
            sp.decode(bad)


def test_hostile_params_in_a_checksummed_frame():
    fr = frame.unpack(FRAMES[3])  # blockq
    for params in ({"bits": 99}, {"block": -1}, {"bits": "8"}, {"evil": 1}):
        blob = frame.pack("blockq", params, fr.dtype, fr.container, fr.shape, bytes(fr.payload))
        with pytest.raises(sp.CodecError, match="invalid parameters"):
            sp.decode(blob)
    blob = frame.pack("nosuch", {}, fr.dtype, fr.container, fr.shape, b"")
    with pytest.raises(sp.CodecError, match="unknown codec 'nosuch'"):
        sp.decode(blob)


def test_zstd_section_declaring_a_huge_size_is_refused_before_allocating():
    import tracemalloc

    import zstandard

    from swarmpress.codecs.entropy.zstdio import decompress_exact

    # A frame whose header claims 1 TiB of content: refused from the header alone.
    cobj = zstandard.ZstdCompressor(write_content_size=True).compressobj(size=1 << 40)
    header_only = cobj.compress(b"\0" * 16) + cobj.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
    assert zstandard.frame_content_size(header_only) == 1 << 40
    tracemalloc.start()
    with pytest.raises(sp.CodecError, match="expected 16"):
        decompress_exact(header_only, 16, "section")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1 << 20
    # Trailing bytes after a valid section are refused too.
    good = zstandard.ZstdCompressor().compress(b"abc")
    with pytest.raises(sp.CodecError):
        decompress_exact(good + b"junk", 3, "section")


def test_lossless_tables_with_hostile_shapes_are_refused_before_decompressing():
    import tracemalloc

    import zstandard

    from swarmpress.codecs.entropy import ctxcoder

    counts = zstandard.ZstdCompressor().compress(bytes(1024 * 65536 * 4))
    table = struct.pack("<IIII", 0, 65536, 1024, len(counts)) + counts
    tracemalloc.start()
    with pytest.raises(sp.CodecError, match="invalid shape"):
        ctxcoder.unpack_table(memoryview(table), 0, 1, contexts=1, max_span=512)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1 << 20


def test_huge_or_overflowing_shapes_raise_codec_error():
    for name in ("zstd", "blockq", "lossless", "lossy"):
        blob = frame.pack(
            name, {}, frame.DType.FLOAT32, frame.Container.NUMPY, (0, (1 << 64) - 1), b""
        )
        with pytest.raises(sp.CodecError):
            sp.decode(blob)


def test_non_contiguous_buffer_is_accepted():
    blob = sp.get_codec("zstd").encode(np.arange(6, dtype=np.float32))
    arr = np.frombuffer(blob + blob, dtype=np.uint8)[::1]
    view = memoryview(np.ascontiguousarray(arr[: len(blob)]))
    np.testing.assert_array_equal(sp.decode(view), np.arange(6, dtype=np.float32))
    strided = memoryview(np.repeat(np.frombuffer(blob, np.uint8), 2)[::2])
    assert not strided.contiguous
    np.testing.assert_array_equal(sp.decode(strided), np.arange(6, dtype=np.float32))
