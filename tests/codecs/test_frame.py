"""The frame format: round trip of the header, and every malformation named in the error."""

import struct
import zlib

import numpy as np
import pytest

import swarmpress as sp
from swarmpress.codecs.core import frame
from swarmpress.codecs.core.tensors import Container, DType


def _frame(payload=b"abc", shape=(3, 1), params=None):
    return frame.pack(
        "zstd", params or {"level": 3}, DType.FLOAT32, Container.NUMPY, shape, payload
    )


def test_pack_unpack_roundtrip():
    fr = frame.unpack(_frame())
    assert fr.codec_id == "zstd"
    assert fr.params == {"level": 3}
    assert fr.dtype == DType.FLOAT32
    assert fr.container == Container.NUMPY
    assert fr.shape == (3, 1)
    assert bytes(fr.payload) == b"abc"
    assert not fr.stream


def test_layout_matches_documentation():
    blob = _frame(payload=b"xy", shape=(2,))
    assert blob[:4] == b"SWPF"
    assert blob[4] == frame.VERSION
    assert blob[6] == int(DType.FLOAT32)
    assert blob[8] == 1  # ndim
    assert blob[9] == len("zstd")
    (crc,) = struct.unpack("<I", blob[-4:])
    assert crc == zlib.crc32(blob[:-4])


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"", "empty input"),
        (b"SW", "truncated"),
        (b"NOPE" + bytes(40), "bad magic"),
        (b"\x89PNG\r\n\x1a\n" + bytes(40), "bad magic"),
        (b"SWPF" + bytes(3), "truncated"),
    ],
)
def test_foreign_and_short_inputs(blob, message):
    with pytest.raises(sp.CodecError, match=message):
        frame.unpack(blob)


def test_truncation_at_every_length_is_refused():
    blob = _frame(payload=bytes(range(50)))
    for n in range(len(blob)):
        with pytest.raises(sp.CodecError):
            frame.unpack(blob[:n])


def test_trailing_bytes_are_refused():
    with pytest.raises(sp.CodecError, match="trailing"):
        frame.unpack(_frame()[:-4] + b"junk" + _frame()[-4:])


def test_every_single_bit_flip_is_detected():
    blob = bytearray(_frame(payload=bytes(range(20))))
    for i in range(len(blob) * 8):
        bad = bytearray(blob)
        bad[i // 8] ^= 1 << (i % 8)
        with pytest.raises(sp.CodecError):
            frame.unpack(bytes(bad))


def _recrc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def test_wrong_version_is_named():
    blob = bytearray(_frame())
    blob[4] = 99
    with pytest.raises(sp.CodecError, match="version 99"):
        frame.unpack(_recrc(bytes(blob[:-4])))


def test_checksummed_but_invalid_fields_are_named():
    blob = bytearray(_frame())
    blob[6] = 77  # dtype code
    with pytest.raises(sp.CodecError, match="dtype code 77"):
        frame.unpack(_recrc(bytes(blob[:-4])))
    blob = bytearray(_frame())
    blob[5] = 0x80  # unknown flag
    with pytest.raises(sp.CodecError, match="flags"):
        frame.unpack(_recrc(bytes(blob[:-4])))


def test_params_must_be_a_json_object():
    blob = frame.pack("zstd", {}, DType.FLOAT32, Container.NUMPY, (1,), b"")
    body = blob[:-4].replace(b"{}", b"[]")
    with pytest.raises(sp.CodecError, match="JSON object"):
        frame.unpack(_recrc(body))


def test_too_many_dimensions_refused_on_pack():
    with pytest.raises(sp.CodecError, match="dimensions"):
        frame.pack("zstd", {}, DType.FLOAT32, Container.NUMPY, (1,) * 33, b"")


def test_decode_refuses_huge_declared_shape_without_allocating():
    payload = sp.get_codec("zstd").encode(np.zeros(4, np.float32))
    fr = frame.unpack(payload)
    huge = frame.pack("zstd", fr.params, fr.dtype, fr.container, (1 << 38,), bytes(fr.payload))
    with pytest.raises(sp.CodecError, match=r"decode limit|declares"):
        sp.decode(huge)
    # Within the limit but inconsistent with the payload: also refused.
    wrong = frame.pack("zstd", fr.params, fr.dtype, fr.container, (1000,), bytes(fr.payload))
    with pytest.raises(sp.CodecError, match="holds 16 bytes"):
        sp.decode(wrong)
