r"""Condition numbers that say what they exclude.

:func:`condition_number` returns a :class:`ConditionReport`: :math:`\kappa`
over the retained eigenvalues of a symmetric matrix or operator, the
eigenvalues excluded by the relative threshold (:data:`DEFAULT_RTOL`) and the
dimension of an explicit null space projected out; see
:mod:`normref.analysis.curvature` for the two treatments of the null space.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.linalg import eigh, null_space as _scipy_null_space, orth
from scipy.sparse.linalg import LinearOperator, aslinearoperator, eigsh

__all__ = ["DEFAULT_RTOL", "ConditionReport", "condition_number"]

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

    @property
    def n_excluded(self):
        return len(self.excluded)

    def __float__(self):
        return float(self.kappa)

    def describe(self):
        how = (f"on the orthogonal complement of a {self.null_space_dim}-dimensional "
               f"null space" if self.null_space_dim else "on the full space")
        return (f"kappa={self.kappa:.6g} ({self.method}, {how}; {self.n_excluded} "
                f"eigenvalue(s) with |lambda| <= {self.rtol:g} * max|lambda| excluded)")


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


def condition_number(M, *, null_space=None, method="dense", rtol=None, k_small=6,
                     seed=0):
    r"""Condition number of a symmetric matrix or ``LinearOperator`` ``M``.

    ``null_space=None``: all eigenvalues are computed and those with
    :math:`|\lambda| \le \mathrm{rtol}\max|\lambda|` (``rtol`` default
    :data:`DEFAULT_RTOL` = 1e-10) are excluded and reported.
    ``null_space=U`` (a vector or columns): :math:`M` is restricted to
    :math:`U^\perp`; ``rtol`` then defaults to 0 (only exact zeros excluded).

    ``method="dense"``: the matrix (an operator is applied to the identity) is
    symmetrized, :math:`(M + M^\top)/2`, and diagonalized by LAPACK ``eigh``.
    ``method="lanczos"``: ARPACK ``eigsh`` on the operator (matvecs only,
    tolerance 0 = machine precision, deterministic start vector from
    ``seed``): the largest-magnitude eigenvalue, then the ``k_small``
    smallest-magnitude ones.  With an explicit null space the operator
    :math:`P M P + c\,U U^\top` (:math:`P = I - U U^\top`, :math:`c` the
    largest magnitude of :math:`PMP`) moves the null directions to the top of
    the spectrum, where they cannot be the minimum.  Without one, if all
    ``k_small`` smallest eigenvalues fall under the threshold a ``ValueError``
    asks for ``null_space`` or ``method="dense"``.  The Lanczos report lists
    only the eigenvalues it computed; a Krylov space holds one vector per
    eigenspace, so a repeated (e.g. null) eigenvalue is usually found once and
    ``excluded`` does not give the null-space dimension (use ``"dense"`` for
    that).
    """
    if method not in ("dense", "lanczos"):
        raise ValueError(f"method must be 'dense' or 'lanczos', got {method!r}")
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

    if method == "dense":
        if op is not None:
            Md = op.matmat(np.eye(n))
        Md = 0.5 * (Md + Md.T)
        if null_space is None:
            return _summarize(eigh(Md, eigvals_only=True), n, rtol, 0, "dense")
        U, Q = _complement_basis(null_space, n)
        return _summarize(eigh(Q.T @ Md @ Q, eigvals_only=True), n, rtol, U.shape[1], "dense")

    # --- lanczos
    if op is None:
        op = aslinearoperator(Md)
    v0 = np.random.default_rng(seed).standard_normal(n)
    if null_space is None:
        base = op
        null_dim = 0
    else:
        U, _ = _complement_basis(null_space, n)
        null_dim = U.shape[1]

        def proj(v):
            return v - U @ (U.T @ v)

        base = LinearOperator((n, n), matvec=lambda v: proj(op.matvec(proj(np.ravel(v)))),
                              dtype=np.float64)
    top = eigsh(base, k=1, which="LM", tol=0, v0=v0, return_eigenvectors=False)
    c = float(np.abs(top).max())
    if null_space is None:
        shifted = base
    else:
        shifted = LinearOperator(
            (n, n), matvec=lambda v: base.matvec(v) + c * (U @ (U.T @ np.ravel(v))),
            dtype=np.float64)
    k = max(1, min(k_small, n - 2))
    small = eigsh(shifted, k=k, which="SM", tol=0, v0=v0, maxiter=100 * n,
                  return_eigenvectors=False)
    lams = np.concatenate([np.atleast_1d(top), small])
    rep = _summarize(lams, n, rtol, null_dim, "lanczos")
    if rep.n_retained <= 1 and null_space is None and rep.n_excluded >= k:
        raise ValueError(
            f"lanczos: the {k} smallest eigenvalues are all below the threshold "
            f"{rep.threshold:g}; pass null_space=... or method='dense'")
    return rep
