"""Numba kernels for local response normalization across channels.

Layout: the input is viewed as ``(N, C, L)`` (``L`` = product of the spatial
sizes); every ``(n, l)`` position is an independent group, processed by one
``prange`` iteration, and inside it the channels and window members are
visited in ascending index order, so results do not depend on the number of
threads.

Window of channel ``c``: ``[c - lo, c + hi]`` clipped to ``[0, C - 1]`` (the
caller clamps ``lo, hi`` to ``C - 1``, so any ``size`` reaches numba as a
small int); ``a`` is the coefficient of the sum of squares (``alpha / size``
or ``alpha``), also given as a pair ``a = am 2**ea`` (exactly rounded, even
where ``alpha / size`` under- or overflows a float), like ``k = km 2**ek``
and ``beta = bm 2**eb``.

Two evaluations per element ``(n, c, l)``:

* **plain** (flag ``F = 1``): when ``a``, ``k`` are 0 or in ``[2**-100,
  2**100]``, ``|beta|`` is 0 or in ``[2**-60, 2**20]``, every nonzero ``|x|``
  of the window lies in ``[2**-100, 2**100]`` and ``s = k + a sum x**2`` and
  ``r = s**-beta`` land in ``[2**-100, 2**100]``: ``s``, ``r = pow(s, -beta)``
  and ``y = x r`` in ordinary float64.  Then ``y`` is in ``[2**-200, 2**200]``,
  ``z = y / s`` in ``[2**-300, 2**300]``, and with cotangents / tangents 0 or
  in ``[2**-364, 2**64)`` every product of the derivative formulas is a
  normal number (or a contribution below the rounding of the sum it enters),
  so the plain derivative formulas are as exact as float64 allows;
* **scaled** (``F = 0``) otherwise.  With ``2**ex`` the binade bound of the
  window's largest ``|x|``,

      s = k + a sum x_j**2 = 2**E u,
      u = am (sum (x_j 2**-ex)**2) 2**(ea + 2 ex - E) + km 2**(ek - E),
      E = max(ea + 2 ex, ek),

  so the largest term of ``u`` is O(1) whatever the sizes of ``x``, ``a``
  and ``k`` (power-of-two scalings are exact; what they flush is below
  ``2**-1074`` of that term).  ``s = Sm 2**Es`` and ``r = s**-beta = Rm
  2**Ir`` are stored as mantissa and integer exponent (``-beta Es`` split
  exactly into integer and fraction,
  :func:`normref.kernels.scaled._pow_scaled`),
  and ``y``, each derivative term ``2 a beta x_j y_c dy_c / s_c`` and the
  sums of such terms are formed from mantissas and exponents with a single
  final ``ldexp``.

Every kernel returns a per-group status: bit 1 = an exact result overflows
float64 (its entry is ``inf``), bit 2 = a denominator base ``s <= 0``.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import restamp
from ._dispatch import JIT, parallel_kernel
from .compensated import neumaier_add
from .scaled import (_BIG, _NO_EXP, _dot_pair, _frexp, _in_t_range, _ldexp, _norm_pair, _pair_add,
                     _pow_scaled)

__all__ = ["lrn_forward", "lrn_vjp", "lrn_jvp"]

_X_HI = 2.0 ** 100
_X_LO = 2.0 ** -100

_ST_OVERFLOW = 1
_ST_NONPOSITIVE = 2


@njit(**JIT)
def _scaled_element(x, n, c, l, j0, j1, am, ea, km, ek, beta):
    """Scaled evaluation of one element: ``(y, Sm, Es, Rm, Ir, status)``."""
    mx = 0.0
    for j in range(j0, j1 + 1):
        v = abs(x[n, j, l])
        if v != v or v > _BIG:
            # NaN / inf in the window propagate as NaN
            return np.nan, np.nan, np.int64(0), np.nan, np.int64(0), 0
        if v > mx:
            mx = v
    have_x = mx > 0.0 and am != 0.0
    ex = np.int64(0)
    st = 0.0
    if have_x:
        _, ex = _frexp(mx)
        for j in range(j0, j1 + 1):
            t = _ldexp(x[n, j, l], -ex)
            st += t * t
    if not have_x and km == 0.0:
        return np.nan, 0.0, np.int64(0), np.nan, np.int64(0), _ST_NONPOSITIVE
    E1 = ea + 2 * ex
    if have_x and km != 0.0:
        E = E1 if E1 >= ek else ek
    elif have_x:
        E = E1
    else:
        E = ek
    u = 0.0
    if have_x:
        u = _ldexp(am * st, E1 - E)
    if km != 0.0:
        u += _ldexp(km, ek - E)
    if not u > 0.0:
        return np.nan, u, np.int64(0), np.nan, np.int64(0), _ST_NONPOSITIVE
    sm, es = _norm_pair(u, E)
    rm, ir = _pow_scaled(sm, es, -beta)
    xc = x[n, c, l]
    yv = 0.0 * xc
    if xc != 0.0:
        xm, xe = _frexp(xc)
        yv = _ldexp(xm * rm, xe + ir)
    status = _ST_OVERFLOW if abs(yv) > _BIG else 0
    return yv, sm, es, rm, ir, status


@parallel_kernel
def lrn_forward(x, lo, hi, a, k, beta, am, ea, km, ek, fast_ok):
    """Return ``(y, Rr, Ir, Ss, Es, F, status)``.

    ``r = s**-beta = Rr 2**Ir``, ``s = Ss 2**Es`` (plain elements: ``Ir = Es =
    0``), ``F`` the plain-path flags, ``status`` per ``(n, l)`` group.
    """
    N, C, L = x.shape
    y = np.empty_like(x)
    Rr = np.empty_like(x)
    Ss = np.empty_like(x)
    Ir = np.empty(x.shape, dtype=np.int64)
    Es = np.empty(x.shape, dtype=np.int64)
    F = np.empty(x.shape, dtype=np.int8)
    status = np.zeros((N, L), dtype=np.int8)
    for p in prange(N * L):
        n = p // L
        l = p - n * L
        for c in range(C):
            j0 = max(c - lo, 0)
            j1 = min(c + hi, C - 1)
            ok = fast_ok
            ss = 0.0
            for j in range(j0, j1 + 1):
                t = x[n, j, l]
                v = abs(t)
                if not (v <= _X_HI and (v >= _X_LO or v == 0.0)):
                    ok = False
                ss += t * t
            if ok:
                s = k + a * ss
                if s >= _X_LO and s <= _X_HI:
                    r = s ** (-beta)
                    if r >= _X_LO and r <= _X_HI:
                        Ss[n, c, l] = s
                        Es[n, c, l] = 0
                        Rr[n, c, l] = r
                        Ir[n, c, l] = 0
                        F[n, c, l] = 1
                        y[n, c, l] = x[n, c, l] * r
                        continue
            yv, sm, es, rm, ir, st = _scaled_element(x, n, c, l, j0, j1, am, ea, km, ek, beta)
            Ss[n, c, l] = sm
            Es[n, c, l] = es
            Rr[n, c, l] = rm
            Ir[n, c, l] = ir
            F[n, c, l] = 0
            y[n, c, l] = yv
            status[n, l] |= st
    return y, Rr, Ir, Ss, Es, F, status


@njit(**JIT)
def _z_pair(x, Rr, Ir, Ss, Es, n, c, l):
    """``z_c = x_c r_c / s_c = y_c / s_c`` as a pair."""
    xc = x[n, c, l]
    if xc == 0.0:
        return 0.0 * Rr[n, c, l], np.int64(0)
    xm, xe = _frexp(xc)
    rm, ir = _norm_pair(Rr[n, c, l], Ir[n, c, l])
    sm, es = _norm_pair(Ss[n, c, l], Es[n, c, l])
    return _norm_pair(xm * rm / sm, xe + ir - es)


@njit(**JIT)
def _f_minus(v, Rr, Ir, n, c, l, pm, pe, qm, qe, zero, am, ea, bm, eb):
    """``f - 2 a beta p q`` with ``f = v_c r_c`` (``v`` the cotangent or tangent), from
    pairs with one final rounding; ``zero`` is the product's signed zero where a
    factor of ``2 a beta p q`` is 0."""
    tm, te = _frexp(v[n, c, l])
    rm, ir = _norm_pair(Rr[n, c, l], Ir[n, c, l])
    fm, fe = _norm_pair(tm * rm, te + ir)
    if pm == 0.0 or qm == 0.0 or am == 0.0 or bm == 0.0:
        cm = zero
        ce = np.int64(0)
    else:
        cm, ce = _norm_pair(2.0 * bm * am * pm * qm, eb + ea + pe + qe)
    rm, re = _pair_add(fm, fe, -cm, ce)
    return _ldexp(rm, re)


@njit(**JIT)
def _vjp_scaled(x, Rr, Ir, Ss, Es, dy, n, j, l, c0, c1, am, ea, bm, eb):
    """``dx_j = dy_j r_j - 2 a beta x_j sum_c dy_c z_c`` in pairs."""
    emax = _NO_EXP
    for c in range(c0, c1 + 1):
        t = dy[n, c, l]
        if t != 0.0:
            zm, ze = _z_pair(x, Rr, Ir, Ss, Es, n, c, l)
            if zm != 0.0:
                _, et = _frexp(t)
                if ze + et > emax:
                    emax = ze + et
    Am = 0.0
    Ae = np.int64(0)
    if emax != _NO_EXP:
        s = 0.0
        comp = 0.0
        for c in range(c0, c1 + 1):
            t = dy[n, c, l]
            if t != 0.0:
                zm, ze = _z_pair(x, Rr, Ir, Ss, Es, n, c, l)
                if zm != 0.0:
                    tm, et = _frexp(t)
                    s, comp = neumaier_add(s, comp, _ldexp(tm * zm, ze + et - emax))
        Am, Ae = _norm_pair(s + comp, emax)
    xm, xe = _frexp(x[n, j, l])
    return _f_minus(dy, Rr, Ir, n, j, l, xm, xe, Am, Ae, 0.0 * Am, am, ea, bm, eb)


@parallel_kernel
def lrn_vjp(x, y, Rr, Ir, Ss, Es, F, dy, lo, hi, two_ab, am, ea, bm, eb):
    """Input cotangent ``dx_j = dy_j r_j - 2 a beta x_j sum_{c: j in W(c)} dy_c y_c / s_c``.

    ``j in W(c)`` iff ``c in [j - hi, j + lo]`` (the transposed window).
    Plain where every ``c`` of that window is plain and its ``dy_c`` is 0 or in
    ``[2**-364, 2**64)`` (then ``dy_c y_c / s_c`` is precomputed once per
    element), scaled otherwise.  Returns ``(dx, status)``.
    """
    N, C, L = x.shape
    dx = np.empty_like(x)
    tmp = np.empty_like(x)
    status = np.zeros((N, L), dtype=np.int8)
    for p in prange(N * L):
        n = p // L
        l = p - n * L
        for c in range(C):
            t = dy[n, c, l]
            if F[n, c, l] == 1 and _in_t_range(t):
                tmp[n, c, l] = t * (y[n, c, l] / Ss[n, c, l])
            else:
                tmp[n, c, l] = np.nan
        for j in range(C):
            c0 = max(j - hi, 0)
            c1 = min(j + lo, C - 1)
            if F[n, j, l] == 1:
                acc = 0.0
                for c in range(c0, c1 + 1):
                    acc += tmp[n, c, l]
                if acc == acc:
                    dx[n, j, l] = dy[n, j, l] * Rr[n, j, l] - two_ab * x[n, j, l] * acc
                    continue
            r = _vjp_scaled(x, Rr, Ir, Ss, Es, dy, n, j, l, c0, c1, am, ea, bm, eb)
            if abs(r) > _BIG:
                status[n, l] |= _ST_OVERFLOW
            dx[n, j, l] = r
    return dx, status


@njit(**JIT)
def _jvp_scaled(x, Rr, Ir, Ss, Es, t, n, c, l, j0, j1, am, ea, bm, eb):
    """``ty_c = t_c r_c - 2 a beta z_c sum_{j in W(c)} x_j t_j`` in pairs."""
    Bm, Be = _dot_pair(x[n, j0:j1 + 1, l], t[n, j0:j1 + 1, l], 0)
    zm, ze = _z_pair(x, Rr, Ir, Ss, Es, n, c, l)
    return _f_minus(t, Rr, Ir, n, c, l, zm, ze, Bm, Be, 0.0 * zm * Bm, am, ea, bm, eb)


@parallel_kernel
def lrn_jvp(x, y, Rr, Ir, Ss, Es, F, t, lo, hi, two_ab, am, ea, bm, eb):
    """Output tangent ``ty_c = t_c r_c - 2 a beta (y_c / s_c) sum_{j in W(c)} x_j t_j``.

    Returns ``(ty, status)``.
    """
    N, C, L = x.shape
    ty = np.empty_like(x)
    tmp = np.empty_like(x)
    status = np.zeros((N, L), dtype=np.int8)
    for p in prange(N * L):
        n = p // L
        l = p - n * L
        for j in range(C):
            tv = t[n, j, l]
            tmp[n, j, l] = x[n, j, l] * tv if _in_t_range(tv) else np.nan
        for c in range(C):
            j0 = max(c - lo, 0)
            j1 = min(c + hi, C - 1)
            if F[n, c, l] == 1:
                acc = 0.0
                for j in range(j0, j1 + 1):
                    acc += tmp[n, j, l]
                if acc == acc:
                    ty[n, c, l] = (t[n, c, l] * Rr[n, c, l]
                                   - two_ab * (y[n, c, l] / Ss[n, c, l]) * acc)
                    continue
            r = _jvp_scaled(x, Rr, Ir, Ss, Es, t, n, c, l, j0, j1, am, ea, bm, eb)
            if abs(r) > _BIG:
                status[n, l] |= _ST_OVERFLOW
            ty[n, c, l] = r
    return ty, status


restamp(globals())
