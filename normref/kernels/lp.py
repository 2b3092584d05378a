"""Numba kernels for Lp norms of rows: ``normalize`` and ``weight_norm``.

Layout: a C-contiguous ``(R, D)`` float64 array; every row is an independent
group (one ``prange`` iteration) reduced left to right with a Neumaier
compensated sum, so results do not depend on the number of threads.

Overflow-safe norms.  With ``m = max |x|`` of the row and ``2**e`` its binade
bound (``m < 2**e <= 2 m``), the row is scaled by ``2**-e`` before the
powers are taken: the scaling is exact (barring subnormal results, whose
p-th powers are far below the rounding of the largest term), the largest
term lies in ``[2**-p, 1)``, so neither ``1e300`` entries overflow nor
``1e-300`` entries underflow, and the norm is ``2**e * S**(1/p)``, again an
exact scaling.  For ``p >= 512`` (where ``2**-p`` would underflow) the row
is divided by ``m`` itself instead.  ``p = inf`` is ``m``, recorded with the
index of the first maximum (the element that carries the subgradient).
When the norm itself exceeds the float64 range (e.g. 15 entries of 1.7e308)
the quotient ``x / N`` is formed from the scaled row and scaled norm; the
stored norm is then ``inf`` and derivatives (of size ``1/N``) are 0.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ._dispatch import parallel_kernel

__all__ = [
    "lp_norm_rows",
    "normalize_forward",
    "normalize_vjp",
    "normalize_jvp",
    "weight_norm_forward",
    "weight_norm_vjp",
    "weight_norm_jvp",
]

_BIG = 1.7976931348623157e308


@njit(cache=True, fastmath=False)
def _row_norm_scaled(x, i, p):
    """``(r, e, arg)`` with ``||x[i]||_p = r * 2**e`` (exact scaling) and ``arg`` the
    index of the first max |x|; NaN propagates, inf gives ``(inf, 0, arg)``."""
    D = x.shape[1]
    m = 0.0
    arg = 0
    for j in range(D):
        v = abs(x[i, j])
        if v != v:
            return v, 0, j
        if v > m:
            m = v
            arg = j
    if m == 0.0 or m > _BIG:
        return m, 0, arg
    fm, e = math.frexp(m)
    if p == np.inf:
        return fm, e, arg
    s = 0.0
    comp = 0.0
    if p >= 512.0:
        for j in range(D):
            t = (abs(x[i, j]) / m) ** p
            z = s + t
            if abs(s) >= abs(t):
                comp += (s - z) + t
            else:
                comp += (t - z) + s
            s = z
        return fm * (s + comp) ** (1.0 / p), e, arg
    for j in range(D):
        a = abs(math.ldexp(x[i, j], -e))
        if p == 1.0:
            t = a
        elif p == 2.0:
            t = a * a
        else:
            t = a ** p
        z = s + t
        if abs(s) >= abs(t):
            comp += (s - z) + t
        else:
            comp += (t - z) + s
        s = z
    s = s + comp
    if p == 1.0:
        r = s
    elif p == 2.0:
        r = math.sqrt(s)
    else:
        r = s ** (1.0 / p)
    return r, e, arg


@njit(cache=True, fastmath=False)
def _row_norm(x, i, p):
    """``(||x[i]||_p, index of the first max |x|)``; NaN propagates."""
    r, e, arg = _row_norm_scaled(x, i, p)
    return math.ldexp(r, e), arg


@parallel_kernel(cache=True, fastmath=False)
def lp_norm_rows(x, p):
    """``(norms, argmax)`` of the rows of ``x``."""
    R = x.shape[0]
    nrm = np.empty(R)
    arg = np.empty(R, dtype=np.int64)
    for i in prange(R):
        nv, a = _row_norm(x, i, p)
        nrm[i] = nv
        arg[i] = a
    return nrm, arg


@parallel_kernel(cache=True, fastmath=False)
def normalize_forward(x, p, eps):
    """``(y, norms, argmax)`` with ``y = x / max(norm, eps)`` row-wise."""
    R, D = x.shape
    y = np.empty_like(x)
    nrm = np.empty(R)
    arg = np.empty(R, dtype=np.int64)
    for i in prange(R):
        r, e, a = _row_norm_scaled(x, i, p)
        nv = math.ldexp(r, e)
        nrm[i] = nv
        arg[i] = a
        if nv > _BIG and r <= _BIG:
            # the norm itself overflows, the quotient does not: divide the
            # exactly scaled row by the scaled norm
            for j in range(D):
                y[i, j] = math.ldexp(x[i, j], -e) / r
            continue
        d = nv if (nv >= eps or nv != nv) else eps
        for j in range(D):
            y[i, j] = x[i, j] / d
    return y, nrm, arg


@njit(cache=True, fastmath=False)
def _grad_norm(x, i, j, nv, arg, p):
    """``d||x_i||_p / dx_ij`` (subgradient 0 at x_ij = 0 for p <= 1; inf: first max)."""
    v = x[i, j]
    if p == np.inf:
        if j != arg:
            return 0.0
        return 1.0 if v > 0.0 else (-1.0 if v < 0.0 else 0.0)
    if v == 0.0:
        return 0.0
    sg = 1.0 if v > 0.0 else -1.0
    if p == 1.0:
        return sg
    if p == 2.0:
        return v / nv
    return sg * (abs(v) / nv) ** (p - 1.0)


@parallel_kernel(cache=True, fastmath=False)
def normalize_vjp(x, y, nrm, arg, dy, p, eps):
    """``dx = (dy - g (y . dy)) / N`` (norm branch) or ``dy / eps`` (clamped)."""
    R, D = x.shape
    dx = np.empty_like(x)
    for i in prange(R):
        nv = nrm[i]
        if nv < eps:
            for j in range(D):
                dx[i, j] = dy[i, j] / eps
            continue
        s = 0.0
        for j in range(D):
            s += y[i, j] * dy[i, j]
        a = arg[i]
        for j in range(D):
            dx[i, j] = (dy[i, j] - _grad_norm(x, i, j, nv, a, p) * s) / nv
    return dx


@parallel_kernel(cache=True, fastmath=False)
def normalize_jvp(x, y, nrm, arg, t, p, eps):
    """``ty = (t - y (g . t)) / N`` (norm branch) or ``t / eps`` (clamped)."""
    R, D = x.shape
    ty = np.empty_like(x)
    for i in prange(R):
        nv = nrm[i]
        if nv < eps:
            for j in range(D):
                ty[i, j] = t[i, j] / eps
            continue
        s = 0.0
        a = arg[i]
        for j in range(D):
            s += _grad_norm(x, i, j, nv, a, p) * t[i, j]
        for j in range(D):
            ty[i, j] = (t[i, j] - y[i, j] * s) / nv
    return ty


@parallel_kernel(cache=True, fastmath=False)
def weight_norm_forward(v, g):
    """``(w, norms)``: ``w = v * (g / ||v||)`` row-wise; ``g`` has one entry per row.

    ``v * (g / n)`` is PyTorch's evaluation order; when ``g / n`` overflows
    (tiny norms) ``g * (v / n)`` is used instead.  Zero norms give NaN/inf; the
    caller rejects them before.
    """
    R, D = v.shape
    w = np.empty_like(v)
    nrm = np.empty(R)
    for i in prange(R):
        nv, _ = _row_norm(v, i, 2.0)
        nrm[i] = nv
        q = g[i] / nv
        if abs(q) <= _BIG:
            for j in range(D):
                w[i, j] = v[i, j] * q
        else:
            for j in range(D):
                w[i, j] = g[i] * (v[i, j] / nv)
    return w, nrm


@parallel_kernel(cache=True, fastmath=False)
def weight_norm_vjp(v, nrm, g, dw):
    """``dg = u . dw``, ``dv = (g / n) (dw - u (u . dw))`` with ``u = v / n``."""
    R, D = v.shape
    dv = np.empty_like(v)
    dg = np.empty(R)
    for i in prange(R):
        nv = nrm[i]
        s = 0.0
        for j in range(D):
            s += (v[i, j] / nv) * dw[i, j]
        dg[i] = s
        q = g[i] / nv
        for j in range(D):
            dv[i, j] = q * (dw[i, j] - (v[i, j] / nv) * s)
    return dv, dg


@parallel_kernel(cache=True, fastmath=False)
def weight_norm_jvp(v, nrm, g, tv, tg):
    """``tw = tg u + (g / n) (tv - u (u . tv))`` with ``u = v / n``."""
    R, D = v.shape
    tw = np.empty_like(v)
    for i in prange(R):
        nv = nrm[i]
        s = 0.0
        for j in range(D):
            s += (v[i, j] / nv) * tv[i, j]
        q = g[i] / nv
        for j in range(D):
            u = v[i, j] / nv
            tw[i, j] = tg[i] * u + q * (tv[i, j] - u * s)
    return tw
