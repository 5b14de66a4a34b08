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

threadpoolctl is not a declared dependency of swarmpress (it comes with scikit-learn and
blosc2). Without it the pools are left alone and `describe()` says so, and the run's
`meta["threads"]` records it; the way to get the same effect then is to start the process
with OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 (read when numpy loads,
so they must be set before it is imported, i.e. in the shell).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any


def _threadpoolctl() -> Any | None:
    try:
        import threadpoolctl
    except ImportError:
        return None
    return threadpoolctl


def describe() -> str:
    """One line for the report: how the native thread pools were limited during timing."""
    parts = []
    if _threadpoolctl() is not None:
        parts.append("BLAS/OpenMP pools limited to 1 thread (threadpoolctl)")
    else:
        parts.append(
            "BLAS/OpenMP pools NOT limited (threadpoolctl missing; set OMP_NUM_THREADS=1 "
            "OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 before starting)"
        )
    if "torch" in sys.modules:
        parts.append("torch intra-op threads 1")
    return ", ".join(parts)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Limit BLAS/OpenMP pools (and torch, if imported) to one thread inside the block."""
    with contextlib.ExitStack() as stack:
        tpc = _threadpoolctl()
        if tpc is not None:
            stack.enter_context(tpc.threadpool_limits(limits=1))
        torch = sys.modules.get("torch")
        if torch is not None and hasattr(torch, "set_num_threads"):
            before = torch.get_num_threads()
            if before != 1:
                torch.set_num_threads(1)
                stack.callback(torch.set_num_threads, before)
        yield
