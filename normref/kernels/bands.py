"""numba kernel for the magnitude range of an array (:func:`normref.numerics.power_bands`).

One read pass, no temporaries: the common case of every derivative call
(a cotangent whose magnitudes need no rescaling) costs a fraction of the
derivative itself.  Chunks of the flat array are reduced in parallel and
combined in a fixed order; max and min are exact, so the result does not
depend on the thread count either way.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from ._dispatch import parallel_kernel

__all__ = ["abs_range"]

_CHUNKS = 64


@parallel_kernel(cache=True, fastmath=False)
def _abs_range(a):
    n = a.size
    per = (n + _CHUNKS - 1) // _CHUNKS
    tops = np.zeros(_CHUNKS)
    bottoms = np.full(_CHUNKS, np.inf)
    for k in prange(_CHUNKS):
        top = 0.0
        bottom = np.inf
        for i in range(k * per, min(n, (k + 1) * per)):
            v = abs(a[i])
            if not v <= top:  # NaN propagates
                top = v
            if v > 0.0 and v < bottom:
                bottom = v
        tops[k] = top
        bottoms[k] = bottom
    top = 0.0
    bottom = np.inf
    for k in range(_CHUNKS):
        if not tops[k] <= top:
            top = tops[k]
        if bottoms[k] < bottom:
            bottom = bottoms[k]
    return top, bottom


def abs_range(a):
    """``(max |a|, min nonzero |a|)`` of a float64 array (``(0, inf)`` when all zero;
    the max is NaN when ``a`` holds a NaN)."""
    a = np.ascontiguousarray(a, dtype=np.float64).reshape(-1)
    if a.size == 0:
        return 0.0, np.inf
    return _abs_range(a)
