"""The default `lossy`'s low-rank part: found where it pays, exact on every machine, and safe
to decode from a hostile peer."""

from __future__ import annotations

import struct
import tracemalloc
import warnings

import ml_dtypes
import numpy as np
import pytest

import swarmpress as sp
from swarmpress.codecs.core import frame
from swarmpress.codecs.families.lossy import fast as lossy_fast
from swarmpress.codecs.families.lossy import lowrank as lossy_lowrank

BF16 = np.dtype(ml_dtypes.bfloat16)
_HEAD = 12  # lossy_fast._HEAD: step f64, family, flags, chunk log, lanes


def low_rank_tensor(rows=512, chans=256, rank=12, noise=0.05, seed=0, dtype=BF16):
    """Rows that share a few directions (as Llama-like hidden states and many gradients do),
    channel scales that vary, and a little full-rank noise."""
    rng = np.random.default_rng(seed)
    u = rng.standard_normal((rows, rank)) * np.linspace(3.0, 0.5, rank)
    v = rng.standard_normal((rank, chans))
    x = (u @ v) * np.exp(0.5 * rng.standard_normal(chans)) + noise * rng.standard_normal(
        (rows, chans)
    )
    return x.astype(dtype)


def flags_of(blob: bytes) -> int:
    payload = frame.unpack(blob).payload
    assert payload[0] == 2, "not a fast-mode frame"
    return payload[1 + 9]


def lowrank_offset(payload: bytes) -> int:
    """Where the low-rank section starts in a fast-mode payload (mode byte included)."""
    pos = 1 + _HEAD
    blobs = 3 if payload[1 + 9] & 0x01 else 2
    for _ in range(blobs):
        (n,) = struct.unpack_from("<I", payload, pos)
        pos += 4 + n
    return pos


def with_payload(blob: bytes, payload: bytes) -> bytes:
    fr = frame.unpack(blob)
    return frame.pack(fr.codec_id, fr.params, fr.dtype, fr.container, fr.shape, payload)


@pytest.fixture(scope="module")
def lowrank_frame():
    x = low_rank_tensor()
    return x, sp.get_codec("lossy").encode(x)


def test_the_default_finds_the_shared_directions_and_they_pay(lowrank_frame, monkeypatch):
    x, blob = lowrank_frame
    assert flags_of(blob) & lossy_fast._LOWRANK
    assert sp.similarity(x, sp.decode(blob)) > 0.99
    monkeypatch.setattr(lossy_lowrank, "MIN_GAIN_BITS", float("inf"))  # no low-rank part
    plain = sp.get_codec("lossy").encode(x)
    assert not flags_of(plain) & lossy_fast._LOWRANK
    assert len(blob) < 0.8 * len(plain), (len(blob), len(plain))


@pytest.mark.parametrize(
    "make",
    [
        lambda rng: rng.standard_normal((512, 256)),  # full rank: nothing to find
        lambda rng: rng.standard_normal((512, 256)) * np.exp(rng.standard_normal(256)),
        lambda rng: rng.standard_normal((64, 256)),  # too few rows to pay for a basis
    ],
    ids=["gaussian", "channel-scaled", "few-rows"],
)
def test_tensors_without_shared_directions_pay_nothing_for_them(make):
    x = make(np.random.default_rng(3)).astype(BF16)
    blob = sp.get_codec("lossy").encode(x)
    assert not flags_of(blob) & lossy_fast._LOWRANK
    assert sp.similarity(x, sp.decode(blob)) > 0.99


def _rank_of(blob: bytes) -> int:
    """The rank a fast-mode frame's low-rank part declares (0: it has none)."""
    payload = frame.unpack(blob).payload
    if not flags_of(blob) & lossy_fast._LOWRANK:
        return 0
    return struct.unpack_from("<dH", payload, lowrank_offset(payload))[1]


