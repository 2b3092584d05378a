r"""Curvature matrices and matrix-free operators: the exact Hessian, the
Gauss-Newton and Fisher matrices of a model ``w -> z (N, K)``, K-FAC factors,
and the same matrices as ``scipy.sparse.linalg.LinearOperator`` (Hessian- and
Gauss-Newton-vector products), including the Gauss-Newton operator of a single
normalizer through normref's fast path.

Conventions (flat float64 ``w``, losses as means over the batch, row-major
``vec(W)`` for K-FAC) are those of :mod:`normref.analysis.curvature`.
"""
from __future__ import annotations

import numpy as np
import autograd
from autograd.differential_operators import make_hvp, make_jvp_reversemode, make_vjp
from scipy.sparse.linalg import LinearOperator, aslinearoperator

from ...nets import LOSSES, output_hessians

__all__ = ["hessian", "gauss_newton", "fisher", "fisher_from_jacobian", "kfac_factors",
           "kfac_block", "as_operator",
           "normalizer_gauss_newton"]


# ---------------------------------------------------------------- matrices
def _flatw(w):
    return np.asarray(w, dtype=np.float64).ravel()


def hessian(loss, w):
    r"""Exact Hessian :math:`\nabla^2 L(w)` of a scalar ``loss(w)``, shape ``(P, P)``.

    ``loss`` must be written in ``autograd.numpy`` (normref's reference
    normalizers are); the Hessian is ``autograd.hessian`` (reverse over
    reverse, one gradient pass per column), exact up to float64 round-off.
    No symmetrization is applied.
    """
    w = _flatw(w)
    return np.asarray(autograd.hessian(loss)(w), dtype=np.float64).reshape(w.size, w.size)


def _model_jacobian(model, w):
    """``(z, J)`` with z of shape (N, K) and J of shape (N, K, P)."""
    w = _flatw(w)
    z = np.asarray(model(w), dtype=np.float64)
    J = np.asarray(autograd.jacobian(model)(w), dtype=np.float64)
    if z.ndim == 1:
        z = z[:, None]
    return z, J.reshape(z.shape[0], z.shape[1], w.size)


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _output_hessians(output_hessian, z):
    """Per-sample Hessians of the loss in the outputs, shape (N, K, K)."""
    N, K = z.shape
    if isinstance(output_hessian, str):
        if output_hessian == "squared":  # l = |z - y|^2 / 2
            return np.broadcast_to(np.eye(K), (N, K, K))
        if output_hessian == "softmax":  # l = -log softmax(z)_y
            p = _softmax(z)
            return np.einsum("nk,kl->nkl", p, np.eye(K)) - np.einsum("nk,nl->nkl", p, p)
        if output_hessian in LOSSES:  # normref.nets' names, one convention
            return np.asarray(output_hessians(z, output_hessian))
        raise ValueError(f"output_hessian must be 'squared', 'softmax', one of {LOSSES}, "
                         f"a callable or an array, got {output_hessian!r}")
    Hz = output_hessian(z) if callable(output_hessian) else output_hessian
    Hz = np.asarray(Hz, dtype=np.float64)
    if Hz.shape != (N, K, K):
        raise ValueError(f"output Hessians have shape {Hz.shape}, expected {(N, K, K)}")
    return Hz


def _jhj(J, Hz):
    r""":math:`\sum_n J_n^\top H_n J_n` as two BLAS contractions (not a 4-index einsum)."""
    HJ = np.einsum("nkl,nlq->nkq", Hz, J)
    return np.tensordot(J, HJ, axes=([0, 1], [0, 1]))


