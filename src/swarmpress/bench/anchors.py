"""External anchor compressors: what a swarmpress codec must beat, behind one small interface.

An anchor is a real, published compressor run on the raw tensor, with no swarmpress frame:
`compress(arr) -> bytes`, `decompress(blob, dtype, shape) -> arr`. Where a library exists
the anchor calls that library, never a re-implementation. Every anchor whose library is
not importable is skipped with the reason recorded, so a bench run never fails for a
missing optional dependency. Every anchor runs on one core: blosc2 with nthreads=1, zipnn
with threads=1 (one worker thread at a time), SZ3 with OpenMP off, ZFP in its serial
execution policy; zstandard, lz4, brotli and pcodec are single-threaded.

Lossless anchors (settings fixed here, reported as `setting`):

- `zstd-3`: Zstandard level 3 on the raw bytes (the Apex baseline).
- `lz4`: LZ4 frame format, default (fast) level 0.
- `brotli-5`: Brotli quality 5, default window.
- `blosc2-bitshuffle-zstd`: Blosc2, bit-shuffle filter, Zstandard codec, clevel 5,
  typesize = dtype itemsize, nthreads=1 both ways.
- `zipnn`: the ZipNN package (IBM, `zipnn.ZipNN`) on the raw bytes with `bytearray_dtype`
  set to the tensor's dtype, so it groups bytes the way it does for that dtype (bf16: sign
  bit moved next to the mantissa, exponent byte and sign+mantissa byte coded apart;
  fp32: four byte groups; fp16: two byte groups without the sign move), method AUTO
  (Huffman per 256 KiB chunk, a chunk kept raw when it does not shrink below 95 %),
  threads=1. ZipNN rewrites its input buffer in place, so it is handed a fresh copy of
  the bytes on every call (the copy is timed, as any caller would pay it).
- `pcodec`: pcodec (`pcodec.standalone`), compression level 8 (its default), mode and
  delta detection automatic. float32 and float16 go in as floats; bfloat16, which pcodec
  does not know, goes in as its uint16 bit patterns (no widening, exact by construction).

Lossy anchors take float32 input: bf16/fp16 tensors are widened to float32 for the library
and the output is rounded back to the original dtype, both inside the timed calls; the
ratio counts the original dtype's bytes. Each has one knob set per tensor by `tune`, the
loosest setting whose Apex similarity (measured on the rounded-back output) is above the
target:

- `sz3`: SZ3 via `pysz` (the SZ3 team's binding), absolute error-bound mode, OpenMP off;
  knob = the absolute bound, found by a bounded geometric bisection. The tensor is viewed
  as 2-D (rows x channels; 1-D if it has one axis).
- `zfp`: ZFP via `zfpy` (LLNL's binding), fixed-accuracy mode, same search (the tolerance
  acts only through floor(log2(tolerance)), so the bisection stops at a factor-2 bracket).
- `apex-style-int8`: the competition anchor, in the style of the public community entries
  of the Apex matrix-compression task: blocks of 32 values, each scaled by its absolute
  maximum stored as bf16, rounded to symmetric int8 codes in [-L, L], then three byte
  planes (scale high bytes, scale low bytes, codes) each packed with Brotli quality 5.
  knob = L, the fewest levels (1..127) that meet the target, by integer bisection.
"""

from __future__ import annotations

import math
import struct
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import ml_dtypes
import numpy as np

from swarmpress.codecs.core.metrics import similarity
from swarmpress.codecs.core.tensors import to_float64
from swarmpress.errors import SwarmpressError

BF16 = np.dtype(ml_dtypes.bfloat16)


class AnchorError(SwarmpressError, ValueError):
    """An anchor cannot handle this input, or its output is corrupt."""


