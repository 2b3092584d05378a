r"""40-digit mpmath reference for the accuracy benchmark.

Every float64 input is an exact binary fraction, so it converts to an mpmath
number without error.  From those exact values this module forms, at 40
significant decimal digits (about 133 bits, well beyond the 53 of float64):

* standardization of one group ``x_1 .. x_M`` (biased variance, eps inside the
  root, optional elementwise affine):

  .. math::

     \mu = \frac1M \sum_i x_i, \qquad
     \sigma^2 = \frac1M \sum_i (x_i - \mu)^2, \qquad
     y_i = \frac{x_i - \mu}{\sqrt{\sigma^2 + \epsilon}}\, w_i + b_i

* RMS normalization of one group (Zhang & Sennrich, 2019):

  .. math::

     y_i = \frac{x_i}{\sqrt{\frac1M \sum_j x_j^2 + \epsilon}}\, w_i

``eps`` is taken as the float64 number the libraries under test receive
(``1e-5`` is not exactly 1e-5 in binary; the reference uses the same binary
value).  The deviation ``x_i - mu`` is formed in 133-bit arithmetic after the
mean, so the reference stays accurate for inputs like ``1e12 + N(0, 1)``,
where the deviations are 12 orders of magnitude below the data: the relative
error of the reference is about 1e-40 * 1e12 = 1e-28, far below one float64
ulp (1.1e-16) of any output.

The per-operation wrappers (:func:`layer_norm`, :func:`batch_norm`,
:func:`group_norm`, :func:`rms_norm`) reshape the input into a ``(groups,
members)`` matrix with numpy and run one Python loop per group; they return
object arrays of ``mpmath.mpf`` in the input's shape.  mpmath is slow (a few
microseconds per operation), so keep inputs to a few thousand elements.

:func:`ulp_error` measures a float64 result against the reference in float64
units in the last place of the exact value (the same measure as
``normref.numerics.ulps_of``, reimplemented here so that the benchmark can
score the other libraries even when normref itself does not import).
"""
from __future__ import annotations

import mpmath
import numpy as np

__all__ = [
    "DPS",
    "standardize_rows",
    "rms_rows",
    "layer_norm",
    "batch_norm",
    "group_norm",
    "rms_norm",
    "to_float64",
    "ulp_error",
]

#: Working precision of the reference, in decimal digits.
DPS = 40


def _mp(v):
    # float() of a float64 numpy scalar is exact; mpf of a Python float is exact.
    return mpmath.mpf(float(v))


def _rows(a, shape2d):
    """Return float64 ``a`` (or None) broadcast and reshaped to ``shape2d``."""
    if a is None:
        return None
    return np.ascontiguousarray(np.broadcast_to(np.asarray(a, dtype=np.float64), shape2d))


def standardize_rows(x, eps, weight=None, bias=None):
    """Standardize each row of the 2-D float64 array ``x`` exactly.

    ``weight`` and ``bias`` are None or float64 arrays broadcastable to
    ``x.shape`` (one value per element).  Returns an object array of ``mpf``
    of ``x``'s shape.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"x must be 2-D (groups, members), got shape {x.shape}")
    w = _rows(weight, x.shape)
    b = _rows(bias, x.shape)
    out = np.empty(x.shape, dtype=object)
    with mpmath.workdps(DPS):
        e = _mp(eps)
        m = x.shape[1]
        for g in range(x.shape[0]):
            row = [_mp(v) for v in x[g]]
            mean = mpmath.fsum(row) / m
            dev = [v - mean for v in row]
            var = mpmath.fsum(d * d for d in dev) / m
            inv = 1 / mpmath.sqrt(var + e)
            for i, d in enumerate(dev):
                y = d * inv
                if w is not None:
                    y = y * _mp(w[g, i])
                if b is not None:
                    y = y + _mp(b[g, i])
                out[g, i] = y
    return out


def rms_rows(x, eps, weight=None):
    """RMS-normalize each row of the 2-D float64 array ``x`` exactly."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"x must be 2-D (groups, members), got shape {x.shape}")
    w = _rows(weight, x.shape)
    out = np.empty(x.shape, dtype=object)
    with mpmath.workdps(DPS):
        e = _mp(eps)
        m = x.shape[1]
        for g in range(x.shape[0]):
            row = [_mp(v) for v in x[g]]
            ms = mpmath.fsum(v * v for v in row) / m
            inv = 1 / mpmath.sqrt(ms + e)
            for i, v in enumerate(row):
                y = v * inv
                if w is not None:
                    y = y * _mp(w[g, i])
                out[g, i] = y
    return out


