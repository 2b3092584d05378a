"""Array comparison with a diagnosis: :func:`assert_close`.

The criterion is numpy.testing's,

.. math::

    |a_i - d_i| \\le \\mathrm{atol} + \\mathrm{rtol}\\,|d_i|
    \\quad\\text{for every element } i,

evaluated in float64 (float16/float32 arguments are upcast exactly), or,
with ``ulps=k``, the criterion

.. math::

    \\operatorname{ulp\\_distance}_T(a_i, d_i) \\le k,

the number of representable values of the dtype :math:`T` between the two
(:func:`ulp_distance`), where :math:`T` is ``actual``'s own float dtype
(float16, bfloat16, float32 or float64; ``desired`` is rounded to it) unless
``dtype=`` says otherwise: a float32 kernel is measured in float32 ulps.  A failure names what a person
debugging a kernel needs: the shapes, how many elements fail, the worst one
(index, both values, absolute and relative error, distance in ulps).
"""
from __future__ import annotations

import numpy as np

from ..numerics import float_dtype, ulp_distance

__all__ = ["assert_close", "ulp_distance"]


def _ulp_dtype(actual, desired, dtype):
    """The dtype ulps are counted in: ``dtype``, else ``actual``'s float dtype, else
    ``desired``'s, else float64."""
    if dtype is not None:
        return float_dtype(dtype)
    for v in (actual, desired):
        dt = np.asarray(v).dtype
        if dt.kind == "f" or dt.name == "bfloat16":
            return dt
    return np.dtype(np.float64)


def _as_float64(name, value):
    arr = np.asarray(value)
    if arr.dtype.kind == "f" or arr.dtype.name == "bfloat16":
        return arr.astype(np.float64)
    if arr.dtype.kind in "iu":
        # integers are exact in float64 below 2**53: allowed as expected values
        return arr.astype(np.float64)
    raise TypeError(
        f"assert_close: {name} must be a real float (or integer) array, got dtype "
        f"{arr.dtype} with shape {arr.shape}"
    )


def assert_close(actual, desired, *, rtol=1e-12, atol=0.0, ulps=None, equal_nan=True,
                 err_msg="", dtype=None):
    """Raise AssertionError unless ``actual`` and ``desired`` agree elementwise.

    Parameters
    ----------
    actual, desired : array_like
        Real float arrays of any float dtype (integers are accepted as exact
        values); compared in float64.  Their shapes must be equal after
        broadcasting against each other *and* the broadcast shape must be the
        shape of both, i.e. no silent broadcasting: a shape difference is its
        own failure (a scalar ``desired`` is allowed, as in numpy.testing).
    rtol, atol : float
        numpy.testing semantics: element ``i`` passes when
        ``|a_i - d_i| <= atol + rtol * |d_i|``.  The default ``rtol=1e-12``
        (about 4500 ulps) suits float64 results of different but stable
        algorithms; pass ``ulps`` for kernel-level claims.
    ulps : int or float, optional
        If given, the criterion is *instead* ``ulp_distance(a_i, d_i) <= ulps``
        (rtol and atol are ignored).  Note that near zero an ulp is tiny: use
        the relative criterion for values that should be zero.
    equal_nan : bool
        If True (default) NaN positions must coincide and are then equal; if
        False any NaN is a mismatch.  Infinities must match exactly (sign too).
    err_msg : str
        Prepended to the failure report.
    dtype : optional
        The dtype whose ulps are counted (``ulps`` criterion and the report):
        default ``actual``'s own float dtype (float16, bfloat16, float32,
        float64), so an error of 3e-3 in a float32 array is reported as about
        25,000 float32 ulps, not 1.4e13 float64 ones.

    Raises
    ------
    AssertionError
        Listing shapes, number of mismatches, worst index (as a tuple), the two
        values there, their absolute and relative error and ulp distance.
    TypeError
        For complex, bool or object input.
    """
    a = _as_float64("actual", actual)
    d = _as_float64("desired", desired)
    udt = _ulp_dtype(actual, desired, dtype)
    head = (err_msg + "\n") if err_msg else ""
    if d.ndim == 0 and a.ndim > 0:
        d = np.broadcast_to(d, a.shape)
    if a.shape != d.shape:
        raise AssertionError(
            f"{head}Arrays are not close: shape mismatch: actual {a.shape}, "
            f"desired {d.shape}"
        )
    if ulps is not None:
        ulps = float(ulps)
        if not ulps >= 0:
            raise ValueError(f"ulps must be non-negative, got {ulps!r}")

    nan_a, nan_d = np.isnan(a), np.isnan(d)
    with np.errstate(invalid="ignore", over="ignore"):
        absdiff = np.abs(a - d)
        dist = ulp_distance(a, d, dtype=udt)
        if ulps is not None:
            ok = dist <= ulps
        else:
            ok = absdiff <= atol + rtol * np.abs(d)
        # infinities: equal only when identical (inf - inf is NaN above)
        both_inf = np.isinf(a) & np.isinf(d)
        ok = np.where(both_inf, a == d, ok)
        if equal_nan:
            ok = np.where(nan_a & nan_d, True, ok)
        ok = np.where(nan_a ^ nan_d, False, ok)
        if not equal_nan:
            ok = np.where(nan_a | nan_d, False, ok)
        bad = ~ok
    n_bad = int(np.count_nonzero(bad))
    if n_bad == 0:
        return

    # the worst element: NaN disagreements first, then the largest violation
    # of the criterion that was used
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        if ulps is not None:
            score = dist.copy()
        else:
            score = absdiff / (atol + rtol * np.abs(d))
            score = np.where(np.isnan(score), absdiff, score)
        score = np.where(nan_a ^ nan_d, np.inf, score)
        score = np.where(np.isnan(score), np.inf, score)
        score = np.where(bad, score, -np.inf)
    flat = int(np.argmax(score))
    idx = tuple(int(i) for i in np.unravel_index(flat, a.shape)) if a.ndim else ()
    av, dv = float(a[idx]), float(d[idx])
    err = abs(av - dv) if np.isfinite(av) and np.isfinite(dv) else float("nan")
    rel = err / abs(dv) if dv != 0 else float("inf") if err else 0.0
    du = float(dist[idx])
    criterion = (
        f"ulp_distance <= {ulps:g} ({udt.name} ulps)" if ulps is not None
        else f"|actual - desired| <= atol + rtol*|desired| (rtol={rtol:g}, atol={atol:g})"
    )
    lines = [
        f"{head}Arrays are not close ({criterion})",
        f"  shapes: actual {a.shape}, desired {d.shape}",
        f"  mismatched elements: {n_bad} / {a.size} ({100.0 * n_bad / max(a.size, 1):.3g}%)",
        f"  worst index: {idx}",
        f"    actual:   {av!r}",
        f"    desired:  {dv!r}",
        f"    abs err:  {err:.6g}",
        f"    rel err:  {rel:.6g}",
        f"    ulps:     {du:.6g} ({udt.name})",
    ]
    finite = np.isfinite(absdiff)
    if finite.any():
        lines.append(f"  max abs err over all elements: {float(absdiff[finite].max()):.6g}")
    lines.append(f"  max {udt.name} ulps over all elements: {float(dist.max()):.6g}")
    raise AssertionError("\n".join(lines))
