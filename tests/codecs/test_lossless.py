"""`lossless`: bit-exact round trips of both modes, hostile max-mode payloads, peak memory."""

from __future__ import annotations

import struct
import tracemalloc

import ml_dtypes
import numpy as np
import pytest

import swarmpress as sp
from swarmpress.codecs.core import frame
from swarmpress.codecs.families.lossless import model as LM
from swarmpress.codecs.families.lossless import model_kernels as K

BF16 = np.dtype(ml_dtypes.bfloat16)
DTYPES = [BF16, np.dtype(np.float16), np.dtype(np.float32)]
UINT = {2: np.uint16, 4: np.uint32}
MODES = ["max", "fast"]
SPECIALS = {  # NaN payloads, +-inf, -0.0, subnormals, the largest finite, a tiny normal
    BF16: [0x7FC1, 0xFFA5, 0x7F80, 0xFF80, 0x8000, 0x0001, 0x807F, 0x7F7F, 0x0080],
    np.dtype(np.float16): [0x7E01, 0xFE55, 0x7C00, 0xFC00, 0x8000, 0x0001, 0x83FF, 0x7BFF, 0x0400],
    np.dtype(np.float32): [
        0x7FC00001, 0xFFC12345, 0x7F800000, 0xFF800000, 0x80000000, 0x00000001, 0x807FFFFF,
        0x7F7FFFFF, 0x00800000,
    ],
}  # fmt: skip


def bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).view(UINT[a.dtype.itemsize])


def activations(shape: tuple[int, ...], dtype: np.dtype, seed: int = 0) -> np.ndarray:
    """Channels of very different scales and offsets, rows of different norms, some zeros."""
    rng = np.random.default_rng(seed)
    chans = shape[-1] if shape else 1
    scale = np.exp2(rng.normal(0, 3, chans)) * np.where(rng.random(chans) < 0.05, 300.0, 1.0)
    rows = np.exp2(rng.normal(0, 1, (*shape[:-1], 1))) if len(shape) > 1 else 1.0
    x = (rng.standard_normal(shape) + rng.normal(0, 0.5, chans)) * scale * rows
    x = np.asarray(x)
    x[np.abs(x) < 1e-3 * np.abs(x).max()] = 0.0
    return np.clip(x, -6e4, 6e4).astype(np.float32).astype(dtype)


def roundtrip(x: np.ndarray, mode: str) -> bytes:
    blob = sp.get_codec("lossless", mode=mode).encode(x)
    y = sp.decode(blob)
    assert y.dtype == x.dtype and y.shape == x.shape
    np.testing.assert_array_equal(bits(y), bits(x))
    return blob


def payload(blob: bytes) -> bytes:
    return bytes(frame.unpack(blob).payload)


# ----------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    "shape",
    [(), (1,), (5,), (1000,), (1, 7), (3, 1), (40, 1), (1, 5000), (31, 33), (33, 31), (64, 96),
     (2, 3, 50), (4, 8, 40), (1, 70_000), (40, 3000)],
    ids=str,
)  # fmt: skip
def test_roundtrip_shapes(shape, dtype, mode):
    roundtrip(activations(shape, dtype), mode)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_special_values_and_random_bits(dtype, mode):
    special = np.array(SPECIALS[dtype], dtype=UINT[dtype.itemsize])
    x = activations((64, 48), dtype)
    flat = bits(x).reshape(-1).copy()
    flat[::7] = np.resize(special, flat[::7].size)
    roundtrip(flat.view(dtype).reshape(64, 48), mode)
    roundtrip(np.tile(special, 60).view(dtype).reshape(60, 9), mode)
    rng = np.random.default_rng(1)
    noise = rng.integers(0, np.iinfo(UINT[dtype.itemsize]).max, (50, 40), dtype=np.uint64)
    roundtrip(noise.astype(UINT[dtype.itemsize]).view(dtype), mode)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_max_mode_model_paths(dtype):
    """Escapes (a dynamic range wider than the window), subnormal runs, all-zero and
    constant tensors, trailing zero mantissa bits, one row of many channels."""
    rng = np.random.default_rng(2)
    wide = rng.standard_normal((64, 64)) * np.exp2(rng.uniform(-60, 60, (64, 64)))
    with np.errstate(over="ignore"):  # fp16 overflows to inf: fine, it is coded too
        roundtrip(wide.astype(np.float32).astype(dtype), "max")
    tiny = np.finfo(dtype).smallest_subnormal * rng.integers(-40, 40, (64, 64))
    roundtrip(np.asarray(tiny, dtype=dtype), "max")
    roundtrip(np.zeros((40, 40), dtype), "max")
    roundtrip(np.full((40, 40), -1.375, dtype), "max")
    roundtrip(np.full((40, 40), 1.3, dtype), "max")
    roundtrip(activations((48, 80), BF16).astype(dtype), "max")  # low mantissa bits zero
    roundtrip(activations((1, 20_000), dtype), "max")


