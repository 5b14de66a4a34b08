"""`lossy`: rate-controlled uniform quantization with scale-conditioned entropy coding.

The encoder picks the largest quantization step that still meets the quality target on
this very tensor (Apex similarity by default, or relative L2, or max abs error), checked on
exactly the values the decoder will produce, rounding to the output dtype included. The
integer codes are then range-coded with a discretized Laplace/Gaussian/logistic model
whose scale follows a per-channel times per-row scale field (massive-activation channels
and high-norm tokens get wide models, quiet ones narrow models). The channel means, the
log-scales and the step travel in the frame; one frame decodes alone (stateless).
"""

from __future__ import annotations

import math
import struct

import constriction
import numpy as np
import zstandard

from swarmpress.codecs import scalemodel
from swarmpress.codecs.base import Codec, Param, Role
from swarmpress.codecs.errors import CodecError
from swarmpress.codecs.limits import check_decode_size
from swarmpress.codecs.metrics import max_abs_error, rel_l2, similarity
from swarmpress.codecs.planes import pack_bits, unpack_bits
from swarmpress.codecs.registry import register
from swarmpress.codecs.tensors import DType

TARGETS = ("similarity", "rel_l2", "max_abs")
_HEAD = struct.Struct("<dBBhh")  # step, family, flags, k_min, k_max
_ROW_SCALES = 0x01
_K_RANGE = (-64, 191)
_SEARCH_GROW = 1.5
_BISECT_STEPS = 10


def _as_rows(arr: np.ndarray) -> np.ndarray:
    """float64 (rows, channels) view of the tensor; 1-D and 0-d tensors have one channel."""
    x = arr.astype(np.float64)
    if x.ndim >= 2:
        return x.reshape(-1, x.shape[-1])
    return x.reshape(-1, 1)


