r"""Whitening matrices :math:`W(\Sigma)` of stacked SPD matrices, with exact derivatives.

One :class:`MatrixFunction` per method (:data:`normref.whiten.METHODS`): it computes
:math:`W` at construction and serves

* ``jvp(dS)`` -- the tangent :math:`\dot W` for a tangent :math:`\dot\Sigma`;
* ``vjp(dW)`` -- the symmetric cotangent :math:`\bar\Sigma` for :math:`\bar W`;
* ``jvp_apply(dS, X)`` = ``jvp(dS) @ X`` and ``vjp_apply(dZ, X)`` =
  ``vjp(dZ X^T) @ X``: what a whitening layer needs (:mod:`normref.whiten`),
  evaluated in an order whose intermediates stay finite whenever the
  result is, for any spread of the spectrum.  (For a covariance with
  eigenvalues :math:`l_{\max} = 1` and :math:`l_{\min} = 10^{-300}`, ZCA's
  divided differences are :math:`\sim l^{-3/2} = 10^{450}`: the tangent of
  :math:`W` itself is not representable, while its product with the data,
  whose component along that eigenvector is :math:`\sim l^{1/2}`, is.)

Methods here (see :mod:`normref.whiten` for the math and the papers):
``zca`` (:math:`\Sigma^{-1/2}`, divided differences of :math:`l^{-1/2}`),
``pca`` (:math:`\Lambda^{-1/2}D^\top`) and ``cholesky`` (:math:`L^{-1}`);
IterNorm's T Newton-Schulz steps are :mod:`normref.newton_schulz`.  The
table of methods and :func:`normref.whiten.whitening_matrix` are in
:mod:`normref.whiten`.
"""
from __future__ import annotations

import abc

import numpy as np

from .kernels import whiten as K

__all__ = ["MatrixFunction", "ZCA", "PCA", "Cholesky", "ScaledMatrix", "GivenMatrix"]

_EPS = float(np.finfo(np.float64).eps)



def _T(a):
    return np.swapaxes(a, -1, -2)


def _sym(a):
    """The symmetric part, as ``a/2 + a^T/2`` (``(a + a^T)/2`` overflows near the float64 maximum)."""
    return 0.5 * a + 0.5 * _T(a)


def _rows(v, a):
    """``diag(v) @ a`` per block: scale the rows of ``a``."""
    return v[..., :, None] * a


def _gap_sensitivity(l):
    """``max(1, l_max / min_{i != j} |l_i - l_j|)`` per block: how much an
    eigenvector-based computation (an eigh-based second opinion) amplifies
    rounding.  Used only to scale comparison tolerances."""
    d = l.shape[-1]
    if d < 2:
        return np.ones(l.shape[:-1])
    gap = np.where(np.eye(d, dtype=bool), np.inf, np.abs(l[..., None, :] - l[..., :, None]))
    lmax = np.abs(l).max(axis=-1)
    return np.maximum(1.0, lmax / np.maximum(gap.min(axis=(-1, -2)), 1e-300))


def _eigh(S, what):
    """``np.linalg.eigh`` of finite symmetric blocks; a LinAlgError becomes a ValueError."""
    try:
        return np.linalg.eigh(S)
    except np.linalg.LinAlgError as e:
        raise ValueError(f"the eigendecomposition of the {what} failed ({e})") from None


