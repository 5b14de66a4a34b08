"""Hypothesis strategies for tensors of every supported dtype, special values included."""

from __future__ import annotations

import ml_dtypes
import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

BF16 = np.dtype(ml_dtypes.bfloat16)
UINT = {np.dtype(np.float32): np.uint32, np.dtype(np.float16): np.uint16, BF16: np.uint16}
DTYPES = [np.dtype(np.float32), np.dtype(np.float16), BF16]

shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=9)


@st.composite
def any_bits_tensor(draw, dtypes=DTYPES) -> np.ndarray:
    """Any bit pattern at all: NaN payloads, infinities, -0.0, subnormals."""
    dtype = draw(st.sampled_from(dtypes))
    shape = draw(shapes)
    bits = draw(hnp.arrays(UINT[dtype], shape))
    return bits.view(dtype)


@st.composite
def finite_tensor(draw, dtypes=DTYPES, max_magnitude: float = 1e4) -> np.ndarray:
    """Finite values with heavy tails and exact zeros, in any supported dtype."""
    dtype = draw(st.sampled_from(dtypes))
    shape = draw(shapes)
    values = draw(
        hnp.arrays(
            np.float64,
            shape,
            elements=st.floats(
                -max_magnitude, max_magnitude, allow_nan=False, allow_infinity=False
            ),
        )
    )
    return values.astype(dtype)


# topk and error feedback: small shapes, every parameter corner, heavy-tailed values
small_shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=12)
topk_configs = st.fixed_dictionaries(
    {
        "density": st.sampled_from([0.01, 0.05, 0.3, 1.0]),
        "bits": st.integers(1, 8),
        "chunk": st.sampled_from([1, 7, 64, 4096]),
    }
)


def heavy_tailed(seed: int, shape, dtype, scale: float = 1.0) -> np.ndarray:
    """Student-t (3) values with about 10 % exact zeros, in dtype."""
    rng = np.random.default_rng(seed)
    x = np.asarray(rng.standard_t(3, shape) * scale)
    x[rng.random(shape) < 0.1] = 0.0  # exact zeros too
    return x.astype(dtype)


def as_f64(t) -> np.ndarray:
    """A numpy or torch tensor as float64 numpy."""
    if hasattr(t, "float") and not isinstance(t, np.ndarray):
        t = t.float()
    return np.asarray(t, dtype=np.float64)
