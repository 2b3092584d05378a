"""Numba kernels for Lp norms of rows, shared by ``normalize`` and ``weight_norm``.

Layout: a C-contiguous ``(R, D)`` float64 array; every row is an independent
group (one ``prange`` iteration) reduced left to right (the norm's sum with a
Neumaier compensated sum), so results do not depend on the number of threads.

Plain and scaled paths.  The kernels of :mod:`normref.kernels.normalize` and
:mod:`normref.kernels.weight_norm` evaluate every quantity of a row one of two
ways: ordinary float64 formulas (the **plain path**) where the row's nonzero
entries lie in ``[_X_LO, _X_HI] = [2**-120, 2**120]`` and the cotangent /
tangent entries are 0 or in ``[2**-364, 2**64)`` (plus conditions of each
kernel), else the **scaled path**: every factor as a ``(mantissa, integer
exponent)`` pair (:mod:`normref.kernels.scaled`), one final ``ldexp``.

Norms.  With ``m = max |x|`` of the row and ``2**e`` its binade bound
(``m = f 2**e``, ``f`` in ``[0.5, 1)``), ``x~ = x 2**-e`` (exact) and
``S = sum |x~|**p``, ``N = ||x||_p = 2**e S**(1/p)``:

* ``1 <= p < 512``: ``S`` in ``[2**-p, D]`` by a compensated sum of
  ``|x~|**p``; ``N = (S**(1/p)) 2**e``;
* ``p >= 512``: ``S^ = sum (|x|/m)**p`` in ``[1, D]`` (``2**-p`` would
  underflow), ``N = m S^**(1/p)``;
* ``p < 1``: ``S**(1/p)`` can overflow (``5**1000``), so ``log2 N = e +
  log1p(S - 1) / (p ln 2)`` with ``S - 1 = expm1(p ln f) + sum_{j != argmax}
  |x~_j|**p`` (terms of subnormal ``x~`` as ``2**(p log2|x~|)``), kept as a
  pair; the ``expm1`` / ``log1p`` form keeps ``N`` exact when one entry
  dominates (``p = 1e-300``: ``N = max|x|``, not ``2**e``);
* ``p = inf``: ``N = m``, with the index of the first maximum (the element
  that carries the subgradient).

A row with a single nonzero entry has ``N = m`` exactly for every ``p``.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from . import restamp
from ._dispatch import JIT, parallel_kernel
from .compensated import neumaier_add
from .scaled import _BIG, _LN2, _exp2_pair, _frexp, _ldexp

__all__ = ["lp_norm_rows"]

_TINY = 2.2250738585072014e-308  # smallest normal float64
# plain-path bounds of the row entries (see the module docstring and the kernels)
_X_HI = 2.0 ** 120
_X_LO = 2.0 ** -120

# row kinds
_ROW_OK = 0
_ROW_NONFINITE = 1
_ROW_ZERO = 2
# status bits
_ST_OVERFLOW = 1
_ST_ZERO = 2


@njit(**JIT)
def _row_scan(x, i):
    """``(m, arg, kind)``: max |x|, index of the first max, row kind."""
    D = x.shape[1]
    m = 0.0
    arg = 0
    for j in range(D):
        v = abs(x[i, j])
        if v != v or v > _BIG:
            return v, j, _ROW_NONFINITE
        if v > m:
            m = v
            arg = j
    if m == 0.0:
        return m, arg, _ROW_ZERO
    return m, arg, _ROW_OK


@njit(**JIT)
def _row_norm_pair(x, i, p, m, arg):
    """``(Nm, eN, e)``: ``||x[i]||_p = Nm 2**eN`` and ``2**e`` the binade of ``m``."""
    D = x.shape[1]
    fm, e = _frexp(m)
    if p == np.inf:
        return fm, e, e
    s = 0.0
    comp = 0.0
    nnz = 0
    if p >= 512.0:
        for j in range(D):
            a = abs(x[i, j])
            nnz += 1 if a != 0.0 else 0
            s, comp = neumaier_add(s, comp, (a / m) ** p)
        if nnz == 1:
            return fm, e, e
        return fm * (s + comp) ** (1.0 / p), e, e
    if p == 1.0 or p == 2.0:
        # one nonzero entry needs no special case: S = |x~| (p = 1) and
        # sqrt(fl(x~**2)) = |x~| (p = 2) are exact
        for j in range(D):
            a = abs(math.ldexp(x[i, j], -e))
            s, comp = neumaier_add(s, comp, a if p == 1.0 else a * a)
        s = s + comp
        return (s if p == 1.0 else math.sqrt(s)), e, e
    if p >= 1.0:
        for j in range(D):
            a = abs(math.ldexp(x[i, j], -e))
            nnz += 1 if a != 0.0 else 0
            s, comp = neumaier_add(s, comp, a ** p)
        if nnz == 1:
            return fm, e, e
        return (s + comp) ** (1.0 / p), e, e
    # p < 1: log2 N = e + log1p(S - 1) / (p ln 2)
    s = math.expm1(p * math.log(fm))
    for j in range(D):
        v = x[i, j]
        if v == 0.0 or j == arg:
            continue
        nnz += 1
        mv, ev = _frexp(v)
        k = ev - e
        if k >= -1021:
            t = abs(math.ldexp(v, -e)) ** p
        else:
            t = 2.0 ** (p * (math.log2(abs(mv)) + float(k)))
        s, comp = neumaier_add(s, comp, t)
    if nnz == 0:
        return fm, e, e
    L = math.log1p(s + comp) / (p * _LN2)
    vm, ve = _exp2_pair(L)
    return vm, ve + e, e


@njit(**JIT)
def _row_norm(x, i, p):
    """``(||x[i]||_p, index of the first max |x|)``; NaN propagates, inf gives inf."""
    m, arg, kind = _row_scan(x, i)
    if kind != _ROW_OK:
        return m, arg
    Nm, eN, _ = _row_norm_pair(x, i, p, m, arg)
    return _ldexp(Nm, eN), arg


@parallel_kernel
def lp_norm_rows(x, p):
    """``(norms, argmax)`` of the rows of ``x`` (``inf`` where the norm overflows)."""
    R = x.shape[0]
    nrm = np.empty(R)
    arg = np.empty(R, dtype=np.int64)
    for i in prange(R):
        nv, a = _row_norm(x, i, p)
        nrm[i] = nv
        arg[i] = a
    return nrm, arg


restamp(globals())
