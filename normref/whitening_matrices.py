r"""Whitening matrices :math:`W(\Sigma)` of stacked SPD matrices, with exact derivatives.

One :class:`MatrixFunction` per method (:data:`METHODS`): it computes
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

Methods (see :mod:`normref.whiten` for the math and the papers): ``zca``
(:math:`\Sigma^{-1/2}`, divided differences of :math:`l^{-1/2}`), ``pca``
(:math:`\Lambda^{-1/2}D^\top`), ``cholesky`` (:math:`L^{-1}`) and
``iter_norm`` (T Newton-Schulz steps; ``evaluation="spectral"`` for the exact
value, ``"newton"`` for the matrix iteration as frameworks run it).

**IterNorm, spectral evaluation** (:func:`spectral_tables`).  In exact
arithmetic :math:`P_T = D\,p_T(\Lambda_N)\,D^\top` with
:math:`p_0 = 1, p_{k+1} = (3p_k - \lambda p_k^3)/2`, and the derivative needs
the divided differences :math:`[p_T]_{ij} = (p_T(\lambda_i) -
p_T(\lambda_j))/(\lambda_i - \lambda_j)`.  By the product rule for divided
differences, :math:`[\lambda p^3]_{ij} = \lambda_i [p^3]_{ij} + p_j^3`, so

.. math::

    [p_{k+1}]_{ij} = m_{ij}\,[p_k]_{ij} - \tfrac12 p_k(\lambda_L)^3, \qquad
    m_{ij} = \tfrac12\big(3 - \lambda_S (p_i^2 + p_i p_j + p_j^2)\big)

with :math:`\lambda_S \le \lambda_L` the smaller and larger of the pair.
Oriented this way (the smaller eigenvalue multiplies), :math:`0 \le m \le
3/2` because :math:`\lambda p_k(\lambda)^2 \le 1`, and both terms are
negative: the recursion adds numbers of one sign, never cancels, and its
relative error grows at most linearly in the number of steps.  (The other
orientation multiplies by :math:`\lambda_L`: its factor exceeds 1 in
magnitude once the iteration has converged on a spread spectrum, and the
error grows geometrically -- 10^5-fold by T = 20 for eigenvalues 1:100.)
The tables are kept scaled, :math:`H_{ij} = [p_T]_{ij}\, w_i w_j` with
:math:`w = \sqrt{\max(\lambda, 2^{-600})}`, and every product is ordered so
that nothing overflows while the result is finite.

Bounded work for any T: the iteration is deterministic, so once the state
repeats it is periodic and :math:`p_T` for any larger T is read off the
cycle.  :math:`p_k(\lambda)` settles (a fixed point or a short cycle of
floating-point values) within about 940 steps for every
:math:`\lambda \ge 2^{-1074}`.  The divided differences of pairs with
:math:`\lambda_S \ge \lambda_L / 4` contract (:math:`m \le 5/8` at the limit)
and settle a few dozen steps later; those of more widely separated pairs
converge slowly (:math:`m \to 1 - \sqrt{\lambda_S/\lambda_L}/2`) but are then
well conditioned as a quotient, :math:`(p_i - p_j)/(\lambda_i - \lambda_j)`
with at most a factor 3 of cancellation, and are formed that way.  So any T
(even :math:`2^{62}`) costs at most :data:`MAX_STEPS` steps.  A zero
eigenvalue (``eps = 0`` on a singular covariance) has
:math:`p_T(0) = 1.5^T`, which overflows for T > 1750: that is a ValueError,
since the exact whitening matrix is not representable.
"""
from __future__ import annotations

import abc

import numpy as np

from .kernels import whiten as K

__all__ = ["MatrixFunction", "METHODS", "EVALUATIONS", "MAX_STEPS", "spectral_tables",
           "newton_schulz_map", "whitening_matrix", "ScaledMatrix", "GivenMatrix"]

_EPS = float(np.finfo(np.float64).eps)

#: floor of the eigenvalue weights of the scaled divided-difference tables
_TAU = 2.0 ** -600
#: states kept to detect a cycle of the iteration (periods up to this length)
_HISTORY = 8
#: the most Newton-Schulz steps any evaluation runs, whatever T
MAX_STEPS = 4096


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


def _trace(S, what, eps):
    tr = np.trace(S, axis1=-2, axis2=-1)
    if not (tr > 0).all():
        b = int(np.flatnonzero(~(tr > 0))[0])
        raise ValueError(
            f"the {what} of block {b} has trace {float(tr[b])!r} (eps={eps!r}): "
            f"IterNorm divides by the trace; use eps > 0"
        )
    return tr


