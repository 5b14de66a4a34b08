"""`lossy-stream`: a basis learned from the stream, followed by the receiver from frames alone;
encoder and decoder are state objects with state_dict()/load_state_dict()."""

import numpy as np
import pytest

import swarmpress as sp
from swarmpress.codecs.core import frame
from tests.codecs.strategies import BF16


def _stream(n=6, rows=256, chans=64, seed=0):
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((chans, chans)) * np.exp(-np.arange(chans) / 8)[:, None]
    return [(rng.standard_normal((rows, chans)) @ mix).astype(BF16) for _ in range(n)]


def _ends():
    codec = sp.get_codec("lossy-stream")
    return codec.encoder(), codec.decoder()


def _uses_basis(blob: bytes) -> bool:
    return bool(frame.unpack(blob).payload[8] & 0x01)


def test_every_frame_meets_the_target_and_the_basis_pays():
    enc, dec = _ends()
    frames = _stream()
    stream_bytes = plain_bytes = 0
    for i, x in enumerate(frames):
        blob = enc.encode(x)
        assert frame.unpack(blob).stream
        y = dec.decode(blob)
        assert y.dtype == x.dtype and y.shape == x.shape
        assert sp.similarity(x, y) > 0.99
        if i >= 2:
            assert _uses_basis(blob)
            stream_bytes += len(blob)
            plain_bytes += len(sp.get_codec("lossy", max_rank=0).encode(x))
    assert stream_bytes < 0.9 * plain_bytes


def test_lost_frame_is_detected_not_decoded_wrong():
    enc, dec = _ends()
    blobs = [enc.encode(x) for x in _stream(n=4)]
    dec.decode(blobs[0])
    with pytest.raises(sp.CodecError, match="lost or reordered"):
        dec.decode(blobs[2])  # frame 1 carried the basis frame 2 needs


def test_module_level_decode_refuses_stream_frames_and_says_what_to_use():
    enc, dec = _ends()
    blob = enc.encode(_stream(n=1)[0])
    with pytest.raises(sp.CodecError, match=r"stream codec .*decoder\(\)"):
        sp.decode(blob)
    assert dec.decode(blob).shape == (256, 64)


def test_a_stream_codec_is_configuration_only():
    codec = sp.get_codec("lossy-stream:value=0.98")
    assert codec.stream and not hasattr(codec, "encode") and not hasattr(codec, "decode")
    assert codec.encoder().codec == codec and codec.decoder().codec == codec
    assert "LossyStreamCodec(" in repr(codec.encoder()) and "value=0.98" in repr(codec.decoder())


def test_forged_stream_flags_are_refused_both_ways():
    enc, dec = _ends()
    fr = frame.unpack(enc.encode(_stream(n=1)[0]))
    cleared = frame.pack(fr.codec_id, fr.params, fr.dtype, fr.container, fr.shape, fr.payload)
    with pytest.raises(sp.CodecError, match="forged"):
        dec.decode(cleared)  # a stream frame whose flag was cleared
    with pytest.raises(sp.CodecError, match="stream codec"):
        sp.decode(cleared)  # the registry knows lossy-stream is a stream codec
    plain = frame.unpack(sp.get_codec("lossy").encode(np.ones((4, 4), np.float32)))
    flagged = frame.pack(
        "lossy",
        plain.params,
        plain.dtype,
        plain.container,
        plain.shape,
        plain.payload,
        flags=frame.FLAG_STREAM,
    )
    with pytest.raises(sp.CodecError, match="stream codec"):
        sp.decode(flagged)


def test_state_dict_continues_the_stream_identically():
    frames = _stream(n=6, seed=2)
    codec = sp.get_codec("lossy-stream")
    whole, follower = codec.encoder(stream_id=7), codec.decoder()
    ref = [whole.encode(x) for x in frames]
    want = [follower.decode(b) for b in ref]
    first, dec1 = codec.encoder(stream_id=7), codec.decoder()
    out = [first.encode(x) for x in frames[:3]]
    got = [dec1.decode(b) for b in out]
    second, dec2 = _ends()
    second.load_state_dict(_through_npz(first.state_dict()))
    dec2.load_state_dict(_through_npz(dec1.state_dict()))
    out += [second.encode(x) for x in frames[3:]]
    got += [dec2.decode(b) for b in out[3:]]
    assert out == ref
    assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))
    with pytest.raises(sp.CodecError, match="version"):
        second.load_state_dict({"version": 99})


def _through_npz(state: dict) -> dict:
    """A state as np.savez keeps it (None as a 0-d object array, ints as 0-d arrays)."""
    import io

    buf = io.BytesIO()
    np.savez(buf, **state)
    buf.seek(0)
    return dict(np.load(buf, allow_pickle=True))


