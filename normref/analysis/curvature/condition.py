r"""Condition numbers that say what they exclude.

:func:`condition_number` returns a :class:`ConditionReport`: :math:`\kappa`
over the retained eigenvalues of a symmetric matrix or operator, the
eigenvalues excluded by the relative threshold (:data:`DEFAULT_RTOL`) and the
dimension of an explicit null space projected out; see
:mod:`normref.analysis.curvature` for the two treatments of the null space.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, replace

import numpy as np
from scipy.linalg import eigh, eigh_tridiagonal, null_space as _scipy_null_space, qr
from scipy.sparse.linalg import (ArpackNoConvergence, LinearOperator, aslinearoperator, eigsh,
                                  lobpcg, minres)

__all__ = ["DEFAULT_RTOL", "ConditionReport", "condition_number", "METHODS",
           "orthonormal_basis"]

#: relative eigenvalue threshold below which an eigenvalue counts as null
DEFAULT_RTOL = 1e-10


# ---------------------------------------------------------------- condition numbers
@dataclass(frozen=True)
class ConditionReport:
    """A condition number and exactly what it was computed on.

    ``kappa = lam_max / lam_min`` (magnitudes) over the retained eigenvalues;
    ``excluded`` holds the eigenvalues dropped by the threshold
    ``threshold = rtol * max|lambda|``; ``null_space_dim`` is the dimension of
    an explicit null space projected out (0 if none); ``indefinite`` is True
    if a retained eigenvalue is negative.
    """

    kappa: float
    lam_max: float
    lam_min: float
    n: int
    n_retained: int
    excluded: tuple
    rtol: float
    threshold: float
    null_space_dim: int
    method: str
    indefinite: bool
    eigenvalues: tuple = field(default=(), repr=False)
    #: iterative methods: solver iterations (Lanczos steps = operator products;
    #: LOBPCG block iterations), total operator products, the residual norms
    #: :math:`\|Mv - \theta v\|` of the extremal Ritz pairs (max first, then min),
    #: whether every solver call converged, and the first-order bound on the
    #: relative error of kappa, :math:`\|r_{max}\|/\lambda_{max} + \|r_{min}\|/\lambda_{min}`
    #: (for a symmetric matrix an eigenvalue lies within :math:`\|r\|` of a Ritz value)
    iterations: int = 0
    matvecs: int = 0
    residuals: tuple = ()
    converged: bool = True
    kappa_error: float = 0.0
    #: the second-order estimate :math:`\sum r^2/(\mathrm{gap}\,|\lambda|)` over the
    #: same two pairs, the gap being the distance to the nearest other computed
    #: Ritz value (Ritz values of a symmetric matrix converge as the square of the
    #: residual; an estimate, not a bound: the gap is itself approximate)
    kappa_error_gap: float = 0.0
    #: ``"primal"``, or ``"dual"`` for the output-space Gram matrix of
    #: :meth:`~normref.analysis.curvature.NetworkCurvature.gram`
    space: str = "primal"
    #: True when kappa was computed in the scale metric :math:`D M D`
    #: (:mod:`normref.analysis.curvature.invariances`)
    metric: bool = False
    #: labels of the invariance directions projected out (network condition numbers)
    null_space_labels: tuple = field(default=(), repr=False)

    @property
    def n_excluded(self):
        return len(self.excluded)

    def __float__(self):
        return float(self.kappa)

    def describe(self):
        how = (f"on the orthogonal complement of a {self.null_space_dim}-dimensional "
               f"null space" if self.null_space_dim else "on the full space")
        text = (f"kappa={self.kappa:.6g} ({self.method}, {how}; {self.n_excluded} "
                f"eigenvalue(s) with |lambda| <= {self.rtol:g} * max|lambda| excluded")
        if self.method != "dense":
            text += (f"; {self.iterations} iterations, {self.matvecs} products, "
                     f"converged={self.converged}, relative error <= {self.kappa_error:.2g}"
                     f" (first order), ~{self.kappa_error_gap:.2g} (gap estimate)")
        if self.space != "primal":
            text += f"; {self.space} space"
        return text + ")"


def orthonormal_basis(U):
    """An orthonormal basis of the span of the columns of ``U``: ``U`` itself when
    already orthonormal (to 1e-12), else pivoted Householder QR truncated at the
    numerical rank (``|R_ii| > max(shape) * eps * |R_00|``, the threshold of
    ``scipy.linalg.orth``; QR instead of its SVD: a quarter of the flops on
    the 10^5 x 10^3 invariance bases of large networks)."""
    U = np.asarray(U, dtype=np.float64)
    if U.shape[1] == 0:
        return U
    if np.abs(U.T @ U - np.eye(U.shape[1])).max() <= 1e-12:
        return U
    Q, R, _ = qr(U, mode="economic", pivoting=True)
    d = np.abs(np.diag(R))
    if d.size == 0 or d[0] == 0:
        return np.zeros((U.shape[0], 0))
    rank = int((d > max(U.shape) * np.finfo(np.float64).eps * d[0]).sum())
    return Q[:, :rank]


def _complement_basis(null_space, n, complement=True):
    U = np.asarray(null_space, dtype=np.float64)
    if U.ndim == 1:
        U = U[:, None]
    if U.shape[0] != n:
        raise ValueError(f"null_space has {U.shape[0]} rows, expected {n}")
    U = orthonormal_basis(U)
    return U, (_scipy_null_space(U.T) if complement else None)


def _summarize(lams, n, rtol, null_dim, method):
    lams = np.sort(np.asarray(lams, dtype=np.float64))
    mags = np.abs(lams)
    top = mags.max() if mags.size else 0.0
    thr = rtol * top
    keep = mags > thr
    kept = lams[keep]
    if kept.size == 0:
        kappa, lmax, lmin = math.nan, 0.0, 0.0
    else:
        lmax, lmin = float(np.abs(kept).max()), float(np.abs(kept).min())
        kappa = lmax / lmin
    return ConditionReport(
        kappa=float(kappa), lam_max=lmax, lam_min=lmin, n=n, n_retained=int(kept.size),
        excluded=tuple(float(v) for v in lams[~keep]), rtol=float(rtol),
        threshold=float(thr), null_space_dim=null_dim, method=method,
        indefinite=bool((kept < 0).any()), eigenvalues=tuple(float(v) for v in lams))


METHODS = ("dense", "lanczos", "arpack", "lobpcg", "shift-invert")


class _Counted:
    """A symmetric operator that counts its products."""

    def __init__(self, op, n):
        self.op, self.n, self.count = op, n, 0

    def mv(self, v):
        v = np.asarray(v, dtype=np.float64)
        if v.ndim == 2:
            self.count += v.shape[1]
            return np.column_stack([self.op.matvec(v[:, i]) for i in range(v.shape[1])])
        self.count += 1
        return self.op.matvec(v.ravel())

    def linop(self):
        return LinearOperator((self.n, self.n), matvec=self.mv, rmatvec=self.mv,
                              matmat=self.mv, dtype=np.float64)


def _ritz(A, k, which, *, v0, tol, maxiter, ncv, sigma=None, OPinv=None):
    """eigsh, ``(values, vectors, converged)``; a non-converged run keeps what converged."""
    try:
        vals, vecs = eigsh(A, k=k, which=which, tol=tol, v0=v0, maxiter=maxiter, ncv=ncv,
                           sigma=sigma, OPinv=OPinv)
        return vals, vecs, True
    except ArpackNoConvergence as err:
        return np.asarray(err.eigenvalues), np.asarray(err.eigenvectors), False


def _tridiagonal_pair(a, b, i):
    """``(theta_i, s_i)``: eigenpair ``i`` (ascending) of the Lanczos tridiagonal matrix."""
    if len(a) == 1:
        return float(a[0]), np.ones(1)
    w, v = eigh_tridiagonal(a, b, select="i", select_range=(i, i))
    return float(w[0]), v[:, 0]


def _lanczos(mv, v0, U, *, tol, maxit, check=10):
    r"""Lanczos with full reorthogonalization (classical Gram-Schmidt, a second pass
    when the first cancels more than 30%), against the basis so far and ``U``,
    no restarts.  Every ``check`` steps the Ritz values are computed (eigenvalues
    of the tridiagonal matrix only) and the run stops when the Ritz pairs of
    largest and smallest magnitude have estimated residuals
    :math:`\beta_k |s_{ki}| \le` ``tol`` times the largest magnitude.  Returns
    ``(theta, a, b, Q, steps)``: the Ritz values (ascending), the tridiagonal
    matrix's diagonal and off-diagonal, and the Lanczos basis (rows)."""
    n = v0.size
    Q = np.empty((min(maxit, 256) + 1, n))
    Q[0] = v0 / np.linalg.norm(v0)
    a, b = [], []

    def orthogonalize(w, k):
        for _ in range(2):
            before = np.linalg.norm(w)
            w = w - Q[:k + 1].T @ (Q[:k + 1] @ w)
            if U.shape[1]:
                w = w - U @ (U.T @ w)
            if np.linalg.norm(w) > 0.7 * before:
                break
        return w

    k = 0
    theta = np.zeros(0)
    for k in range(maxit):
        w = mv(Q[k])
        if k:
            w = w - b[-1] * Q[k - 1]
        ak = float(Q[k] @ w)
        w = orthogonalize(w - ak * Q[k], k)
        bk = float(np.linalg.norm(w))
        a.append(ak)
        b.append(bk)
        breakdown = bk <= 1e-14 * max(abs(x) for x in a)
        last = breakdown or k + 1 == maxit or k + 1 == n
        if (k + 1) % check == 0 or last:
            A, B = np.array(a), np.array(b[:-1])
            theta = eigh_tridiagonal(A, B, eigvals_only=True) if k else A.copy()
            mags = np.abs(theta)
            top = mags.max()
            done = last
            if not done:
                ends = {int(np.argmax(mags)), int(np.argmin(mags))}
                done = all(bk * abs(_tridiagonal_pair(A, B, i)[1][-1]) <= tol * top
                           for i in ends)
            if done:
                return theta, A, B, Q[:k + 1], k + 1
        if k + 1 >= Q.shape[0] - 1:
            Q = np.concatenate([Q, np.empty((Q.shape[0], n))])
        Q[k + 1] = w / bk
    return theta, np.array(a), np.array(b[:-1]), Q[:k + 1], k + 1