def _bounded_steps(T, what):
    """Raise for an iteration that would need more than :data:`MAX_STEPS` steps."""
    raise ValueError(
        f"IterNorm with T={T} did not settle within {MAX_STEPS} Newton-Schulz steps on the "
        f"{what}: its value for larger T cannot be read off a cycle; use T <= {MAX_STEPS}"
    )


class IterNorm(MatrixFunction):
    r"""IterNorm as the matrix iteration: T Newton-Schulz steps on the
    trace-normalized covariance (what framework implementations run), with
    the forward-mode recurrence and the exact reverse sweep over the saved
    iterates (``evaluation="newton"``).

    T is at most :data:`MAX_STEPS` here (the derivatives sweep through every
    step; the spectral evaluation takes any T).  The iterates are saved for
    the reverse sweep until they repeat (a fixed point or a short cycle: then
    every later iterate is known) or reach T; saving more than
    :func:`normref.limits.max_bytes` is a ValueError before the memory is
    allocated.  A diverged iteration (inf / NaN) is a ValueError.
    """

    name = "iter_norm"

    def __init__(self, S, *, T=5, what="covariance", eps=None, scale=None):
        from .limits import check_bytes

        if T > MAX_STEPS:
            raise ValueError(
                f"T={T}: evaluation='newton' runs at most {MAX_STEPS} Newton-Schulz steps (its "
                f"derivatives sweep through every step); evaluation='spectral' takes any T"
            )
        S = _sym(S)
        tr = _trace(S, what, eps)
        self.T = T
        self.tr = tr
        SN = S / tr[..., None, None]
        self.SN = SN

        def check(n_stacks):
            check_bytes(f"IterNorm's saved Newton-Schulz iterates (T={T}, {n_stacks} stacks of "
                        f"{S.shape[0]} blocks of {S.shape[-1]} x {S.shape[-1]})",
                        8 * n_stacks * S.size, "use evaluation='spectral' or a smaller T")

        with np.errstate(over="ignore", invalid="ignore"):
            P, cycle = K.newton_schulz(np.ascontiguousarray(SN), T, MAX_STEPS, _HISTORY, check)
        diverged = not np.isfinite(P[-1]).all()
        self.P, self.cycle = P, cycle
        self.W = (P[-1] if diverged else self.iterate(T)) / np.sqrt(tr)[..., None, None]
        if not np.isfinite(self.W).all():
            b = int(np.flatnonzero(~np.isfinite(self.W).all(axis=(-1, -2)))[0])
            raise ValueError(
                f"the Newton-Schulz iteration (evaluation='newton', T={T}) diverged on block {b} "
                f"of the {what}: rounding breaks the commutation of the iterates with the "
                f"ill-conditioned normalized covariance; evaluation='spectral' gives the exact value"
            )
        # rounding sensitivity, for tolerances: T steps of products, each
        # amplifying the non-commuting part of the error by up to (r + r^2)/2 - 1,
        # r = sqrt(cond(Sigma_N)) (the uncoupled iteration's instability)
        lam = np.linalg.eigvalsh(SN)
        r = np.sqrt(lam[..., -1] / np.maximum(lam[..., 0], _EPS * lam[..., -1]))
        growth = np.maximum(1.0, 0.5 * (r + r * r) - 1.0)
        with np.errstate(over="ignore"):
            self.kappa = np.minimum((1.0 + T) * growth ** T, 1e300)

    def _index(self, k):
        """Index into the saved iterates of iterate ``k`` (periodic past the cycle)."""
        n = len(self.P) - 1
        if k <= n:
            return k
        start, period = self.cycle
        return start + (k - start) % period

    def iterate(self, k):
        return self.P[self._index(k)]

    def jvp(self, dS):
        dS = _sym(dS)
        tr, SN = self.tr[..., None, None], self.SN
        dtr = np.trace(dS, axis1=-2, axis2=-1)[..., None, None]
        dSN = dS / tr - SN * (dtr / tr)
        dP = np.zeros_like(SN)
        for k in range(self.T):
            Pk = self.iterate(k)
            P2 = Pk @ Pk
            dP = 1.5 * dP - 0.5 * ((dP @ P2 + Pk @ dP @ Pk + P2 @ dP) @ SN + P2 @ Pk @ dSN)
        return dP / np.sqrt(tr) - 0.5 * self.W * (dtr / tr)

    def vjp(self, dW):
        tr, SN = self.tr[..., None, None], self.SN
        G = dW / np.sqrt(tr)
        dtr = -0.5 * np.sum(dW * self.W, axis=(-1, -2), keepdims=True) / tr
        dSN = np.zeros_like(SN)
        for k in range(self.T - 1, -1, -1):
            Pk = self.iterate(k)
            P2 = Pk @ Pk
            dSN = dSN - 0.5 * _T(P2 @ Pk) @ G
            G = 1.5 * G - 0.5 * (G @ _T(P2 @ SN) + _T(Pk) @ G @ _T(Pk @ SN) + _T(P2) @ G @ _T(SN))
        d = SN.shape[-1]
        dS = dSN / tr + (dtr - np.sum(dSN * SN, axis=(-1, -2), keepdims=True) / tr) * np.eye(d)
        return _sym(dS)


