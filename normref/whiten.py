r"""NOP whiten: batch and group whitening over a block view, with exact derivatives.

Whitening goes beyond standardization: the features of a group are
decorrelated, not only centred and scaled.  For one block of :math:`d`
features observed :math:`m` times, :math:`X \in \mathbb R^{d\times m}`:

.. math::

    \mu = \tfrac1m X\mathbf 1, \quad X_c = X - \mu\mathbf 1^\top, \quad
    \Sigma = \tfrac1m X_c X_c^\top + \epsilon I = D\Lambda D^\top, \quad
    Z = W(\Sigma)\, X_c

with the whitening matrix :math:`W(\Sigma)` of the method:

=================== =============================================================== ======================
method              :math:`W(\Sigma)`                                               paper
=================== =============================================================== ======================
``pca``             :math:`\Lambda^{-1/2} D^\top` (eigenvalues descending,           Desjardins et al. 2015
                    each eigenvector's largest-magnitude entry positive)
``zca``             :math:`D\Lambda^{-1/2} D^\top = \Sigma^{-1/2}`                   Huang et al. 2018
``cholesky``        :math:`L^{-1}`, :math:`\Sigma = LL^\top`                         Siarohin et al. 2019
``iter_norm``       :math:`\Sigma_N = \Sigma/\mathrm{tr}\,\Sigma`, :math:`P_0 = I`,  Huang et al. 2019
                    :math:`P_{k+1} = (3P_k - P_k^3\Sigma_N)/2`,
                    :math:`W = P_T/\sqrt{\mathrm{tr}\,\Sigma}`
=================== =============================================================== ======================

PCA, ZCA and Cholesky satisfy :math:`W\Sigma W^\top = I` and differ by an
orthogonal factor; with :math:`\epsilon > 0` the whitened data covariance
:math:`W(\Sigma - \epsilon I)W^\top` is :math:`\mathrm{diag}(l/(l+\epsilon))`
in the eigenbasis (:math:`l` the eigenvalues of the data covariance).
IterNorm maps an eigenvalue :math:`\lambda` of :math:`\Sigma_N` to
:math:`\lambda p_T(\lambda)^2 \le 1` (theory item 9), converging to ZCA.

A :class:`BlockView` turns an (N, C, \*spatial) input into B such blocks:
batch whitening (``kind="batch"``) takes the channels in groups of
``group_size`` and observes them over the batch and spatial axes (block
:math:`(C/g,\ g,\ N\cdot S)`); group whitening (``kind="sample"``, Huang et
al. 2021) takes each sample's channels in G groups and decorrelates the
groups, observed over the group's channels and positions (block
:math:`(N,\ G,\ C/G\cdot S)`).

**Derivatives.**  Each method is a :class:`MatrixFunction` with the exact JVP
:math:`\dot\Sigma \mapsto \dot W` and its adjoint :math:`\bar W \mapsto
\bar\Sigma` (symmetrized, since :math:`\Sigma` is symmetric):

* ZCA (a spectral function :math:`g(l) = l^{-1/2}`):
  :math:`\dot W = D\,(G\circ D^\top\dot\Sigma D)\,D^\top` with the divided
  differences :math:`G_{ij} = (g(l_i) - g(l_j))/(l_i - l_j) =
  -1/(\sqrt{l_i}\sqrt{l_j}(\sqrt{l_i}+\sqrt{l_j}))`, written without the
  subtraction so that equal eigenvalues give the limit :math:`g'(l)` exactly
  (the gradient at :math:`\Sigma\propto I` is finite);
* PCA: :math:`\dot l = \mathrm{diag}(M)`, :math:`\dot D = D(F\circ M)`,
  :math:`M = D^\top\dot\Sigma D`, :math:`F_{ij} = 1/(l_j - l_i)`; the
  eigenvectors of a repeated eigenvalue are not differentiable, so a
  derivative that needs them raises ValueError (pairs whose numerator
  vanishes, as in the null space of a rank-deficient covariance, contribute
  their limit 0);
* Cholesky: :math:`\dot W = -\Phi(W\dot\Sigma W^\top)\,W`, :math:`\Phi` the
  lower triangle with the diagonal halved; adjoint
  :math:`\bar\Sigma = -W^\top\Phi(\bar W W^\top)W`;
* IterNorm: by default (``evaluation="spectral"``) the exact value of the
  iteration, :math:`P_T = D\,p_T(\Lambda_N)D^\top`, differentiated through
  the divided differences of :math:`p_T` (a recursion as stable as the one
  for :math:`p_T`, exact at repeated eigenvalues); with
  ``evaluation="newton"`` the matrix iteration as frameworks run it, with
  the forward-mode recurrence through the T Newton-Schulz steps and the
  trace normalization and its exact reverse sweep over the saved
  :math:`P_k`.  The two agree to rounding while the iteration is stable;
  the uncoupled iteration loses the commutation of :math:`P_k` with
  :math:`\Sigma_N` to rounding and, for an ill-conditioned
  :math:`\Sigma_N`, amplifies it once converged (tests/test_whitening.py
  measures it).

Through the covariance and the centring,
:math:`\bar X_c = W^\top\bar Z + (\bar\Sigma + \bar\Sigma^\top)X_c/m`,
:math:`\bar X = \bar X_c(I - \mathbf 1\mathbf 1^\top/m)`.

Numerical choices: the mean by a corrected two pass (mean, then the mean of
the residual added back), the covariance as a product of the centred data
(never :math:`E[xx^\top] - \mu\mu^\top`), eps added to the diagonal of the
covariance (inside every root and inverse), float64 throughout.  With
``eps = 0`` a numerically singular covariance (smallest eigenvalue below
:math:`d\cdot 2^{-52}` times the largest) raises ValueError for PCA, ZCA and
Cholesky; IterNorm only needs a positive trace.
"""
from __future__ import annotations