@pytest.mark.parametrize("max_rank", [0, 3, 4, 8])
def test_max_rank_bounds_the_low_rank_part_of_the_fast_mode(lowrank_frame, max_rank):
    # The fast mode (the default) once ignored max_rank: `max_rank=0` still sent a basis.
    x, blob = lowrank_frame
    assert _rank_of(blob) > 8  # the default's choice for this rank-12 tensor
    bounded = sp.get_codec("lossy", max_rank=max_rank).encode(x)
    rank = _rank_of(bounded)
    assert rank == 0 if max_rank < min(lossy_lowrank.RANKS) else 0 < rank <= max_rank
    assert sp.similarity(x, sp.decode(bounded)) > 0.99


@pytest.mark.parametrize("dtype", [BF16, np.dtype(np.float16), np.dtype(np.float32)])
@pytest.mark.parametrize(
    "target,value",
    [("similarity", 0.99), ("similarity", 0.999), ("rel_l2", 0.02), ("max_abs", 0.05)],
)
def test_every_target_is_met_with_a_low_rank_part(dtype, target, value):
    x = low_rank_tensor(dtype=dtype, seed=1)
    blob = sp.get_codec("lossy", target=target, value=value).encode(x)
    assert flags_of(blob) & lossy_fast._LOWRANK
    y = sp.decode(blob)
    assert y.dtype == x.dtype and y.shape == x.shape
    if target == "similarity":
        assert sp.similarity(x, y) > value
    elif target == "rel_l2":
        assert sp.rel_l2(x, y) <= value
    else:
        assert sp.max_abs_error(x, y) <= value


def test_frames_are_identical_across_thread_counts(lowrank_frame):
    x, blob = lowrank_frame
    assert sp.get_codec("lossy", threads=2).encode(x) == blob
    np.testing.assert_array_equal(
        sp.get_codec("lossy", threads=2).decode(blob).view(np.uint16),
        sp.decode(blob).view(np.uint16),
    )


def test_the_projection_does_not_depend_on_how_rows_are_blocked(monkeypatch):
    rng = np.random.default_rng(5)
    coeffs = rng.integers(-(1 << 20), 1 << 20, (300, 16)).astype(np.float64)
    basis = rng.integers(-(1 << 15) + 1, 1 << 15, (16, 384)).astype(np.float64)
    ref = lossy_lowrank.project(coeffs, basis, 3.7e-4)
    monkeypatch.setattr(lossy_lowrank, "BLOCK_VALUES", 384 * 7)
    other = lossy_lowrank.project(coeffs, basis, 3.7e-4)
    np.testing.assert_array_equal(ref.view(np.uint32), other.view(np.uint32))
    # and it is the exact integer product, rounded once
    exact = (coeffs.astype(object) @ basis.astype(object))[:2, :3]
    assert [float(v) * 3.7e-4 / (1 << 15) for v in exact.reshape(-1)] == pytest.approx(
        ref.reshape(300, 384)[:2, :3].reshape(-1).astype(np.float64).tolist(), rel=1e-7
    )


def test_the_torch_path_adds_the_projection_as_the_host_does(lowrank_frame):
    torch = pytest.importorskip("torch")
    from swarmpress.codecs.core.tensors import DType
    from swarmpress.codecs.families.lossy import device as lossy_torch

    x, blob = lowrank_frame
    payload = frame.unpack(blob).payload
    got = lossy_torch.decode(memoryview(payload)[1:], DType.BFLOAT16, x.shape, *x.shape, "cpu")
    ref = sp.decode(blob)
    assert torch.equal(got.view(torch.int16), torch.from_numpy(ref.view(np.int16)))