def test_default_is_max_mode_and_beats_fast_on_activations():
    x = activations((256, 384), BF16)
    blob = roundtrip(x, "max")
    assert sp.get_codec("lossless").config["mode"] == "max"
    assert payload(sp.get_codec("lossless").encode(x))[0] == 2
    fast = roundtrip(x, "fast")
    assert payload(fast)[0] == 0
    assert len(blob) < 0.97 * len(fast)
    assert sp.get_codec("lossless").encode(x) == blob  # deterministic


def test_max_mode_falls_back_to_byte_planes_on_repeats():
    rng = np.random.default_rng(3)
    x = np.tile(rng.standard_normal((1, 512)), (300, 1)).astype(BF16)
    blob = roundtrip(x, "max")
    assert payload(blob)[0] == 0 and len(blob) < 0.01 * x.nbytes


# ----------------------------------------------------------------------------- hostile
def _max_frame(shape=(48, 64), dtype=BF16) -> frame.Frame:
    blob = sp.get_codec("lossless").encode(activations(shape, dtype))
    fr = frame.unpack(blob)
    assert bytes(fr.payload)[0] == 2
    return fr


def _repack(fr: frame.Frame, body: bytes, shape=None) -> bytes:
    return frame.pack("lossless", {"mode": "max"}, fr.dtype, fr.container, shape or fr.shape, body)


def _refused(blob: bytes, match: str | None = None) -> None:
    with pytest.raises(sp.CodecError, match=match):
        sp.decode(blob)