def _channels_rows(shape: tuple[int, ...], numel: int) -> tuple[int, int]:
    channels = shape[-1] if len(shape) >= 2 else 1
    return (numel // channels if channels else 0), channels


def _pack(data: bytes) -> bytes:
    body = zstandard.ZstdCompressor(level=3).compress(data)
    return struct.pack("<I", len(body)) + body


def _unpack(mv: memoryview, pos: int, size: int, what: str) -> tuple[bytes, int]:
    if len(mv) - pos < 4:
        raise CodecError(f"lossy payload truncated: {what} missing")
    (n,) = struct.unpack_from("<I", mv, pos)
    pos += 4
    if n > len(mv) - pos:
        raise CodecError(f"lossy payload truncated: {what} runs past the end")
    try:
        raw = zstandard.ZstdDecompressor().decompress(
            mv[pos : pos + n], max_output_size=max(size, 1)
        )
    except zstandard.ZstdError as exc:
        raise CodecError(f"lossy {what} is corrupt: {exc}") from None
    if len(raw) != size:
        raise CodecError(f"lossy {what} holds {len(raw)} bytes, expected {size}")
    return raw, pos + n


@register
class LossyCodec(Codec):
    """Rate-controlled quantizer meeting a quality target on every tensor, entropy-coded."""

    codec_id = "lossy"
    summary = "meets a quality target per tensor with the fewest bytes (Apex similarity default)"
    lossless = False
    params = (
        Param("target", str, "similarity", "quality measure to meet", choices=TARGETS),
        Param(
            "value",
            float,
            0.99,
            "similarity to exceed, or rel_l2 / max_abs error not to exceed",
            minimum=0.0,
        ),
    )

    def frame_params(self) -> dict:
        return {}  # the decoder needs nothing but the payload

    # ------------------------------------------------------------------ quality control
    def _meets(self, x: np.ndarray, y: np.ndarray) -> bool:
        t, v = self.config["target"], self.config["value"]
        if t == "similarity":
            return similarity(x, y) > v
        if t == "rel_l2":
            return rel_l2(x, y) <= v
        return max_abs_error(x, y) <= v

    def _initial_step(self, x: np.ndarray) -> float:
        t, v = self.config["target"], self.config["value"]
        rms = float(np.sqrt(np.mean(x * x)))
        if t == "max_abs":
            return max(2.0 * v, 1e-30)
        err = (1.0 - v) if t == "similarity" else v
        return max(math.sqrt(12.0) * max(err, 1e-12) * rms, 1e-30)

    def choose_step(self, x: np.ndarray, dtype: np.dtype) -> float:
        """Largest step whose decoded tensor meets the target (bracket, then bisect)."""

        def ok(step: float) -> bool:
            return self._meets(x, (np.rint(x / step) * step).astype(dtype))

        lo = hi = self._initial_step(x)
        if ok(lo):
            for _ in range(60):
                hi = lo * _SEARCH_GROW
                if not ok(hi):
                    break
                lo = hi
            else:
                return lo
        else:
            for _ in range(200):
                hi, lo = lo, lo / _SEARCH_GROW
                if ok(lo):
                    break
            else:
                raise CodecError(
                    f"lossy: {self.config['target']} target {self.config['value']} is "
                    f"unreachable for this tensor in {np.dtype(dtype).name}"
                )
        for _ in range(_BISECT_STEPS):
            mid = math.sqrt(lo * hi)
            lo, hi = (mid, hi) if ok(mid) else (lo, mid)
        return lo

    def _check_target(self) -> None:
        t, v = self.config["target"], self.config["value"]
        if t == "similarity" and not 0.0 <= v < 1.0:
            raise CodecError("lossy: a similarity target must be in [0, 1)")
        if t != "similarity" and v <= 0.0:
            raise CodecError(f"lossy: a {t} target must be positive")

    # ------------------------------------------------------------------ encode
    def encode_array(self, arr: np.ndarray, role: Role) -> bytes:
        self._check_target()
        if arr.size == 0:
            return b""
        x = _as_rows(arr)
        if not np.isfinite(x).all():
            raise CodecError("lossy cannot encode NaN or infinite values; use `lossless`")
        step = 1.0 if not np.any(x) else self.choose_step(x, arr.dtype)
        q = np.rint(x / step).astype(np.int64)
        means = np.rint(q.mean(axis=0)).astype(np.int64)
        r = q - means
        chan, rows, use_rows = _scale_codes(r)
        k = np.clip(chan[None, :] + rows[:, None], *_K_RANGE).reshape(-1)
        family = _pick_family(r.reshape(-1), k)
        coder = constriction.stream.queue.RangeEncoder()
        lowbits, escapes = scalemodel.encode(coder, r.reshape(-1), k, family)
        words = coder.get_compressed().tobytes()
        k_min, k_max = int(k.min()), int(k.max())
        head = _HEAD.pack(
            step, scalemodel.FAMILIES.index(family), _ROW_SCALES if use_rows else 0, k_min, k_max
        )
        parts = [
            head,
            _pack(means.astype("<i8").tobytes()),
            _pack(chan.astype("<i2").tobytes()),
            _pack(rows.astype("<i2").tobytes()) if use_rows else b"",
            struct.pack("<I", escapes.size),
            _pack(escapes.astype("<i8").tobytes()),
            _pack(_pack_low(lowbits, k)),
            words,
        ]
        return b"".join(parts)

    # ------------------------------------------------------------------ decode
    def decode_array(self, payload, dtype: DType, shape: tuple[int, ...]) -> np.ndarray:
        numel = int(np.prod(shape, dtype=np.int64)) if shape else 1
        check_decode_size(numel, dtype.itemsize)
        mv = memoryview(payload)
        if numel == 0:
            if len(mv):
                raise CodecError("lossy payload for an empty tensor must be empty")
            return np.zeros(shape, dtype=dtype.numpy)
        nrows, nchan = _channels_rows(shape, numel)
        if len(mv) < _HEAD.size:
            raise CodecError("lossy payload truncated: header missing")
        step, fam, flags, k_min, k_max = _HEAD.unpack_from(mv, 0)
        if not (math.isfinite(step) and step > 0):
            raise CodecError("lossy payload declares an invalid quantization step")
        if fam >= len(scalemodel.FAMILIES) or flags & ~_ROW_SCALES:
            raise CodecError("lossy payload header has unknown model or flags")
        if not _K_RANGE[0] <= k_min <= k_max <= _K_RANGE[1]:
            raise CodecError("lossy payload declares scale codes out of range")
        pos = _HEAD.size
        raw, pos = _unpack(mv, pos, 8 * nchan, "channel means")
        means = np.frombuffer(raw, dtype="<i8")
        raw, pos = _unpack(mv, pos, 2 * nchan, "channel scales")
        chan = np.frombuffer(raw, dtype="<i2").astype(np.int64)
        rows = np.zeros(nrows, dtype=np.int64)
        if flags & _ROW_SCALES:
            raw, pos = _unpack(mv, pos, 2 * nrows, "row scales")
            rows = np.frombuffer(raw, dtype="<i2").astype(np.int64)
        k = np.clip(chan[None, :] + rows[:, None], *_K_RANGE).reshape(-1)
        if k.min() != k_min or k.max() != k_max:
            raise CodecError("lossy scale codes disagree with the header")
        if len(mv) - pos < 4:
            raise CodecError("lossy payload truncated: escape count missing")
        (nesc,) = struct.unpack_from("<I", mv, pos)
        if nesc > numel:
            raise CodecError("lossy payload declares more escapes than values")
        raw, pos = _unpack(mv, pos + 4, 8 * nesc, "escapes")
        escapes = np.frombuffer(raw, dtype="<i8").astype(np.int64)
        widths = _low_widths(k)
        raw, pos = _unpack(mv, pos, _low_size(widths), "raw low bits")
        lowbits = _unpack_low(raw, widths)
        rest = len(mv) - pos
        if rest % 4:
            raise CodecError("lossy range-coded stream is not a whole number of 32-bit words")
        words = np.frombuffer(mv[pos:], dtype=np.uint32).copy()
        try:
            decoder = constriction.stream.queue.RangeDecoder(words)
        except Exception as exc:
            raise CodecError(f"lossy range-coded stream is corrupt: {exc}") from None
        r = scalemodel.decode(decoder, k, scalemodel.FAMILIES[fam], lowbits, escapes)
        q = r.reshape(nrows, nchan) + means[None, :]
        return (q * step).astype(dtype.numpy).reshape(shape)


# ---------------------------------------------------------------------- side information
def _log4(v: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        codes = np.rint(scalemodel.STEPS_PER_OCTAVE * np.log2(v))
    return np.clip(np.nan_to_num(codes, neginf=_K_RANGE[0]), *_K_RANGE).astype(np.int64)


def _scale_codes(r: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """Per-channel and per-row log-scale codes (quarter octaves) of the residual field."""
    rf = r.astype(np.float64)
    sq = rf * rf
    chan_rms = np.sqrt(sq.mean(axis=0))
    rows = np.zeros(r.shape[0], dtype=np.int64)
    if r.shape[0] < 2 or r.shape[1] < 8:
        return _log4(chan_rms), rows, False
    norm = np.where(chan_rms > 0, chan_rms, 1.0)
    row_rms = np.sqrt((sq / (norm * norm)[None, :]).mean(axis=1))
    rows = _log4(np.where(row_rms > 0, row_rms, 2.0 ** (_K_RANGE[0] / 4)))
    rows -= int(np.median(rows))
    spread = np.abs(rows).mean()
    if spread < 0.5:  # rows are alike: row scales would cost without paying
        return _log4(chan_rms), np.zeros_like(rows), False
    row_f = np.exp2(rows / scalemodel.STEPS_PER_OCTAVE)
    chan_rms = np.sqrt((sq / (row_f * row_f)[:, None]).mean(axis=0))
    return _log4(chan_rms), rows, True


def _pick_family(r: np.ndarray, k: np.ndarray) -> str:
    """The model family with the shortest ideal code on a sample of the residuals."""
    stride = max(1, r.size // 65536)
    rs, ks = r[::stride], k[::stride]
    costs = {f: scalemodel.ideal_bits(rs, ks, f) for f in scalemodel.FAMILIES}
    return min(costs, key=costs.get)


def _low_widths(k: np.ndarray) -> list[tuple[int, int]]:
    """(width, count) of raw low-bit groups in bucket order, as the encoder emits them."""
    kk, counts = np.unique(k, return_counts=True)
    return [(scalemodel.raw_bits(int(b)), int(n)) for b, n in zip(kk, counts, strict=True)]


def _low_size(widths: list[tuple[int, int]]) -> int:
    return sum((w * n + 7) // 8 for w, n in widths if w)


def _pack_low(lowbits: np.ndarray, k: np.ndarray) -> bytes:
    out, pos = [], 0
    for w, n in _low_widths(k):
        if w:
            out.append(pack_bits(lowbits[pos : pos + n], w))
            pos += n
    return b"".join(out)


def _unpack_low(raw: bytes, widths: list[tuple[int, int]]) -> np.ndarray:
    parts, pos = [], 0
    for w, n in widths:
        if w:
            size = (w * n + 7) // 8
            parts.append(unpack_bits(raw[pos : pos + size], n, w))
            pos += size
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