class MatrixFunction(abc.ABC):
    """W = f(Sigma) for a stack of SPD matrices (B, d, d), with JVP and VJP.

    A subclass computes ``W`` at construction, ``__init__(S, *, what, eps,
    scale)`` (``what``, ``eps`` and ``scale`` only shape error messages);
    ``jvp(dS)`` returns the tangent of W; ``vjp(dW)`` the (symmetric)
    cotangent of Sigma; ``jvp_apply`` / ``vjp_apply`` their products with
    data (see the module docstring).  ``kappa`` is a per-block sensitivity
    (condition number) used to scale rounding tolerances.
    """

    name = ""

    @abc.abstractmethod
    def jvp(self, dS):
        """The tangent of W for a tangent ``dS`` of Sigma."""

    @abc.abstractmethod
    def vjp(self, dW):
        """The symmetric cotangent of Sigma for a cotangent ``dW`` of W."""

    def jvp_apply(self, dS, X):
        """``jvp(dS) @ X``."""
        return self.jvp(dS) @ X

    def vjp_apply(self, dZ, X):
        """``vjp(dZ @ X^T) @ X``: the cotangent of Sigma applied to the data."""
        return self.vjp(dZ @ _T(X)) @ X

    @staticmethod
    def _singular(S, lmin, lmax, what, eps, scale=None):
        """Raise if a block is numerically singular; ``scale`` (per block) undoes the
        power-of-two rescaling of the covariance in the message."""
        d = S.shape[-1]
        bad = ~(lmin > d * _EPS * np.maximum(lmax, 0.0)) | ~(lmax > 0)
        if bad.any():
            b = int(np.flatnonzero(bad)[0])
            u = 1.0 if scale is None else float(scale[b])
            raise ValueError(
                f"the {what} of block {b} is singular or not positive definite "
                f"(smallest eigenvalue {float(lmin[b]) * u:.3e}, largest {float(lmax[b]) * u:.3e}, "
                f"eps={eps!r}): the whitening matrix is undefined; use eps > 0"
            )


class _Spectral(MatrixFunction):
    r"""A spectral function :math:`W = D\,g(\Lambda)\,D^\top` whose derivative is
    :math:`\dot W = D\,(G \circ D^\top\dot\Sigma D)\,D^\top` with the divided
    differences :math:`G`, held scaled: :math:`G_{ij} = H_{ij}\, r_i r_j`.
    Subclasses set ``D``, ``r`` and ``H``."""

    @property
    def G(self):
        """The divided differences themselves, ``H_ij r_i r_j`` (may overflow for extreme spectra)."""
        with np.errstate(over="ignore"):
            return self.H * (self.r[..., :, None] * self.r[..., None, :])

    def _dd_matrix(self, A):
        """``D (G o D^T A D) D^T`` (may overflow where the W tangent itself does)."""
        D = self.D
        return D @ (self.G * (_T(D) @ A @ D)) @ _T(D)

    def _dd_apply(self, A, X):
        """``D (G o D^T A D) D^T X`` as ``D [r o ((H o A') (r o D^T X))]``: no overflow."""
        D, r = self.D, self.r
        Ap = _T(D) @ A @ D
        return D @ _rows(r, (self.H * Ap) @ _rows(r, _T(D) @ X))


class ZCA(_Spectral):
    r"""ZCA: :math:`W = \Sigma^{-1/2} = D\Lambda^{-1/2}D^\top`."""

    name = "zca"

    def __init__(self, S, *, what="covariance", eps=None, scale=None):
        l, D = _eigh(_sym(S), what)
        self._singular(S, l[..., 0], l[..., -1], what, eps, scale)
        s = np.sqrt(l)
        r = 1.0 / s
        self.l, self.D, self.r = l, D, r
        self.W = (D * r[..., None, :]) @ _T(D)
        # divided differences of l^{-1/2}, subtraction-free (exact limit on the
        # diagonal), scaled by s_i s_j: -1 / (s_i + s_j)
        self.H = -1.0 / (s[..., :, None] + s[..., None, :])

    @property
    def kappa(self):
        l = self.l
        return l[..., -1] / l[..., 0] * _gap_sensitivity(l)

    def jvp(self, dS):
        return self._dd_matrix(_sym(dS))

    def vjp(self, dW):
        return self._dd_matrix(_sym(dW))

    def jvp_apply(self, dS, X):
        return self._dd_apply(_sym(dS), X)

    def vjp_apply(self, dZ, X):
        return self._dd_apply(_sym(dZ @ _T(X)), X)


