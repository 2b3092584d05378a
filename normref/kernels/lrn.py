"""Numba kernels for local response normalization across channels.

Layout: the input is viewed as ``(N, C, L)`` (``L`` = product of the spatial
sizes); every ``(n, l)`` position is an independent group, processed by one
``prange`` iteration, and inside it the channels and window members are
visited in ascending index order, so results do not depend on the number of
threads.

Window of channel ``c``: ``[c - lo, c + hi]`` clipped to ``[0, C - 1]``;
``a`` is the coefficient of the sum of squares (``alpha / size`` or ``alpha``).

Scaled representation of the denominator.  For each ``(n, c, l)`` the kernel
stores an integer exponent ``e`` and a float ``u`` with

    s = k + a * sum_{j in W(c)} x_j^2 = 4**e * u,
    u = a * sum_{j in W(c)} (x_j / 2**e)^2 + k / 4**e,

where ``e = max(e_x, e_k)``, ``2**e_x`` the binade bound of the window's largest
|x| and ``4**e_k`` that of |k|.  Division by a power of two is exact (barring
subnormal results, whose squares are negligible against the terms that set
``e``), so ``u`` is exactly the rounded ``s`` divided by ``4**e`` whenever ``s``
itself is representable, and it stays O(1) when ``s`` is not (|x| ~ 1e300,
or k = 0 with |x| ~ 1e-200).  ``r = s**(-beta)`` is evaluated by ``pow`` when
``s`` and ``r`` are normal numbers, else in the log domain.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ._dispatch import parallel_kernel

__all__ = ["lrn_forward", "lrn_vjp", "lrn_jvp"]

_LN2 = math.log(2.0)
_TINY = 2.2250738585072014e-308  # smallest normal float64


@njit(cache=True, fastmath=False)
def _binade(v):
    """Exponent ``e`` with ``|v| < 2**e`` (frexp exponent); ``v != 0``."""
    m, e = math.frexp(v)
    return e


@parallel_kernel(cache=True, fastmath=False)
def lrn_forward(x, lo, hi, a, k, beta):
    """Return ``(y, r, u, e)``: output, ``s**-beta``, scaled ``s`` and its exponent.

    ``u <= 0`` (or NaN) marks an invalid denominator; the caller checks.
    """
    N, C, L = x.shape
    y = np.empty_like(x)
    r = np.empty_like(x)
    u = np.empty_like(x)
    e = np.empty(x.shape, dtype=np.int64)
    has_k = k != 0.0
    ek = 0
    if has_k:
        ek = _binade(k) // 2
    for p in prange(N * L):
        n = p // L
        l = p - n * L
        for c in range(C):
            j0 = max(c - lo, 0)
            j1 = min(c + hi, C - 1)
            m = 0.0
            for j in range(j0, j1 + 1):
                v = abs(x[n, j, l])
                if v > m or v != v:
                    m = v
            if m > 0.0 and m <= 1.7976931348623157e308:
                ec = _binade(m)
                if has_k and ek > ec:
                    ec = ek
            else:
                # all zeros (or inf / nan, which propagate): scale by k only
                ec = ek if has_k else 0
            ss = 0.0
            for j in range(j0, j1 + 1):
                t = math.ldexp(x[n, j, l], -ec)
                ss += t * t
            uc = a * ss + math.ldexp(k, -2 * ec)
            u[n, c, l] = uc
            e[n, c, l] = ec
            xc = x[n, c, l]
            s = math.ldexp(uc, 2 * ec)
            rc = 0.0
            ok = False
            if uc > 0.0 and s >= _TINY and s <= 1.7976931348623157e308:
                rc = s ** (-beta)
                ok = rc >= _TINY and rc <= 1.7976931348623157e308
            if ok:
                r[n, c, l] = rc
                y[n, c, l] = xc * rc
            elif uc > 0.0:
                logr = -beta * (math.log(uc) + 2.0 * ec * _LN2)
                r[n, c, l] = math.exp(logr)
                if xc == 0.0:
                    y[n, c, l] = xc
                else:
                    mag = math.exp(math.log(abs(xc)) + logr)
                    y[n, c, l] = mag if xc > 0.0 else -mag
            else:
                r[n, c, l] = np.nan
                y[n, c, l] = np.nan
    return y, r, u, e


@parallel_kernel(cache=True, fastmath=False)
def lrn_vjp(x, y, r, u, e, dy, lo, hi, a, beta):
    """Input cotangent.

    ``dx_j = dy_j r_j - 2 a beta sum_{c: j in W(c)} (x_j 2^-e_c)(y_c 2^-e_c) dy_c / u_c``;
    ``j in W(c)`` iff ``c in [j - hi, j + lo]`` (the transposed window).
    """
    N, C, L = x.shape
    dx = np.empty_like(x)
    two_ab = 2.0 * a * beta
    for p in prange(N * L):
        n = p // L
        l = p - n * L
        for j in range(C):
            c0 = max(j - hi, 0)
            c1 = min(j + lo, C - 1)
            acc = 0.0
            xj = x[n, j, l]
            for c in range(c0, c1 + 1):
                ec = e[n, c, l]
                acc += math.ldexp(xj, -ec) * (math.ldexp(y[n, c, l], -ec) * dy[n, c, l] / u[n, c, l])
            dx[n, j, l] = dy[n, j, l] * r[n, j, l] - two_ab * acc
    return dx


@parallel_kernel(cache=True, fastmath=False)
def lrn_jvp(x, y, r, u, e, t, lo, hi, a, beta):
    """Output tangent ``ty_c = t_c r_c - 2 a beta (y_c 2^-e_c / u_c) sum_{j in W(c)} (x_j 2^-e_c) t_j``."""
    N, C, L = x.shape
    ty = np.empty_like(x)
    two_ab = 2.0 * a * beta
    for p in prange(N * L):
        n = p // L
        l = p - n * L
        for c in range(C):
            j0 = max(c - lo, 0)
            j1 = min(c + hi, C - 1)
            ec = e[n, c, l]
            acc = 0.0
            for j in range(j0, j1 + 1):
                acc += math.ldexp(x[n, j, l], -ec) * t[n, j, l]
            ty[n, c, l] = t[n, c, l] * r[n, c, l] - two_ab * (math.ldexp(y[n, c, l], -ec) / u[n, c, l]) * acc
    return ty
