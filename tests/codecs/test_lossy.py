"""The `lossy` codec meets its quality target on every tensor, adversarial ones included."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import swarmpress as sp
from tests.codecs.strategies import BF16, finite_tensor

TARGETS = [("similarity", 0.99), ("similarity", 0.999), ("rel_l2", 0.02), ("max_abs", 0.05)]


def _meets(target, value, x, y):
    if target == "similarity":
        return sp.similarity(x, y) > value
    if target == "rel_l2":
        return sp.rel_l2(x, y) <= value
    return sp.max_abs_error(x, y) <= value


MODES = ("max", "fast")


@given(finite_tensor(max_magnitude=1e3), st.sampled_from(TARGETS), st.sampled_from(MODES))
def test_target_met_on_any_tensor(x, spec, mode):
    target, value = spec
    codec = sp.get_codec("lossy", target=target, value=value, mode=mode)
    y = sp.decode(codec.encode(x))
    assert y.dtype == x.dtype and y.shape == x.shape
    assert _meets(target, value, x, y)


def _adversarial():
    rng = np.random.default_rng(11)
    heavy = rng.standard_t(1.5, (64, 96))
    massive = rng.standard_normal((128, 256)) * np.exp(rng.normal(0, 1, 256))
    massive[0, [7, 99]] = 3000.0  # massive activations at the first token
    massive[:, 7] *= 50
    rows = rng.standard_normal((200, 64)) * np.exp(rng.normal(0, 2, 200))[:, None]
    return {
        "zeros": np.zeros((16, 32), np.float32),
        "constant": np.full((8, 40), -2.5, np.float32),
        "one-huge-outlier": np.r_[rng.standard_normal(4095) * 1e-3, 1e4].astype(np.float32),
        "heavy-tails": heavy.astype(BF16),
        "massive-channels": massive.astype(BF16),
        "row-scales": rows.astype(np.float16),
        "tiny": np.array([3e-39, -1e-38], np.float32),
        "scalar": np.float32(1.5),
        "one-element": np.array([[7.0]], np.float16),
        "non-contiguous": rng.standard_normal((50, 60)).astype(np.float32)[::2, ::3],
        "transposed": rng.standard_normal((40, 30)).astype(BF16).T,
    }


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(_adversarial()))
@pytest.mark.parametrize("spec", TARGETS)
def test_target_met_on_adversarial_tensors(name, spec, mode):
    x = _adversarial()[name]
    codec = sp.get_codec("lossy", target=spec[0], value=spec[1], mode=mode)
    y = sp.decode(codec.encode(x))
    assert y.shape == np.shape(x)
    assert _meets(*spec, x, y)


def test_beats_blockq_on_structured_activations():
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((512, 256)) * np.exp(rng.normal(0, 1, 256))).astype(BF16)
    lossy = sp.get_codec("lossy").encode(x)
    blockq = sp.get_codec("blockq").encode(x)
    assert sp.similarity(x, sp.decode(lossy)) > 0.99
    assert len(lossy) < 0.9 * len(blockq)


def test_tighter_target_costs_more_bytes():
    x = np.random.default_rng(4).standard_normal((256, 128)).astype(np.float32)
    sizes = [len(sp.get_codec("lossy", value=v).encode(x)) for v in (0.9, 0.99, 0.999)]
    assert sizes[0] < sizes[1] < sizes[2]


def test_torch_bf16_round_trip():
    t = torch.randn(4, 64, 96).to(torch.bfloat16)
    out = sp.decode(sp.get_codec("lossy").encode(t, role="activation"))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.bfloat16
    assert sp.similarity(t, out) > 0.99


@pytest.mark.parametrize("mode", ["fast", "max"])
@pytest.mark.parametrize("dtype", [BF16, np.float16, np.float32])
def test_non_finite_tensors_travel_bit_exact(mode, dtype):
    """NaN or infinity must not crash a training step: the frame carries the tensor exactly."""
    x = np.random.default_rng(3).standard_normal((32, 48)).astype(dtype)
    x[1, 2], x[5, 7], x[9, 0] = np.nan, np.inf, -np.inf
    blob = sp.get_codec("lossy", mode=mode).encode(x)
    y = sp.decode(blob)
    assert y.dtype == x.dtype and y.shape == x.shape
    bits = {2: np.uint16, 4: np.uint32}[x.dtype.itemsize]
    assert np.array_equal(y.view(bits), x.view(bits))
    t = torch.from_numpy(x.astype(np.float32)).to(torch.bfloat16)
    out = sp.decode(sp.get_codec("lossy", mode=mode).encode(t))
    assert torch.equal(out.isnan(), t.isnan()) and torch.equal(out[~t.isnan()], t[~t.isnan()])


def test_bad_targets_are_refused():
    with pytest.raises(sp.CodecError, match=r"\[0, 1\)"):
        sp.get_codec("lossy", value=1.5).encode(np.ones(4, np.float32))
    with pytest.raises(sp.CodecError, match="positive"):
        sp.get_codec("lossy", target="rel_l2", value=0.0).encode(np.ones(4, np.float32))
    with pytest.raises(sp.CodecError, match="allowed"):
        sp.get_codec("lossy", target="psnr")


def _rank(blob: bytes) -> int:  # max-mode payload: mode u8, step f64, rank u16
    from swarmpress.codecs.core import frame

    return int.from_bytes(bytes(frame.unpack(blob).payload[9:11]), "little")


def test_low_rank_part_is_used_when_it_pays():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((512, 16)) @ rng.standard_normal((16, 256)) * 3
    x = (x + 0.05 * rng.standard_normal((512, 256))).astype(BF16)
    with_rank = sp.get_codec("lossy", mode="max").encode(x)
    without = sp.get_codec("lossy", mode="max", max_rank=0).encode(x)
    assert _rank(with_rank) > 0 and _rank(without) == 0
    assert len(with_rank) < 0.8 * len(without)
    assert sp.similarity(x, sp.decode(with_rank)) > 0.99


def test_full_rank_noise_pays_nothing_for_the_low_rank_option():
    x = np.random.default_rng(9).standard_normal((256, 128)).astype(np.float32)
    a = sp.get_codec("lossy", mode="max").encode(x)
    b = sp.get_codec("lossy", mode="max", max_rank=0).encode(x)
    assert _rank(a) == 0 and len(a) == len(b)


def test_wide_dynamic_range_round_trips_or_is_refused_clearly():
    # Column 0 alternates 1e9 / 2e9, the rest is tiny: the step is set by max_abs=1e-3, so
    # codes need ~41 bits (raw low bits wider than 32 must still pack and unpack).
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1e-3, (64, 16))
    x[:, 0] = np.where(np.arange(64) % 2, 1e9, 2e9)
    x = x.astype(np.float32)
    for mode in MODES:
        codec = sp.get_codec("lossy", target="max_abs", value=1e-3, mode=mode)
        y = sp.decode(codec.encode(x))
        assert sp.max_abs_error(x, y) <= 1e-3
    huge = np.array([[1e30, -1e30, 1.0, 0.5]] * 8, np.float32)
    with pytest.raises(sp.CodecError, match="dynamic range"):
        sp.get_codec("lossy", target="max_abs", value=1e-6).encode(huge)


@pytest.mark.parametrize("name", ["lossy-stream", "topk"])
def test_failed_encode_leaves_stream_state_untouched(name):
    from tests.codecs.test_lossy_stream import _stream

    if name == "topk":  # the sender's state is its error feedback; frames decode alone
        enc, dec = sp.codecs.ErrorFeedback(name), sp.get_codec(name)
    else:
        codec = sp.get_codec(name)
        enc, dec = codec.encoder(), codec.decoder()
    frames = _stream(n=3, rows=64, chans=16)
    dec.decode(enc.encode(frames[0]))
    before = enc.state_dict()
    with pytest.raises(sp.CodecError, match="dimensions"):
        enc.encode(np.zeros((1,) * 33, np.float32))
    after = enc.state_dict()
    assert before.keys() == after.keys()
    for key in before:
        a, b = before[key], after[key]
        assert (a is None and b is None) or np.array_equal(np.asarray(a), np.asarray(b)), key
    for x in frames[1:]:  # the stream goes on in sync
        dec.decode(enc.encode(x))


def _mode_byte(blob: bytes) -> int:
    from swarmpress.codecs.core import frame

    return frame.unpack(blob).payload[0]


def test_fast_mode_is_close_to_max_mode_and_falls_back_when_out_of_range():
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((256, 96)) * np.exp(rng.normal(0, 1, 96))).astype(BF16)
    fast = sp.get_codec("lossy", mode="fast").encode(x)
    best = sp.get_codec("lossy", mode="max", max_rank=0).encode(x)
    assert _mode_byte(fast) == 2 and _mode_byte(best) == 1
    assert len(fast) < 1.05 * len(best)
    assert sp.similarity(x, sp.decode(fast)) > 0.99
    wide = rng.normal(0, 1e-3, (64, 16))
    wide[:, 0] = np.where(np.arange(64) % 2, 1e9, 2e9)  # codes wider than 32 raw bits
    wide = wide.astype(np.float32)
    blob = sp.get_codec("lossy", mode="fast", target="max_abs", value=1e-3).encode(wide)
    assert _mode_byte(blob) == 1
    assert sp.max_abs_error(wide, sp.decode(blob)) <= 1e-3


@pytest.mark.parametrize("dtype", [np.float32, np.float16, BF16])
def test_fast_mode_decodes_exactly_what_the_encoder_measured(dtype):
    # The encoder's own check and the decoder share one dequantizer: decoding twice and
    # re-encoding the decoded tensor at the same target must be stable.
    rng = np.random.default_rng(6)
    x = rng.standard_normal((64, 48)).astype(dtype)
    blob = sp.get_codec("lossy", mode="fast").encode(x)
    y1, y2 = sp.decode(blob), sp.decode(blob)
    assert y1.dtype == x.dtype
    np.testing.assert_array_equal(y1.view(np.uint8), y2.view(np.uint8))
    assert sp.similarity(x, y1) > 0.99


@pytest.mark.parametrize("dtype", [BF16, np.float16, np.float32])
def test_frames_do_not_depend_on_the_thread_count(dtype):
    # Several coded chunks (2**15 values each) and row groups: every thread count must give
    # the same bytes, and every decoder thread count the same values.
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((700, 160)) * np.exp(rng.normal(0, 1, 160))).astype(dtype)
    x[3] *= 40  # a high-norm row
    blobs = [sp.get_codec("lossy", threads=t).encode(x) for t in (1, 2, 3)]
    assert blobs[0] == blobs[1] == blobs[2]
    outs = [sp.get_codec("lossy", threads=t).decode(blobs[0]) for t in (1, 2, 5)]
    bits = {2: np.uint16, 4: np.uint32}[x.dtype.itemsize]
    assert all(np.array_equal(o.view(bits), outs[0].view(bits)) for o in outs)
    assert sp.similarity(x, outs[0]) > 0.99


def test_spec_strings_build_the_same_codec_as_keywords():
    a = sp.get_codec("lossy:value=0.95:threads=2")
    b = sp.get_codec("lossy", value=0.95, threads=2)
    assert a.config == b.config
    assert sp.get_codec("lossless:mode=fast").config == sp.get_codec("lossless", mode="fast").config
    with pytest.raises(sp.CodecError, match="set in the spec and as arguments"):
        sp.get_codec("lossy:value=0.95", value=0.9)
    with pytest.raises(sp.CodecError, match="unknown parameter"):
        sp.get_codec("lossy:speed=9")


def test_the_widest_fast_buckets_still_decode():
    # Red team F1: scales whose raw low bits reached 33 overflowed the 64-bit bit stack and
    # the decoder refused the encoder's own frame. Scan the amplitudes around that edge.
    for seed in range(6):
        for amp in (2.0**33, 2.0**33.25, 2.0**33.5, 2.0**34):
            x = (np.random.default_rng(seed).standard_normal((64, 64)) * amp).astype(np.float32)
            blob = sp.get_codec("lossy:target=max_abs:value=0.5").encode(x)
            assert sp.max_abs_error(x, sp.decode(blob)) <= 0.5


def test_few_rows_are_one_channel_and_cost_no_more_than_lossless():
    # Red team F3: one token of 4096 values paid 8-byte means per channel.
    x = np.random.default_rng(2).standard_normal((1, 4096)).astype(BF16)
    lossy = sp.get_codec("lossy").encode(x)
    assert len(lossy) < 0.5 * x.nbytes < len(sp.get_codec("lossless").encode(x))
    assert sp.similarity(x, sp.decode(lossy)) > 0.99


def test_frames_cannot_choose_the_receivers_thread_count():
    # Red team F4: a frame whose params say threads=256 must not start 256 threads.
    import threading

    from swarmpress.codecs.core import frame

    x = np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32)
    fr = frame.unpack(sp.get_codec("lossy").encode(x))
    before = threading.active_count()
    for t in (250, 251, 252, 253, 254, 255, 256):
        blob = frame.pack("lossy", {"threads": t}, fr.dtype, fr.container, fr.shape, fr.payload)
        assert sp.similarity(x, sp.decode(blob)) > 0.99
    assert threading.active_count() <= before + 4


@pytest.mark.parametrize("bad", [123, None, b"lossy"])
def test_get_codec_names_must_be_strings(bad):
    with pytest.raises(sp.CodecError, match="must be a string"):
        sp.get_codec(bad)


def test_parameter_values_that_overflow_or_are_not_ascii_are_refused():
    with pytest.raises(sp.CodecError, match="too large"):
        sp.get_codec("lossy", value=10**400)
    for spec in ("lossy:threads=\u0663", "lossy:threads=\uff13", "lossy:value=\u0660.9"):
        with pytest.raises(sp.CodecError, match="must be"):
            sp.get_codec(spec)
