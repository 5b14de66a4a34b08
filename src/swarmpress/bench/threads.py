"""One-core timing hygiene: keep native thread pools at one thread while the bench times.

The bench promises one core. Codecs and anchors run inline and the anchors are pinned to
one thread (`anchors`), but numpy's BLAS (OpenBLAS or MKL, used by the similarity metrics,
the KLT-based codecs and some anchors) and any OpenMP runtime loaded in the process keep a
pool of worker threads that can spin on a second core between calls and steal or add time
to a measurement. `one_thread()` limits every such pool to one thread for the timed
sections of a run and restores the previous sizes afterwards:

- BLAS and OpenMP pools through threadpoolctl (`threadpool_limits(1)`), which finds the
  libraries already loaded in the process (numpy's OpenBLAS, scipy's, libgomp/libomp);
- torch's intra-op pool (`torch.set_num_threads(1)`) when torch is already imported
  (the bench never imports it just for this).

threadpoolctl is a dependency of swarmpress: the lossy codec keeps its own small BLAS
products on the calling thread with it as well (codecs/families/lossy/lowrank.py).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import threadpoolctl


def describe() -> str:
    """One line for the report: how the native thread pools were limited during timing."""
    parts = ["BLAS/OpenMP pools limited to 1 thread (threadpoolctl)"]
    if "torch" in sys.modules:
        parts.append("torch intra-op threads 1")
    return ", ".join(parts)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Limit BLAS/OpenMP pools (and torch, if imported) to one thread inside the block."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(threadpoolctl.threadpool_limits(limits=1))
        torch = sys.modules.get("torch")
        if torch is not None and hasattr(torch, "set_num_threads"):
            before = torch.get_num_threads()
            if before != 1:
                torch.set_num_threads(1)
                stack.callback(torch.set_num_threads, before)
        yield
