"""Derivative checks for registered normalizers.

* :func:`gradcheck` / :func:`gradgradcheck` -- PyTorch's keyword names and
  defaults, for normref functions: first derivatives (the fast VJP, and the
  JVP on request) against central finite differences; second derivatives
  against the autograd reference.
* :func:`check_vjp` / :func:`check_jvp` -- dot-product tests in random
  directions, the cheap test the generic suite and ``python -m normref check``
  run on every registered example:

  .. math::

      \\langle v, J u\\rangle_{\\text{JVP}}
      = \\langle J^\\top v, u\\rangle_{\\text{VJP}}
      \\approx \\Big\\langle v, \\frac{f(x + h u) - f(x - h u)}{2h}\\Big\\rangle .

Directions are Gaussian, never all ones: an all-ones cotangent annihilates
the input gradient of every standardizer (the rows of its Jacobian sum to
zero), so it would pass any backward that is merely zero-mean.

Every function evaluation receives fresh copies of every array argument, so
training-mode calls that update running statistics in place never touch the
caller's arrays (and every evaluation sees the same statistics).

Modules: :mod:`~normref.testing.gradcheck.common` (shared pieces),
:mod:`~normref.testing.gradcheck.first_order` (:func:`gradcheck`),
:mod:`~normref.testing.gradcheck.second_order` (:func:`gradgradcheck`),
:mod:`~normref.testing.gradcheck.dot_tests` (:func:`check_vjp`,
:func:`check_jvp`).
"""
from __future__ import annotations

from .common import N_RUNGS, SEED, GradcheckError  # noqa: F401
from .dot_tests import DotTestResult, check_jvp, check_vjp
from .first_order import gradcheck
from .second_order import gradgradcheck

__all__ = [
    "GradcheckError",
    "gradcheck",
    "gradgradcheck",
    "check_vjp",
    "check_jvp",
    "DotTestResult",
]
