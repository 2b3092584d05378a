"""numba kernels for the magnitude range and the finiteness of an array.

Used on every derivative call (:func:`normref.numerics.power_bands`: is the
cotangent in the range that needs no rescaling?) and on every result
(:func:`normref.numerics.all_finite`), so they must cost a fraction of the
derivative itself: one read pass, no temporaries, and integer arithmetic on
the bit patterns, which LLVM vectorizes without any floating-point
reassociation.  With the sign bit cleared, the bits of a float64 order as
its magnitude does (+0 < subnormals < normals < inf < NaN), so ``max`` of the
bits is the largest magnitude (a NaN, if any), and ``min`` of ``bits - 1`` in
unsigned arithmetic (0 wraps to the largest value) plus 1 is the smallest
nonzero magnitude.  Chunks are reduced in parallel and combined in a fixed
order; max and min are exact, so the result does not depend on the thread
count either way.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from ._dispatch import parallel_kernel

__all__ = ["abs_range", "all_finite"]

_CHUNKS = 64
_MAGNITUDE = np.uint64(0x7FFFFFFFFFFFFFFF)
_INF_BITS = np.uint64(0x7FF0000000000000)


@parallel_kernel
def _bit_range(bits, want_bottom):
    """``(max, min nonzero)`` of the magnitude bits of a flat uint64 view (0 and 2^64-1 if none)."""
    n = bits.size
    per = (n + _CHUNKS - 1) // _CHUNKS
    tops = np.zeros(_CHUNKS, dtype=np.uint64)
    bottoms = np.zeros(_CHUNKS, dtype=np.uint64)
    one = np.uint64(1)
    mag = np.uint64(0x7FFFFFFFFFFFFFFF)
    for k in prange(_CHUNKS):
        top = np.uint64(0)
        low = np.uint64(0xFFFFFFFFFFFFFFFF)
        for i in range(k * per, min(n, (k + 1) * per)):
            b = bits[i] & mag
            top = max(top, b)
            if want_bottom:
                low = min(low, b - one)
        tops[k] = top
        bottoms[k] = low
    top = np.uint64(0)
    low = np.uint64(0xFFFFFFFFFFFFFFFF)
    for k in range(_CHUNKS):
        top = max(top, tops[k])
        low = min(low, bottoms[k])
    return top, low


def _bits(a):
    return np.ascontiguousarray(a, dtype=np.float64).reshape(-1).view(np.uint64)


def abs_range(a):
    """``(max |a|, min nonzero |a|)`` of a float array (``(0, inf)`` when all zero;
    the max is NaN when ``a`` holds a NaN)."""
    bits = _bits(a)
    if bits.size == 0:
        return 0.0, np.inf
    top, low = _bit_range(bits, True)
    top_f = float(np.array([top], dtype=np.uint64).view(np.float64)[0])
    if low == np.uint64(0xFFFFFFFFFFFFFFFF):
        return top_f, np.inf
    bottom = float(np.array([low + np.uint64(1)], dtype=np.uint64).view(np.float64)[0])
    return top_f, bottom


def all_finite(a):
    """Whether every element of a float array is finite (one integer max pass)."""
    bits = _bits(a)
    if bits.size == 0:
        return True
    top, _ = _bit_range(bits, False)
    return bool(top < _INF_BITS)