def test_truncated_max_payloads_are_refused():
    fr = _max_frame()
    body = bytes(fr.payload)
    for cut in list(range(0, 40)) + list(range(40, len(body), 37)):
        _refused(_repack(fr, body[:cut]) if cut else _repack(fr, b""))
    _refused(_repack(fr, body + b"\0"))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_bit_flips_with_a_valid_checksum_never_escape(dtype):
    """Every flipped payload bit must give CodecError or a tensor of the declared shape;
    flips in the model or the rANS words are caught by the stream's own checks."""
    fr = _max_frame((24, 40), dtype)
    body = bytes(fr.payload)
    rng = np.random.default_rng(4)
    flips = list(range(64 * 8)) + list(rng.integers(64 * 8, len(body) * 8, 800))
    caught = 0
    for i in flips:
        mutated = bytearray(body)
        mutated[i // 8] ^= 1 << (i % 8)
        try:
            y = sp.decode(_repack(fr, bytes(mutated)))
        except sp.CodecError as exc:
            assert str(exc) and "\n" not in str(exc)
            caught += 1
            continue
        assert y.shape == fr.shape and y.dtype == fr.dtype.numpy
    assert caught > len(flips) // 4


def test_hostile_header_fields_are_refused():
    fr = _max_frame()
    body = bytearray(fr.payload)
    fields = list(LM._HEAD.unpack_from(body, 1))

    def with_field(i: int, value: int) -> bytes:
        f = list(fields)
        f[i] = value
        return bytes(body[:1]) + LM._HEAD.pack(*f) + bytes(body[1 + LM._HEAD.size :])

    for i, value, match in [
        (0, 0, "flags"),  # the shape asks for both models
        (1, 7, "window"),  # more trailing zero bits than the mantissa allows
        (3, 0, "window"),
        (3, 30, "window"),
        (2, 60, "window"),
        (4, 3, "table layout"),
        (5, 2, "table layout"),
        (7, 3, "width"),
        (10, 1 << 30, "model sections"),
        (11, 1 << 30, "model sections"),
    ]:
        _refused(_repack(fr, with_field(i, value)), match)
    _refused(_repack(fr, b"\x01" + bytes(body[1:])), "retired")
    _refused(_repack(fr, b"\x07" + bytes(body[1:])), "unknown mode")


def test_huge_declared_counts_are_refused_before_allocating():
    fr = _max_frame()
    body = bytes(fr.payload)
    *_, tables_len, offsets_len = LM._HEAD.unpack_from(body, 1)
    at = 1 + LM._HEAD.size + tables_len + offsets_len
    for nwords in ((1 << 62), 3, (len(body) // 2) + 1):
        _refused(_repack(fr, body[:at] + struct.pack("<Q", nwords) + body[at + 8 :]))
    (nwords,) = struct.unpack_from("<Q", body, at)
    nb = at + 8 + 2 * nwords
    for nbits in (1 << 63, 0, 10**12):
        _refused(_repack(fr, body[:nb] + struct.pack("<Q", nbits) + body[nb + 8 :]))
    # A 1-d payload (its model does not depend on the length) declared for a 2 GiB
    # tensor: refused from the stream size alone, before the output exists.
    flat = _max_frame((5000,))
    tracemalloc.start()
    _refused(_repack(flat, bytes(flat.payload), shape=(1 << 30,)), "too short")
    _refused(_repack(fr, body, shape=(1 << 20, 1024)), "too short")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 << 20


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_hostile_fast_payloads_are_refused_before_allocating(dtype):
    blob = sp.get_codec("lossless", mode="fast").encode(activations((48, 64), dtype))
    fr = frame.unpack(blob)
    body = bytes(fr.payload)
    for cut in range(1, len(body), max(1, len(body) // 50)):
        _refused(_repack(fr, body[:cut]))
    _refused(_repack(fr, body + b"\0"), "trailing")
    tracemalloc.start()
    _refused(_repack(fr, body, shape=(1 << 30,)), "byte plane 0")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1 << 20


def test_frequency_tables_are_validated():
    codes = np.zeros((2, 8), np.uint8)
    codes[0, :3] = (1, 120, 240)
    freq = LM.freqs_from_codes(codes)
    assert freq[0].sum() == K.TOTAL and (freq[0, :3] > 0).all() and not freq[1].any()
    with pytest.raises(sp.CodecError, match="code out of range"):
        LM.freqs_from_codes(np.full((1, 4), 241, np.uint8))
    counts = np.array([[5, 0, 1, 1 << 40, 3] + [1] * 250])
    f = LM.freqs_from_codes(LM.freq_codes(counts))
    assert f.sum() == K.TOTAL and (f[0] > 0).sum() == 254


# ----------------------------------------------------------------------------- memory
def _peak(fn) -> tuple[object, int]:
    tracemalloc.start()
    tracemalloc.reset_peak()
    out = fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return out, peak


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_peak_memory_is_at_most_three_times_the_input(dtype, mode):
    x = activations((512, 576), dtype)
    codec = sp.get_codec("lossless", mode=mode)
    blob = codec.encode(x)  # warm-up: JIT, caches
    codec.decode(blob)
    _, enc = _peak(lambda: codec.encode(x))
    _, dec = _peak(lambda: codec.decode(blob))
    assert enc <= 3 * x.nbytes, enc / x.nbytes
    assert dec <= 3 * x.nbytes, dec / x.nbytes
