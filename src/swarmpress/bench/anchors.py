"""External anchor compressors: what a swarmpress codec must beat, behind one small interface.

An anchor is a well-known general-purpose or scientific compressor run on the raw tensor,
with no swarmpress frame: `compress(arr) -> bytes`, `decompress(blob, dtype, shape) -> arr`.
Every anchor whose library is not importable is skipped with the reason recorded, so a
bench run never fails for a missing optional dependency.

Lossless anchors (settings fixed here, reported as `setting`):

- `zstd-3`: Zstandard level 3 on the raw bytes (the Apex baseline).
- `lz4`: LZ4 frame format, default (fast) level 0.
- `brotli-5`: Brotli quality 5, default window.
- `blosc2-bitshuffle-zstd`: Blosc2, bit-shuffle filter, Zstandard codec, clevel 5,
  typesize = dtype itemsize, one thread.
- `zipnn-style`: ZipNN-like byte grouping, written here: rotate each value left by one
  bit so the sign lands in the lowest bit and the exponent fills the top byte (exactly the
  8 exponent bits for bf16 and fp32), split into byte planes, zstd-3 each plane separately,
  and store a plane raw when zstd cannot shrink it by 2 % (the near-random mantissa).

Lossy anchors take float32 input (bf16/fp16 are widened, the result is cast back to the
original dtype, and the ratio counts the original dtype's bytes). The tensor is viewed as
2-D (rows x channels; 1-D if it has one axis). Their absolute error bound is tuned per
tensor by `tune`, a bounded geometric bisection for the loosest bound whose Apex similarity
is still above the target:

- `sz3`: SZ3 via `pysz`, absolute error-bound mode.
- `zfp`: ZFP via `zfpy`, fixed-accuracy mode (the tolerance acts only through
  floor(log2(tolerance)), so the bisection stops at a factor-2 bracket).
"""

from __future__ import annotations

import math
import struct
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from swarmpress.codecs.metrics import similarity
from swarmpress.codecs.tensors import to_float64


class AnchorError(ValueError):
    """An anchor cannot handle this input, or its output is corrupt."""


