"""Scaled arithmetic: numbers carried as (mantissa, integer exponent) pairs.

The scaled paths of the Lp-norm kernels (:mod:`normref.kernels.lp`,
:mod:`~normref.kernels.normalize`, :mod:`~normref.kernels.weight_norm`) and of
local response normalization (:mod:`normref.kernels.lrn`) form every
intermediate whose magnitude could over- or underflow float64 from the helpers
here, so that nothing over- or underflows before the last step.

Representation.  A *pair* ``(m, e)``, ``m`` a float64 and ``e`` an int64,
stands for the real number ``m 2**e`` exactly.  It is *normalized* when
``|m|`` is in ``[0.5, 1)`` (``frexp``'s convention); zero is ``(+-0.0, 0)`` and
NaN / inf keep their mantissa with exponent 0.  Exponents made here are
clamped to ``+-_EXP_CAP = 2**40``: far beyond any float64 (a clamped pair
still converts to 0 or inf), and sums of a few of them cannot overflow int64.
Products and quotients multiply normalized mantissas (the result lies in
``[0.25, 4)``: no over- or underflow, one rounding) and add exponents; sums are
taken relative to the largest exponent; a float64 result comes from one final
:func:`_ldexp`, its only rounding into the float range.

Contracts (``_`` names are internal to the kernels):

* ``_ldexp(m, e)``: ``m 2**e`` for a float ``m`` and any int64 ``e``, one
  rounding (correct in the subnormal range); 0, NaN and inf ``m`` come back
  unchanged, and ``e`` beyond ``[-2300, 2200]`` gives +-0 / +-inf (what the
  exact value rounds to, for every finite ``m``), never an integer wrap-around.
* ``_frexp(v)``: the normalized pair of ``v`` (``(v, 0)`` for 0, NaN, inf),
  exact, the exponent as int64.
* ``_cap(n)``: an integer-valued float exponent as int64 clamped to
  ``+-_EXP_CAP`` (NaN -> 0).
* ``_norm_pair(m, e)``: the normalized pair of ``m 2**e`` (exact; 0, NaN and
  inf -> ``(m, 0)``).
* ``_pair_add(am, ae, bm, be)``: ``a + b``, normalized: a zero mantissa returns
  the other pair unchanged; else both are aligned to the larger exponent ``E``
  and added in one rounding (the smaller loses only what lies below
  ``2**(E - 1074)``).
* ``_two_prod_err(a, b, p)``: the exact error ``a b - p`` of ``p = fl(a b)``
  (Dekker), for ``|a|, |b| < 2**996`` and no underflow.
* ``_split_prod(q, k)``: ``q k = n + f`` for an integer ``k``: ``n`` an
  integer-valued float, ``|f| <= 0.5`` plus a rounding-level remainder, exact
  for ``|q k| < 2**52``; else ``(fl(q k), 0)``.
* ``_exp2_pair(L)``: ``2**L`` as a normalized pair for any float ``L``, the
  integer part of ``L`` exactly in the exponent (clamped, so a huge ``L`` means
  0 / inf), ``2**(fraction)`` in one rounding; NaN -> ``(NaN, 0)``.
* ``_pow_scaled(m, k, q)``: ``(m 2**k)**q`` as a normalized pair for a finite
  ``m > 0``, any int ``k`` and float ``q``, without over- or underflow (see its
  docstring for the evaluation).
* ``_dot_pair(a, b, e0)``: ``sum_j a_j b_j 2**-e0`` of two 1-D arrays as a
  normalized pair; every product ``(ma mb) 2**(ea + eb)`` is exact, the terms
  are aligned to the largest product's exponent (smaller ones lose only what
  lies below ``2**-1074`` of it) and summed by Neumaier's compensated sum
  (:func:`normref.kernels.compensated.neumaier_add`); ``(0, 0)``
  when no product is nonzero.

The plain paths of those kernels take cotangent / tangent entries that are 0
or in ``[_T_LO, _T_HI) = [2**-364, 2**64)`` (:func:`_in_t_range`); each kernel
module's docstring says why that band is enough there.  Everything else goes
the scaled way.

numba's on-disk cache keys a kernel by its own source file only; the modules
calling these helpers re-key their kernels to the sources of all of
``normref.kernels`` (:func:`normref.kernels.restamp`), so an edit here is never
served stale.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from . import restamp
from ._dispatch import JIT
from .compensated import neumaier_add, two_prod

_BIG = 1.7976931348623157e308    # largest finite float64
_LN2 = math.log(2.0)
_EXP_CAP = 1 << 40               # |exponent| beyond this means 0 or inf
_NO_EXP = -(1 << 62)             # "no term yet" marker for max-exponent scans
# the cotangent / tangent band of the plain paths
_T_HI = 2.0 ** 64
_T_LO = 2.0 ** -364


@njit(**JIT)
def _ldexp(m, e):
    """``m * 2**e`` for any int64 ``e`` (0 or inf beyond the range, no wrap-around)."""
    if m == 0.0 or m != m or abs(m) > _BIG:
        return m
    if e > 2200:
        return m * np.inf
    if e < -2300:
        return m * 0.0
    return math.ldexp(m, e)


@njit(**JIT)
def _frexp(v):
    """``(m, e)``: ``v = m 2**e``, ``|m|`` in ``[0.5, 1)`` (``(0, 0)`` for zero)."""
    m, e = math.frexp(v)
    return m, np.int64(e)


@njit(**JIT)
def _cap(n):
    """A float exponent as int64, clamped to +-_EXP_CAP (NaN -> 0)."""
    if n != n:
        return np.int64(0)
    if n > _EXP_CAP:
        return np.int64(_EXP_CAP)
    if n < -_EXP_CAP:
        return np.int64(-_EXP_CAP)
    return np.int64(n)


@njit(**JIT)
def _norm_pair(m, e):
    """Renormalize a pair so that ``|m|`` is in ``[0.5, 1)``."""
    if m == 0.0 or m != m or abs(m) > _BIG:
        return m, np.int64(0)
    mm, ee = _frexp(m)
    return mm, e + ee


@njit(**JIT)
def _pair_add(am, ae, bm, be):
    """``a + b`` of two pairs; the smaller is aligned to the larger exponent."""
    if am == 0.0:
        return bm, be
    if bm == 0.0:
        return am, ae
    E = ae if ae >= be else be
    s = _ldexp(am, ae - E) + _ldexp(bm, be - E)
    return _norm_pair(s, E)


@njit(**JIT)
def _two_prod_err(a, b, p):
    """Error of ``p = fl(a * b)`` (Dekker's product, :func:`~normref.kernels.compensated.two_prod`),
    for ``|a|, |b| < 2**996``."""
    return two_prod(a, b)[1]


@njit(**JIT)
def _split_prod(q, k):
    """``q * k = n + f``: ``n`` an integer-valued float, ``|f| <= 0.5`` (plus a
    rounding-level remainder), exact for ``|q k| < 2**52``; else ``(q k, 0)``."""
    kf = float(k)
    p = q * kf
    if not abs(p) < 4503599627370496.0:
        return p, 0.0
    err = _two_prod_err(q, kf, p)
    n = np.floor(p + 0.5)
    return n, (p - n) + err


@njit(**JIT)
def _exp2_pair(L):
    """``2**L`` as a pair (the exponent clamped, so huge ``L`` means 0 / inf)."""
    if L != L:
        return np.nan, np.int64(0)
    if not abs(L) < 4503599627370496.0:
        return 0.5, _cap(L) + 1
    n = np.floor(L + 0.5)
    v = 2.0 ** (L - n)
    vm, ve = _frexp(v)
    return vm, _cap(n) + ve


@njit(**JIT)
def _pow_scaled(m, k, q):
    """``(m 2**k)**q`` as ``(mantissa in [0.5, 1), int exponent)``, ``m > 0`` finite.

    ``q k`` is split exactly into integer and fraction; ``m**q`` is ``pow``
    when ``|q| <= 1000`` (then it lies in ``[2**-1000, 2**1000]``), else
    ``2**(q log2 m)`` (``log1p`` of the value minus one when it lies in
    ``[0.5, 2)``, where ``log2`` would lose the digits that ``q`` magnifies).
    """
    mm, kk = _frexp(m)
    k = k + kk
    if abs(q) <= 1000.0 and k >= -1000 and k <= 1000:
        # the value is a normal float: pow on it, when the result is in range
        r = math.ldexp(mm, k) ** q
        if r >= 9.332636185032189e-302 and r <= 1.0715086071862673e301:
            return _frexp(r)
    if abs(q) <= 1000.0:
        n1, f1 = _split_prod(q, k)
        v = (mm ** q) * (2.0 ** f1)
        vm, ve = _frexp(v)
        return vm, _cap(n1) + ve
    if k == 0 or k == 1:
        lv = math.log1p(math.ldexp(mm, k) - 1.0) / _LN2
        return _exp2_pair(q * lv)
    n1, f1 = _split_prod(q, k)
    t = q * math.log2(mm)          # |t| <= |q|, finite
    if not abs(n1) < 4503599627370496.0:
        return _exp2_pair(n1 + t)
    n2 = np.floor(t + 0.5)
    v = 2.0 ** (f1 + (t - n2))
    vm, ve = _frexp(v)
    return vm, _cap(n1 + n2) + ve


@njit(**JIT)
def _dot_pair(a, b, e0):
    """``sum_j a[j] b[j] 2**-e0`` of two 1-D arrays as a pair, exact up to a compensated sum.

    Each product is ``(ma mb) 2**(ea + eb)``; the terms are aligned to the
    largest exponent (smaller ones only lose what is below ``2**-1074`` of it).
    """
    emax = _NO_EXP
    for j in range(a.shape[0]):
        if a[j] != 0.0 and b[j] != 0.0:
            _, ea = _frexp(a[j])
            _, eb = _frexp(b[j])
            if ea + eb > emax:
                emax = ea + eb
    if emax == _NO_EXP:
        return 0.0, np.int64(0)
    s = 0.0
    comp = 0.0
    for j in range(a.shape[0]):
        if a[j] != 0.0 and b[j] != 0.0:
            ma, ea = _frexp(a[j])
            mb, eb = _frexp(b[j])
            s, comp = neumaier_add(s, comp, _ldexp(ma * mb, ea + eb - emax))
    return _norm_pair(s + comp, emax - e0)


@njit(**JIT)
def _in_t_range(v):
    """``v`` is 0 or ``|v|`` in ``[2**-364, 2**64)``: a cotangent / tangent entry of the plain paths."""
    a = abs(v)
    return a == 0.0 or (a >= _T_LO and a < _T_HI)


restamp(globals())