import abc

import numpy as np

from .kernels import whiten as K
from .registry import Plan

__all__ = ["BlockView", "MatrixFunction", "METHODS", "EVALUATIONS", "newton_schulz_map",
           "whitening_matrix", "Whitening", "FixedWhitening"]

_EPS = float(np.finfo(np.float64).eps)


def _T(a):
    return np.swapaxes(a, -1, -2)


def _sym(a):
    return 0.5 * (a + _T(a))


# ---------------------------------------------------------------------------
# block views: (N, C, *spatial) <-> (B, d, m)
# ---------------------------------------------------------------------------
class BlockView:
    """The partition of whitening: an input of shape (N, C, \\*spatial) as B blocks (d, m).

    ``kind="batch"``: channel groups of ``size`` channels, each observed over
    the batch and spatial positions: B = C / size, d = size, m = N * S.
    ``kind="sample"``: per sample, ``size`` groups of C / size channels, the
    groups decorrelated: B = N, d = size, m = C / size * S.
    """

    def __init__(self, shape, kind, size):
        self.shape = tuple(shape)
        self.kind = kind
        N, C = self.shape[0], self.shape[1]
        S = int(np.prod(self.shape[2:], dtype=np.int64))
        self.N, self.C, self.S = N, C, S
        if kind == "batch":
            self.B, self.d, self.m = C // size, size, N * S
        else:
            self.B, self.d, self.m = N, size, (C // size) * S
        self.affine_shape = (1, C) + (1,) * (len(self.shape) - 2)
        self.reduce_axes = (0,) + tuple(range(2, len(self.shape)))

    def to_blocks(self, a):
        a = np.asarray(a, dtype=np.float64)
        if self.kind == "batch":
            a = a.reshape(self.N, self.B, self.d, self.S).transpose(1, 2, 0, 3)
        return np.ascontiguousarray(a.reshape(self.B, self.d, self.m))

    def from_blocks(self, b):
        if self.kind == "batch":
            b = b.reshape(self.B, self.d, self.N, self.S).transpose(2, 0, 1, 3)
        return np.ascontiguousarray(b).reshape(self.shape)

    def channel_blocks(self, v):
        """A per-channel vector (C,) laid out on the blocks (batch kind): (B, d, 1)."""
        return np.asarray(v, dtype=np.float64).reshape(self.B, self.d, 1)


# ---------------------------------------------------------------------------
# whitening matrices W(Sigma) and their derivatives
# ---------------------------------------------------------------------------
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


class MatrixFunction(abc.ABC):
    """W = f(Sigma) for a stack of SPD matrices (B, d, d), with JVP and VJP.

    A subclass computes ``W`` at construction, ``__init__(S, *, what, eps,
    scale)`` (``what``, ``eps`` and ``scale`` only shape error messages);
    ``jvp(dS)`` returns the tangent of W; ``vjp(dW)`` the (symmetric)
    cotangent of Sigma.  ``kappa`` is a per-block sensitivity (condition
    number) used to scale rounding tolerances.
    """

    name = ""

    @abc.abstractmethod
    def jvp(self, dS):
        """The tangent of W for a tangent ``dS`` of Sigma."""

    @abc.abstractmethod
    def vjp(self, dW):
        """The symmetric cotangent of Sigma for a cotangent ``dW`` of W."""

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


class ZCA(MatrixFunction):
    r"""ZCA: :math:`W = \Sigma^{-1/2} = D\Lambda^{-1/2}D^\top`."""

    name = "zca"

    def __init__(self, S, *, what="covariance", eps=None, scale=None):
        l, D = np.linalg.eigh(_sym(S))
        self._singular(S, l[..., 0], l[..., -1], what, eps, scale)
        s = np.sqrt(l)
        r = 1.0 / s
        self.l, self.D = l, D
        self.W = (D * r[..., None, :]) @ _T(D)
        # divided differences of l^{-1/2}, subtraction-free (exact limit on the diagonal)
        self.G = -(r[..., :, None] * r[..., None, :]) / (s[..., :, None] + s[..., None, :])

    @property
    def kappa(self):
        l = self.l
        return l[..., -1] / l[..., 0] * _gap_sensitivity(l)

    def _apply(self, A):
        D = self.D
        return D @ (self.G * (_T(D) @ A @ D)) @ _T(D)

    def jvp(self, dS):
        return self._apply(_sym(dS))

    def vjp(self, dW):
        return self._apply(_sym(dW))


class PCA(MatrixFunction):
    r"""PCA: :math:`W = \Lambda^{-1/2}D^\top`, eigenvalues descending, signs fixed."""

    name = "pca"

    def __init__(self, S, *, what="covariance", eps=None, scale=None):
        l, D = np.linalg.eigh(_sym(S))
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
        self._gap = np.where(self.degenerate | np.eye(d, dtype=bool), np.inf, np.abs(gap))

    @property
    def kappa(self):
        l = self.l
        mingap = self._gap.min(axis=(-1, -2))
        return l[..., 0] / l[..., -1] * np.where(np.isfinite(mingap), l[..., 0] / mingap, 1.0)

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
                f"pca_whitening is not differentiable here: block {b} has a repeated "
                f"eigenvalue (l[{i}] = {self.l[b, i] * self.scale[b]:.6g}, "
                f"l[{j}] = {self.l[b, j] * self.scale[b]:.6g}) whose "
                f"eigenvectors are not unique; zca_whitening is differentiable there"
            )

    def jvp(self, dS):
        D, r = self.D, self.r
        M = _T(D) @ _sym(dS) @ D
        self._check(M)
        dl = np.diagonal(M, axis1=-2, axis2=-1)
        dD = D @ (self.F * M)
        return (-0.5 * r ** 3 * dl)[..., :, None] * _T(D) + r[..., :, None] * _T(dD)

    def vjp(self, dW):
        D, r = self.D, self.r
        dl = -0.5 * r ** 3 * np.diagonal(dW @ D, axis1=-2, axis2=-1)
        Kmat = _T(D) @ (_T(dW) * r[..., None, :])
        self._check(Kmat)
        inner = self.F * Kmat
        inner = inner + dl[..., :, None] * np.eye(D.shape[-1])
        return _sym(D @ inner @ _T(D))


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
            raise
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


