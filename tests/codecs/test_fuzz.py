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
from swarmpress.codecs import frame


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
    body = frame.pack("zstd", {}, fr.dtype, fr.container, (2,), b"")[:-4]
    assert struct.unpack("<I", frame.pack("zstd", {}, fr.dtype, fr.container, (2,), b"")[-4:])[
        0
    ] == (zlib.crc32(body))


def test_zstd_section_declaring_a_huge_size_is_refused_before_allocating():
    import zstandard

    from swarmpress.codecs.zstdio import decompress_exact

    # A frame header that claims 1 TiB of content: must be refused from the header alone.
    big = zstandard.ZstdCompressor(write_content_size=True).compress(b"\0" * 64)
    hostile = bytearray(big)
    with pytest.raises(sp.CodecError):
        decompress_exact(bytes(hostile), 64 + 1, "section")
    params = zstandard.ZstdCompressionParameters(compression_level=3)
    cobj = zstandard.ZstdCompressor(compression_params=params).compressobj(size=1 << 40)
    header_only = cobj.compress(b"\0" * 16)
    with pytest.raises(sp.CodecError):
        decompress_exact(header_only, 16, "section")
