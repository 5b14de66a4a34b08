"""Threads for the compiled kernels: a shared pool, per-thread scratch arrays, and work
split so that results never depend on the thread count (the kernels release the GIL)."""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

_CPUS = os.cpu_count() or 1  # read once: the decoders ask per block of chunks


def usable_threads(threads: int) -> int:
    """Threads actually used: never more than the machine's cores (frames do not change)."""
    return max(1, min(int(threads), _CPUS))


@functools.lru_cache(maxsize=4)
def _pool(threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix="swarmpress-lossy")


def run_all(fn: Callable, items: Iterable, threads: int) -> list:
    """fn over items, in order; on a pool of threads when asked (the kernels drop the GIL)."""
    items = list(items)
    threads = usable_threads(threads)
    if threads <= 1 or len(items) <= 1:
        return [fn(it) for it in items]
    # the calling thread takes the first item itself: one hand-off fewer per pass
    futures = [_pool(threads - 1).submit(fn, it) for it in items[1:]]
    first = fn(items[0])
    return [first, *(f.result() for f in futures)]


_scratch = threading.local()


SCRATCH_KEEP = 64 << 20  # bytes of work arrays a thread keeps between calls, per name


def scratch(name: str, size: int, dtype) -> np.ndarray:
    """A per-thread work array of at least size elements, reused across calls: fresh
    multi-page arrays cost more in page faults than the coding itself. Arrays above
    SCRATCH_KEEP bytes are not kept. The caller must be done with it before the same
    thread asks for the same name again."""
    arr = getattr(_scratch, name, None)
    if arr is None or arr.size < size or arr.dtype != dtype:
        arr = np.empty(size, dtype=dtype)
        if arr.nbytes <= SCRATCH_KEEP:
            setattr(_scratch, name, arr)
    return arr[:size]


def map_items(fn: Callable[[int], object], count: int, threads: int) -> list:
    """[fn(0), ..., fn(count - 1)], in order; with threads, each thread takes one contiguous
    range (one pool task per thread: the items are too small to pay a task each)."""
    if threads <= 1 or count <= 1:
        return [fn(i) for i in range(count)]
    parts = run_all(lambda r: [fn(i) for i in range(*r)], ranges(count, threads), threads)
    return [x for part in parts for x in part]


def ranges(count: int, threads: int) -> list[tuple[int, int]]:
    """Contiguous ranges of chunk indices, one per thread (results never depend on them)."""
    if threads <= 1 or count <= 1:
        return [(0, count)]
    t = max(1, min(usable_threads(threads), count))
    edges = [count * i // t for i in range(t + 1)]
    return [(edges[i], edges[i + 1]) for i in range(t)]
