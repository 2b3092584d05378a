r"""IterNorm's whitening matrix: T Newton-Schulz steps, exact for any T, with derivatives.

Huang, Zhou, Zhu, Liu & Shao 2019 (Iterative Normalization, CVPR):
:math:`\Sigma_N = \Sigma/\mathrm{tr}\,\Sigma`, :math:`P_0 = I`,
:math:`P_{k+1} = (3P_k - P_k^3\Sigma_N)/2`, :math:`W = P_T/\sqrt{\mathrm{tr}\,\Sigma}`.
Two :class:`~normref.whitening_matrices.MatrixFunction` evaluations:
:class:`IterNormSpectral` (``evaluation="spectral"``, the default: the exact
value for every T) and :class:`IterNorm` (``evaluation="newton"``: the matrix
iteration as frameworks run it).

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

import numpy as np

from .kernels import whiten as K
from .whitening_matrices import MatrixFunction, _EPS, _Spectral, _T, _eigh, _gap_sensitivity, _sym

__all__ = ["IterNorm", "IterNormSpectral", "MAX_STEPS", "spectral_tables", "newton_schulz_map"]

#: floor of the eigenvalue weights of the scaled divided-difference tables
_TAU = 2.0 ** -600
#: states kept to detect a cycle of the iteration (periods up to this length)
_HISTORY = 8
#: the most Newton-Schulz steps any evaluation runs, whatever T
MAX_STEPS = 4096


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