class IterNorm(MatrixFunction):
    r"""IterNorm as the matrix iteration: T Newton-Schulz steps on the
    trace-normalized covariance (what framework implementations run), with
    the forward-mode recurrence and the exact reverse sweep over the saved
    iterates (``evaluation="newton"``)."""

    name = "iter_norm"

    def __init__(self, S, *, T=5, what="covariance", eps=None, scale=None):
        S = _sym(S)
        tr = self._trace(S, what, eps)
        self.T = T
        self.tr = tr
        SN = S / tr[..., None, None]
        self.SN = SN
        with np.errstate(over="ignore", invalid="ignore"):
            self.P = K.newton_schulz(np.ascontiguousarray(SN), T)  # (T+1, B, d, d)
        self.W = self.P[T] / np.sqrt(tr)[..., None, None]
        if not np.isfinite(self.W).all():
            b = int(np.flatnonzero(~np.isfinite(self.W).all(axis=(-1, -2)))[0])
            raise ValueError(
                f"the Newton-Schulz iteration (evaluation='newton', T={T}) diverged on block {b} "
                f"of the {what}: rounding breaks the commutation of the iterates with the "
                f"ill-conditioned normalized covariance; evaluation='spectral' gives the exact value"
            )
        self.kappa = np.ones(S.shape[0]) * (1.0 + T)

    @staticmethod
    def _trace(S, what, eps):
        tr = np.trace(S, axis1=-2, axis2=-1)
        if not (tr > 0).all():
            b = int(np.flatnonzero(~(tr > 0))[0])
            raise ValueError(
                f"the {what} of block {b} has trace {float(tr[b])!r} (eps={eps!r}): "
                f"IterNorm divides by the trace; use eps > 0"
            )
        return tr

    def jvp(self, dS):
        dS = _sym(dS)
        tr, SN, P = self.tr[..., None, None], self.SN, self.P
        dtr = np.trace(dS, axis1=-2, axis2=-1)[..., None, None]
        dSN = dS / tr - SN * (dtr / tr)
        dP = np.zeros_like(SN)
        for k in range(self.T):
            Pk = P[k]
            P2 = Pk @ Pk
            dP = 1.5 * dP - 0.5 * ((dP @ P2 + Pk @ dP @ Pk + P2 @ dP) @ SN + P2 @ Pk @ dSN)
        return dP / np.sqrt(tr) - 0.5 * self.W * (dtr / tr)

    def vjp(self, dW):
        tr, SN, P = self.tr[..., None, None], self.SN, self.P
        G = dW / np.sqrt(tr)
        dtr = -0.5 * np.sum(dW * self.W, axis=(-1, -2), keepdims=True) / tr
        dSN = np.zeros_like(SN)
        for k in range(self.T - 1, -1, -1):
            Pk = P[k]
            P2 = Pk @ Pk
            dSN = dSN - 0.5 * _T(P2 @ Pk) @ G
            G = 1.5 * G - 0.5 * (G @ _T(P2 @ SN) + _T(Pk) @ G @ _T(Pk @ SN) + _T(P2) @ G @ _T(SN))
        d = SN.shape[-1]
        dS = dSN / tr + (dtr - np.sum(dSN * SN, axis=(-1, -2), keepdims=True) / tr) * np.eye(d)
        return _sym(dS)


