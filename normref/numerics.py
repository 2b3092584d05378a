"""Numerical policy shared by every normalizer.

* Input arrays are accepted in float16, float32 or float64, upcast exactly to
  float64 (every float16/float32 value is a float64 value) as C-ordered plain
  ndarrays, and results are float64.  Integer, bool, complex, object, string,
  ragged and masked input is a ``TypeError`` that names the argument
  (:func:`as_float64`); so are flags that are not bools (:func:`check_flag`)
  and hyper-parameters that are not real numbers; an option string outside
  its choices is a ``ValueError`` (:func:`check_choice`).
* Linear maps (VJPs, JVPs) take their vector argument in power-of-two bands
  (:func:`power_bands`, :func:`apply_banded`), so that no kernel sees a huge
  or a tiny direction; :func:`all_finite` is the cheap finiteness test of the
  "finite in, finite out" contract (:class:`normref.registry.Plan`).
* Distances are measured in float64 units in the last place (:func:`ulp_distance`),
  the measure used by the accuracy benchmarks and by
  :func:`normref.testing.assert_close`.

Statistics themselves (corrected two-pass moments with compensated sums and
power-of-two rescaling) live in the numba kernels (:mod:`normref.kernels`),
because they run inside them.
"""
from __future__ import annotations

import numbers

import numpy as np

__all__ = [
    "as_float64",
    "as_optional_float64",
    "check_shape",
    "check_finite_scalar",
    "check_flag",
    "check_choice",
    "all_finite",
    "power_bands",
    "in_band",
    "apply_banded",
    "ulp_distance",
    "ulps_of",
]

_FLOAT_KINDS = (np.float16, np.float32, np.float64)


def as_float64(name, value):
    """Return ``value`` as a C-contiguous float64 ndarray, or raise a TypeError naming ``name``.

    Accepts numpy arrays (and anything ``np.asarray`` turns into one) of dtype
    float16, float32 or float64, and Python floats / ints given as scalars of a
    float array.  The conversion is exact.  The result is a plain C-ordered
    ndarray (a Fortran-ordered or strided argument is copied, an ndarray
    subclass is viewed as a plain ndarray), so that no computation depends on
    the memory layout of an argument.  It may alias a C-contiguous float64
    argument: read-only use only.  Masked arrays are a TypeError (normref
    would ignore the mask); so are ragged nested sequences, strings, complex,
    integer, bool and object input.
    """
    if value is None:
        raise TypeError(f"{name} must be a float array, got None")
    if isinstance(value, np.ma.MaskedArray):
        raise TypeError(
            f"{name} is a masked array of shape {value.shape}: normref does not honour masks; "
            f"pass {name}.filled(value) or np.asarray({name}) explicitly"
        )
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be a float array, got {type(value).__name__} {value!r:.40}")
    if isinstance(value, np.ndarray):
        arr = np.asarray(value)
    else:
        try:
            arr = np.asarray(value)
        except (ValueError, TypeError) as e:
            raise TypeError(
                f"{name} must be a float array, got a {type(value).__name__} that is not one "
                f"(a ragged nested sequence?): {e}"
            ) from None
    if arr.dtype.type not in _FLOAT_KINDS:
        if arr.dtype.kind == "O" and not isinstance(value, np.ndarray):
            raise TypeError(f"{name} must be a float array, got {type(value).__name__}")
        raise TypeError(
            f"{name} must have a floating dtype (float16, float32 or float64), "
            f"got dtype {arr.dtype} with shape {arr.shape}"
        )
    return arr.astype(np.float64, order="C", copy=False)


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


def check_flag(name, value):
    """A boolean switch (``training``, ``use_input_stats``, ...): ``bool`` or ``np.bool_`` only.

    A string (``training="no"``), an array or None is a TypeError instead of
    being read by its truthiness.
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name} must be a bool (True or False), got {type(value).__name__} {value!r:.40}")


def check_choice(name, value, choices):
    """One of the string options ``choices``; anything else is a ValueError naming them."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(
            f"{name} must be one of {', '.join(repr(c) for c in choices)}, got {value!r:.60}"
        )
    return value


def all_finite(*arrays):
    """Whether every element of every float array is finite (one integer pass each,
    :func:`normref.kernels.bands.all_finite`); other dtypes are ignored."""
    from .kernels.bands import all_finite as finite

    for a in arrays:
        a = np.asarray(a)
        if a.size == 0 or a.dtype.kind not in "fc":
            continue
        if a.dtype.kind == "c":
            if not np.isfinite(a).all():
                return False
        elif not finite(a):
            return False
    return True


