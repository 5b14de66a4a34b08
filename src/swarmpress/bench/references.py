"""Physical references: how fast this machine moves and squeezes the same bytes.

Not codecs and not anchors (nothing here is a method to beat): they say what the numbers
of a run mean on this machine. Each runs per tensor, in the same run and on the same
bytes as the codecs, timed the same way (best of the same repeats, one thread):

- `memcpy`: numpy copies the tensor's raw bytes into a buffer allocated and touched
  beforehand (compress), and back into a second one (decompress). Ratio 1 by definition:
  the speed of memory on this core, the ceiling for any codec that reads its input once.
- `zstd-1`: Zstandard level 1 (zstandard, single-threaded) straight from the tensor's
  buffer (no copy) and back: the speed and ratio of a fast general-purpose compressor.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from swarmpress.bench.anchors import AnchorError, raw_view

#: best_time(fn, repeats) -> (last result, best seconds, calls)
Timer = Callable[[Callable[[], Any], int], tuple[Any, float, int]]


@dataclass
class ReferenceRun:
    """One reference on one tensor: bytes it produced, the round-tripped tensor, seconds."""

    compressed_bytes: int
    decoded: np.ndarray
    compress_s: float
    decompress_s: float
    calls: int


class Reference(ABC):
    """A physical reference: runs itself on a tensor with the bench's timer."""

    name: ClassVar[str]
    library: ClassVar[str]
    setting: ClassVar[str]

    @abstractmethod
    def run(self, arr: np.ndarray, timer: Timer, repeats: int) -> ReferenceRun:
        """Time the forward and backward pass on arr (best of `repeats`)."""


class MemcpyReference(Reference):
    name = "memcpy"
    library = "numpy"
    setting = "np.copyto of the raw bytes into a pre-touched buffer, and back"

    def run(self, arr: np.ndarray, timer: Timer, repeats: int) -> ReferenceRun:
        src = np.frombuffer(raw_view(arr), dtype=np.uint8)
        there = np.ones_like(src)  # allocated and touched outside the timing
        back = np.ones_like(src)
        _, tc, n = timer(lambda: np.copyto(there, src), repeats)
        _, td, _ = timer(lambda: np.copyto(back, there), n)
        return ReferenceRun(src.nbytes, back.view(arr.dtype).reshape(arr.shape), tc, td, n)


class Zstd1Reference(Reference):
    name = "zstd-1"
    library = "zstandard"
    setting = "Zstandard level 1, single-threaded, straight from the tensor's buffer"

    def __init__(self) -> None:
        import zstandard

        self._c = zstandard.ZstdCompressor(level=1)
        self._d = zstandard.ZstdDecompressor()

    def run(self, arr: np.ndarray, timer: Timer, repeats: int) -> ReferenceRun:
        src = raw_view(arr)
        blob, tc, n = timer(lambda: self._c.compress(src), repeats)
        raw, td, _ = timer(lambda: self._d.decompress(blob), n)
        if len(raw) != src.nbytes:
            raise AnchorError(f"zstd-1 gave back {len(raw)} bytes, expected {src.nbytes}")
        y = np.frombuffer(raw, dtype=arr.dtype).reshape(arr.shape)
        return ReferenceRun(len(blob), y, tc, td, n)


REFERENCE_TYPES: tuple[type[Reference], ...] = (MemcpyReference, Zstd1Reference)
REFERENCE_NAMES: tuple[str, ...] = tuple(t.name for t in REFERENCE_TYPES)


def load_references() -> list[Reference]:
    """Every physical reference (both need only numpy and zstandard, core dependencies)."""
    return [t() for t in REFERENCE_TYPES]
