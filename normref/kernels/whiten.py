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

import numpy as np
from numba import njit, prange  # noqa: F401

from ._dispatch import parallel_kernel

__all__ = ["center_rows", "gram", "newton_schulz", "lower_inverse"]


@njit(cache=True, fastmath=False)
def _neumaier_mean(row):
    s = 0.0
    c = 0.0
    for v in row:
        t = s + v
        if abs(s) >= abs(v):
            c += (s - t) + v
        else:
            c += (v - t) + s
        s = t
    return (s + c) / row.shape[0]


@parallel_kernel(cache=True, fastmath=False)
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


def newton_schulz(SN, T):
    """The IterNorm iterates ``P_0 = I, P_{k+1} = (3 P_k - P_k^3 S_N) / 2``: (T+1, B, d, d)."""
    SN = np.ascontiguousarray(SN, dtype=np.float64)
    P = np.empty((T + 1,) + SN.shape)
    P[0] = np.eye(SN.shape[-1])
    for k in range(T):
        Pk = P[k]
        P[k + 1] = 1.5 * Pk - 0.5 * (Pk @ Pk @ Pk @ SN)
    return P


@parallel_kernel(cache=True, fastmath=False)
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