def _trailing(normalized_shape):
    if isinstance(normalized_shape, (int, np.integer)):
        return (int(normalized_shape),)
    return tuple(int(s) for s in normalized_shape)


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Exact ``F.layer_norm``: statistics over the trailing ``normalized_shape`` axes."""
    x = np.asarray(x, dtype=np.float64)
    ns = _trailing(normalized_shape)
    if x.shape[x.ndim - len(ns):] != ns:
        raise ValueError(f"normalized_shape {ns} does not end x.shape {x.shape}")
    k = int(np.prod(ns))
    shape2d = (x.size // k, k)
    w = None if weight is None else np.broadcast_to(weight, x.shape).reshape(shape2d)
    b = None if bias is None else np.broadcast_to(bias, x.shape).reshape(shape2d)
    return standardize_rows(x.reshape(shape2d), eps, w, b).reshape(x.shape)


def _per_channel(a, x):
    """Broadcast a per-channel (axis 1) vector to ``x``'s shape."""
    if a is None:
        return None
    a = np.asarray(a, dtype=np.float64)
    return np.broadcast_to(a.reshape((1, -1) + (1,) * (x.ndim - 2)), x.shape)


def batch_norm(x, weight=None, bias=None, eps=1e-5):
    """Exact training-mode ``F.batch_norm``: statistics per channel (axis 1)
    over the batch and all spatial axes."""
    x = np.asarray(x, dtype=np.float64)
    c = x.shape[1]

    def to_rows(a):  # (N, C, *S) -> (C, N * prod(S))
        return np.moveaxis(a, 1, 0).reshape(c, -1)

    w = _per_channel(weight, x)
    b = _per_channel(bias, x)
    y = standardize_rows(
        to_rows(x), eps,
        None if w is None else to_rows(w),
        None if b is None else to_rows(b),
    )
    rest = (x.shape[0],) + x.shape[2:]
    return np.moveaxis(y.reshape((c,) + rest), 0, 1)


def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5):
    """Exact ``F.group_norm``: statistics per (sample, group of C/G channels and
    all spatial positions); per-channel affine."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    shape2d = (n * num_groups, x.size // (n * num_groups))
    w = _per_channel(weight, x)
    b = _per_channel(bias, x)
    y = standardize_rows(
        x.reshape(shape2d), eps,
        None if w is None else w.reshape(shape2d),
        None if b is None else b.reshape(shape2d),
    )
    return y.reshape(x.shape)


def rms_norm(x, normalized_shape, weight=None, eps=1e-5):
    """Exact ``F.rms_norm`` over the trailing ``normalized_shape`` axes."""
    x = np.asarray(x, dtype=np.float64)
    ns = _trailing(normalized_shape)
    if x.shape[x.ndim - len(ns):] != ns:
        raise ValueError(f"normalized_shape {ns} does not end x.shape {x.shape}")
    k = int(np.prod(ns))
    shape2d = (x.size // k, k)
    w = None if weight is None else np.broadcast_to(weight, x.shape).reshape(shape2d)
    return rms_rows(x.reshape(shape2d), eps, w).reshape(x.shape)


def to_float64(exact):
    """Round an object array of ``mpf`` to the nearest float64 values."""
    ex = np.asarray(exact, dtype=object)
    return np.array([float(v) for v in ex.ravel()], dtype=np.float64).reshape(ex.shape)


def ulp_error(exact, approx):
    """``|approx - exact|`` in float64 ulps of the exact value, elementwise.

    The difference is formed in the reference precision and divided by
    ``np.spacing(|fl(exact)|)``: a correctly rounded result scores at most
    0.5.  A near-zero output is measured against its own (tiny) spacing, not
    the spacing of the data it came from.  Non-finite ``approx`` scores inf.
    """
    ex = np.asarray(exact, dtype=object)
    ap = np.broadcast_to(np.asarray(approx, dtype=np.float64), ex.shape)
    out = np.empty(ex.shape, dtype=np.float64)
    with mpmath.workdps(DPS):
        for idx, e in np.ndenumerate(ex):
            a = ap[idx]
            if not np.isfinite(a):
                out[idx] = np.inf
                continue
            spacing = np.spacing(abs(float(e))) or np.spacing(0.0)
            out[idx] = float(abs(mpmath.mpf(float(a)) - e)) / spacing
    return out
