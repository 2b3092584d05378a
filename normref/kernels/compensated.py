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
* :func:`two_prod` -- Dekker's exact product (Dekker 1971, "A floating-point
  technique for extending the available precision", Numer. Math. 18; Veltkamp's
  split): ``p + e = a b`` exactly for ``|a|, |b| < 2**996`` without fused
  multiply-add; used once per group, in the double-double finalization of the
  standardizers' statistics.
* Lane accumulators (:data:`LANES`, :func:`lane_add`, :func:`lanes_total`):
  compensated sums that the compiler vectorizes.  A TwoSum loop over one
  scalar accumulator is a serial dependency chain (about 2.6 ns per element
  here); spread over :data:`LANES` independent accumulators, lane ``j``
  receiving elements ``j, j + LANES, ...`` of a row, LLVM turns the same
  TwoSum into packed instructions *without reassociating anything* -- every
  lane does exactly the scalar arithmetic, so the result bits do not depend on
  the machine's vector width.  Two empirical rules of numba 0.68 / LLVM (the
  test ``tests/test_vectorized.py`` keeps them honest): the lane count must be
  a module-level compile-time constant of at least 16 (with 8, LLVM unrolls
  the lane loop before the vectorizer sees it and the code stays scalar), and
  all accumulators of a loop live in *one* array, ``acc[q * LANES + j]`` for
  accumulator ``q`` and lane ``j`` (separate arrays cost run-time overlap
  checks, and with many of them no vectorization at all).  The lanes are
  combined at the end in a fixed order by TwoSum into a double-double
  (:func:`lanes_total`).

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

__all__ = ["two_sum", "fast_two_sum", "two_prod", "neumaier_add", "neumaier_sum",
           "LANES", "lane_add", "lanes_total"]

#: lanes of a vectorized compensated accumulator (a compile-time constant)
LANES = 16
_SPLIT = 134217729.0  # 2**27 + 1, Veltkamp's splitter


@njit(inline="always", **JIT)
def two_sum(a, b):
    """``(fl(a + b), the exact rounding error of that addition)`` (Knuth's TwoSum)."""
    s = a + b
    bp = s - a
    return s, (a - (s - bp)) + (b - bp)


@njit(inline="always", **JIT)
def fast_two_sum(a, b):
    """``(fl(a + b), its exact rounding error)`` for ``|a| >= |b|`` (or ``a = 0``): Dekker's Fast2Sum."""
    s = a + b
    return s, b - (s - a)


@njit(inline="always", **JIT)
def two_prod(a, b):
    """``(fl(a b), the exact rounding error of that product)`` (Dekker's product)."""
    p = a * b
    t = _SPLIT * a
    ah = t - (t - a)
    al = a - ah
    t = _SPLIT * b
    bh = t - (t - b)
    bl = b - bh
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


@njit(inline="always", **JIT)
def lane_add(acc, i, e, t):
    """``acc[i] += t`` by TwoSum, its exact rounding error added to ``acc[e]``."""
    a = acc[i]
    s = a + t
    bp = s - a
    acc[e] += (a - (s - bp)) + (t - bp)
    acc[i] = s


@njit(**JIT)
def lanes_total(acc, q):
    """The compensated total of accumulator ``q`` (lanes ``acc[q*LANES:(q+1)*LANES]``,
    their rounding errors in the next ``LANES`` entries) as a normalized
    double-double ``(hi, lo)``: lanes TwoSum-added in lane order."""
    s = 0.0
    c = 0.0
    o = q * LANES
    for j in range(LANES):
        a = acc[o + j]
        t = s + a
        bp = t - s
        c += ((s - (t - bp)) + (a - bp)) + acc[o + LANES + j]
        s = t
    h = s + c
    return h, c - (h - s)


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
