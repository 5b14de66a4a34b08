"""A quality target (similarity, relative L2 or max abs error) and the step search meeting it.

`lossy` (max mode) and `lossy-stream` both pick the largest quantization step whose
decoded tensor still meets the target, checked on exactly the values the decoder will
produce; the search lives here, apart from either codec's format.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from swarmpress.codecs.core.errors import CodecError
from swarmpress.codecs.core.metrics import max_abs_error, rel_l2, similarity

TARGETS = ("similarity", "rel_l2", "max_abs")
_SEARCH_GROW = 1.5
_BISECT_STEPS = 8
_PROPORTIONAL_STEPS = 6


class QualityTarget:
    """One target measure and value: whether a reconstruction meets it, and the step search."""

    def __init__(self, target: str, value: float) -> None:
        if target not in TARGETS:
            raise CodecError(f"lossy: unknown target {target!r}; allowed: {', '.join(TARGETS)}")
        if target == "similarity" and not 0.0 <= value < 1.0:
            raise CodecError("lossy: a similarity target must be in [0, 1)")
        if target != "similarity" and value <= 0.0:
            raise CodecError(f"lossy: a {target} target must be positive")
        self.target, self.value = target, value

    def meets(self, x: np.ndarray, y: np.ndarray) -> bool:
        """Whether y is close enough to x."""
        t, v = self.target, self.value
        if t == "similarity":
            return similarity(x, y) > v
        if t == "rel_l2":
            return rel_l2(x, y) <= v
        return max_abs_error(x, y) <= v

    def initial_step(self, x: np.ndarray) -> float:
        """A first step: the uniform quantizer's error (step / sqrt 12) at the target."""
        t, v = self.target, self.value
        if t == "max_abs":
            return max(2.0 * v, 1e-30)
        rms = float(np.sqrt(np.mean(x * x)))
        err = (1.0 - v) if t == "similarity" else v
        return max(math.sqrt(12.0) * max(err, 1e-12) * rms, 1e-30)

    def error(self, x: np.ndarray, y: np.ndarray) -> float:
        """Distance from exact in the target's own measure (roughly proportional to step)."""
        if self.target == "similarity":
            return 1.0 - similarity(x, y)
        return rel_l2(x, y) if self.target == "rel_l2" else max_abs_error(x, y)

    def search(self, x: np.ndarray, dtype: np.dtype, make: Callable[[float], Any], start: float):
        """The candidate with the largest step whose decoded tensor meets the target.

        The error grows about linearly with the step, so a few proportional updates land
        within 0.2 % of the target error; bracketing and bisection finish the rare cases
        that do not converge. make(step) builds a candidate whose `.values` are exactly what
        the decoder will produce.
        """
        goal = (1.0 - self.value) if self.target == "similarity" else self.value
        lo_step = hi_step = None
        best = None
        step = start
        for _ in range(_PROPORTIONAL_STEPS):
            cand = make(step)
            with np.errstate(over="ignore"):  # beyond the dtype: inf, which fails the target
                y = cand.values.astype(dtype)
            if self.meets(x, y):
                if lo_step is None or step > lo_step:
                    lo_step, best = step, cand
                err = self.error(x, y)
                if err >= 0.998 * goal:
                    return best
            else:
                hi_step = step if hi_step is None else min(hi_step, step)
                err = self.error(x, y)
            ratio = goal / err if err > 0 else 4.0
            step = step * min(max(ratio * 0.998, 0.25), 4.0)
            if lo_step is not None and hi_step is not None and not lo_step < step < hi_step:
                step = math.sqrt(lo_step * hi_step)
        return self._bracket(x, dtype, make, lo_step, hi_step, best, start)

    def _bracket(self, x, dtype, make, lo_step, hi_step, best, start):
        """Bracket (if needed) and bisect between a step that meets and one that fails."""

        def attempt(step: float):
            cand = make(step)
            with np.errstate(over="ignore"):
                y = cand.values.astype(dtype)
            return cand if self.meets(x, y) else None

        if lo_step is None:
            hi_step = hi_step if hi_step is not None else start
            for _ in range(200):
                lo_step = hi_step / _SEARCH_GROW
                best = attempt(lo_step)
                if best is not None:
                    break
                hi_step = lo_step
            else:
                raise CodecError(
                    f"lossy: {self.target} target {self.value} is "
                    f"unreachable for this tensor in {np.dtype(dtype).name}"
                )
        if hi_step is None:
            for _ in range(60):
                hi_step = lo_step * _SEARCH_GROW
                cand = attempt(hi_step)
                if cand is None:
                    break
                lo_step, best = hi_step, cand
            else:
                return best
        for _ in range(_BISECT_STEPS):
            mid = math.sqrt(lo_step * hi_step)
            cand = attempt(mid)
            if cand is None:
                hi_step = mid
            else:
                lo_step, best = mid, cand
        return best


__all__ = ["TARGETS", "QualityTarget"]