@pytest.mark.parametrize("dtype", [BF16, np.dtype(np.float32)])
@pytest.mark.parametrize("row", [1, 8, 200, 511])  # held out by the gate, the choice, the basis
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_non_finite_value_in_any_sampled_row_sends_the_tensor_exact(dtype, row, bad):
    # One NaN in a row the gate held out (or that only the rank choice or the basis
    # sampled) crashed the default codec with numpy's "Eigenvalues did not converge".
    x = low_rank_tensor(chans=128, seed=4).astype(np.float32)
    x[row, 5] = bad
    x = x.astype(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy warnings leak either
        y = sp.decode(sp.get_codec("lossy").encode(x))
    assert np.array_equal(x.view(np.uint8), y.view(np.uint8))


@pytest.mark.parametrize("scale", [1e-38, 1e-25, 1e25, 1e35])
def test_a_basis_is_tried_at_any_float32_scale_and_never_warns(scale):
    # The gate summed squares in float32: it overflowed above an RMS of about 1e17 and
    # underflowed below 1e-24, so such tensors never had a basis (and came out 3x larger).
    x = (low_rank_tensor(chans=128, seed=5).astype(np.float64) * scale).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        blob = sp.get_codec("lossy").encode(x)
        y = sp.decode(blob)
    assert sp.similarity(x.astype(np.float64), y.astype(np.float64)) > 0.99
    within = lossy_lowrank.RMS_RANGE[0] <= scale <= lossy_lowrank.RMS_RANGE[1]
    assert bool(flags_of(blob) & lossy_fast._LOWRANK) == within


def _shared(rows: int, chans: int, scale: float = 1.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    u = rng.standard_normal((rows, 12)) * np.linspace(3.0, 0.5, 12)
    return (u @ rng.standard_normal((12, chans)) * scale).astype(np.float32)


def _huge_held_out_row():
    x = _shared(256, 32)
    x[1, :] = 1e20  # finite, in a row only the held-out checks read
    return x


def _one_loud_row():
    x = _shared(256, 32, 1e-10)
    x[1, :] *= 1e20  # one row at 1e10 beside rows at 1e-10
    return x


def _unsampled_inf_row():
    x = _shared(5000, 32)
    x[1, :] = np.inf  # a row none of the samples reads: the coefficients meet it
    return x


def _near_max_value():
    x = _shared(512, 128)
    x[8, 3] = 3e38
    return x


def _basis_row_at_1e37():
    rng = np.random.default_rng(66)
    u = rng.standard_normal((777, 12)) * np.linspace(3.0, 0.5, 12)
    x = (u @ rng.standard_normal((12, 48)) * 1e-7).astype(np.float32)
    x[277, :] = 1e37  # only the basis samples it: its coefficient map overflows
    return x


@pytest.mark.parametrize(
    "make",
    [_huge_held_out_row, _one_loud_row, _unsampled_inf_row, _near_max_value, _basis_row_at_1e37],
    ids=["1e20-row", "1e10-row-among-1e-10", "unsampled-inf-row", "3e38-value", "1e37-row"],
)  # fmt: skip
@pytest.mark.parametrize("dtype", [BF16, np.dtype(np.float32)])
def test_rows_of_wild_scale_neither_crash_nor_warn(make, dtype):
    # Scaled to the gate's RMS, such rows overflowed float32's squares: numpy's LinAlgError
    # ("Eigenvalues did not converge") or warnings, on finite tensors too.
    x = make().astype(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = sp.decode(sp.get_codec("lossy").encode(x))
    if not np.isfinite(x.astype(np.float32)).all():
        assert np.array_equal(x.view(np.uint8), y.view(np.uint8))
    else:
        assert sp.similarity(x.astype(np.float64), y.astype(np.float64)) > 0.99


@pytest.mark.parametrize("value", [1e-6, 1e-20])
def test_a_max_abs_target_far_below_the_values_meets_it_without_warnings(value):
    x = _shared(512, 128)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = sp.decode(sp.get_codec("lossy", target="max_abs", value=value).encode(x))
    assert np.abs(y.astype(np.float64) - x).max() <= value


def test_a_max_abs_target_beyond_float64_squares_is_refused_by_name():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 1e-160 squared underflowed: numpy warned first
        with pytest.raises(sp.CodecError, match="too fine"):
            sp.get_codec("lossy", target="max_abs", value=1e-160).encode(_shared(512, 128))


# ------------------------------------------------------------------------- hostile peers
def _decode_error(blob: bytes) -> str:
    with pytest.raises(sp.CodecError) as err:
        sp.decode(blob)
    return str(err.value)


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda p, o: p[:o] + struct.pack("<dH", 1.0, 0) + p[o + 10 :], "rank 0"),
        (lambda p, o: p[:o] + struct.pack("<dH", 1.0, 65) + p[o + 10 :], "rank 65"),
        (lambda p, o: p[:o] + struct.pack("<dH", 1.0, 300) + p[o + 10 :], "rank 300"),
        (lambda p, o: p[:o] + struct.pack("<d", float("nan")) + p[o + 8 :], "coefficient step"),
        (lambda p, o: p[:o] + struct.pack("<d", -1.0) + p[o + 8 :], "coefficient step"),
        (lambda p, o: p[: o + 5], "truncated"),
    ],
    ids=["rank-0", "rank-65", "rank-beyond-channels", "nan-step", "negative-step", "cut"],
)
def test_forged_low_rank_headers_are_refused_by_name(lowrank_frame, edit, message):
    _x, blob = lowrank_frame
    payload = bytes(frame.unpack(blob).payload)
    bad = edit(payload, lowrank_offset(payload))
    assert message in _decode_error(with_payload(blob, bad))


