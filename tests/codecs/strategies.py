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
