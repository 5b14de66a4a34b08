"""`lossy`: rate-controlled quantization that meets a quality target on every tensor.

The encoder picks the largest quantization step that still meets the target on this very
tensor (Apex similarity by default, or relative L2, or max abs error), checked on exactly
the values the decoder will produce, rounding to the output dtype included. Integers are
range-coded with scale-conditioned models (entropy/fieldcode.py): per-channel times per-row scales
follow massive-activation channels and high-norm tokens.

Low-rank tensors (Llama-like hidden states, many gradients) first lose their top-k
principal directions: the basis (int16 fixed point, sent) and the coefficients are coded,
then the residual. The rank is chosen per tensor by estimated total bytes, basis included,
so full-rank tensors pay nothing for it. The reconstruction uses integer-valued float64
products, exact in any summation order, so every BLAS decodes to the same bits.
"""

from __future__ import annotations

import math
import struct

import constriction
import numpy as np

from swarmpress.codecs.core.base import Codec, Param, Role
from swarmpress.codecs.core.errors import CodecError
from swarmpress.codecs.core.registry import register
from swarmpress.codecs.core.tensors import DType, all_finite
from swarmpress.codecs.entropy.fieldcode import (
    decode_field,
    decode_field_into,
    encode_field,
    estimate_bits,
    pack_blob,
    read_field,
    unpack_blob,
)
from swarmpress.codecs.entropy.order0 import check_room, range_decoder
from swarmpress.codecs.families.lossy import fast as lossy_fast
from swarmpress.codecs.families.lossy.lowrank import FIX  # the basis fixed point
from swarmpress.codecs.families.lossy.target import TARGETS, QualityTarget

# payload mode byte (0: the retired single-state fast format; 3: the tensor held NaN or
# infinity and travels bit-exact through the `lossless` codec instead)
_OLD_FAST, _MAX, _FAST, _VERBATIM, _FAST_BLOCKED = 0, 1, 2, 3, 4
_HEAD = struct.Struct("<dH")  # quantization step, rank of the low-rank part
_RANKS = (4, 8, 16, 32, 64, 128)
_MAX_RANK = max(_RANKS)


def as_rows(arr: np.ndarray) -> np.ndarray:
    """float64 (rows, channels) copy; 1-D and 0-d tensors are one channel."""
    x = arr.astype(np.float64)
    return x.reshape(-1, x.shape[-1]) if x.ndim >= 2 else x.reshape(-1, 1)


FEW_ROWS = 32  # fast mode: fewer rows than this and per-channel side information costs more


def fast_layout(shape: tuple[int, ...], numel: int) -> tuple[int, int]:
    """(rows, channels) the fast mode codes: the last dimension as channels when there are
    enough rows to pay for per-channel means and scales, else one channel of every value."""
    rows, chans = channels_rows(shape, numel)
    return (rows, chans) if rows >= FEW_ROWS else (numel, 1)


BLOCKED_MIN = 1 << 16  # values: below this a tensor's layout hardly matters for speed


def blocked_layout(numel: int) -> tuple[int, int] | None:
    """Rows of w consecutive values (w a power of two up to 1024 dividing numel, with at
    least FEW_ROWS rows) for a large tensor with few rows: one channel of a million values
    codes 10-20x slower than the same values in rows (a flat DDP bucket: 35 vs 614 MB/s)."""
    if numel < BLOCKED_MIN:
        return None
    for w in (1024, 512, 256, 128, 64, 32, 16):
        if numel % w == 0 and numel // w >= FEW_ROWS:
            return numel // w, w
    return None


def fast_plan(shape: tuple[int, ...], numel: int) -> tuple[int, int, int]:
    """(rows, channels, mode byte) of the fast mode for a tensor: its own layout, or rows of
    consecutive values (_FAST_BLOCKED) where it would be one long channel."""
    rows, chans = fast_layout(shape, numel)
    if chans == 1:
        blocked = blocked_layout(numel)
        if blocked is not None:
            return (*blocked, _FAST_BLOCKED)
    return rows, chans, _FAST


