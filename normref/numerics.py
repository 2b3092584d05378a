"""Numerical policy shared by every normalizer.

* Input arrays are accepted in float16, float32 or float64, upcast exactly to
  float64 (every float16/float32 value is a float64 value) and results are
  float64.  Integer, bool, complex and object input is a ``TypeError`` that
  names the argument.
* Distances are measured in float64 units in the last place (:func:`ulp_distance`),
  the measure used by the accuracy benchmarks and by
  :func:`normref.testing.assert_close`.

Statistics themselves (corrected two-pass moments with compensated sums and
power-of-two rescaling) live in :mod:`normref.kernels.moments`, because they
run inside numba kernels.
"""
from __future__ import annotations

import numbers

import numpy as np

__all__ = [
    "as_float64",
    "as_optional_float64",
    "check_shape",
    "check_finite_scalar",
    "ulp_distance",
    "ulps_of",
]

_FLOAT_KINDS = (np.float16, np.float32, np.float64)


def as_float64(name, value):
    """Return ``value`` as a float64 ndarray, or raise a TypeError naming ``name``.

    Accepts numpy arrays (and anything ``np.asarray`` turns into one) of dtype
    float16, float32 or float64, and Python floats / ints given as scalars of a
    float array.  The conversion is exact.  The result never aliases an array
    the caller could see being mutated: read-only use only.
    """
    if value is None:
        raise TypeError(f"{name} must be a float array, got None")
    arr = value if isinstance(value, np.ndarray) else np.asarray(value)
    if arr.dtype.type not in _FLOAT_KINDS:
        if arr.dtype.kind == "O" and not isinstance(value, np.ndarray):
            raise TypeError(f"{name} must be a float array, got {type(value).__name__}")
        raise TypeError(
            f"{name} must have a floating dtype (float16, float32 or float64), "
            f"got dtype {arr.dtype} with shape {arr.shape}"
        )
    return arr.astype(np.float64, copy=False)


def as_optional_float64(name, value):
    """:func:`as_float64`, passing ``None`` through."""
    return None if value is None else as_float64(name, value)


def check_shape(name, arr, expected, context=""):
    """Raise ValueError naming ``name`` unless ``arr.shape == expected``."""
    expected = tuple(int(s) for s in expected)
    if arr.shape != expected:
        extra = f" ({context})" if context else ""
        raise ValueError(
            f"{name} has shape {arr.shape}, expected {expected}{extra}"
        )


def check_finite_scalar(name, value, *, positive=False, allow_none=False):
    """Validate a hyper-parameter scalar and return it as a Python float."""
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return value


def _ordered(a):
    """Map float64 values to int64 so that adjacent floats differ by one."""
    bits = np.asarray(a, dtype=np.float64).view(np.int64)
    return np.where(bits < 0, np.int64(-0x8000000000000000) - bits, bits)


def ulp_distance(a, b):
    """Elementwise distance between float64 arrays in units in the last place.

    The number of representable float64 values between ``a`` and ``b``
    (0 when equal, ``+0.0`` and ``-0.0`` are 0 apart).  NaN against anything is
    reported as ``inf`` unless both are NaN (0).  Returned as float64 so that
    huge distances do not overflow an integer.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a, b = np.broadcast_arrays(a, b)
    ia = _ordered(a)
    ib = _ordered(b)
    # same sign: the int64 difference is exact and cannot overflow; opposite
    # signs: |ia| + |ib| in float64 (the distance is then huge anyway).
    same = (ia >= 0) == (ib >= 0)
    with np.errstate(over="ignore"):
        d_same = np.abs(np.where(same, ia - ib, 0)).astype(np.float64)
    d_opp = np.abs(ia.astype(np.float64)) + np.abs(ib.astype(np.float64))
    d = np.where(same, d_same, d_opp)
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    d = np.where(nan_a | nan_b, np.inf, d)
    d = np.where(nan_a & nan_b, 0.0, d)
    return d


def ulps_of(exact, approx):
    """Error of ``approx`` against an exact value, in float64 ulps of the exact value.

    ``exact`` may hold mpmath ``mpf`` numbers (or anything ``float()`` accepts
    via ``mpmath``): the error ``|approx - exact|`` is formed in the exact
    arithmetic and divided by the spacing of float64 numbers at ``exact``, so a
    correctly rounded result scores at most 0.5.
    """
    import mpmath

    ex = np.asarray(exact, dtype=object).ravel()
    ap = np.asarray(approx, dtype=np.float64).ravel()
    out = np.empty(ex.shape, dtype=np.float64)
    for i, (e, a) in enumerate(zip(ex, ap)):
        e = mpmath.mpf(e)
        if not np.isfinite(a):
            out[i] = np.inf
            continue
        spacing = np.spacing(abs(float(e))) or np.spacing(0.0)
        out[i] = float(abs(mpmath.mpf(float(a)) - e)) / spacing
    return out.reshape(np.shape(exact))
