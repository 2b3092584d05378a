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
  exactly into integer and fraction, :func:`_pow_scaled`),
  and ``y``, each derivative term ``2 a beta x_j y_c dy_c / s_c`` and the
  sums of such terms are formed from mantissas and exponents with a single
  final ``ldexp``.

Every kernel returns a per-group status: bit 1 = an exact result overflows
float64 (its entry is ``inf``), bit 2 = a denominator base ``s <= 0``.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ._dispatch import parallel_kernel

__all__ = ["lrn_forward", "lrn_vjp", "lrn_jvp"]

_BIG = 1.7976931348623157e308
_LN2 = math.log(2.0)
_EXP_CAP = 1 << 40               # |exponent| beyond this means 0 or inf
_NO_EXP = -(1 << 62)             # "no term yet" marker for max-exponent scans
_X_HI = 2.0 ** 100
_X_LO = 2.0 ** -100
_T_HI = 2.0 ** 64
_T_LO = 2.0 ** -364

_ST_OVERFLOW = 1
_ST_NONPOSITIVE = 2


# The helpers below are the same as in normref.kernels.lp, copied on purpose:
# numba's on-disk cache is invalidated only by changes to the file that
# defines a kernel, so kernels here must not call njit functions of lp.py.
@njit(cache=True, fastmath=False)
def _ldexp(m, e):
    """``m * 2**e`` for any int64 ``e`` (0 or inf beyond the range, no wrap-around)."""
    if m == 0.0 or m != m or abs(m) > _BIG:
        return m
    if e > 2200:
        return m * np.inf
    if e < -2300:
        return m * 0.0
    return math.ldexp(m, e)


@njit(cache=True, fastmath=False)
def _frexp(v):
    """``(m, e)``: ``v = m 2**e``, ``|m|`` in ``[0.5, 1)`` (``(0, 0)`` for zero)."""
    m, e = math.frexp(v)
    return m, np.int64(e)


@njit(cache=True, fastmath=False)
def _cap(n):
    """A float exponent as int64, clamped to +-_EXP_CAP (NaN -> 0)."""
    if n != n:
        return np.int64(0)
    if n > _EXP_CAP:
        return np.int64(_EXP_CAP)
    if n < -_EXP_CAP:
        return np.int64(-_EXP_CAP)
    return np.int64(n)


@njit(cache=True, fastmath=False)
def _norm_pair(m, e):
    """Renormalize a pair so that ``|m|`` is in ``[0.5, 1)``."""
    if m == 0.0 or m != m or abs(m) > _BIG:
        return m, np.int64(0)
    mm, ee = _frexp(m)
    return mm, e + ee


@njit(cache=True, fastmath=False)
def _pair_add(am, ae, bm, be):
    """``a + b`` of two pairs; the smaller is aligned to the larger exponent."""
    if am == 0.0:
        return bm, be
    if bm == 0.0:
        return am, ae
    E = ae if ae >= be else be
    s = _ldexp(am, ae - E) + _ldexp(bm, be - E)
    return _norm_pair(s, E)


@njit(cache=True, fastmath=False)
def _two_prod_err(a, b, p):
    """Error of ``p = fl(a * b)`` (Dekker), for ``|a|, |b| < 2**996``."""
    c = 134217729.0
    t = c * a
    ah = t - (t - a)
    al = a - ah
    t = c * b
    bh = t - (t - b)
    bl = b - bh
    return ((ah * bh - p) + ah * bl + al * bh) + al * bl


@njit(cache=True, fastmath=False)
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


@njit(cache=True, fastmath=False)
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


@njit(cache=True, fastmath=False)
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



@njit(cache=True, fastmath=False)
def _in_t_range(v):
    a = abs(v)
    return a == 0.0 or (a >= _T_LO and a < _T_HI)


@njit(cache=True, fastmath=False)
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


@parallel_kernel(cache=True, fastmath=False)
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