def channels_rows(shape: tuple[int, ...], numel: int) -> tuple[int, int]:
    channels = shape[-1] if len(shape) >= 2 else 1
    return (numel // channels if channels else 0), channels


def _top_basis(x: np.ndarray, rank: int, seed: int = 0) -> np.ndarray:
    """Fixed-point (int16-valued, float64) top principal directions, shape (rank, channels)."""
    xc = x - x.mean(axis=0)
    rng = np.random.default_rng(seed)
    probe = xc @ rng.standard_normal((x.shape[1], rank + 8))
    for _ in range(2):  # subspace iteration sharpens the leading directions
        probe, _ = np.linalg.qr(probe)
        probe = xc @ (xc.T @ probe)
    q, _ = np.linalg.qr(probe)
    _, _, vt = np.linalg.svd(q.T @ xc, full_matrices=False)
    return np.clip(np.rint(vt[:rank] * FIX), -(FIX - 1), FIX - 1)


class _Quantized:
    """One candidate encoding at a given step and basis: codes plus the decoded values."""

    def __init__(self, x: np.ndarray, step: float, basis: np.ndarray | None) -> None:
        self.step = step
        self.means = np.rint(x.mean(axis=0) / step)
        base = self.means * step
        if basis is None or basis.shape[0] == 0:
            self.coeffs = None
            proj = 0.0
        else:
            self.coeffs = np.rint(((x - base) @ basis.T) / (FIX * step))
            proj = _project(self.coeffs, basis, step)
        self.resid = np.rint((x - base - proj) / step)
        self.values = (self.resid + self.means) * step + proj


def check_range(q) -> None:
    """Refuse codes too large for exact float64/int64 arithmetic (a target far finer than
    the tensor's dynamic range); the decoder could not reproduce them bit for bit."""
    biggest = max(
        float(np.abs(a).max(initial=0))
        for a in (q.means, q.coeffs, getattr(q, "resid", None))
        if a is not None
    )
    if biggest >= 2.0**50:
        raise CodecError(
            "lossy: the target is too fine for this tensor's dynamic range "
            f"(codes up to {biggest:.3g}); loosen it or use `lossless`"
        )


def _project(coeffs: np.ndarray, basis: np.ndarray, step: float) -> np.ndarray:
    # Integer-valued operands with |sum| < 2**53: exact whatever the BLAS summation order.
    return (coeffs @ basis) * (step / FIX)


@register
class LossyCodec(Codec):
    """Rate-controlled quantizer meeting a quality target on every tensor, entropy-coded."""

    codec_id = "lossy"
    summary = "meets a quality target per tensor with the fewest bytes (Apex similarity default)"
    lossless = False
    local_params = ("threads",)
    params = (
        Param("target", str, "similarity", "quality measure to meet", choices=TARGETS),
        Param(
            "value",
            float,
            0.99,
            "similarity to exceed, or rel_l2 / max_abs error not to exceed",
            minimum=0.0,
        ),
        Param(
            "mode",
            str,
            "fast",
            "fast: sampled rate control, a low-rank part where rows share directions, "
            "compiled rANS lanes; max: an exhaustive rank and step search with adaptive "
            "models (20-50x slower, at most 0.015 smaller on the default corpus)",
            choices=("max", "fast"),
        ),
        Param(
            "max_rank",
            int,
            _MAX_RANK,
            "largest low-rank part tried (0: off)",
            minimum=0,
            maximum=1024,
        ),
        Param(
            "threads",
            int,
            1,
            "threads for the fast mode's passes and chunks (frames do not depend on it)",
            minimum=1,
            maximum=256,
        ),
    )

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self.quality = QualityTarget(self.config["target"], self.config["value"])

    def frame_params(self) -> dict:
        return {}  # the decoder needs nothing but the payload

    @staticmethod
    def _plain(x: np.ndarray):
        """Candidate factory without a low-rank part."""
        return lambda step: _Quantized(x, step, None)

    def _choose_rank(self, x: np.ndarray, plain: _Quantized) -> np.ndarray | None:
        """The low-rank basis with the fewest estimated bytes at equal quality, or None.

        Candidates are quantized at the plain step; a candidate whose error is larger (a
        prediction spoils the free accuracy of near-zero values) is charged the high-rate
        price of closing the gap, n/2 * log2(D_k / D_0) bits, before the comparison.
        """
        rows, chans = x.shape
        limit = min(self.config["max_rank"], rows // 4, chans // 4)
        ranks = [k for k in _RANKS if k <= limit]
        if not ranks:
            return None
        full = _top_basis(x, max(ranks))
        d0 = max(float(np.mean((x - plain.values) ** 2)), 1e-300)
        best_bits, best = estimate_bits(plain.resid), None
        worse = 0
        for k in ranks:
            cand = _Quantized(x, plain.step, full[:k])
            dk = max(float(np.mean((x - cand.values) ** 2)), 1e-300)
            bits = estimate_bits(cand.coeffs) + estimate_bits(cand.resid) + 8 * 1.8 * k * chans
            bits += max(0.0, 0.5 * x.size * math.log2(dk / d0))
            if bits < best_bits:
                best_bits, best, worse = bits, full[:k], 0
            else:
                worse += 1
                if worse == 2:  # the cost is unimodal in k in practice: stop once it rises
                    break
        return best

    # ------------------------------------------------------------------ encode
    def encode_array(self, arr: np.ndarray, role: Role) -> bytes:
        if arr.size == 0:
            return b""
        if self.config["mode"] == "fast":
            rows, chans, mode = fast_plan(arr.shape, arr.size)
            dtype = DType.of(arr.dtype)
            t, v = self.config["target"], self.config["value"]
            try:
                payload = lossy_fast.encode(arr, dtype, rows, chans, t, v, self.config["threads"],
                                            self.config["max_rank"])  # fmt: skip
            except lossy_fast.NonFinite:
                return self._encode_verbatim(arr, role)
            if payload is not None:
                return bytes([mode]) + payload
        if not all_finite(arr):
            return self._encode_verbatim(arr, role)
        return bytes([_MAX]) + self._encode_max(arr)

    @staticmethod
    def _encode_verbatim(arr: np.ndarray, role: Role) -> bytes:
        """NaN or infinity in the tensor: a training step must not crash on a lossy link, and
        a quality target means nothing there, so the tensor travels bit-exact (`lossless`)."""
        from swarmpress.codecs.core.registry import get_codec

        return bytes([_VERBATIM]) + get_codec("lossless").encode_array(arr, role)

    def encode_on_device(self, tensor, info, role: Role) -> bytes | None:
        """Fast mode quantizes where the tensor lives (device.py); max mode on the host."""
        if self.config["mode"] != "fast" or math.prod(info.shape) == 0:
            return None
        from swarmpress.codecs.families.lossy import device as lossy_torch

        rows, chans, mode = fast_plan(info.shape, math.prod(info.shape))
        t, v = self.config["target"], self.config["value"]
        payload = lossy_torch.encode(tensor, info.dtype, rows, chans, t, v, self.config["threads"],
                                     self.config["max_rank"])  # fmt: skip
        return None if payload is None else bytes([mode]) + payload

    def _encode_max(self, arr: np.ndarray) -> bytes:
        x = as_rows(arr)
        if not np.isfinite(x).all():
            raise CodecError("lossy cannot encode NaN or infinite values; use `lossless`")
        if not np.any(x):
            chosen = _Quantized(x, 1.0, None)
        else:
            chosen = self.quality.search(x, arr.dtype, self._plain(x), self.quality.initial_step(x))
            basis = self._choose_rank(x, chosen)
            if basis is not None:
                chosen = self.quality.search(
                    x, arr.dtype, lambda step: _Quantized(x, step, basis), chosen.step
                )
        check_range(chosen)
        rank = 0 if chosen.coeffs is None else chosen.coeffs.shape[1]
        coder = constriction.stream.queue.RangeEncoder()
        parts = [_HEAD.pack(chosen.step, rank), pack_blob(chosen.means.astype("<i8").tobytes())]
        if rank:
            parts.append(pack_blob(basis.astype("<i2").tobytes()))
            parts.append(encode_field(coder, chosen.coeffs.astype(np.int64)))
        parts.append(encode_field(coder, chosen.resid.astype(np.int64)))
        parts.append(coder.get_compressed().tobytes())
        return b"".join(parts)

    # ------------------------------------------------------------------ decode
    def decode_array(self, payload, dtype: DType, shape: tuple[int, ...]) -> np.ndarray:
        numel = math.prod(shape)
        mv = memoryview(payload)
        if numel == 0:
            if len(mv):
                raise CodecError("lossy payload for an empty tensor must be empty")
            return np.zeros(shape, dtype=dtype.numpy)
        nrows, nchan = channels_rows(shape, numel)
        if len(mv) and mv[0] == _VERBATIM:
            from swarmpress.codecs.core.registry import get_codec

            return get_codec("lossless").decode_array(mv[1:], dtype, shape)
        if len(mv) < 1 or mv[0] not in (_FAST, _MAX, _FAST_BLOCKED):
            if len(mv) and mv[0] == _OLD_FAST:
                raise CodecError("lossy frame uses the retired single-state fast format")
            raise CodecError("lossy payload has no known mode byte")
        if mv[0] in (_FAST, _FAST_BLOCKED):
            layout = fast_layout(shape, numel) if mv[0] == _FAST else blocked_layout(numel)
            if layout is None:
                raise CodecError(f"lossy payload: no blocked layout for {numel} values")
            frows, fchans = layout
            out = lossy_fast.decode(mv[1:], dtype, frows, fchans, self.config["threads"])
            return out.reshape(shape)
        mv = mv[1:]
        if len(mv) < _HEAD.size:
            raise CodecError("lossy payload truncated: header missing")
        step, rank = _HEAD.unpack_from(mv, 0)
        if not (math.isfinite(step) and step > 0):
            raise CodecError("lossy payload declares an invalid quantization step")
        if rank > min(nrows, nchan, _MAX_RANK):
            raise CodecError(f"lossy payload declares rank {rank} for a {nrows}x{nchan} tensor")
        raw, pos = unpack_blob(mv, _HEAD.size, 8 * nchan, "channel means")
        means = np.frombuffer(raw, dtype="<i8").astype(np.float64)
        basis = coeff_side = None
        if rank:
            raw, pos = unpack_blob(mv, pos, 2 * rank * nchan, "low-rank basis")
            basis = np.frombuffer(raw, dtype="<i2").astype(np.float64).reshape(rank, nchan)
            coeff_side, pos = read_field(mv, pos, nrows, rank)
        resid_side, pos = read_field(mv, pos, nrows, nchan)
        # Every field's symbols must fit in the words before anything per value exists.
        bits = resid_side.min_bits + (coeff_side.min_bits if rank else 0.0)
        check_room(len(mv) - pos, bits, "lossy range-coded stream")
        decoder = range_decoder(mv[pos:], "lossy range-coded stream")
        out = np.empty(numel, dtype=dtype.numpy)
        if not rank:  # each value is final as soon as it is decoded

            def put(positions: np.ndarray, values: np.ndarray) -> None:
                v = (values + means[positions % nchan]) * step + 0.0  # + 0.0: as resid + proj
                with np.errstate(over="ignore", invalid="ignore"):
                    out[positions] = v.astype(dtype.numpy)

            decode_field_into(decoder, resid_side, put)
            return out.reshape(shape)
        coeffs = decode_field(decoder, coeff_side)
        biggest = max(abs(int(coeffs.min())), abs(int(coeffs.max()))) if coeffs.size else 0
        if biggest * rank * FIX >= 2**53:
            raise CodecError("lossy low-rank coefficients are out of range")
        resid = decode_field(decoder, resid_side)
        rows_per = max(1, (1 << 16) // nchan)
        out2 = out.reshape(nrows, nchan)
        for r0 in range(0, nrows, rows_per):  # the same float64 steps, a block of rows at a time
            proj = _project(coeffs[r0 : r0 + rows_per].astype(np.float64), basis, step)
            values = (resid[r0 : r0 + rows_per] + means[None, :]) * step + proj
            with np.errstate(over="ignore", invalid="ignore"):
                out2[r0 : r0 + rows_per] = values.astype(dtype.numpy)
        return out.reshape(shape)
