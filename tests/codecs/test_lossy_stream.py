"""`lossy-stream`: a basis learned from the stream, followed by the receiver from frames alone."""

import numpy as np
import pytest

import swarmpress as sp
from swarmpress.codecs.core import frame
from tests.codecs.strategies import BF16


def _stream(n=6, rows=256, chans=64, seed=0):
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((chans, chans)) * np.exp(-np.arange(chans) / 8)[:, None]
    return [(rng.standard_normal((rows, chans)) @ mix).astype(BF16) for _ in range(n)]


def _uses_basis(blob: bytes) -> bool:
    return bool(frame.unpack(blob).payload[8] & 0x01)


def test_every_frame_meets_the_target_and_the_basis_pays():
    enc, dec = sp.get_codec("lossy-stream"), sp.get_codec("lossy-stream")
    frames = _stream()
    stream_bytes = plain_bytes = 0
    for i, x in enumerate(frames):
        blob = enc.encode(x)
        assert frame.unpack(blob).stateful
        y = dec.decode(blob)
        assert y.dtype == x.dtype and y.shape == x.shape
        assert sp.similarity(x, y) > 0.99
        if i >= 2:
            assert _uses_basis(blob)
            stream_bytes += len(blob)
            plain_bytes += len(sp.get_codec("lossy", max_rank=0).encode(x))
    assert stream_bytes < 0.9 * plain_bytes


def test_lost_frame_is_detected_not_decoded_wrong():
    enc = sp.get_codec("lossy-stream")
    blobs = [enc.encode(x) for x in _stream(n=4)]
    dec = sp.get_codec("lossy-stream")
    dec.decode(blobs[0])
    with pytest.raises(sp.CodecError, match="lost or reordered"):
        dec.decode(blobs[2])  # frame 1 carried the basis frame 2 needs


def test_module_level_decode_refuses_stateful_frames():
    blob = sp.get_codec("lossy-stream").encode(_stream(n=1)[0])
    with pytest.raises(sp.CodecError, match="stateful"):
        sp.decode(blob)


def test_state_dict_continues_the_stream_identically():
    frames = _stream(n=6, seed=2)
    whole = sp.get_codec("lossy-stream")
    ref = [whole.encode(x) for x in frames]
    first = sp.get_codec("lossy-stream")
    out = [first.encode(x) for x in frames[:3]]
    second = sp.get_codec("lossy-stream")
    second.load_state_dict(first.state_dict())
    out += [second.encode(x) for x in frames[3:]]
    assert out == ref
    with pytest.raises(sp.CodecError, match="version"):
        second.load_state_dict({"version": 99})


def test_channel_change_needs_reset():
    enc = sp.get_codec("lossy-stream")
    enc.encode(_stream(n=1, chans=64)[0])
    with pytest.raises(sp.CodecError, match="reset"):
        enc.encode(_stream(n=1, chans=32)[0])
    enc.reset()
    enc.encode(_stream(n=1, chans=32)[0])


def test_mutated_frames_raise_codec_error():
    enc = sp.get_codec("lossy-stream")
    blobs = [enc.encode(x) for x in _stream(n=3, rows=64, chans=16)]
    rng = np.random.default_rng(5)
    for _ in range(300):
        i = int(rng.integers(3))
        fr = frame.unpack(blobs[i])
        payload = bytearray(fr.payload)
        for _ in range(int(rng.integers(1, 4))):
            payload[int(rng.integers(len(payload)))] = int(rng.integers(256))
        blob = frame.pack(
            fr.codec_id, fr.params, fr.dtype, fr.container, fr.shape, bytes(payload), flags=fr.flags
        )
        dec = sp.get_codec("lossy-stream")
        try:
            for b in blobs[:i]:
                dec.decode(b)
            y = dec.decode(blob)
        except sp.CodecError:
            continue
        assert y.shape == fr.shape