def gauss_newton(model, w, output_hessian="squared"):
    r"""Gauss-Newton matrix :math:`G = \frac1N\sum_n J_n^\top H_n J_n`, shape ``(P, P)``.

    ``model(w)`` returns outputs ``(N, K)`` (autograd.numpy); ``J_n`` is its
    exact Jacobian (``autograd.jacobian``).  ``output_hessian`` is
    ``"squared"`` (:math:`\ell = \tfrac12\|z - y\|^2`, :math:`H_n = I`),
    ``"softmax"`` (cross-entropy of a softmax, :math:`H_n = \mathrm{diag}(p_n)
    - p_n p_n^\top`), any loss name of :data:`normref.nets.LOSSES` (``"mse"``:
    :math:`H_n = \tfrac2K I`, ``"softmax_ce"``/``"xent"`` as ``"softmax"``),
    an array ``(N, K, K)`` or a callable ``z -> (N, K, K)``.
    """
    z, J = _model_jacobian(model, w)
    Hz = _output_hessians(output_hessian, z)
    return _jhj(J, Hz) / z.shape[0]


def fisher(model, w, *, likelihood="softmax", targets=None, empirical=False, sigma2=1.0):
    r"""Fisher information of the output model, shape ``(P, P)``.

    ``likelihood="softmax"``: :math:`p(y = k | z_n) = \mathrm{softmax}(z_n)_k`,
    score :math:`g_{n,k} = J_n^\top (p_n - e_k)`; the true Fisher is computed
    from its definition,

    .. math:: F = \frac1N \sum_n \sum_k p_{nk}\, g_{n,k} g_{n,k}^\top .

    ``likelihood="gaussian"``: :math:`y \sim \mathcal N(z_n, \sigma^2 I)`,
    score :math:`J_n^\top (z_n - y)/\sigma^2`, whose second moment under the
    model is :math:`F = \frac1N\sum_n J_n^\top J_n / \sigma^2` (closed form
    of the Gaussian expectation).

    ``empirical=True`` uses the observed ``targets`` (class indices of shape
    ``(N,)`` for softmax, values ``(N, K)`` for Gaussian) instead of the
    expectation: :math:`\hat F = \frac1N \sum_n g_{n,y_n} g_{n,y_n}^\top`.
    """
    z, J = _model_jacobian(model, w)
    return fisher_from_jacobian(z, J, likelihood=likelihood, targets=targets,
                                empirical=empirical, sigma2=sigma2)


def fisher_from_jacobian(z, J, *, likelihood="softmax", targets=None, empirical=False,
                         sigma2=1.0):
    """:func:`fisher` from the outputs ``z`` (N, K) and their Jacobian ``J`` (N, K, P)."""
    z = np.asarray(z, dtype=np.float64)
    N, K = z.shape
    J = np.asarray(J, dtype=np.float64).reshape(N, K, -1)
    if likelihood == "softmax":
        p = _softmax(z)
        Jp = np.einsum("nkp,nk->np", J, p)                     # J_n^T p_n
        if empirical:
            if targets is None:
                raise ValueError("the empirical Fisher needs targets")
            y = np.asarray(targets, dtype=np.int64)
            g = Jp - J[np.arange(N), y]                         # (N, P)
            return g.T @ g / N
        g = Jp[:, None, :] - J                                  # (N, K, P): g_{n,k}
        gs = g * np.sqrt(p)[:, :, None]
        return np.tensordot(gs, gs, axes=([0, 1], [0, 1])) / N
    if likelihood == "gaussian":
        if empirical:
            if targets is None:
                raise ValueError("the empirical Fisher needs targets")
            r = (z - np.asarray(targets, dtype=np.float64).reshape(N, K)) / sigma2
            g = np.einsum("nkp,nk->np", J, r)
            return g.T @ g / N
        return np.tensordot(J, J, axes=([0, 1], [0, 1])) / (N * sigma2)
    raise ValueError(f"likelihood must be 'softmax' or 'gaussian', got {likelihood!r}")


def kfac_factors(a, delta, *, bias=False):
    r"""K-FAC factors of a linear layer :math:`s = W a (+ b)`.

    .. math:: A = \frac1N \sum_n a_n a_n^\top,\qquad
              B = \frac1N \sum_n \delta_n \delta_n^\top

    ``a``: layer inputs ``(N, in)``; ``delta``: per-sample gradients of the
    loss (or of a sampled log-likelihood, for the Fisher) with respect to the
    pre-activations ``s``, ``(N, out)``.  ``bias=True`` appends a constant 1
    to the inputs (the homogeneous-coordinate trick), so ``A`` covers
    ``[W, b]``.  Returns ``(A, B)``.
    """
    a = np.asarray(a, dtype=np.float64)
    d = np.asarray(delta, dtype=np.float64)
    if bias:
        a = np.concatenate([a, np.ones((a.shape[0], 1))], axis=1)
    return a.T @ a / a.shape[0], d.T @ d / d.shape[0]