class PCA(MatrixFunction):
    r"""PCA: :math:`W = \Lambda^{-1/2}D^\top`, eigenvalues descending, signs fixed."""

    name = "pca"

    def __init__(self, S, *, what="covariance", eps=None, scale=None):
        l, D = _eigh(_sym(S), what)
        self._singular(S, l[..., 0], l[..., -1], what, eps, scale)
        l, D = l[..., ::-1].copy(), D[..., ::-1].copy()
        # sign convention: the entry of largest magnitude of each eigenvector is positive
        idx = np.argmax(np.abs(D), axis=-2)
        piv = np.take_along_axis(D, idx[..., None, :], axis=-2)[..., 0, :]
        D = D * np.where(piv < 0, -1.0, 1.0)[..., None, :]
        r = 1.0 / np.sqrt(l)
        self.l, self.D, self.r = l, D, r
        self.scale = np.ones(l.shape[0]) if scale is None else scale
        self.W = r[..., :, None] * _T(D)
        d = l.shape[-1]
        gap = l[..., None, :] - l[..., :, None]  # l_j - l_i
        tol = 64 * d * _EPS * np.abs(l[..., :1, None])
        self.degenerate = (np.abs(gap) <= tol) & ~np.eye(d, dtype=bool)
        with np.errstate(divide="ignore"):
            F = np.where(self.degenerate | np.eye(d, dtype=bool), 0.0, 1.0 / np.where(gap == 0, 1.0, gap))
        self.F = F

    @property
    def kappa(self):
        """Condition number times the eigenvector sensitivity ``l_max / min gap``: the
        output rotates with eigenvectors whose gap is small (near-degenerate pairs
        included, their gap floored at the rounding level ``d eps l_max``)."""
        l = self.l
        d = l.shape[-1]
        if d < 2:
            return l[..., 0] / l[..., -1]
        gap = np.where(np.eye(d, dtype=bool), np.inf, np.abs(l[..., None, :] - l[..., :, None]))
        mingap = np.maximum(gap.min(axis=(-1, -2)), d * _EPS * np.abs(l[..., 0]))
        return l[..., 0] / l[..., -1] * np.maximum(1.0, l[..., 0] / mingap)

    def _check(self, A):
        """The antisymmetric part of ``A`` on repeated-eigenvalue pairs must vanish."""
        if not self.degenerate.any():
            return
        anti = np.abs(A - _T(A)) * self.degenerate
        scale = np.abs(A).max(axis=(-1, -2), keepdims=True)
        bad = anti > 1e-8 * np.maximum(scale, 1e-300)
        if bad.any():
            b, i, j = (int(v) for v in np.argwhere(bad)[0])
            raise ValueError(
                f"pca_whitening is not differentiable at this input: block {b} has a repeated "
                f"eigenvalue (l[{i}] = {self.l[b, i] * self.scale[b]:.6g}, "
                f"l[{j}] = {self.l[b, j] * self.scale[b]:.6g}) whose "
                f"eigenvectors are not unique; zca_whitening is differentiable there"
            )

    def _tangent_parts(self, dS):
        D = self.D
        M = _T(D) @ _sym(dS) @ D
        self._check(M)
        return M, np.diagonal(M, axis1=-2, axis2=-1)

    def jvp(self, dS):
        D, r = self.D, self.r
        M, dl = self._tangent_parts(dS)
        dD = D @ (self.F * M)
        return _rows(-0.5 * r * (r * (r * dl)), _T(D)) + _rows(r, _T(dD))

    def jvp_apply(self, dS, X):
        # -1/2 r^3 dl (D^T X) + r (F o M)^T (D^T X), r^3 dl X' ordered as r (r dl) (r X')
        D, r = self.D, self.r
        M, dl = self._tangent_parts(dS)
        Xp = _T(D) @ X
        return _rows(-0.5 * r * (r * dl), _rows(r, Xp)) + _rows(r, _T(self.F * M) @ Xp)

    def _cotangent_parts(self, dW):
        D, r = self.D, self.r
        q = r * np.diagonal(dW @ D, axis1=-2, axis2=-1)  # r_i (dW D)_ii
        Kmat = _T(D) @ (_T(dW) * r[..., None, :])
        self._check(Kmat)
        return q, self.F * Kmat

    def vjp(self, dW):
        D, r = self.D, self.r
        q, FK = self._cotangent_parts(dW)
        inner = FK + (-0.5 * r * (r * q))[..., :, None] * np.eye(D.shape[-1])
        return _sym(D @ inner @ _T(D))

    def vjp_apply(self, dZ, X):
        D, r = self.D, self.r
        q, FK = self._cotangent_parts(dZ @ _T(X))
        Xp = _T(D) @ X
        return D @ (_sym(FK) @ Xp + _rows(-0.5 * r * q, _rows(r, Xp)))


