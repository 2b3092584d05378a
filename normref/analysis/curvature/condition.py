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
from scipy.linalg import eigh, null_space as _scipy_null_space, orth
from scipy.sparse.linalg import (ArpackNoConvergence, LinearOperator, aslinearoperator, eigsh,
                                  lobpcg, minres)

__all__ = ["DEFAULT_RTOL", "ConditionReport", "condition_number", "METHODS"]

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
                     f"converged={self.converged}, relative error <= {self.kappa_error:.2g}")
        return text + ")"


def _complement_basis(null_space, n):
    U = np.asarray(null_space, dtype=np.float64)
    if U.ndim == 1:
        U = U[:, None]
    if U.shape[0] != n:
        raise ValueError(f"null_space has {U.shape[0]} rows, expected {n}")
    U = orth(U)
    return U, _scipy_null_space(U.T)


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


METHODS = ("dense", "lanczos", "lobpcg", "shift-invert")


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


def condition_number(M, *, null_space=None, method="dense", rtol=None, k_small=6,
                     seed=0, tol=0.0, maxiter=None, ncv=None, block_size=None, metric=None,
                     labels=()):
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
    residual tolerance, 0 = machine precision for ARPACK; ``maxiter``; a
    deterministic start from ``seed``).  The null space is deflated: every
    product is :math:`P M P` with :math:`P = I - U U^\top`, and for the
    smallest eigenvalues :math:`P M P + c\,U U^\top` (:math:`c` the largest
    magnitude) moves the null directions to the top of the spectrum, where
    they cannot be the minimum.

    * ``"lanczos"``: ARPACK ``eigsh`` (implicitly restarted Lanczos, ``ncv``
      Lanczos vectors): the largest-magnitude eigenvalue, then the
      ``k_small`` smallest *algebraic* ones (fast: an extreme of the
      spectrum).  If one of those is negative beyond the threshold (an
      indefinite Hessian) the smallest magnitude is interior; it is then
      sought with ``which="SM"`` (slow, reported in ``converged``) --
      prefer ``"shift-invert"`` there.
    * ``"lobpcg"``: SciPy's LOBPCG (Knyazev 2001), blocks of ``block_size``
      (default ``k_small``) vectors, with the null space as the constraint
      ``Y = U`` (iterates kept orthogonal to it), largest then smallest
      algebraic; for positive semi-definite matrices (Gauss-Newton, Fisher).
      An indefinite matrix is a ValueError (its smallest magnitude is
      interior).
    * ``"shift-invert"``: ARPACK in shift-invert mode around 0 on the shifted
      operator, each :math:`(PMP + cUU^\top)^{-1} v` solved by MINRES to
      relative residual ``max(tol, 1e-12)``: finds the smallest magnitudes of
      an indefinite matrix.

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
                              ncv, block_size), **extra)


def _iterative(op, n, null_space, method, rtol, k_small, seed, tol, maxiter, ncv, block_size):
    counted = _Counted(op, n)
    v0 = np.random.default_rng(seed).standard_normal(n)
    if null_space is None:
        U = np.zeros((n, 0))
    else:
        U, _ = _complement_basis(null_space, n)
    null_dim = U.shape[1]

    def proj(v):
        return v - U @ (U.T @ v) if null_dim else v

    def base_mv(v):
        v = np.asarray(v, dtype=np.float64)
        if v.ndim == 2:
            return np.column_stack([base_mv(v[:, i]) for i in range(v.shape[1])])
        return proj(counted.mv(proj(v.ravel())))

    base = LinearOperator((n, n), matvec=base_mv, rmatvec=base_mv, dtype=np.float64)
    v0 = proj(v0)
    k = max(1, min(k_small, n - 2))
    iters, ok = 0, True
    maxit = maxiter if maxiter is not None else 100 * n
    if method == "lobpcg":
        bs = max(1, min(block_size or k, n // 3 if n >= 3 else 1))
        X = np.random.default_rng(seed).standard_normal((n, bs))
        X = X - U @ (U.T @ X) if null_dim else X
        Y = U if null_dim else None
        ltol = tol if tol > 0 else 1e-9
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            top, Vt, hist_t = lobpcg(base, X.copy(), Y=Y, largest=True, tol=ltol, maxiter=maxit,
                                     retResidualNormsHistory=True)
            small, Vs, hist_s = lobpcg(base, X.copy(), Y=Y, largest=False, tol=ltol,
                                       maxiter=maxit, retResidualNormsHistory=True)
        iters = len(hist_t) + len(hist_s)
        i_t = int(np.argmax(np.abs(top)))
        top_val, top_vec = float(top[i_t]), Vt[:, i_t]
        ok = bool(np.all(hist_t[-1] <= ltol * max(1.0, abs(top_val)))) if len(hist_t) else False
        c = abs(top_val)
        vals_s, vecs_s = np.asarray(small), np.asarray(Vs)
        if (vals_s < -max(rtol, 1e-12) * c).any():
            raise ValueError("lobpcg: the matrix is indefinite on the retained subspace, so "
                             "the smallest |lambda| is interior; use method='shift-invert'")
        ok_s = bool(np.all(hist_s[-1] <= ltol * max(1.0, c))) if len(hist_s) else False
        ok = ok and ok_s
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
        if method == "lanczos":
            vals_s, vecs_s, ok_s = _ritz(shifted, k, "SA", v0=v0, tol=tol, maxiter=maxit,
                                         ncv=ncv)
            if vals_s.size and (vals_s < -max(rtol, 1e-12) * c).any():
                vals_s, vecs_s, ok_s = _ritz(shifted, k, "SM", v0=v0, tol=tol, maxiter=maxit,
                                             ncv=ncv)
        else:
            inner = max(tol, 1e-12)

            def solve(v):
                x, _ = minres(shifted, np.ravel(v), rtol=inner, maxiter=10 * n)
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
    return replace(rep, iterations=int(iters), matvecs=int(counted.count),
                   residuals=tuple(res), converged=bool(ok), kappa_error=float(err))