def kfac_block(A, B):
    r"""The K-FAC Fisher block of row-major ``vec(W)``: ``np.kron(B, A)``.

    (:math:`A \otimes B` in docs/theory.md is the same matrix for column-major
    vec; both have the eigenvalues :math:`\alpha_i \beta_j`.)
    """
    return np.kron(np.asarray(B, dtype=np.float64), np.asarray(A, dtype=np.float64))


# ---------------------------------------------------------------- operators
def as_operator(obj, w=None, *, kind="hessian", output_hessian="squared"):
    r"""A curvature matrix as a ``scipy.sparse.linalg.LinearOperator`` (P x P).

    * ``obj`` an array: the dense matrix wrapped;
    * ``kind="hessian"``: ``obj`` is a scalar autograd loss; ``matvec`` is the
      exact Hessian-vector product (``autograd`` ``make_hvp``: the VJP of the
      gradient, the forward and gradient tape built once at ``w``);
    * ``kind="gauss_newton"``: ``obj`` is a model ``w -> z (N, K)``;
      ``matvec`` computes :math:`\frac1N J^\top H_z (J v)` with :math:`J v`
      from reverse-over-reverse (``make_jvp_reversemode``), :math:`J^\top u`
      from ``make_vjp``, and ``output_hessian`` as in :func:`gauss_newton`.

    The operators are symmetric (``rmatvec = matvec``).
    """
    if w is None:
        return aslinearoperator(np.asarray(obj, dtype=np.float64))
    w = _flatw(w)
    P = w.size
    if kind == "hessian":
        hvp, _ = make_hvp(obj)(w)

        def mv(v):
            return np.asarray(hvp(np.asarray(v, dtype=np.float64).ravel()), dtype=np.float64)

    elif kind == "gauss_newton":
        vjp, z = make_vjp(obj)(w)
        jvp = make_jvp_reversemode(obj)(w)
        z = np.asarray(z, dtype=np.float64)
        z2 = z[:, None] if z.ndim == 1 else z
        Hz = _output_hessians(output_hessian, z2)
        N = z2.shape[0]

        def mv(v):
            jv = np.asarray(jvp(np.asarray(v, dtype=np.float64).ravel())).reshape(z2.shape)
            u = np.einsum("nkl,nl->nk", Hz, jv) / N
            return np.asarray(vjp(u.reshape(z.shape)), dtype=np.float64)

    else:
        raise ValueError(f"kind must be 'hessian' or 'gauss_newton', got {kind!r}")
    return LinearOperator((P, P), matvec=mv, rmatvec=mv, dtype=np.float64)


def normalizer_gauss_newton(f, *args, wrt=0, **kwargs):
    r"""Gauss-Newton operator :math:`J^\top J` of ``y = f(*args)`` for the loss
    :math:`\tfrac12\|y - t\|^2`, through normref's fast path.

    ``f`` is a registered normalizer (e.g. ``normref.batch_norm``);
    :math:`J v` is :func:`normref.jvp`, :math:`J^\top u` is :func:`normref.vjp`
    (via :func:`normref.jacobian_operator`, forward computed once).  Shape
    ``(n, n)`` with ``n = args[wrt].size``.
    """
    from ...autodiff import jacobian_operator

    J = jacobian_operator(f, *args, wrt=wrt, **kwargs)
    n = J.shape[1]

    def mv(v):
        return J.rmatvec(J.matvec(np.asarray(v, dtype=np.float64).ravel()))

    return LinearOperator((n, n), matvec=mv, rmatvec=mv, dtype=np.float64)