def spectral_tables(lam, T):
    r"""``(p, H)``: :math:`p_T(\lambda)` and the scaled divided differences
    :math:`H_{ij} = [p_T]_{ij} w_i w_j`, :math:`w = \sqrt{\max(\lambda, 2^{-600})}`.

    ``lam`` (..., d): eigenvalues of the trace-normalized covariance (in
    [0, 1]; negative ones, possible only with eps < 0, are computed
    literally).  Stable orientation of the recursion, bounded work by cycle
    detection, and the quotient for separated pairs once ``p`` has settled:
    see the module docstring.  Raises ValueError when :math:`p_T` overflows.
    """
    lam = np.asarray(lam, dtype=np.float64)
    sg = np.where(lam < 0, -1.0, 1.0)
    s = np.sqrt(np.abs(lam))
    w = np.sqrt(np.maximum(np.abs(lam), _TAU))
    li, lj = lam[..., :, None], lam[..., None, :]
    small_i = li <= lj
    s_small = np.where(small_i, s[..., :, None], s[..., None, :])
    g_small = np.where(small_i, sg[..., :, None], sg[..., None, :])
    wi, wj = w[..., :, None], w[..., None, :]
    w_big = np.where(small_i, wj, wi)
    w_small = np.where(small_i, wi, wj)
    l_small, l_big = np.where(small_i, li, lj), np.where(small_i, lj, li)
    separated = (l_big > 0) & (l_small < 0.25 * l_big)
    p = np.ones(lam.shape)
    h = np.zeros(lam.shape + lam.shape[-1:])
    history = []
    settled = False  # p periodic: the separated pairs come from the quotient
    k = 0
    with np.errstate(over="ignore", invalid="ignore"):
        while k < T:
            pi, pj = p[..., :, None], p[..., None, :]
            p_big = np.where(small_i, pj, pi)
            ai, aj = s_small * pi, s_small * pj
            m = 0.5 * (3.0 - g_small * (ai * ai + ai * aj + aj * aj))
            h = m * h - 0.5 * ((p_big * w_big) * (p_big * w_small) * p_big)
            sp = s * p
            p = p * (0.5 * (3.0 - sg * (sp * sp)))
            k += 1
            if not np.isfinite(p).all():
                raise ValueError(
                    f"IterNorm's polynomial p_T overflows float64 at step {k} of T={T} (an "
                    f"eigenvalue {float(np.min(lam)):.3g} of the normalized covariance: eps = 0 on "
                    f"a singular covariance grows like 1.5^T): the whitening matrix is not finite"
                )
            if settled:
                h = np.where(separated, 0.0, h)
            period = next((q for q, (pp, hh) in enumerate(reversed(history), start=1)
                           if np.array_equal(pp, p) and (not settled or np.array_equal(hh, h))), None)
            if period is not None:
                if settled:  # the whole state repeats: jump to step T on the cycle
                    rem = (T - k) % period
                    if rem:
                        p, h = history[len(history) - period + rem]
                    break
                settled = True
                h = np.where(separated, 0.0, h)
                history = []
            history.append((p, h))
            del history[:-_HISTORY]
            if k >= MAX_STEPS and k < T:
                _bounded_steps(T, "normalized covariance")
        if settled:
            pi, pj = p[..., :, None], p[..., None, :]
            q = (pi - pj) * (wi * wj / np.where(separated, li - lj, 1.0))
            h = np.where(separated, q, h)
    return p, h


