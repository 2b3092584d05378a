r"""Compensated summation: the error-free transformations every kernel's
compensated sums are made of, in one place.

* :func:`two_sum` -- Knuth's TwoSum (TAOCP vol. 2, 4.2.2, Theorem B; Møller
  1965): for any two float64 ``a``, ``b`` without overflow,

  .. math:: s = \mathrm{fl}(a + b), \qquad e = (a - (s - b')) + (b - b'),
            \quad b' = s - a, \qquad s + e = a + b \text{ exactly},

  six operations and no branch, whatever the order of magnitudes.  Inlined
  into its callers (``inline="always"``): it sits in the innermost loop of
  the standardizers' moment sums.
* :func:`neumaier_add` -- one step of Neumaier's compensated sum (Neumaier
  1974, "Rundungsfehleranalyse einiger Verfahren zur Summation endlicher
  Summen", ZAMM 54; the improved Kahan-Babuška sum):

  .. math:: z = \mathrm{fl}(s + t), \qquad
            c \mathrel{+}= \begin{cases} (s - z) + t & |s| \ge |t| \\
                                         (t - z) + s & \text{otherwise,} \end{cases}

  the error term being Dekker's Fast2Sum of the ordered operands (exact, no
  overflow); the sum is ``s + c`` at the end.  Used by the scaled arithmetic
  (:mod:`normref.kernels.scaled`) and the Lp / LRN kernels on aligned
  mantissas.
* :func:`neumaier_sum` -- ``sum_j row[j] * scale`` left to right with
  :func:`neumaier_add`, returned as ``s + c`` (the whitening kernels' means).

The error of a compensated sum of :math:`n` terms is
:math:`\le 2u\,|\sum x| + O(n u^2) \sum |x|` (Higham 2002, *Accuracy and
Stability of Numerical Algorithms*, 4.3): the sum is accurate to a few ulps
unless it cancels to below :math:`n u` of the terms' magnitude.  All three
are numba functions with the kernels' options (:data:`~normref.kernels._dispatch.JIT`:
``fastmath=False``, so the compiler never reassociates the compensation
away); their results are independent of the caller and of the thread count.
"""
from __future__ import annotations

from numba import njit

from ._dispatch import JIT

__all__ = ["two_sum", "neumaier_add", "neumaier_sum"]


@njit(inline="always", **JIT)
def two_sum(a, b):
    """``(fl(a + b), the exact rounding error of that addition)`` (Knuth's TwoSum)."""
    s = a + b
    bp = s - a
    return s, (a - (s - bp)) + (b - bp)


@njit(**JIT)
def neumaier_add(s, comp, t):
    """One step of Neumaier's compensated sum: ``(s + t, comp + its rounding error)``."""
    z = s + t
    if abs(s) >= abs(t):
        comp += (s - z) + t
    else:
        comp += (t - z) + s
    return z, comp


@njit(**JIT)
def neumaier_sum(row, scale):
    """``sum_j row[j] * scale`` of a 1-D array by Neumaier's compensated sum, left to right."""
    s = 0.0
    c = 0.0
    for x in row:
        s, c = neumaier_add(s, c, x * scale)
    return s + c