#: :func:`power_bands` leaves values alone whose magnitudes lie in
#: ``[2**BAND_LO, 2**BAND_HI)`` and span at most ``2**BAND_WIDTH``
BAND_LO, BAND_HI, BAND_WIDTH = -64, 64, 300


def in_band(top, bottom):
    """Whether magnitudes whose largest is ``top`` and smallest nonzero is ``bottom``
    need no banding (:func:`power_bands` returns them whole): ``top`` in
    ``[2**BAND_LO, 2**BAND_HI)`` and ``bottom`` within ``2**BAND_WIDTH`` of it, or
    ``top`` zero, inf or NaN (nothing to scale, or values that propagate)."""
    if not np.isfinite(top) or top == 0.0:
        return True
    k = int(np.frexp(top)[1])  # top < 2**k
    return bool(BAND_LO < k <= BAND_HI and bottom >= np.ldexp(1.0, k - BAND_WIDTH))


def power_bands(arrays, magnitudes=None):
    """Split the arguments of a linear map into power-of-two bands: ``[(k, scaled arrays), ...]``.

    A derivative (VJP, JVP) is linear in its cotangent or tangents, so
    ``L(v) = sum_b 2**k_b L(v_b 2**-k_b)`` for any split ``v = sum_b v_b``.
    ``magnitudes`` (one per array, broadcastable to it; default ``|array|``;
    for example ``|gamma * dy|`` for a cotangent ``dy``) decide the split,
    with thresholds common to all arrays: band ``b`` holds the entries with
    ``2**(k_b - BAND_WIDTH) <= magnitude < 2**k_b``, scaled by ``2**-k_b``
    (exact), so that every nonzero scaled magnitude lies in
    ``[2**-BAND_WIDTH, 1)`` and a linear kernel neither overflows on huge nor
    loses bits to underflow on tiny values.  In the common case (every
    nonzero magnitude in ``[2**BAND_LO, 2**BAND_HI)``, all within a factor
    ``2**BAND_WIDTH``) the result is ``[(0, arrays)]``: nothing is copied or
    rescaled.  NaN / inf magnitudes also give ``[(0, arrays)]`` (they
    propagate).  ``None`` entries of ``arrays`` stay None.
    """
    from .kernels.bands import abs_range

    arrays = tuple(arrays)
    whole = [(0, arrays)]
    if magnitudes is None:
        magnitudes = arrays
    top, bottom = 0.0, np.inf
    for a, m in zip(arrays, magnitudes):
        if a is None:
            continue
        t, b = abs_range(m)  # one pass, no temporaries: the common case is this check
        top = t if not t <= top else top
        bottom = min(bottom, b)
    if in_band(top, bottom):
        return whole
    k = int(np.frexp(top)[1])  # top < 2**k
    mags = [None if a is None else np.broadcast_to(np.abs(np.asarray(m, dtype=np.float64)), np.shape(a))
            for a, m in zip(arrays, magnitudes)]
    bands = []
    while True:
        lo = np.ldexp(1.0, k - BAND_WIDTH)
        hi = np.ldexp(1.0, k) if k <= 1023 else np.inf
        bands.append((k, tuple(None if a is None else
                               np.ldexp(np.where((m >= lo) & (m < hi), a, 0.0), -k)
                               for a, m in zip(arrays, mags))))
        rest = 0.0
        for m in mags:
            if m is not None and m.size:
                below = m[m < lo]
                if below.size:
                    rest = max(rest, float(np.max(below)))
        if rest == 0.0:
            return bands
        k = int(np.frexp(rest)[1])


def apply_banded(fn, arrays, magnitudes=None):
    """``fn(*arrays)`` for a function linear in its arguments, band by band.

    ``sum_b 2**k_b fn(*band_b)`` over :func:`power_bands` (one call, with the
    arrays themselves, in the common case).  ``fn`` returns an array or a
    dict of arrays; the scaling back (``ldexp``) may overflow to inf, which
    is the exact result's own overflow.
    """
    total = None
    for k, band in power_bands(arrays, magnitudes):
        out = fn(*band)
        if k:
            with np.errstate(over="ignore"):
                out = ({n: np.ldexp(g, k) for n, g in out.items()} if isinstance(out, dict)
                       else np.ldexp(out, k))
        if total is None:
            total = out
        elif isinstance(out, dict):
            total = {n: total[n] + out[n] for n in total}
        else:
            total = total + out
    return total