def newton_schulz_map(lam, T):
    """``(p_T(lam), divided differences of p_T)``: the IterNorm polynomial and the
    matrix ``(p_T(l_i) - p_T(l_j)) / (l_i - l_j)`` (``p_T'(l_i)`` on the diagonal).

    ``p_0 = 1, p_{k+1} = (3 p_k - l p_k^3) / 2``; the divided differences
    follow the same recursion without subtracting close values:
    ``d_{k+1} = (3 d_k - p_i^3 - l_j d_k (p_i^2 + p_i p_j + p_j^2)) / 2``.
    """
    p = np.ones_like(lam)
    dd = np.zeros(lam.shape + lam.shape[-1:])
    lj = lam[..., None, :]
    for _ in range(T):
        pi, pj = p[..., :, None], p[..., None, :]
        dd = 0.5 * (3.0 * dd - pi ** 3 - lj * dd * (pi * pi + pi * pj + pj * pj))
        p = 0.5 * (3.0 * p - lam * p ** 3)
    return p, dd


class IterNormSpectral(MatrixFunction):
    r"""IterNorm evaluated exactly: :math:`P_T = D\,p_T(\Lambda_N)\,D^	op`.

    In exact arithmetic the Newton-Schulz iterates are polynomials in
    :math:`\Sigma_N`, so :math:`P_T` is the spectral function :math:`p_T` of
    :math:`\Sigma_N`; evaluating it in the eigenbasis gives the value the
    iteration defines, to rounding, for every T.  (The matrix iteration
    itself, :class:`IterNorm`, departs from it once the iterates have
    converged: rounding breaks the commutation of :math:`P_k` with
    :math:`\Sigma_N`, and the uncoupled Newton iteration amplifies that
    error when :math:`\Sigma_N` is ill-conditioned.)  Derivatives through
    the divided differences of :math:`p_T` (:func:`newton_schulz_map`), exact
    at repeated eigenvalues.
    """

    name = "iter_norm"

    def __init__(self, S, *, T=5, what="covariance", eps=None, scale=None):
        S = _sym(S)
        tr = IterNorm._trace(S, what, eps)
        self.T, self.tr = T, tr
        SN = S / tr[..., None, None]
        self.SN = SN
        lam, D = np.linalg.eigh(SN)
        p, dd = newton_schulz_map(lam, T)
        self.D, self.dd = D, dd
        self.W = (D * (p / np.sqrt(tr)[..., None])[..., None, :]) @ _T(D)
        # rounding sensitivity, for tolerances: T steps of three-term products
        # (4 (1 + T)), and the eigenvector sensitivity 1 / gap that an
        # eigh-based second opinion carries
        self.lam = lam

    @property
    def kappa(self):
        return 4.0 * (1.0 + self.T) * _gap_sensitivity(self.lam)

    def _spectral(self, A):
        D = self.D
        return D @ (self.dd * (_T(D) @ A @ D)) @ _T(D)

    def jvp(self, dS):
        dS = _sym(dS)
        tr = self.tr[..., None, None]
        dtr = np.trace(dS, axis1=-2, axis2=-1)[..., None, None]
        dSN = dS / tr - self.SN * (dtr / tr)
        return self._spectral(dSN) / np.sqrt(tr) - 0.5 * self.W * (dtr / tr)

    def vjp(self, dW):
        tr = self.tr[..., None, None]
        dtr = -0.5 * np.sum(dW * self.W, axis=(-1, -2), keepdims=True) / tr
        dSN = self._spectral(_sym(dW) / np.sqrt(tr))
        d = self.SN.shape[-1]
        dS = dSN / tr + (dtr - np.sum(dSN * self.SN, axis=(-1, -2), keepdims=True) / tr) * np.eye(d)
        return _sym(dS)


