r"""Weighted least-squares fits for finite-size extrapolation (theory items 5 and 8).

A measured quantity :math:`y_k \pm s_k` at finite sizes :math:`x_k` (``1/width``,
``1/B``, :math:`\eta\lambda`) is fitted by a polynomial

.. math::

    y(x) = c_0 + c_1 x + \dots + c_p x^p,\qquad
    \hat c = (X^\top S^{-1} X)^{-1} X^\top S^{-1} y,\quad S = \operatorname{diag}(s_k^2),

and the extrapolated constant is the intercept :math:`c_0 = y(0)`, with the
standard error :math:`\sqrt{[(X^\top S^{-1}X)^{-1}]_{00}}`, multiplied by
:math:`\sqrt{\chi^2/\nu}` when the fit is worse than the stated errors allow
(:math:`\chi^2/\nu > 1`, :math:`\nu` = points - parameters): a misfit of the
finite-size form then widens the error instead of hiding in it (the usual
Birge-ratio scaling).  The errors :math:`s_k` are standard errors over
independent seeds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Fit", "polyfit_intercept", "mean_and_stderr"]


@dataclass(frozen=True)
class Fit:
    """Result of :func:`polyfit_intercept`: ``coef`` (c_0 first), their standard
    errors ``stderr`` (Birge-scaled), ``chi2`` and ``dof`` of the fit."""

    coef: tuple
    stderr: tuple
    chi2: float
    dof: int

    @property
    def intercept(self):
        return self.coef[0]

    @property
    def intercept_stderr(self):
        return self.stderr[0]


def mean_and_stderr(values):
    """Mean and standard error of the mean (``ddof=1``) of independent draws."""
    v = np.asarray(values, dtype=np.float64)
    if v.size < 2:
        raise ValueError("a standard error needs at least two independent values")
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(v.size))


def polyfit_intercept(x, y, stderr, degree=1):
    r"""Weighted polynomial fit of ``y`` (errors ``stderr``) in ``x``; see the module.

    Needs more points than parameters (``len(x) > degree + 1``) so that
    :math:`\chi^2` tests the form.
    """
    x, y, s = (np.asarray(a, dtype=np.float64) for a in (x, y, stderr))
    if not (x.shape == y.shape == s.shape and x.ndim == 1):
        raise ValueError("x, y and stderr must be 1-d arrays of one length")
    if x.size <= degree + 1:
        raise ValueError(f"{x.size} points cannot test a degree-{degree} fit")
    if np.any(s <= 0):
        raise ValueError("standard errors must be positive")
    X = np.vander(x, degree + 1, increasing=True)
    w = 1.0 / s ** 2
    cov = np.linalg.inv(X.T @ (X * w[:, None]))
    coef = cov @ (X.T @ (w * y))
    chi2 = float(np.sum(w * (y - X @ coef) ** 2))
    dof = x.size - degree - 1
    scale = max(1.0, math.sqrt(chi2 / dof))
    return Fit(tuple(float(c) for c in coef), tuple(float(e) for e in scale * np.sqrt(np.diag(cov))),
               chi2, dof)