def _phi(A):
    """Lower triangle with the diagonal halved (the Cholesky derivative's projection)."""
    out = np.tril(A)
    d = A.shape[-1]
    idx = np.arange(d)
    out[..., idx, idx] *= 0.5
    return out


class Cholesky(MatrixFunction):
    r"""Cholesky whitening: :math:`W = L^{-1}`, :math:`\Sigma = LL^\top`."""

    name = "cholesky"

    def __init__(self, S, *, what="covariance", eps=None, scale=None):
        S = _sym(S)
        dg = np.diagonal(S, axis1=-2, axis2=-1)
        try:
            L = np.linalg.cholesky(S)
        except np.linalg.LinAlgError:
            l = np.linalg.eigvalsh(S)
            self._singular(S, l[..., 0], l[..., -1], what, eps, scale)
            raise ValueError(
                f"the Cholesky factorization of the {what} failed although its eigenvalues "
                f"({float(l.min()):.3e} .. {float(l.max()):.3e}) look positive: it is too close "
                f"to singular (eps={eps!r}); use a larger eps"
            ) from None
        Ld = np.diagonal(L, axis1=-2, axis2=-1)
        # singular for the relative test: some pivot negligible against the largest variance
        lmin = Ld.min(axis=-1) ** 2
        if not (lmin > S.shape[-1] * _EPS * dg.max(axis=-1)).all():
            l = np.linalg.eigvalsh(S)
            self._singular(S, l[..., 0], l[..., -1], what, eps, scale)
        self.L = L
        self.S = S
        self.W = K.lower_inverse(np.ascontiguousarray(L))

    @property
    def kappa(self):
        """Condition numbers of the blocks (computed on demand: only tolerances use them)."""
        l = np.linalg.eigvalsh(self.S)
        return l[..., -1] / l[..., 0]

    def jvp(self, dS):
        W = self.W
        return -_phi(W @ _sym(dS) @ _T(W)) @ W

    def vjp(self, dW):
        W = self.W
        return _sym(-_T(W) @ _phi(dW @ _T(W)) @ W)


class GivenMatrix(MatrixFunction):
    """A whitening matrix given directly (running average of whitening matrices)."""

    def __init__(self, W):
        self.W = W
        self.kappa = np.ones(W.shape[0])

    def jvp(self, dW):
        return dW

    def vjp(self, dW):
        return dW


class ScaledMatrix(MatrixFunction):
    r"""W of :math:`\Sigma = 4^{k}\Sigma_s` from the MatrixFunction ``fn`` of
    :math:`\Sigma_s`: :math:`W = 2^{-k} W(\Sigma_s)` (every method is
    homogeneous of degree -1/2), derivatives by the same exact powers of two.
    ``k`` has one entry per block."""

    def __init__(self, fn, k):
        self.fn, self.k = fn, np.asarray(k)[:, None, None]
        self.W = np.ldexp(fn.W, -self.k)

    @property
    def kappa(self):
        return self.fn.kappa

    def jvp(self, dS):
        return np.ldexp(self.fn.jvp(np.ldexp(dS, -2 * self.k)), -self.k)

    def vjp(self, dW):
        return np.ldexp(self.fn.vjp(np.ldexp(dW, -self.k)), -2 * self.k)

    def jvp_apply(self, dS, X):
        return np.ldexp(self.fn.jvp_apply(np.ldexp(dS, -2 * self.k), X), -self.k)

    def vjp_apply(self, dZ, X):
        return np.ldexp(self.fn.vjp_apply(np.ldexp(dZ, -self.k), X), -2 * self.k)