_INT_OF = {2: np.int16, 4: np.int32, 8: np.int64}


def float_dtype(dtype):
    """``dtype`` as a NumPy float dtype: float16, float32, float64, or bfloat16
    (through ``ml_dtypes``, when installed); ValueError naming it otherwise."""
    if isinstance(dtype, str) and dtype == "bfloat16":
        try:
            import ml_dtypes
        except ImportError:
            raise ValueError("dtype 'bfloat16' needs the ml_dtypes package") from None
        return np.dtype(ml_dtypes.bfloat16)
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise ValueError(f"dtype must be a float dtype, got {dtype!r}") from None
    if dt.name == "bfloat16" or (dt.kind == "f" and dt.itemsize in _INT_OF):
        return dt
    raise ValueError(f"dtype must be float16, bfloat16, float32 or float64, got {dt}")


def _common_float(*arrays):
    """The dtype two arrays are counted in: their common float dtype (integers count
    as float64; bfloat16 with float32 or wider promotes as NumPy would)."""
    names = [a.dtype for a in arrays if a.dtype.kind == "f" or a.dtype.name == "bfloat16"]
    if not names:
        return np.dtype(np.float64)
    if all(n.name == "bfloat16" for n in names):
        return names[0]
    names = [np.dtype(np.float32) if n.name == "bfloat16" else n for n in names]
    if any(a.dtype.kind in "iub" for a in arrays):
        names.append(np.dtype(np.float64))
    return np.result_type(*names)


def _ordered(a, dtype=np.float64):
    """Map values of ``dtype`` to int64 so that adjacent floats of ``dtype`` differ by one."""
    dt = np.dtype(dtype)
    it = _INT_OF[dt.itemsize]
    bits = np.asarray(a).astype(dt).view(it).astype(np.int64)
    lo = np.int64(np.iinfo(it).min)
    return np.where(bits < 0, lo - bits, bits)


def ulp_distance(a, b, dtype=None):
    """Elementwise distance between float arrays in units in the last place of ``dtype``.

    The number of representable values of ``dtype`` between ``a`` and ``b``
    (0 when equal, ``+0.0`` and ``-0.0`` are 0 apart).  ``dtype`` defaults to
    the arrays' common float dtype (float16, bfloat16, float32 or float64;
    integers count as float64), so two float32 arrays are measured in float32
    ulps: an error of 3e-3 at 1 is about 25,000 float32 ulps, not 1.4e13
    float64 ones.  With an explicit narrower ``dtype`` the values are first
    rounded to it.  NaN against anything is ``inf`` unless both are NaN (0).
    Returned as float64 so that huge distances do not overflow an integer.
    """
    a = np.asarray(a)
    b = np.asarray(b)
    for name, v in (("a", a), ("b", b)):
        if not (v.dtype.kind in "fiu" or v.dtype.name == "bfloat16"):
            raise TypeError(f"ulp_distance: {name} must be a real float or integer array, got "
                            f"dtype {v.dtype} with shape {v.shape}")
    dt = _common_float(a, b) if dtype is None else float_dtype(dtype)
    if dt.itemsize == 8:
        a = a.astype(np.float64)
        b = b.astype(np.float64)
    a, b = np.broadcast_arrays(a, b)
    with np.errstate(over="ignore", invalid="ignore"):
        ia = _ordered(a, dt)
        ib = _ordered(b, dt)
        if dt.itemsize < 8:
            d = np.abs(ia - ib).astype(np.float64)
        else:
            # same sign: the int64 difference is exact and cannot overflow; opposite
            # signs: |ia| + |ib| in float64 (the distance is then huge anyway).
            same = (ia >= 0) == (ib >= 0)
            d_same = np.abs(np.where(same, ia - ib, 0)).astype(np.float64)
            d_opp = np.abs(ia.astype(np.float64)) + np.abs(ib.astype(np.float64))
            d = np.where(same, d_same, d_opp)
        af = a.astype(np.float32) if a.dtype.name == "bfloat16" else a
        bf = b.astype(np.float32) if b.dtype.name == "bfloat16" else b
        nan_a, nan_b = np.isnan(af), np.isnan(bf)
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