class Anchor(ABC):
    """One external compressor: a name, lossless or lossy, compress and decompress."""

    name: ClassVar[str]
    lossless: ClassVar[bool]
    library: ClassVar[str]  # the PyPI distribution that holds the real compressor
    setting: str = ""

    @abstractmethod
    def compress(self, arr: np.ndarray) -> bytes:
        """Compress a C-contiguous float array into bytes."""

    @abstractmethod
    def decompress(self, blob: bytes, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        """Rebuild an array of dtype and shape from compress() output."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.setting})"


def raw_view(arr: np.ndarray) -> memoryview:
    """The tensor's bytes without a copy (a copy only when arr is not C-contiguous)."""
    a = np.ascontiguousarray(arr)
    return memoryview(a.reshape(-1).view(np.uint8))


def _from_raw(raw: bytes | bytearray, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    dtype = np.dtype(dtype)
    numel = math.prod(shape)
    if len(raw) != numel * dtype.itemsize:
        raise AnchorError(f"decompressed {len(raw)} bytes, expected {numel * dtype.itemsize}")
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


# ----------------------------------------------------------------------------- lossless
class ZstdAnchor(Anchor):
    name = "zstd-3"
    lossless = True
    library = "zstandard"

    def __init__(self, level: int = 3) -> None:
        import zstandard

        self._zstd = zstandard
        self.level = level
        self.setting = f"level {level}"

    def compress(self, arr: np.ndarray) -> bytes:
        return self._zstd.ZstdCompressor(level=self.level).compress(raw_view(arr))

    def decompress(self, blob: bytes, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        return _from_raw(self._zstd.ZstdDecompressor().decompress(blob), dtype, shape)


class Lz4Anchor(Anchor):
    name = "lz4"
    lossless = True
    library = "lz4"

    def __init__(self) -> None:
        import lz4.frame

        self._lz4 = lz4.frame
        self.setting = "frame format, level 0 (fast)"

    def compress(self, arr: np.ndarray) -> bytes:
        return self._lz4.compress(raw_view(arr), compression_level=0)

    def decompress(self, blob: bytes, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        return _from_raw(self._lz4.decompress(blob), dtype, shape)


class BrotliAnchor(Anchor):
    name = "brotli-5"
    lossless = True
    library = "brotli"

    def __init__(self, quality: int = 5) -> None:
        import brotli

        self._brotli = brotli
        self.quality = quality
        self.setting = f"quality {quality}"

    def compress(self, arr: np.ndarray) -> bytes:
        return self._brotli.compress(raw_view(arr), quality=self.quality)

    def decompress(self, blob: bytes, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        return _from_raw(self._brotli.decompress(blob), dtype, shape)


class Blosc2Anchor(Anchor):
    name = "blosc2-bitshuffle-zstd"
    lossless = True
    library = "blosc2"

    def __init__(self, clevel: int = 5) -> None:
        import blosc2

        self._blosc2 = blosc2
        self.clevel = clevel
        self.setting = f"bitshuffle + zstd, clevel {clevel}, typesize = itemsize, nthreads=1"

    def compress(self, arr: np.ndarray) -> bytes:
        b = self._blosc2
        cparams = b.CParams(
            codec=b.Codec.ZSTD,
            clevel=self.clevel,
            typesize=arr.dtype.itemsize,
            nthreads=1,
            filters=[b.Filter.BITSHUFFLE],
            filters_meta=[0],
        )
        return b.compress2(raw_view(arr), cparams=cparams)

    def decompress(self, blob: bytes, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        b = self._blosc2
        raw = b.decompress2(blob, dparams=b.DParams(nthreads=1))
        return _from_raw(raw, dtype, shape)


#: zipnn's name for each dtype it is given (its `bytearray_dtype`) and its dtype code
_ZIPNN_DTYPES = {"bfloat16": ("bfloat16", 6), "float16": ("float16", 4), "float32": ("float32", 1)}
_ZIPNN_HEADER = 32  # "ZN", version, reorder flags, ..., dtype code, original and total length


class ZipNNAnchor(Anchor):
    """The real ZipNN (`pip install zipnn`) on the tensor's raw bytes, one thread."""

    name = "zipnn"
    lossless = True
    library = "zipnn"

    def __init__(self, threads: int = 1) -> None:
        from zipnn import ZipNN

        self._cls = ZipNN
        self.threads = threads
        self._codecs: dict[str, Any] = {}
        self.setting = (
            "ZipNN(input_format='byte', bytearray_dtype=<tensor dtype>, method='AUTO' "
            f"(Huffman), compression_chunk=256 KiB, threads={threads}); byte grouping by dtype"
        )

    def _zipnn(self, dtype: np.dtype) -> Any:
        key = _ZIPNN_DTYPES.get(np.dtype(dtype).name)
        if key is None:
            raise AnchorError(f"zipnn takes bfloat16, float16 or float32, got {dtype}")
        z = self._codecs.get(key[0])
        if z is None:
            z = self._codecs[key[0]] = self._cls(
                input_format="byte", bytearray_dtype=key[0], threads=self.threads
            )
        return z

    def compress(self, arr: np.ndarray) -> bytes:
        z = self._zipnn(arr.dtype)
        # zipnn reorders the bits of its input buffer in place: hand it a private copy
        return bytes(z.compress(np.ascontiguousarray(arr).tobytes()))

    def decompress(self, blob: bytes, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        dtype = np.dtype(dtype)
        z = self._zipnn(dtype)
        want = math.prod(shape) * dtype.itemsize
        # zipnn's C core trusts its header; check it so a foreign or cut blob cannot crash us
        mv = memoryview(blob)
        if len(mv) < _ZIPNN_HEADER or bytes(mv[:2]) != b"ZN":
            raise AnchorError("zipnn blob has no ZipNN header")
        if mv[15] != _ZIPNN_DTYPES[dtype.name][1]:
            raise AnchorError(f"zipnn blob holds dtype code {mv[15]}, not {dtype.name}")
        orig = int.from_bytes(mv[16:24], "little")
        total = int.from_bytes(mv[24:32], "little")
        if orig != want or total != len(mv):
            raise AnchorError(
                f"zipnn blob says {orig} bytes in {total}, expected {want} bytes in {len(mv)}"
            )
        return _from_raw(z.decompress(blob), dtype, shape)


class PcodecAnchor(Anchor):
    """pcodec's standalone format; bfloat16 goes in as its uint16 bit patterns."""

    name = "pcodec"
    lossless = True
    library = "pcodec"

    def __init__(self, level: int | None = None) -> None:
        import pcodec

        self._pco = pcodec
        default = getattr(pcodec, "DEFAULT_COMPRESSION_LEVEL", 8)
        self.level = default if level is None else level
        self._config = pcodec.ChunkConfig(compression_level=self.level)
        self.setting = (
            f"standalone, compression level {self.level}, auto mode and delta; float32/"
            "float16 as floats, bfloat16 as its uint16 bits (pcodec has no bf16)"
        )

    @staticmethod
    def _pco_dtype(dtype: np.dtype) -> np.dtype:
        dtype = np.dtype(dtype)
        if dtype == BF16:
            return np.dtype(np.uint16)
        if dtype in (np.dtype(np.float16), np.dtype(np.float32)):
            return dtype
        raise AnchorError(f"pcodec anchor takes bfloat16, float16 or float32, got {dtype}")

    def compress(self, arr: np.ndarray) -> bytes:
        flat = np.ascontiguousarray(arr).reshape(-1).view(self._pco_dtype(arr.dtype))
        return self._pco.standalone.simple_compress(flat, self._config)

    def decompress(self, blob: bytes, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        dtype = np.dtype(dtype)
        want = self._pco_dtype(dtype)
        try:
            out = self._pco.standalone.simple_decompress(blob)
        except (RuntimeError, TypeError, ValueError) as exc:
            raise AnchorError(f"pcodec blob is corrupt: {exc}") from None
        if out is None:  # no values and no dtype in the file
            out = np.zeros(0, dtype=want)
        if out.dtype != want or out.size != math.prod(shape):
            raise AnchorError(
                f"pcodec blob holds {out.size} {out.dtype} values, expected "
                f"{math.prod(shape)} {want}"
            )
        return out.view(dtype).reshape(shape)


# ----------------------------------------------------------------------------- lossy
@dataclass
class TuneResult:
    """Outcome of the knob search for one lossy anchor on one tensor."""

    anchor: LossyAnchor  # tuned copy (knob set)
    knob: float  # absolute error bound (sz3, zfp) or levels (apex-style-int8)
    similarity: float
    compressed_bytes: int
    met: bool  # similarity > target
    evals: int
    tried: list[tuple[float, float, int]] = field(default_factory=list)  # (knob, sim, bytes)


class LossyAnchor(Anchor):
    """A lossy compressor with one quality knob, set per tensor by `tune`."""

    lossless = False
    #: what the knob is, for messages
    knob_name: ClassVar[str] = "knob"

    def __init__(self, knob: float | None = None) -> None:
        self.knob = knob
        self.setting = self._describe()

    @abstractmethod
    def _describe(self) -> str:
        """The setting text (with the knob when it is set)."""

    def with_knob(self, knob: float) -> LossyAnchor:
        """A copy of this anchor with the knob set."""
        return type(self)(knob)

    @abstractmethod
    def tune(
        self, arr: np.ndarray, target_similarity: float = 0.99, max_evals: int = 12
    ) -> TuneResult:
        """The loosest knob whose similarity is above target, in at most max_evals tries."""

    @abstractmethod
    def sweep(self, arr: np.ndarray, quick: bool = False) -> list[tuple[str, LossyAnchor]]:
        """(label, anchor) over a range of quality settings, for the ratio-vs-similarity plot."""

    def _knob(self) -> float:
        if self.knob is None or not self.knob > 0:
            raise AnchorError(f"{self.name}: set a positive {self.knob_name} (tune it first)")
        return float(self.knob)

    def _try(self, x: np.ndarray, x64: np.ndarray, knob: float) -> tuple[float, float, int]:
        """(knob, similarity, compressed bytes) of one try."""
        cand = self.with_knob(knob)
        blob = cand.compress(x)
        y = cand.decompress(blob, x.dtype, x.shape)
        return knob, similarity(x64, to_float64(y)), len(blob)

    def _result(self, tried: list[tuple[float, float, int]], target: float) -> TuneResult:
        ok = [t for t in tried if t[1] > target]
        # the smallest passing blob (loosest knob on ties), else the closest miss
        if ok:
            b = min(ok, key=lambda t: (t[2], -self._looseness(t[0])))
        else:
            b = max(tried, key=lambda t: t[1])
        return TuneResult(self.with_knob(b[0]), b[0], b[1], b[2], bool(ok), len(tried), tried)

    def _looseness(self, knob: float) -> float:
        """Larger = looser (a bigger error bound; fewer levels)."""
        return knob


def _as_f32(arr: np.ndarray) -> np.ndarray:
    """The tensor as finite float32 (bf16/fp16 widened exactly; no copy for float32)."""
    x = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(x).all():
        raise AnchorError("lossy anchors need finite values (NaN or inf present)")
    return x


def _rms(x32: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x32, dtype=np.float64)))) if x32.size else 0.0


#: SZ3/ZFP sweep bounds, as multiples of rms(x) * sqrt(3) (a uniform error of that
#: half-width has rel L2 error = the multiple)
ERROR_BOUND_FACTORS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2)
ERROR_BOUND_FACTORS_QUICK = (0.005, 0.01, 0.05, 0.2)


class ErrorBoundAnchor(LossyAnchor):
    """A float32 error-bounded compressor whose absolute bound (the knob) is set per tensor."""

    knob_name = "absolute error bound"
    #: bisection stops once the passing/failing bounds are within this factor
    resolution: ClassVar[float] = 1.02
    #: first guess = guess_factor * e * rms(x) * sqrt(3), e the target relative error
    guess_factor: ClassVar[float] = 1.0
    #: bracketing step (factor) while no passing or no failing bound is known
    step: ClassVar[float] = 2.0

    @property
    def error_bound(self) -> float | None:
        return self.knob

    def with_bound(self, error_bound: float) -> LossyAnchor:
        """A copy of this anchor with the given absolute error bound."""
        return self.with_knob(error_bound)

    @staticmethod
    def _as2d(arr: np.ndarray) -> np.ndarray:
        x = _as_f32(arr)
        return x.reshape(-1, x.shape[-1]) if x.ndim >= 2 else x.reshape(-1)

    def tune(
        self, arr: np.ndarray, target_similarity: float = 0.99, max_evals: int = 12
    ) -> TuneResult:
        """Loosest absolute bound with similarity above target, in at most max_evals tries.

        Geometric search: bracket by factors of `step` from a first guess, then bisect in log
        space until the bracket is within `resolution`. Keeps the smallest passing blob.
        """
        x = np.asarray(arr)
        x32 = self._as2d(x)
        x64 = to_float64(x)
        e = max(1.0 - target_similarity, 1e-7)
        eb = max(self.guess_factor * e * _rms(x32) * math.sqrt(3.0), 1e-30)
        tried: list[tuple[float, float, int]] = []  # (bound, similarity, bytes)
        for _ in range(max(1, max_evals)):
            tried.append(self._try(x, x64, eb))
            passing = [t[0] for t in tried if t[1] > target_similarity]
            if not passing:
                eb /= self.step
                continue
            lo = max(passing)
            above = [t[0] for t in tried if t[1] <= target_similarity and t[0] > lo]
            if not above:
                eb = lo * self.step
                continue
            hi = min(above)
            if hi / lo <= self.resolution:
                break
            eb = math.sqrt(hi * lo)
        return self._result(tried, target_similarity)

    def sweep(self, arr: np.ndarray, quick: bool = False) -> list[tuple[str, LossyAnchor]]:
        rms = _rms(np.asarray(arr, dtype=np.float32))
        if not math.isfinite(rms) or rms == 0.0:
            return []
        factors = ERROR_BOUND_FACTORS_QUICK if quick else ERROR_BOUND_FACTORS
        return [(f"eb={k:g}*rms*sqrt3", self.with_bound(k * rms * math.sqrt(3.0))) for k in factors]


class SZ3Anchor(ErrorBoundAnchor):
    name = "sz3"
    library = "pysz"

    def __init__(self, error_bound: float | None = None) -> None:
        import pysz

        self._pysz = pysz
        super().__init__(error_bound)

    def _describe(self) -> str:
        if self.knob is None:
            return "SZ3 ABS mode, OpenMP off, absolute error bound set per tensor"
        return f"SZ3 ABS mode, OpenMP off, abs error bound {self.knob:.4g}"

    def compress(self, arr: np.ndarray) -> bytes:
        x = self._as2d(arr)
        conf = self._pysz.szConfig()
        conf.errorBoundMode = self._pysz.szErrorBoundMode.ABS
        conf.absErrorBound = self._knob()
        conf.openmp = False
        out, _ = self._pysz.sz.compress(x, conf)
        return out.tobytes()

    def decompress(self, blob: bytes, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        dims = (math.prod(shape[:-1]), shape[-1]) if len(shape) >= 2 else (math.prod(shape),)
        buf = np.frombuffer(blob, dtype=np.uint8)
        try:
            out, _ = self._pysz.sz.decompress(buf, np.float32, dims)
        except (ValueError, RuntimeError) as exc:
            raise AnchorError(f"sz3 blob is corrupt: {exc}") from None
        return out.reshape(shape).astype(dtype, copy=False)


class ZfpAnchor(ErrorBoundAnchor):
    name = "zfp"
    library = "zfpy"
    resolution = 2.0
    guess_factor = 4.0
    step = 4.0

    def __init__(self, error_bound: float | None = None) -> None:
        import zfpy

        self._zfpy = zfpy
        super().__init__(error_bound)

    def _describe(self) -> str:
        if self.knob is None or not self.knob > 0:
            return "ZFP fixed-accuracy, serial, tolerance set per tensor"
        exp = math.floor(math.log2(self.knob))
        return f"ZFP fixed-accuracy, serial, tolerance {self.knob:.4g} (acts as 2^{exp})"

    def compress(self, arr: np.ndarray) -> bytes:
        return bytes(self._zfpy.compress_numpy(self._as2d(arr), tolerance=self._knob()))

    def decompress(self, blob: bytes, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        out = np.asarray(self._zfpy.decompress_numpy(bytes(blob)))
        if out.size != math.prod(shape):
            raise AnchorError(f"zfp blob holds {out.size} values, expected {math.prod(shape)}")
        return out.reshape(shape).astype(dtype, copy=False)


_APEX_HEADER = struct.Struct("<BHQIII")  # levels, block, numel, three plane lengths
_BF16_MAX_BITS = 0x7F7F  # the largest finite bfloat16


class ApexStyleAnchor(LossyAnchor):
    """Block absmax int8 + byte planes + Brotli, the shape of the community Apex entries."""

    name = "apex-style-int8"
    library = "brotli"
    knob_name = "number of levels"
    block: ClassVar[int] = 32
    quality: ClassVar[int] = 5
    max_levels: ClassVar[int] = 127
    sweep_levels: ClassVar[tuple[int, ...]] = (3, 7, 15, 31, 63, 127)
    sweep_levels_quick: ClassVar[tuple[int, ...]] = (7, 31, 127)

    def __init__(self, levels: float | None = None) -> None:
        import brotli

        self._brotli = brotli
        super().__init__(levels)

    def _describe(self) -> str:
        lv = "L set per tensor" if self.knob is None else f"L = {int(self.knob)}"
        return (
            f"blocks of {self.block}, absmax scale as bf16, int8 codes in [-L, L] ({lv}), "
            f"byte planes (scale high, scale low, codes), Brotli quality {self.quality} each"
        )

    def _levels(self) -> int:
        lv = int(self._knob())
        if not 1 <= lv <= self.max_levels:
            raise AnchorError(f"{self.name}: levels must be in 1..{self.max_levels}, got {lv}")
        return lv

    def _looseness(self, knob: float) -> float:
        return -knob  # fewer levels = looser

    def compress(self, arr: np.ndarray) -> bytes:
        lv = self._levels()
        f = _as_f32(arr).reshape(-1)
        n, b = f.size, self.block
        nb = -(-n // b)
        if nb * b != n:
            f = np.concatenate([f, np.zeros(nb * b - n, dtype=np.float32)])
        blocks = f.reshape(nb, b)
        scale = np.abs(blocks).max(axis=1) if nb else np.zeros(0, dtype=np.float32)
        bits = scale.astype(BF16).view(np.uint16)
        bits[bits == 0x7F80] = _BF16_MAX_BITS  # a scale that rounds up to inf stays finite
        s = bits.view(BF16).astype(np.float32)
        s[s == 0] = 1.0  # an all-zero block: every code is 0 anyway
        q = blocks * (lv / s)[:, None]
        np.rint(q, out=q)
        np.clip(q, -lv, lv, out=q)
        planes = [(bits >> 8).astype(np.uint8), (bits & 0xFF).astype(np.uint8), q.astype(np.int8)]
        packed = [self._brotli.compress(memoryview(p.reshape(-1)), quality=self.quality)
                  for p in planes]  # fmt: skip
        head = _APEX_HEADER.pack(lv, b, n, *(len(p) for p in packed))
        return b"".join([head, *packed])

    def decompress(self, blob: bytes, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        mv = memoryview(blob)
        if len(mv) < _APEX_HEADER.size:
            raise AnchorError(f"{self.name} blob truncated: no header")
        lv, b, n, *lengths = _APEX_HEADER.unpack_from(mv)
        if n != math.prod(shape) or not 1 <= lv <= self.max_levels or b < 1:
            raise AnchorError(f"{self.name} blob does not match {math.prod(shape)} values")
        if _APEX_HEADER.size + sum(lengths) != len(mv):
            raise AnchorError(f"{self.name} blob is {len(mv)} bytes, header says otherwise")
        nb = -(-n // b)
        pos, planes = _APEX_HEADER.size, []
        for length, want in zip(lengths, (nb, nb, nb * b), strict=True):
            try:
                raw = self._brotli.decompress(mv[pos : pos + length])
            except self._brotli.error as exc:
                raise AnchorError(f"{self.name} plane is corrupt: {exc}") from None
            if len(raw) != want:
                raise AnchorError(f"{self.name} plane holds {len(raw)} bytes, expected {want}")
            planes.append(raw)
            pos += length
        hi = np.frombuffer(planes[0], dtype=np.uint8).astype(np.uint16)
        bits = (hi << 8) | np.frombuffer(planes[1], dtype=np.uint8)
        step = bits.view(BF16).astype(np.float32) / np.float32(lv)
        codes = np.frombuffer(planes[2], dtype=np.int8).reshape(nb, b)
        y = (codes * step[:, None]).reshape(-1)[:n]
        dtype = np.dtype(dtype)
        if dtype == np.float16:  # a bf16 scale may round past fp16's largest value
            top = float(np.finfo(np.float16).max)
            np.clip(y, -top, top, out=y)
        return y.astype(dtype).reshape(shape)

    def tune(
        self, arr: np.ndarray, target_similarity: float = 0.99, max_evals: int = 12
    ) -> TuneResult:
        """Fewest levels with similarity above target: L = 127 first, then integer bisection
        (at most 8 tries for the exact answer; similarity grows with L)."""
        x = np.asarray(arr)
        _as_f32(x)  # refuse NaN/inf before trying
        x64 = to_float64(x)
        tried = [self._try(x, x64, float(self.max_levels))]
        lo, hi = 0, self.max_levels  # lo fails (0 levels is no signal), hi passes
        if tried[0][1] > target_similarity:
            while hi - lo > 1 and len(tried) < max(1, max_evals):
                mid = (lo + hi) // 2
                tried.append(self._try(x, x64, float(mid)))
                lo, hi = (lo, mid) if tried[-1][1] > target_similarity else (mid, hi)
        return self._result(tried, target_similarity)

    def sweep(self, arr: np.ndarray, quick: bool = False) -> list[tuple[str, LossyAnchor]]:
        levels = self.sweep_levels_quick if quick else self.sweep_levels
        return [(f"L={lv}", self.with_knob(float(lv))) for lv in levels]


# ----------------------------------------------------------------------------- registry
ANCHOR_TYPES: tuple[type[Anchor], ...] = (
    ZstdAnchor,
    Lz4Anchor,
    BrotliAnchor,
    Blosc2Anchor,
    ZipNNAnchor,
    PcodecAnchor,
    SZ3Anchor,
    ZfpAnchor,
    ApexStyleAnchor,
)
ANCHOR_NAMES: tuple[str, ...] = tuple(t.name for t in ANCHOR_TYPES)
LOSSY_ANCHOR_NAMES: tuple[str, ...] = tuple(
    t.name for t in ANCHOR_TYPES if issubclass(t, LossyAnchor)
)


@dataclass
class AnchorSet:
    """The anchors that could be built and, for the rest, why they were skipped."""

    available: list[Anchor]
    skipped: dict[str, str]


def load_anchors(names: list[str] | None = None) -> AnchorSet:
    """Build the named anchors (default: all); record a reason for each one not importable."""
    wanted = list(ANCHOR_NAMES) if names is None else names
    unknown = [n for n in wanted if n not in ANCHOR_NAMES]
    if unknown:
        raise AnchorError(
            f"unknown anchor(s) {', '.join(unknown)}; known: {', '.join(ANCHOR_NAMES)}"
        )
    available: list[Anchor] = []
    skipped: dict[str, str] = {}
    factory: dict[str, Callable[[], Any]] = {t.name: t for t in ANCHOR_TYPES}
    for n in wanted:
        try:
            available.append(factory[n]())
        except ImportError as exc:
            lib = next(t.library for t in ANCHOR_TYPES if t.name == n)
            skipped[n] = f"python package {lib!r} is not importable ({exc})"
    return AnchorSet(available, skipped)


#: the distributions whose versions a bench records (anchors and references)
LIBRARIES = ("zstandard", "lz4", "brotli", "blosc2", "zipnn", "pcodec", "pysz", "zfpy")


def library_versions() -> dict[str, str]:
    """Versions of the anchor libraries (or 'missing')."""
    import importlib.metadata as md

    out: dict[str, str] = {}
    for dist in LIBRARIES:
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = "missing"
    return out
