"""Whitening normalizers as textbook formulas in autograd.numpy: the independent oracle.

Same signatures as the fast functions.  The block of each group is built by
reshape / transpose, centred with a plain mean, its covariance formed as
``Xc Xc^T / m + eps I``; the whitening matrix is computed plainly:

* PCA and ZCA from ``anp.linalg.eigh`` (autograd's eigenvector derivative,
  ``1 / (l_j - l_i)``: it is not defined at repeated eigenvalues, where
  normref's divided differences are -- so the reference is compared on
  covariances with distinct eigenvalues);
* Cholesky as ``inv(cholesky(Sigma))``;
* IterNorm by the T Newton-Schulz steps written out.

Nothing here imports normref.  Running estimates are updated in place with
plain NumPy from the un-boxed batch statistics.
"""
from __future__ import annotations

import numpy as np
import autograd.numpy as anp
from autograd.tracer import getval

__all__ = ["pca_whitening", "zca_whitening", "cholesky_whitening", "iter_norm", "group_whitening"]


def _f64(a):
    return a if a is None or not isinstance(a, (np.ndarray, list, tuple, float, int)) else \
        np.asarray(a, dtype=np.float64)


def _mT(a):
    return anp.swapaxes(a, -1, -2)


def _whitening_matrix(S, method, T, evaluation="newton"):
    d = S.shape[-1]
    if method == "zca":
        l, D = anp.linalg.eigh(S)
        return anp.matmul(D * (l ** -0.5)[:, None, :], _mT(D))
    if method == "pca":
        l, D = anp.linalg.eigh(S)
        l, D = l[:, ::-1], D[:, :, ::-1]
        Dv = getval(D)
        idx = np.argmax(np.abs(Dv), axis=1)
        piv = np.take_along_axis(Dv, idx[:, None, :], axis=1)[:, 0, :]
        D = D * np.where(piv < 0, -1.0, 1.0)[:, None, :]
        return (l ** -0.5)[:, :, None] * _mT(D)
    if method == "cholesky":
        return anp.linalg.inv(anp.linalg.cholesky(S))
    if method == "iter_norm":
        tr = anp.sum(S * np.eye(d), axis=(1, 2))
        SN = S / tr[:, None, None]
        if evaluation == "spectral":  # the polynomial p_T on the eigenvalues
            lam, D = anp.linalg.eigh(SN)
            p = anp.ones(lam.shape)
            for _ in range(T):
                p = 1.5 * p - 0.5 * lam * p ** 3
            return anp.matmul(D * p[:, None, :], _mT(D)) / anp.sqrt(tr)[:, None, None]
        P = np.broadcast_to(np.eye(d), S.shape)
        for _ in range(T):
            P = 1.5 * P - 0.5 * anp.matmul(anp.matmul(anp.matmul(P, P), P), SN)
        return P / anp.sqrt(tr)[:, None, None]
    raise ValueError(method)