@njit(cache=True, fastmath=False)
def _z_pair(x, Rr, Ir, Ss, Es, n, c, l):
    """``z_c = x_c r_c / s_c = y_c / s_c`` as a pair."""
    xc = x[n, c, l]
    if xc == 0.0:
        return 0.0 * Rr[n, c, l], np.int64(0)
    xm, xe = _frexp(xc)
    rm, ir = _norm_pair(Rr[n, c, l], Ir[n, c, l])
    sm, es = _norm_pair(Ss[n, c, l], Es[n, c, l])
    return _norm_pair(xm * rm / sm, xe + ir - es)


@njit(cache=True, fastmath=False)
def _combine(fm, fe, xj, Am, Ae, am, ea, bm, eb):
    """``f - 2 a beta x_j A`` from pairs, with one final rounding."""
    if xj == 0.0 or am == 0.0 or bm == 0.0 or Am == 0.0:
        cm = 0.0 * Am
        ce = np.int64(0)
    else:
        xm, xe = _frexp(xj)
        cm, ce = _norm_pair(2.0 * bm * am * xm * Am, eb + ea + xe + Ae)
    rm, re = _pair_add(fm, fe, -cm, ce)
    return _ldexp(rm, re)


@njit(cache=True, fastmath=False)
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
                    term = _ldexp(tm * zm, ze + et - emax)
                    w = s + term
                    if abs(s) >= abs(term):
                        comp += (s - w) + term
                    else:
                        comp += (term - w) + s
                    s = w
        Am, Ae = _norm_pair(s + comp, emax)
    dm, de = _frexp(dy[n, j, l])
    rm, ir = _norm_pair(Rr[n, j, l], Ir[n, j, l])
    fm, fe = _norm_pair(dm * rm, de + ir)
    return _combine(fm, fe, x[n, j, l], Am, Ae, am, ea, bm, eb)


@parallel_kernel(cache=True, fastmath=False)
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


@njit(cache=True, fastmath=False)
def _jvp_scaled(x, Rr, Ir, Ss, Es, t, n, c, l, j0, j1, am, ea, bm, eb):
    """``ty_c = t_c r_c - 2 a beta z_c sum_{j in W(c)} x_j t_j`` in pairs."""
    emax = _NO_EXP
    for j in range(j0, j1 + 1):
        xv = x[n, j, l]
        tv = t[n, j, l]
        if xv != 0.0 and tv != 0.0:
            _, e1 = _frexp(xv)
            _, e2 = _frexp(tv)
            if e1 + e2 > emax:
                emax = e1 + e2
    Bm = 0.0
    Be = np.int64(0)
    if emax != _NO_EXP:
        s = 0.0
        comp = 0.0
        for j in range(j0, j1 + 1):
            xv = x[n, j, l]
            tv = t[n, j, l]
            if xv != 0.0 and tv != 0.0:
                m1, e1 = _frexp(xv)
                m2, e2 = _frexp(tv)
                term = _ldexp(m1 * m2, e1 + e2 - emax)
                w = s + term
                if abs(s) >= abs(term):
                    comp += (s - w) + term
                else:
                    comp += (term - w) + s
                s = w
        Bm, Be = _norm_pair(s + comp, emax)
    zm, ze = _z_pair(x, Rr, Ir, Ss, Es, n, c, l)
    tm, te = _frexp(t[n, c, l])
    rm, ir = _norm_pair(Rr[n, c, l], Ir[n, c, l])
    fm, fe = _norm_pair(tm * rm, te + ir)
    # 2 a beta z_c B: pass z_c as the "x_j" factor through a pair product
    if zm == 0.0 or Bm == 0.0 or am == 0.0 or bm == 0.0:
        cm = 0.0 * zm * Bm
        ce = np.int64(0)
    else:
        cm, ce = _norm_pair(2.0 * bm * am * zm * Bm, eb + ea + ze + Be)
    qm, qe = _pair_add(fm, fe, -cm, ce)
    return _ldexp(qm, qe)


@parallel_kernel(cache=True, fastmath=False)
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