def test_bad_states_are_refused_with_the_field_named():
    enc, dec = _ends()
    for x in _stream(n=2, rows=64, chans=16):
        dec.decode(enc.encode(x))
    good_e, good_d = enc.state_dict(), dec.state_dict()
    e2, d2 = _ends()
    cases = [
        (e2, {**good_e, "sum": np.zeros(15)}, "shape"),
        (e2, {**good_e, "outer": np.full((16, 16), np.nan)}, "outer"),
        (e2, {**good_e, "rows": -1}, "rows"),
        (e2, {k: v for k, v in good_e.items() if k != "basis"}, "basis"),
        (e2, {**good_e, "basis": np.zeros((16, 16))}, "singular"),
        (e2, {**good_e, "outer": None}, "together"),
        (d2, {**good_d, "basis": np.ones((16, 15))}, "basis"),
        (d2, {**good_d, "basis": np.full((16, 16), 1e9)}, "too large"),
        (d2, {**good_d, "basis": np.full((16, 16), 0.5)}, "fixed point"),
        (d2, {**good_d, "basis_id": 2**40}, "outside"),
        (e2, {**good_e, "basis_id": 2**32 - 1}, "outside"),
        (e2, {**good_e, "rows": 10**400}, "rows"),
        (e2, {**good_e, "frames": 2.9}, "frames must be an integer"),
        (e2, {**good_e, "sum": np.full(16, 1e308)}, "too large"),
        (e2, {**good_e, "stream_id": -1}, "stream_id"),
        (d2, {**good_d, "basis_id": "x"}, "basis_id"),
        (d2, [1, 2], "dict"),
    ]
    for end, state, word in cases:
        with pytest.raises(sp.CodecError, match=word):
            end.load_state_dict(state)
    big = sp.get_codec("lossy-stream", max_channels=8).encoder()
    with pytest.raises(sp.CodecError, match="max_channels"):
        big.load_state_dict(good_e)


def test_channel_change_needs_reset():
    enc = sp.get_codec("lossy-stream").encoder()
    enc.encode(_stream(n=1, chans=64)[0])
    with pytest.raises(sp.CodecError, match="reset"):
        enc.encode(_stream(n=1, chans=32)[0])
    enc.reset()
    enc.encode(_stream(n=1, chans=32)[0])


def test_mutated_frames_raise_codec_error():
    enc = sp.get_codec("lossy-stream").encoder()
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
        dec = sp.get_codec("lossy-stream").decoder()
        try:
            for b in blobs[:i]:
                dec.decode(b)
            y = dec.decode(blob)
        except sp.CodecError:
            continue
        assert y.shape == fr.shape


def _mixed(seed: int, n: int = 5):
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((32, 32)) * np.exp(-np.arange(32) / 4)[:, None]
    return [(rng.standard_normal((128, 32)) @ mix).astype(np.float32) for _ in range(n)]


def test_frames_of_another_stream_are_refused_not_decoded_wrong():
    """Two streams on one schedule reach the same basis numbers: the stream id in every
    frame tells them apart (a lost refresh replaced by another stream's, a crossed link)."""
    codec = sp.get_codec("lossy-stream", refresh=2)
    a, b, follower = codec.encoder(), codec.encoder(), codec.decoder()
    assert a.stream_id != b.stream_id
    for xa, xb in zip(_mixed(1), _mixed(2), strict=True):
        follower.decode(a.encode(xa))
        b.encode(xb)
    before = follower.state_dict()
    with pytest.raises(sp.CodecError, match="another stream"):
        follower.decode(b.encode(_mixed(3, 1)[0]))
    after = follower.state_dict()
    assert before["basis_id"] == after["basis_id"] and np.array_equal(
        before["basis"], after["basis"]
    )
    follower.decode(a.encode(_mixed(4, 1)[0]))  # its own stream goes on


def test_a_frame_that_fails_after_decoding_changes_nothing():
    """The basis a frame teaches is committed only once its tensor is delivered: a frame
    whose tensor cannot be placed (an unknown device) can be decoded again."""
    import torch

    enc, dec = _ends()
    frames = [enc.encode(torch.from_numpy(x.astype(np.float32))) for x in _stream(3, 64, 16)]
    dec.decode(frames[0])
    with pytest.raises(sp.CodecError, match="device"):
        dec.decode(frames[1], device="nosuchdevice")
    dec.decode(frames[1])  # the refresh frame again: still in sequence
    dec.decode(frames[2])


def test_state_dicts_are_copies():
    enc, dec = _ends()
    for x in _stream(n=3, rows=64, chans=16):
        dec.decode(enc.encode(x))
    snap = dec.state_dict()
    snap["basis"][:] = 0
    assert np.any(dec.state_dict()["basis"])
    snap = enc.state_dict()
    snap["outer"][:] = 0
    assert np.any(enc.state_dict()["outer"])


def test_a_basis_beyond_the_decode_limit_is_refused_before_it_is_built():
    from swarmpress.codecs import max_decode_bytes, set_max_decode_bytes

    enc, dec = _ends()
    frames = [enc.encode(x) for x in _stream(n=2, rows=64, chans=64)]
    old = max_decode_bytes()
    try:
        dec.decode(frames[0])
        set_max_decode_bytes(64 * 64 * 8 - 1)  # the tensor fits, its 64 x 64 basis does not
        with pytest.raises(sp.CodecError, match=r"limit|exceeds|cap"):
            dec.decode(frames[1])
    finally:
        set_max_decode_bytes(old)
    dec.decode(frames[1])