def _blocks(x, kind, size):
    N, C = x.shape[0], x.shape[1]
    S = int(np.prod(x.shape[2:], dtype=np.int64))
    if kind == "batch":
        B, d = C // size, size
        X = anp.transpose(anp.reshape(x, (N, B, d, S)), (1, 2, 0, 3))
        return anp.reshape(X, (B, d, N * S))
    return anp.reshape(x, (N, size, (C // size) * S))


def _unblocks(Y, kind, shape):
    N, C = shape[0], shape[1]
    S = int(np.prod(shape[2:], dtype=np.int64))
    if kind == "batch":
        B, d = Y.shape[0], Y.shape[1]
        Y = anp.transpose(anp.reshape(Y, (B, d, N, S)), (2, 0, 1, 3))
    return anp.reshape(Y, shape)


def _affine(y, weight, bias):
    shape = (1, y.shape[1]) + (1,) * (y.ndim - 2)
    if weight is not None:
        y = y * anp.reshape(weight, shape)
    if bias is not None:
        y = y + anp.reshape(bias, shape)
    return y


def _batch_whitening(method, input, running_mean, running_cov, weight, bias, training, momentum,
                     eps, group_size, T, running_estimate, running_cov_unbiased, evaluation="newton"):
    x = _f64(input)
    C = x.shape[1]
    g = C if group_size is None else group_size
    X = _blocks(x, "batch", g)
    B, d, m = X.shape
    eye = np.eye(d)
    if training:
        mu = anp.mean(X, axis=2, keepdims=True)
        Xc = X - mu
        cov = anp.matmul(Xc, _mT(Xc)) / m
        W = _whitening_matrix(cov + eps * eye, method, T, evaluation)
        if running_mean is not None:
            running_mean[...] = (1 - momentum) * running_mean + momentum * getval(mu).reshape(-1)
        if running_cov is not None:
            if running_estimate == "whitening":
                est = getval(W)
            else:
                est = getval(cov) * (m / (m - 1) if running_cov_unbiased else 1.0)
            running_cov[...] = (1 - momentum) * running_cov + momentum * est
    else:
        Xc = X - anp.reshape(_f64(running_mean), (B, d, 1))
        rc = _f64(running_cov)
        if running_estimate == "whitening":
            W = rc
        else:
            W = _whitening_matrix((rc + _mT(rc)) / 2 + eps * eye, method, T, evaluation)
    Z = anp.matmul(W, Xc)
    w = _f64(weight)
    if w is not None and w.ndim == 3:
        Z = anp.matmul(w, Z)
        w = None
    return _affine(_unblocks(Z, "batch", x.shape), w, _f64(bias))


def pca_whitening(input, running_mean=None, running_cov=None, weight=None, bias=None, training=True,
                  momentum=0.1, eps=1e-5, *, group_size=None, running_estimate="covariance",
                  running_cov_unbiased=True):
    """X_white = Lambda^{-1/2} D^T (X - mu) per channel group (eigenvalues descending)."""
    return _batch_whitening("pca", input, running_mean, running_cov, weight, bias, training,
                            momentum, eps, group_size, 0, running_estimate, running_cov_unbiased)


def zca_whitening(input, running_mean=None, running_cov=None, weight=None, bias=None, training=True,
                  momentum=0.1, eps=1e-5, *, group_size=None, running_estimate="covariance",
                  running_cov_unbiased=True):
    """X_white = D Lambda^{-1/2} D^T (X - mu) per channel group."""
    return _batch_whitening("zca", input, running_mean, running_cov, weight, bias, training,
                            momentum, eps, group_size, 0, running_estimate, running_cov_unbiased)


def cholesky_whitening(input, running_mean=None, running_cov=None, weight=None, bias=None,
                       training=True, momentum=0.1, eps=1e-5, *, group_size=None,
                       running_estimate="covariance", running_cov_unbiased=True):
    """X_white = L^{-1} (X - mu), Sigma = L L^T, per channel group."""
    return _batch_whitening("cholesky", input, running_mean, running_cov, weight, bias, training,
                            momentum, eps, group_size, 0, running_estimate, running_cov_unbiased)


def iter_norm(input, running_mean=None, running_cov=None, weight=None, bias=None, training=True,
              momentum=0.1, eps=1e-5, *, group_size=None, T=5, evaluation="spectral",
              running_estimate="covariance", running_cov_unbiased=True):
    """X_white = P_T / sqrt(tr Sigma) (X - mu), T Newton-Schulz steps on Sigma / tr Sigma
    (written out for ``evaluation="newton"``, as p_T of the eigenvalues for "spectral")."""
    return _batch_whitening("iter_norm", input, running_mean, running_cov, weight, bias, training,
                            momentum, eps, group_size, T, running_estimate, running_cov_unbiased,
                            evaluation)


def group_whitening(input, num_groups, weight=None, bias=None, eps=1e-5, *, T=5, method="iter_norm",
                    evaluation="spectral"):
    """Per sample: the G channel groups as rows, centred, whitened across groups."""
    x = _f64(input)
    X = _blocks(x, "sample", num_groups)
    m = X.shape[2]
    Xc = X - anp.mean(X, axis=2, keepdims=True)
    cov = anp.matmul(Xc, _mT(Xc)) / m + eps * np.eye(num_groups)
    Z = anp.matmul(_whitening_matrix(cov, method, T, evaluation), Xc)
    return _affine(_unblocks(Z, "sample", x.shape), _f64(weight), _f64(bias))