METHODS = {"pca": PCA, "zca": ZCA, "cholesky": Cholesky, "iter_norm": IterNorm}

#: ways to evaluate IterNorm's matrix (``evaluation`` keyword)
EVALUATIONS = ("spectral", "newton")


def whitening_matrix(S, method, *, T=5, evaluation="spectral", what="covariance", eps=None,
                     scale=None):
    """The :class:`MatrixFunction` of ``method`` at the stacked SPD matrices ``S``.

    ``scale`` (per block, optional): the factor by which ``S`` was divided
    (power-of-two rescaling), used only to report true eigenvalues in errors.
    """
    cls = METHODS[method]
    if cls is IterNorm:
        cls = IterNormSpectral if evaluation == "spectral" else IterNorm
        return cls(S, T=T, what=what, eps=eps, scale=scale)
    return cls(S, what=what, eps=eps, scale=scale)


class FixedWhitening:
    """Eval-mode statistics: running mean (C,) and a running covariance (B, d, d)
    (the whitening matrix recomputed from it) or a running whitening matrix
    (used as it is).  ``names`` are their differentiable parameter names."""

    def __init__(self, mean, matrix, *, estimate="covariance", names=("running_mean", "running_cov")):
        self.mean = mean
        self.matrix = matrix
        self.estimate = estimate
        self.names = names


class _GivenMatrix(MatrixFunction):
    """A whitening matrix given directly (running average of whitening matrices)."""

    def __init__(self, W):
        self.W = W
        self.kappa = np.ones(W.shape[0])

    def jvp(self, dW):
        return dW

    def vjp(self, dW):
        return dW


