"""Numba kernels for whitening: centring, covariance, Newton-Schulz steps, triangular inverse.

Layout: a C-contiguous stack of blocks ``(B, d, m)`` (``d`` features observed
``m`` times) or of matrices ``(B, d, d)``; blocks are independent and every
reduction runs in a fixed order, so results do not depend on the number of
threads.  Centring and the triangular inverse are numba loops (one
``prange`` iteration per row / block); the matrix products (covariance,
Newton-Schulz steps) are batched NumPy ``matmul`` calls, so that every BLAS
call goes through the one OpenBLAS NumPy's LAPACK also uses (see
:func:`gram`).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange  # noqa: F401

from . import restamp
from ._dispatch import JIT, parallel_kernel
from .compensated import neumaier_sum

__all__ = ["center_rows", "gram", "newton_schulz", "lower_inverse"]


@njit(**JIT)
def _neumaier_mean(row):
    """Compensated mean; when the sum overflows (values near the float64
    maximum), the mean of the values divided by n (then corrected by the
    second pass of the caller)."""
    n = row.shape[0]
    t = neumaier_sum(row, 1.0)
    if math.isfinite(t):
        return t / n
    return neumaier_sum(row, 1.0 / n)


@parallel_kernel
def _center_rows(X, Xc, mu):
    B, d, m = X.shape
    for k in prange(B * d):
        b = k // d
        i = k - b * d
        row = X[b, i]
        mean = _neumaier_mean(row)
        # corrected two pass: d = x - mean is exact near the mean (Sterbenz);
        # the residual mean of d (the mean's own rounding error) is subtracted
        # from d, not added to the mean, where it would be rounded away
        for j in range(m):
            Xc[b, i, j] = row[j] - mean
        r = _neumaier_mean(Xc[b, i])
        for j in range(m):
            Xc[b, i, j] = Xc[b, i, j] - r
        mu[b, i] = mean + r


def center_rows(X):
    """``(X - mu, mu)`` for a (B, d, m) stack: each row centred on its mean."""
    X = np.ascontiguousarray(X, dtype=np.float64)
    Xc = np.empty_like(X)
    mu = np.empty(X.shape[:2])
    if X.size:
        _center_rows(X, Xc, mu)
    return Xc, mu


def gram(Xc):
    """``Xc Xc^T`` per block, exactly symmetric, shape (B, d, d).

    A BLAS product through NumPy's ``matmul``, not through ``np.dot`` inside
    numba: numba calls SciPy's BLAS, a second OpenBLAS with its own thread
    pool, and alternating the two pools with NumPy's LAPACK (eigh) made the
    product 100x slower on 2 cores.  The upper triangle mirrors the lower.
    """
    Xc = np.ascontiguousarray(Xc, dtype=np.float64)
    G = np.matmul(Xc, np.swapaxes(Xc, 1, 2))
    lower = np.tril(G)
    return lower + np.swapaxes(np.tril(G, -1), 1, 2)


def newton_schulz(SN, T, max_steps, history, check=None):
    """The IterNorm iterates ``P_0 = I, P_{k+1} = (3 P_k - P_k^3 S_N) / 2``, until step T
    or until they repeat: ``(P, cycle)``.

    ``P`` stacks ``P_0 .. P_n`` as (n+1, B, d, d).  ``cycle`` is
    ``(start, period)`` when ``P_{n+1}`` equals ``P_{n+1-period}`` bitwise
    (``period <= history``): the sequence is then periodic from ``start`` and
    ``P_k = P[start + (k - start) % period]`` for every k > n; else None, and
    n = min(T, max_steps).  A non-finite iterate stops the loop (the caller
    reports the divergence).  ``check(n_stacks)``, if given, is called before
    each new iterate is stored (a memory limit).
    """
    SN = np.ascontiguousarray(SN, dtype=np.float64)
    P = [np.broadcast_to(np.eye(SN.shape[-1]), SN.shape).copy()]
    cycle = None
    while len(P) - 1 < min(T, max_steps):
        Pk = P[-1]
        nxt = 1.5 * Pk - 0.5 * (Pk @ Pk @ Pk @ SN)
        period = next((q for q in range(1, min(history, len(P)) + 1)
                       if np.array_equal(P[-q], nxt)), None)
        if period is not None:
            cycle = (len(P) - period, period)
            break
        if check is not None:
            check(len(P) + 1)
        P.append(nxt)
        if not np.isfinite(nxt).all():
            break
    return np.stack(P), cycle


@parallel_kernel
def _lower_inverse(L, out):
    B, d, _ = L.shape
    for b in prange(B):
        for j in range(d):  # column j of L^{-1} by forward substitution
            for i in range(d):
                out[b, i, j] = 0.0
            out[b, j, j] = 1.0 / L[b, j, j]
            for i in range(j + 1, d):
                s = 0.0
                for k in range(j, i):
                    s += L[b, i, k] * out[b, k, j]
                out[b, i, j] = -s / L[b, i, i]


def lower_inverse(L):
    """The inverse of each lower-triangular matrix of a (B, d, d) stack (exactly lower)."""
    L = np.ascontiguousarray(L, dtype=np.float64)
    out = np.empty_like(L)
    _lower_inverse(L, out)
    return out


restamp(globals())