def condition_number(M, *, null_space=None, method="dense", rtol=None, k_small=6,
                     seed=0, tol=0.0, maxiter=None, ncv=None, block_size=None, metric=None,
                     labels=(), preconditioner=None):
    r"""Condition number of a symmetric matrix or ``LinearOperator`` ``M``.

    ``null_space=None``: all eigenvalues are computed and those with
    :math:`|\lambda| \le \mathrm{rtol}\max|\lambda|` (``rtol`` default
    :data:`DEFAULT_RTOL` = 1e-10) are excluded and reported.
    ``null_space=U`` (a vector or columns): :math:`M` is restricted to
    :math:`U^\perp`; ``rtol`` then defaults to 0 (only exact zeros excluded).
    ``metric=D`` (a positive vector): the condition number of :math:`D M D`
    with null space :math:`D^{-1}U` (the scale metric of
    :mod:`~normref.analysis.curvature.invariances`).

    ``method="dense"``: the matrix (an operator is applied to the identity) is
    symmetrized, :math:`(M + M^\top)/2`, and diagonalized by LAPACK ``eigh``.

    Iterative methods (matvecs only; ``tol`` the eigensolver's relative
    residual tolerance, 0 = machine precision for ARPACK; ``maxiter``, by
    default ``min(n, 5000)`` Lanczos steps, 2000 LOBPCG iterations or 1000
    ARPACK restarts -- a run that stops there says ``converged=False``; a
    deterministic start from ``seed``).  The null space is deflated: every
    product is :math:`P M P` with :math:`P = I - U U^\top`, and for the
    smallest eigenvalues :math:`P M P + c\,U U^\top` (:math:`c` the largest
    magnitude) moves the null directions to the top of the spectrum, where
    they cannot be the minimum.

    * ``"lanczos"``: one Lanczos run with full reorthogonalization and no
      restarts (:func:`_lanczos`) gives both ends of the spectrum; it stops
      when the Ritz pairs of largest and smallest magnitude have residuals
      below ``tol`` (default 1e-10) times the largest magnitude, or after
      ``maxiter`` steps (default ``min(n, 5000)``; the basis is kept,
      ``8 * steps * n`` bytes).  On the ill-conditioned Gauss-Newton
      matrices of normalized networks this is the fast one: 550 products for
      a 964-dimensional one with kappa 2.1e5, where ARPACK's restarted
      Lanczos and preconditioned LOBPCG needed thousands
      (benchmarks/curvature_scale.py).
    * ``"arpack"``: ARPACK ``eigsh`` (implicitly restarted Lanczos, ``ncv``
      Lanczos vectors, bounded memory): the largest-magnitude eigenvalue, then the
      ``k_small`` smallest *algebraic* ones.  If one of those is negative
      beyond the threshold (an indefinite Hessian) the smallest magnitude is
      interior; it is then sought with ``which="SM"`` (slow, reported in
      ``converged``) -- prefer ``"shift-invert"`` there.
    * ``"lobpcg"``: SciPy's LOBPCG (Knyazev 2001), blocks of ``block_size``
      (default ``k_small``) vectors, with the null space as the constraint
      ``Y = U`` (iterates kept orthogonal to it), largest then smallest
      algebraic; for positive semi-definite matrices (Gauss-Newton, Fisher).
      An indefinite matrix is a ValueError (its smallest magnitude is
      interior).  ``preconditioner=T`` (a symmetric positive definite
      ``LinearOperator`` approximating :math:`M^{-1}`, e.g.
      :class:`~normref.analysis.curvature.kfac.KFACPreconditioner`) is used
      for the smallest eigenvalues; it changes the speed, not the answer.
      The smallest run stops at residual norm ``tol * lam_max`` (default
      ``tol`` 1e-9).
    * ``"shift-invert"``: ARPACK in shift-invert mode around 0 on the shifted
      operator, each :math:`(PMP + cUU^\top)^{-1} v` solved by MINRES to
      relative residual ``max(tol, 1e-12)`` (preconditioned by
      ``preconditioner`` when given, which must then be positive definite):
      finds the smallest magnitudes of an indefinite matrix.

    The report carries ``iterations``, ``matvecs``, ``residuals``,
    ``converged`` and ``kappa_error``; it lists only the eigenvalues it
    computed (a Krylov space holds one vector per eigenspace, so a repeated
    null eigenvalue is usually found once: ``excluded`` does not give the
    null-space dimension, use ``"dense"`` for that).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if rtol is None:
        rtol = DEFAULT_RTOL if null_space is None else 0.0
    if isinstance(M, LinearOperator):
        op = M
        n = M.shape[0]
    else:
        Md = np.asarray(M, dtype=np.float64)
        if Md.ndim != 2 or Md.shape[0] != Md.shape[1]:
            raise ValueError(f"expected a square matrix, got shape {Md.shape}")
        op = None
        n = Md.shape[0]
    D = None
    if metric is not None:
        D = np.asarray(metric, dtype=np.float64).ravel()
        if D.shape != (n,) or not np.all(D > 0):
            raise ValueError(f"metric must be {n} positive numbers")
        if op is None:
            Md = Md * D[:, None] * D[None, :]
        else:
            inner = op
            op = LinearOperator((n, n), matvec=lambda v: D * inner.matvec(D * np.ravel(v)),
                                dtype=np.float64)
        if null_space is not None:
            U0 = np.asarray(null_space, dtype=np.float64)
            null_space = (U0.T / D).T
    extra = dict(metric=D is not None, null_space_labels=tuple(labels))
    T = preconditioner
    if T is not None:
        if method not in ("lobpcg", "shift-invert"):
            raise ValueError(f"preconditioner is used by method='lobpcg' or 'shift-invert', "
                             f"not {method!r}")
        T = aslinearoperator(T)
        if T.shape != (n, n):
            raise ValueError(f"preconditioner has shape {T.shape}, expected {(n, n)}")
        if D is not None:
            inner_T = T
            T = LinearOperator((n, n), matvec=lambda v: inner_T.matvec(np.ravel(v) / D) / D,
                               matmat=lambda V: inner_T.matmat(V / D[:, None]) / D[:, None],
                               dtype=np.float64)

    if method == "dense":
        if op is not None:
            Md = op.matmat(np.eye(n))
        Md = 0.5 * (Md + Md.T)
        if null_space is None:
            rep = _summarize(eigh(Md, eigvals_only=True), n, rtol, 0, "dense")
        else:
            U, Q = _complement_basis(null_space, n)
            rep = _summarize(eigh(Q.T @ Md @ Q, eigvals_only=True), n, rtol, U.shape[1],
                             "dense")
        return replace(rep, **extra)
    if op is None:
        op = aslinearoperator(Md)
    return replace(_iterative(op, n, null_space, method, rtol, k_small, seed, tol, maxiter,
                              ncv, block_size, T), **extra)


def _iterative(op, n, null_space, method, rtol, k_small, seed, tol, maxiter, ncv, block_size,
               T=None):
    counted = _Counted(op, n)
    v0 = np.random.default_rng(seed).standard_normal(n)
    if null_space is None:
        U = np.zeros((n, 0))
    else:
        U, _ = _complement_basis(null_space, n, complement=False)
    null_dim = U.shape[1]

    def proj(v):
        return v - U @ (U.T @ v) if null_dim else v

    def base_mv(v):
        v = np.asarray(v, dtype=np.float64)
        if v.ndim == 2:      # one projection of the whole block (BLAS-3), then the products
            W = proj(v)
            return proj(np.column_stack([counted.mv(W[:, i]) for i in range(W.shape[1])]))
        return proj(counted.mv(proj(v.ravel())))

    base = LinearOperator((n, n), matvec=base_mv, rmatvec=base_mv, matmat=base_mv,
                          dtype=np.float64)
    v0 = proj(v0)
    k = max(1, min(k_small, n - 2))
    iters, ok = 0, True     # lanczos, lobpcg: ok decided from the residuals measured anew
    maxit = maxiter if maxiter is not None else (2000 if method == "lobpcg" else 1000)
    if method == "lanczos":
        ltol = tol if tol > 0 else 1e-10
        steps = maxiter if maxiter is not None else min(n, 5000)
        theta, A, B, Q, iters = _lanczos(base_mv, v0, U, tol=ltol, maxit=max(1, steps))
        mags = np.abs(theta)
        i_t = int(np.argmax(mags))
        top_val, s_t = _tridiagonal_pair(A, B, i_t)
        top_vec = Q.T @ s_t
        c = abs(top_val)
        thr = rtol * c
        below = [i for i in range(theta.size) if mags[i] <= thr and i != i_t][:k]
        above = sorted((i for i in range(theta.size) if mags[i] > thr and i != i_t),
                       key=lambda i: mags[i])[:k]
        if not above and mags[i_t] > thr:
            above = [i_t]       # one distinct eigenvalue: the run broke down, exactly
        pick = below + above
        pairs_s = [_tridiagonal_pair(A, B, i) for i in pick]
        vals_s = np.array([p[0] for p in pairs_s])
        vecs_s = (Q.T @ np.stack([p[1] for p in pairs_s], axis=1) if pick
                  else np.zeros((n, 0)))
    elif method == "lobpcg":
        bs = max(1, min(block_size or k, n // 3 if n >= 3 else 1))
        X = np.random.default_rng(seed).standard_normal((n, bs))
        X = X - U @ (U.T @ X) if null_dim else X
        Y = U if null_dim else None
        ltol = tol if tol > 0 else 1e-9
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            top, Vt, hist_t = lobpcg(base, X.copy(), Y=Y, largest=True, tol=ltol, maxiter=maxit,
                                     retResidualNormsHistory=True)
        i_t = int(np.argmax(np.abs(top)))
        top_val, top_vec = float(top[i_t]), Vt[:, i_t]
        c = abs(top_val)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            small, Vs, hist_s = lobpcg(base, X.copy(), Y=Y, M=T, largest=False, tol=ltol * c,
                                       maxiter=maxit, retResidualNormsHistory=True)
        iters = len(hist_t) + len(hist_s)
        vals_s, vecs_s = np.asarray(small), np.asarray(Vs)
        if (vals_s < -max(rtol, 1e-12) * c).any():
            raise ValueError("lobpcg: the matrix is indefinite on the retained subspace, so "
                             "the smallest |lambda| is interior; use method='shift-invert'")
    else:
        tv, tV, ok_t = _ritz(base, 1, "LM", v0=v0, tol=tol, maxiter=maxit, ncv=ncv)
        if tv.size == 0:
            raise ValueError(f"{method}: the largest eigenvalue did not converge "
                             f"(maxiter={maxit}); raise maxiter or tol")
        top_val, top_vec = float(tv[0]), tV[:, 0]
        c = abs(top_val)

        def sh_mv(v):
            v = np.ravel(v)
            return base_mv(v) + (c * (U @ (U.T @ v)) if null_dim else 0.0)

        shifted = LinearOperator((n, n), matvec=sh_mv, rmatvec=sh_mv, dtype=np.float64)
        if method == "arpack":
            vals_s, vecs_s, ok_s = _ritz(shifted, k, "SA", v0=v0, tol=tol, maxiter=maxit,
                                         ncv=ncv)
            if vals_s.size and (vals_s < -max(rtol, 1e-12) * c).any():
                vals_s, vecs_s, ok_s = _ritz(shifted, k, "SM", v0=v0, tol=tol, maxiter=maxit,
                                             ncv=ncv)
        else:
            inner = max(tol, 1e-12)

            def solve(v):
                x, _ = minres(shifted, np.ravel(v), rtol=inner, maxiter=10 * n, M=T)
                return x

            OPinv = LinearOperator((n, n), matvec=solve, dtype=np.float64)
            vals_s, vecs_s, ok_s = _ritz(shifted, k, "LM", v0=v0, tol=tol, maxiter=maxit,
                                         ncv=ncv, sigma=0.0, OPinv=OPinv)
        ok = ok_t and ok_s
        iters = counted.count
    lams = np.concatenate([[top_val], np.asarray(vals_s, dtype=np.float64)])
    rep = _summarize(lams, n, rtol, null_dim, method)
    # residuals of the extremal Ritz pairs, measured anew on the deflated operator
    res, err = [], 0.0
    kept = [i for i in range(len(vals_s)) if abs(vals_s[i]) > rep.threshold]
    pairs = [(top_val, top_vec)]
    if kept:
        i_min = min(kept, key=lambda i: abs(vals_s[i]))
        pairs.append((float(vals_s[i_min]), vecs_s[:, i_min]))
    for lam, v in pairs:
        v = v / np.linalg.norm(v)
        r = float(np.linalg.norm(base_mv(v) - lam * v))
        res.append(r)
        err += r / abs(lam) if lam != 0 else math.inf
    if rep.n_retained <= 1 and null_dim == 0 and rep.n_excluded >= k:
        raise ValueError(
            f"{method}: the {k} smallest eigenvalues are all below the threshold "
            f"{rep.threshold:g}; pass null_space=... or method='dense'")
    if len(pairs) < 2:     # no smallest eigenvalue above the threshold was found
        rep = replace(rep, kappa=math.nan, lam_min=math.nan)
        ok, err = False, math.inf
    if method in ("lobpcg", "lanczos"):   # converged: both extremal pairs, measured anew
        dflt = 1e-9 if method == "lobpcg" else 1e-10
        ok = ok and len(res) == 2 and max(res) <= (tol if tol > 0 else dflt) * rep.lam_max
    # the gap estimate: |lambda - theta| <~ r^2 / gap for a Ritz value separated by
    # `gap` from the rest of the spectrum (the nearest other computed value)
    gap_err = 0.0
    for (lam, _), r in zip(pairs, res):
        others = [abs(lam - v) for v in lams if v != lam]
        gap = min(others) if others else abs(lam)
        gap_err += (r * r / gap / abs(lam)) if gap > 0 and lam != 0 else math.inf
    return replace(rep, iterations=int(iters), matvecs=int(counted.count),
                   residuals=tuple(res), converged=bool(ok), kappa_error=float(err),
                   kappa_error_gap=float(min(gap_err, err)))