def test_a_low_rank_flag_on_a_tensor_too_small_for_one_is_refused():
    # 16 rows are coded as one channel of 384 values (few-row layout): no room for a basis
    x = np.random.default_rng(0).standard_normal((16, 24)).astype(BF16)
    blob = sp.get_codec("lossy").encode(x)
    payload = bytearray(frame.unpack(blob).payload)
    payload[1 + 9] |= lossy_fast._LOWRANK
    assert "low-rank part for a 384x1 tensor" in _decode_error(with_payload(blob, bytes(payload)))


def test_damaged_low_rank_frames_fail_cleanly_in_bounded_memory(lowrank_frame):
    x, blob = lowrank_frame
    payload = bytes(frame.unpack(blob).payload)
    start = lowrank_offset(payload)
    rng = np.random.default_rng(11)
    edits = [payload[:cut] for cut in range(start, start + 400, 37)]
    for _ in range(40):  # bit flips inside the low-rank section
        p = bytearray(payload)
        i = int(rng.integers(start * 8, (start + 300) * 8))
        p[i // 8] ^= 1 << (i % 8)
        edits.append(bytes(p))
    bad_kinds = []
    tracemalloc.start()
    try:
        for p in edits:
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            try:
                y = sp.decode(with_payload(blob, p))
                ok = y.shape == x.shape
            except sp.CodecError as exc:
                ok = bool(str(exc)) and "\n" not in str(exc)
            except Exception as exc:  # anything else is a bug
                ok, bad_kinds = False, [*bad_kinds, repr(exc)]
            peak = tracemalloc.get_traced_memory()[1] - base
            assert ok, bad_kinds
            assert peak <= max(8 * x.nbytes, 4 * len(blob)) + (16 << 20), peak
    finally:
        tracemalloc.stop()


def _forged_large_frame(rows: int, chans: int, rank: int) -> bytes:
    """A small frame declaring a large bf16 tensor: zero low-rank coefficients (coded for
    real, a few bytes per chunk) and main chunks that hold only their lane states."""
    from swarmpress.codecs.core.tensors import DType
    from swarmpress.codecs.entropy import rans_field
    from swarmpress.codecs.entropy import rans_lanes as fk
    from swarmpress.codecs.entropy.fieldcode import K_RANGE, pack_blob

    zero_rows = np.broadcast_to(np.zeros(1, dtype=np.int64), (rows,))
    cc = np.full(rank, K_RANGE[0], dtype=np.int64)  # the narrowest scale: ~0 bits a zero
    coeffs = rans_field.encode_values(
        np.zeros(rows * rank, dtype=np.int64), rows, rank, rans_field.Tables(cc, zero_rows)
    )
    section = b"".join(
        [
            struct.pack("<dHB", 1.0, rank, 0),
            pack_blob(np.ones((rank, chans), dtype="<i2").tobytes()),
            pack_blob(cc.astype("<i2").tobytes()),
            coeffs,
        ]
    )
    nchunks = rans_field.chunk_bounds_count(rows * chans, rans_field.CHUNK_LOG)
    table = np.tile(np.array([2 * fk.LANES, 0], dtype="<u4"), nchunks).tobytes()
    payload = b"".join(
        [
            bytes([2]),
            struct.pack("<dBBBB", 1.0, 1, lossy_fast._LOWRANK, rans_field.CHUNK_LOG, fk.LANES),
            pack_blob(np.zeros(chans, dtype="<i8").tobytes()),
            pack_blob(np.zeros(chans, dtype="<i2").tobytes()),
            section,
            table,
            bytes(4 * fk.LANES * nchunks),  # lane states of 0: every chunk is corrupt
        ]
    )
    return frame.pack("lossy", {}, DType.BFLOAT16, frame.Container.NUMPY, (rows, chans), payload)


def test_a_small_frame_cannot_make_the_decoder_project_a_large_tensor():
    """Red-team finding: the projection of every row was built before the first chunk was
    checked (a 65 KB frame cost 6.6 s and 774 MiB). Now a block at a time."""
    rows, chans = 1 << 20, 64
    blob = _forged_large_frame(rows, chans, 16)
    assert len(blob) < 256 << 10
    declared = rows * chans * 2
    tracemalloc.start()
    try:
        with pytest.raises(sp.CodecError, match="corrupt"):
            sp.decode(blob)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= declared + (32 << 20), peak / 2**20  # the output, and one block beside it


def test_a_forged_coefficient_step_cannot_overflow_float32(lowrank_frame):
    _x, blob = lowrank_frame
    payload = bytes(frame.unpack(blob).payload)
    o = lowrank_offset(payload)
    bad = payload[:o] + struct.pack("<d", 1e300) + payload[o + 8 :]
    with np.errstate(all="raise"):
        assert "beyond float32" in _decode_error(with_payload(blob, bad))


def test_an_fp16_frame_whose_values_pass_float16_is_refused_without_numpy_errors():
    # an encoder checks its target on the float16 values themselves, so values beyond
    # float16 mean a forged frame: CodecError, not infinities, and no numpy FloatingPointError
    x = low_rank_tensor(dtype=np.dtype(np.float16), seed=2)
    blob = sp.get_codec("lossy").encode(x)
    payload = bytearray(frame.unpack(blob).payload)
    (step,) = struct.unpack_from("<d", payload, 1)
    struct.pack_into("<d", payload, 1, step * 1e6)
    with np.errstate(all="raise"):
        assert "beyond float16" in _decode_error(with_payload(blob, bytes(payload)))


def test_a_valid_low_rank_frame_decodes_in_little_more_than_its_output():
    x = low_rank_tensor(rows=4096, chans=512, rank=8, seed=4)
    blob = sp.get_codec("lossy").encode(x)
    assert flags_of(blob) & lossy_fast._LOWRANK
    sp.decode(blob)  # compile and warm up outside the measurement
    tracemalloc.start()
    try:
        y = sp.decode(blob)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert sp.similarity(x, y) > 0.99
    # the output, a copy of the streams, one block of projection and coefficients
    assert peak < 2 * x.nbytes + 2 * len(blob) + (1 << 20), peak / x.nbytes


def test_encoding_with_a_low_rank_part_stays_within_three_times_the_input():
    x = low_rank_tensor(rows=4096, chans=512, rank=8, seed=4)
    codec = sp.get_codec("lossy")
    assert flags_of(codec.encode(x)) & lossy_fast._LOWRANK  # also compiles and warms up
    tracemalloc.start()
    try:
        codec.encode(x)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= 3 * x.nbytes, peak / x.nbytes  # the projection alone is 2x a bf16 input


def test_the_small_products_keep_blas_on_the_calling_thread(monkeypatch):
    # A BLAS pool's threads spin after each call and take the cores the codec's own threads
    # use; the gate, the basis and the projection must run with BLAS at one thread.
    threadpoolctl = pytest.importorskip("threadpoolctl")
    seen = []
    real_dirs = lossy_lowrank._directions

    def dirs(*a, **k):  # numpy's own BLAS, the one these products run on
        pools = [p for p in threadpoolctl.threadpool_info() if "numpy" in p["filepath"]]
        seen.append(max(p["num_threads"] for p in pools))
        return real_dirs(*a, **k)

    monkeypatch.setattr(lossy_lowrank, "_directions", dirs)
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        blob = sp.get_codec("lossy").encode(low_rank_tensor())
        assert flags_of(blob) & 0x02
    assert seen and set(seen) == {1}