class Whitening(Plan):
    """A bound whitening call: block view + whitening method + recovery.

    Parameters
    ----------
    x : float64 input (N, C, \\*spatial).
    view : :class:`BlockView`.
    method : ``"pca" | "zca" | "cholesky" | "iter_norm"``; ``T`` for iter_norm.
    eps : added to the covariance diagonal.
    weight : per-channel scale (C,) or, for batch views, a coloring matrix per
        block (B, d, d) (``y = Gamma z + beta``, Siarohin et al. 2019).
    bias : per-channel shift (C,).
    fixed : :class:`FixedWhitening` for eval mode (None: batch statistics).
    on_forward : callback run after the forward (running-statistics updates).
    """

    def __init__(self, x, view, method, *, eps, T=5, evaluation="spectral", weight=None, bias=None,
                 fixed=None, on_forward=None, name="whitening"):
        self.x = x
        self.view = view
        self.method = method
        self.T = T
        self.evaluation = evaluation
        self.eps = float(eps)
        self.weight = weight
        self.coloring = weight is not None and weight.ndim == 3
        self.bias = bias
        self.fixed = fixed
        self.on_forward = on_forward
        self.name = name
        values = {"input": x}
        if weight is not None:
            values["weight"] = weight
        if bias is not None:
            values["bias"] = bias
        if fixed is not None:
            values[fixed.names[0]] = fixed.mean
            values[fixed.names[1]] = fixed.matrix
        self._values = values
        self.params = tuple(values)
        self.empty = x.size == 0

    # -- forward ------------------------------------------------------------
    def _forward(self):
        v = self.view
        if self.empty:
            return np.zeros(self.x.shape)
        X = v.to_blocks(self.x)
        eye = np.eye(v.d)
        if self.fixed is None:
            Xc, mu = K.center_rows(X)
            self.mu = mu
            # exact power-of-two rescaling of a block whose data would overflow
            # the covariance (or underflow it): Z = W(S_s) Xc_s with Xc_s = 2^-k Xc
            # and S_s = 4^-k S is the same Z as W(S) Xc.  Blocks with
            # 2^-400 <= max|Xc| <= 2^400 (squares and sums far inside the
            # float64 range) keep k = 0 and skip the scaling passes.
            amax = np.abs(Xc).max(axis=(1, 2), initial=0.0)
            k = np.frexp(np.where(np.isfinite(amax), amax, 1.0))[1]
            if self.eps > 0:
                k = np.maximum(k, np.frexp(np.sqrt(self.eps))[1])
            safe = (amax >= 2.0 ** -400) & (amax <= 2.0 ** 400)
            k = np.where(safe | ~(amax > 0) | ~np.isfinite(amax), 0, k)
            self.k = k
            self.scaled = bool(k.any())
            Xc = self._unscale(Xc, -1)
            G = K.gram(Xc) / v.m
            with np.errstate(over="ignore"):  # the covariance itself may overflow (huge data)
                self.data_cov = self._unscale(G, 2)
            S = G + np.ldexp(self.eps, -2 * k)[:, None, None] * eye
            what = f"covariance of {self.name}"
        else:
            self.k = np.zeros(v.B, dtype=np.int64)
            self.scaled = False
            mu = v.channel_blocks(self.fixed.mean)[..., 0]
            Xc = X - mu[..., None]
            S = _sym(self.fixed.matrix) + self.eps * eye
            what = f"running covariance of {self.name}"
        # a block with NaN / inf data gets NaN output; the others are unaffected
        bad = ~np.isfinite(S).all(axis=(1, 2))
        with np.errstate(over="ignore"):  # (a message-only factor: inf for 1e300 data is fine)
            unscale = np.ldexp(1.0, 2 * self.k)
        if self.fixed is not None and self.fixed.estimate == "whitening":
            self.fn = _GivenMatrix(self.fixed.matrix)
        else:
            self.fn = whitening_matrix(np.where(bad[:, None, None], eye, S), self.method, T=self.T,
                                       evaluation=self.evaluation, what=what, eps=self.eps,
                                       scale=unscale)
            if bad.any():
                self.fn.W = np.where(bad[:, None, None], np.nan, self.fn.W)
        self.Xc = Xc
        Z = self.fn.W @ Xc
        self.Z = Z
        Yb = self.weight @ Z if self.coloring else Z
        y = v.from_blocks(Yb)
        if self.weight is not None and not self.coloring:
            y = y * self.weight.reshape(v.affine_shape)
        if self.bias is not None:
            y = y + self.bias.reshape(v.affine_shape)
        if self.on_forward is not None:
            self.on_forward(self)
        return y

    def _unscale(self, a, power):
        """``a * 2^(power k)`` per block (exact); ``a`` itself when no block is rescaled."""
        if not self.scaled:
            return a
        return np.ldexp(a, power * self.k[:, None, None])

    # -- statistics for callers ---------------------------------------------
    def whitening_matrices(self):
        """The whitening matrix of every block, shape (B, d, d)."""
        if not hasattr(self, "fn"):
            self.forward()
        return self._unscale(self.fn.W, -1)

    def rounding_cond(self):
        """Sensitivity of the output to rounding: the largest block condition number."""
        self.forward()
        if self.empty:
            return 1.0
        return float(np.max(self.fn.kappa))

    # -- derivatives ----------------------------------------------------------
    def _zero_grads(self):
        return {k: np.zeros(np.shape(v)) for k, v in self._values.items()}

    def vjp(self, cotangent):
        self.forward()
        if self.empty:
            return self._zero_grads()
        v = self.view
        dy = np.asarray(cotangent, dtype=np.float64)
        grads = {}
        if self.bias is not None:
            grads["bias"] = dy.sum(axis=v.reduce_axes)
        if self.weight is not None and not self.coloring:
            z = v.from_blocks(self.Z)
            grads["weight"] = (dy * z).sum(axis=v.reduce_axes)
            dy = dy * self.weight.reshape(v.affine_shape)
        dZ = v.to_blocks(dy)
        if self.coloring:
            grads["weight"] = dZ @ _T(self.Z)
            dZ = _T(self.weight) @ dZ
        W, Xc = self.fn.W, self.Xc
        dW = dZ @ _T(Xc)
        dXc = _T(W) @ dZ
        if self.fixed is None:
            dS = self.fn.vjp(dW)
            dXc = dXc + (2.0 / v.m) * (dS @ Xc)
            dX = self._unscale(dXc - dXc.mean(axis=-1, keepdims=True), -1)
        else:
            dX = dXc
            grads[self.fixed.names[0]] = -dXc.sum(axis=-1).reshape(-1)
            grads[self.fixed.names[1]] = self.fn.vjp(dW)
        grads["input"] = v.from_blocks(dX)
        return grads

    def jvp(self, tangents):
        y = self.forward()
        if self.empty:
            return np.zeros(y.shape)
        v = self.view
        t = {k: (None if tangents.get(k) is None else np.asarray(tangents[k], dtype=np.float64))
             for k in self.params}
        Xc = self.Xc
        tX = t["input"]
        tXc = np.zeros_like(Xc) if tX is None else v.to_blocks(tX)
        if self.fixed is None:
            tXc = self._unscale(tXc - tXc.mean(axis=-1, keepdims=True), -1)
            tS = (tXc @ _T(Xc) + Xc @ _T(tXc)) / v.m
            tW = self.fn.jvp(tS)
        else:
            tm = t[self.fixed.names[0]]
            if tm is not None:
                tXc = tXc - v.channel_blocks(tm)
            tM = t[self.fixed.names[1]]
            tW = np.zeros_like(self.fn.W) if tM is None else self.fn.jvp(tM)
        tZ = tW @ Xc + self.fn.W @ tXc
        if self.coloring:
            tY = self.weight @ tZ
            if t.get("weight") is not None:
                tY = tY + t["weight"] @ self.Z
            ty = v.from_blocks(tY)
        else:
            ty = v.from_blocks(tZ)
            if self.weight is not None:
                ty = ty * self.weight.reshape(v.affine_shape)
                if t.get("weight") is not None:
                    ty = ty + v.from_blocks(self.Z) * t["weight"].reshape(v.affine_shape)
        if self.bias is not None and t.get("bias") is not None:
            ty = ty + t["bias"].reshape(v.affine_shape)
        return ty
