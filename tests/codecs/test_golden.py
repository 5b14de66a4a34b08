"""Golden frames and the contract every registered codec keeps.

tests/codecs/golden/frames.npz holds one frame per codec and setting (made by
golden/make_golden.py on stored inputs) and the hash of what each decodes to. Every
decoder must keep decoding those bytes to exactly that: a wire format cannot drift
silently. Encoders may change their choices (a better step, another rank), so new frames
are held to the codec's promise instead, not to the old bytes.
"""

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest

import swarmpress as sp

HERE = Path(__file__).with_name("golden")
GOLDEN = np.load(HERE / "frames.npz")
_spec = importlib.util.spec_from_file_location("make_golden", HERE / "make_golden.py")
make_golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_golden)


def _digest(x) -> str:
    return hashlib.sha256(np.ascontiguousarray(np.asarray(x)).tobytes()).hexdigest()


def _frame(case: str) -> bytes:
    return bytes(GOLDEN[f"frame/{case}"])


def _want(case: str) -> str:
    return bytes(GOLDEN[f"decoded/{case}"]).decode()


@pytest.mark.parametrize(("case", "spec", "src"), make_golden.CASES, ids=lambda v: str(v))
def test_golden_frames_decode_to_the_same_bits(case, spec, src):
    frame = _frame(case)
    y = sp.decode(frame)
    assert _digest(y) == _want(case), f"{case}: the decoder's output for a stored frame changed"


def test_a_golden_stream_decodes_to_the_same_bits_in_order():
    follower = sp.get_codec(make_golden.STREAM[0]).decoder()
    for i in range(make_golden.STREAM[1]):
        assert _digest(follower.decode(_frame(f"stream-{i}"))) == _want(f"stream-{i}")
        with pytest.raises(sp.CodecError, match="stream codec"):
            sp.decode(_frame(f"stream-{i}"))


@pytest.mark.parametrize(("case", "spec", "src"), make_golden.CASES, ids=lambda v: str(v))
def test_todays_encoder_keeps_the_codecs_promise_on_the_golden_inputs(case, spec, src):
    x = make_golden.as_tensor(src, GOLDEN[f"in/{src}"])
    codec = sp.get_codec(spec)
    frame = codec.encode(x)
    y = sp.decode(frame)
    assert y.dtype == x.dtype and y.shape == x.shape
    if codec.lossless or not np.isfinite(x.astype(np.float32)).all():
        assert np.asarray(y).tobytes() == x.tobytes()  # bit-exact (NaN payloads included)
    elif spec != "topk" and not spec.startswith("blockq"):
        target = codec.get_config().get("target", "similarity")
        if target == "similarity":
            assert sp.similarity(x, y) > 0.99
        else:
            assert sp.rel_l2(x, y) <= codec.get_config()["value"] * (1 + 1e-9)
    if spec == "raw":  # a format with no choices: the very same bytes
        assert frame == _frame(case)


@pytest.mark.parametrize("codec_id", [c["id"] for c in sp.list_codecs()])
def test_every_registered_codec_round_trips_its_config_and_names_itself(codec_id):
    codec = sp.get_codec(codec_id)
    config = codec.get_config()
    again = sp.codecs.codec_class(codec_id).from_config(config)
    assert again.get_config() == config
    text = repr(codec)  # numcodecs-style: the class and every setting
    assert all(f"{k}={v!r}" in text for k, v in config.items() if k != "id"), text
    described = codec.describe()
    assert described["id"] == codec_id and described["stream"] is codec.stream
    # the two kinds of the contract: a stateless codec encodes and decodes itself, a stream
    # codec hands out the two ends of a stream
    if codec.stream:
        assert isinstance(codec, sp.codecs.StreamCodec)
        assert isinstance(codec.encoder(), sp.codecs.StreamEncoder)
        assert isinstance(codec.decoder(), sp.codecs.StreamDecoder)
    else:
        assert isinstance(codec, sp.codecs.Codec) and callable(codec.encode)
    # every parameter a codec declares appears in its config
    assert {p["name"] for p in described["params"]} <= set(config) | {"threads"}