class Anchor(ABC):
    """One external compressor: a name, lossless or lossy, compress and decompress."""

    name: ClassVar[str]
    lossless: ClassVar[bool]
    library: ClassVar[str]
    setting: str = ""

    @abstractmethod
    def compress(self, arr: np.ndarray) -> bytes:
        """Compress a C-contiguous float array into bytes."""

    @abstractmethod
    def decompress(self, blob: bytes, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        """Rebuild an array of dtype and shape from compress() output."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.setting})"


def _raw(arr: np.ndarray) -> bytes:
    return np.ascontiguousarray(arr).tobytes()


def _from_raw(raw: bytes, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    dtype = np.dtype(dtype)
    numel = math.prod(shape)
    if len(raw) != numel * dtype.itemsize:
        raise AnchorError(f"decompressed {len(raw)} bytes, expected {numel * dtype.itemsize}")
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()


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
        return self._zstd.ZstdCompressor(level=self.level).compress(_raw(arr))

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
        return self._lz4.compress(_raw(arr), compression_level=0)

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
        return self._brotli.compress(_raw(arr), quality=self.quality)

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
        self.setting = f"bitshuffle + zstd, clevel {clevel}, typesize = itemsize, 1 thread"

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
        return b.compress2(_raw(arr), cparams=cparams)

    def decompress(self, blob: bytes, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        b = self._blosc2
        raw = b.decompress2(blob, dparams=b.DParams(nthreads=1))
        return _from_raw(bytes(raw), dtype, shape)


_PLANE = struct.Struct("<BQ")  # mode (0 raw, 1 zstd), stored length
_UINT = {2: np.dtype("<u2"), 4: np.dtype("<u4")}


class ZipNNStyleAnchor(Anchor):
    """Exponent-aligned byte planes, each plane zstd-compressed (or stored raw) on its own."""

    name = "zipnn-style"
    lossless = True
    library = "zstandard"

    def __init__(self, level: int = 3, min_gain: float = 0.02) -> None:
        import zstandard

        self._zstd = zstandard
        self.level = level
        self.min_gain = min_gain
        self.setting = f"rotl 1, byte planes, zstd level {level} per plane, raw if gain < 2 %"

    def compress(self, arr: np.ndarray) -> bytes:
        itemsize = arr.dtype.itemsize
        if itemsize not in _UINT:
            raise AnchorError(f"zipnn-style takes 2- or 4-byte floats, got {arr.dtype}")
        u = np.ascontiguousarray(arr).reshape(-1).view(_UINT[itemsize])
        one, top = u.dtype.type(1), u.dtype.type(8 * itemsize - 1)
        rot = (u << one) | (u >> top)  # sign -> bit 0, exponent -> top bits
        planes = rot.view(np.uint8).reshape(-1, itemsize)
        cctx = self._zstd.ZstdCompressor(level=self.level)
        parts = [bytes([itemsize])]
        for k in range(itemsize - 1, -1, -1):  # most significant (exponent) plane first
            plane = np.ascontiguousarray(planes[:, k]).tobytes()
            packed = cctx.compress(plane)
            if len(packed) < (1.0 - self.min_gain) * len(plane):
                parts += [_PLANE.pack(1, len(packed)), packed]
            else:
                parts += [_PLANE.pack(0, len(plane)), plane]
        return b"".join(parts)

    def decompress(self, blob: bytes, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        dtype = np.dtype(dtype)
        itemsize = dtype.itemsize
        numel = math.prod(shape)
        mv = memoryview(blob)
        if len(mv) < 1 or mv[0] != itemsize:
            raise AnchorError("zipnn-style blob does not match the dtype")
        planes = np.empty((numel, itemsize), dtype=np.uint8)
        pos = 1
        dctx = self._zstd.ZstdDecompressor()
        for k in range(itemsize - 1, -1, -1):
            if pos + _PLANE.size > len(mv):
                raise AnchorError("zipnn-style blob truncated")
            mode, length = _PLANE.unpack_from(mv, pos)
            pos += _PLANE.size
            chunk = mv[pos : pos + length]
            pos += length
            raw = dctx.decompress(chunk, max_output_size=numel) if mode == 1 else bytes(chunk)
            if len(raw) != numel:
                raise AnchorError(f"zipnn-style plane holds {len(raw)} bytes, expected {numel}")
            planes[:, k] = np.frombuffer(raw, dtype=np.uint8)
        rot = planes.reshape(-1).view(_UINT[itemsize])
        one, top = rot.dtype.type(1), rot.dtype.type(8 * itemsize - 1)
        u = (rot >> one) | (rot << top)
        return u.view(dtype).reshape(shape).copy()


# ----------------------------------------------------------------------------- lossy
@dataclass
class TuneResult:
    """Outcome of the error-bound search for one lossy anchor on one tensor."""

    anchor: LossyAnchor  # tuned copy (error_bound set)
    error_bound: float
    similarity: float
    compressed_bytes: int
    met: bool  # similarity > target
    evals: int
    tried: list[tuple[float, float, int]] = field(default_factory=list)  # (bound, sim, bytes)


class LossyAnchor(Anchor):
    """A float32 error-bounded compressor whose absolute bound is set per tensor."""

    lossless = False
    #: bisection stops once the passing/failing bounds are within this factor
    resolution: ClassVar[float] = 1.02
    #: first guess = guess_factor * e * rms(x) * sqrt(3), e the target relative error
    guess_factor: ClassVar[float] = 1.0
    #: bracketing step (factor) while no passing or no failing bound is known
    step: ClassVar[float] = 2.0

    def __init__(self, error_bound: float | None = None) -> None:
        self.error_bound = error_bound
        self.setting = self._describe()

    def _describe(self) -> str:
        if self.error_bound is None:
            return "absolute error bound set per tensor"
        return f"abs error bound {self.error_bound:.4g}"

    def with_bound(self, error_bound: float) -> LossyAnchor:
        """A copy of this anchor with the given absolute error bound."""
        return type(self)(error_bound)

    @staticmethod
    def _as2d(arr: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(arr, dtype=np.float32)
        if not np.isfinite(x).all():
            raise AnchorError("lossy anchors need finite values (NaN or inf present)")
        return x.reshape(-1, x.shape[-1]) if x.ndim >= 2 else x.reshape(-1)

    def _bound(self) -> float:
        if self.error_bound is None or not self.error_bound > 0:
            raise AnchorError(f"{self.name}: set a positive error bound (tune it first)")
        return float(self.error_bound)

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
        rms = float(np.sqrt(np.mean(np.square(x32, dtype=np.float64)))) if x32.size else 0.0
        e = max(1.0 - target_similarity, 1e-7)
        eb = max(self.guess_factor * e * rms * math.sqrt(3.0), 1e-30)
        tried: list[tuple[float, float, int]] = []  # (bound, similarity, bytes)
        for _ in range(max(1, max_evals)):
            cand = self.with_bound(eb)
            blob = cand.compress(x)
            sim = similarity(x64, to_float64(cand.decompress(blob, x.dtype, x.shape)))
            tried.append((eb, sim, len(blob)))
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
        ok = [t for t in tried if t[1] > target_similarity]
        # the smallest passing blob (loosest bound on ties), else the closest miss
        b = min(ok, key=lambda t: (t[2], -t[0])) if ok else min(tried, key=lambda t: t[0])
        return TuneResult(self.with_bound(b[0]), b[0], b[1], b[2], bool(ok), len(tried), tried)


class SZ3Anchor(LossyAnchor):
    name = "sz3"
    library = "pysz"

    def __init__(self, error_bound: float | None = None) -> None:
        import pysz

        self._pysz = pysz
        super().__init__(error_bound)

    def _describe(self) -> str:
        return "SZ3 ABS mode, " + super()._describe()

    def compress(self, arr: np.ndarray) -> bytes:
        x = self._as2d(arr)
        conf = self._pysz.szConfig()
        conf.errorBoundMode = self._pysz.szErrorBoundMode.ABS
        conf.absErrorBound = self._bound()
        out, _ = self._pysz.sz.compress(x, conf)
        return out.tobytes()

    def decompress(self, blob: bytes, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        dims = (math.prod(shape[:-1]), shape[-1]) if len(shape) >= 2 else (math.prod(shape),)
        buf = np.frombuffer(blob, dtype=np.uint8)
        try:
            out, _ = self._pysz.sz.decompress(buf, np.float32, dims)
        except (ValueError, RuntimeError) as exc:
            raise AnchorError(f"sz3 blob is corrupt: {exc}") from None
        return out.reshape(shape).astype(dtype)


class ZfpAnchor(LossyAnchor):
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
        if self.error_bound is None or not self.error_bound > 0:
            return "ZFP fixed-accuracy, tolerance set per tensor"
        exp = math.floor(math.log2(self.error_bound))
        return f"ZFP fixed-accuracy, tolerance {self.error_bound:.4g} (acts as 2^{exp})"

    def compress(self, arr: np.ndarray) -> bytes:
        return bytes(self._zfpy.compress_numpy(self._as2d(arr), tolerance=self._bound()))

    def decompress(self, blob: bytes, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        out = np.asarray(self._zfpy.decompress_numpy(bytes(blob)))
        if out.size != math.prod(shape):
            raise AnchorError(f"zfp blob holds {out.size} values, expected {math.prod(shape)}")
        return out.reshape(shape).astype(dtype)


# ----------------------------------------------------------------------------- registry
ANCHOR_TYPES: tuple[type[Anchor], ...] = (
    ZstdAnchor,
    Lz4Anchor,
    BrotliAnchor,
    Blosc2Anchor,
    ZipNNStyleAnchor,
    SZ3Anchor,
    ZfpAnchor,
)
ANCHOR_NAMES: tuple[str, ...] = tuple(t.name for t in ANCHOR_TYPES)


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


def library_versions() -> dict[str, str]:
    """Versions of the anchor libraries (or 'missing')."""
    import importlib.metadata as md

    out: dict[str, str] = {}
    for dist in ("zstandard", "lz4", "brotli", "blosc2", "pysz", "zfpy"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = "missing"
    return out