def newton_schulz_map(lam, T):
    """``(p_T(lam), divided differences of p_T)``: the IterNorm polynomial and the
    matrix ``(p_T(l_i) - p_T(l_j)) / (l_i - l_j)`` (``p_T'(l_i)`` on the diagonal),
    from :func:`spectral_tables` (stable for every T)."""
    p, H = spectral_tables(lam, T)
    w = np.sqrt(np.maximum(np.abs(np.asarray(lam, dtype=np.float64)), _TAU))
    return p, H / (w[..., :, None] * w[..., None, :])


class IterNormSpectral(_Spectral):
    r"""IterNorm evaluated exactly: :math:`P_T = D\,p_T(\Lambda_N)\,D^\top`.

    In exact arithmetic the Newton-Schulz iterates are polynomials in
    :math:`\Sigma_N`, so :math:`P_T` is the spectral function :math:`p_T` of
    :math:`\Sigma_N`; evaluating it in the eigenbasis gives the value the
    iteration defines, to rounding, for every T.  (The matrix iteration
    itself, :class:`IterNorm`, departs from it once the iterates have
    converged: rounding breaks the commutation of :math:`P_k` with
    :math:`\Sigma_N`, and the uncoupled Newton iteration amplifies that
    error when :math:`\Sigma_N` is ill-conditioned.)  Derivatives through
    the divided differences of :math:`p_T` (:func:`spectral_tables`), exact
    at repeated eigenvalues.  Eigenvalues that rounding puts below zero are
    raised to 0 when eps >= 0 (the covariance is positive semidefinite).
    """

    name = "iter_norm"

    def __init__(self, S, *, T=5, what="covariance", eps=None, scale=None):
        S = _sym(S)
        tr = _trace(S, what, eps)
        self.T, self.tr = T, tr
        SN = S / tr[..., None, None]
        self.SN = SN
        lam, D = _eigh(SN, what)
        if eps is None or eps >= 0:
            lam = np.maximum(lam, 0.0)
        p, H = spectral_tables(lam, T)
        self.D, self.H, self.lam = D, H, lam
        self.r = 1.0 / np.sqrt(np.maximum(np.abs(lam), _TAU))
        self.W = (D * (p / np.sqrt(tr)[..., None])[..., None, :]) @ _T(D)

    @property
    def kappa(self):
        # T steps of three-term products (4 (1 + T)), and the eigenvector
        # sensitivity 1 / gap that an eigh-based second opinion carries
        return 4.0 * (1.0 + min(self.T, MAX_STEPS)) * _gap_sensitivity(self.lam)

    def _normalized(self, dS):
        dS = _sym(dS)
        tr = self.tr[..., None, None]
        dtr = np.trace(dS, axis1=-2, axis2=-1)[..., None, None]
        return dS / tr - self.SN * (dtr / tr), dtr / tr

    def jvp(self, dS):
        dSN, rel = self._normalized(dS)
        return self._dd_matrix(dSN) / np.sqrt(self.tr)[..., None, None] - 0.5 * self.W * rel

    def jvp_apply(self, dS, X):
        dSN, rel = self._normalized(dS)
        return (self._dd_apply(dSN, X) / np.sqrt(self.tr)[..., None, None]
                - 0.5 * (self.W @ X) * rel)

    def _cotangent(self, A, WX_dot):
        """Pieces of the cotangent of Sigma for ``A = sym(dW) / sqrt(tr)``."""
        tr = self.tr[..., None, None]
        dtr = -0.5 * WX_dot / tr
        Ap = _T(self.D) @ A @ self.D
        # <dSN, SN> = sum_i G_ii A'_ii lam_i = sum_i H_ii A'_ii (lam_i r_i^2)
        inner = np.sum(np.diagonal(self.H * Ap, axis1=-2, axis2=-1) * (self.lam * self.r * self.r),
                       axis=-1)[..., None, None]
        return dtr - inner / tr

    def vjp(self, dW):
        tr = self.tr[..., None, None]
        A = _sym(dW) / np.sqrt(tr)
        c = self._cotangent(A, np.sum(dW * self.W, axis=(-1, -2), keepdims=True))
        return self._dd_matrix(A) / tr + c * np.eye(self.SN.shape[-1])

    def vjp_apply(self, dZ, X):
        tr = self.tr[..., None, None]
        A = _sym(dZ @ _T(X)) / np.sqrt(tr)
        c = self._cotangent(A, np.sum(dZ * (self.W @ X), axis=(-1, -2), keepdims=True))
        return self._dd_apply(A, X) / tr + c * X


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
