"""Numba kernels of ``normalize``: ``y = x / max(||x||_p, eps)`` over rows.

Layout and norms as in :mod:`normref.kernels.lp` (one row = one ``prange``
iteration, reduced left to right).  Two evaluations of every derivative,
chosen per row:

* the **plain path**, ordinary float64 formulas, taken when ``p`` is 1, 2,
  inf or in ``[1, 4]``, the row's nonzero entries lie in ``[2**-120,
  2**120]`` and the cotangent / tangent entries are 0 or in ``[2**-364,
  2**64)`` (and, for other ``p`` in ``[1, 4]``, every nonzero ``|g_j| >=
  2**-300``): then every intermediate (``y``, ``g``, ``y * dy``, their sums,
  ``1/N``) is a normal number or a contribution below the rounding of the
  sum it enters, so the plain formulas are as exact as float64 allows;
* the **scaled path** everywhere else: every factor is carried as a pair
  ``(mantissa, integer exponent)`` (:mod:`normref.kernels.scaled`), products
  and quotients multiply mantissas and add exponents, sums are taken relative
  to the largest term's exponent, powers ``(m 2**k)**q`` split ``q k``
  exactly into an integer and a fraction, and each result is formed by one
  final ``ldexp``.  Nothing over- or underflows before that last step,
  whatever the magnitudes of ``x``, ``g``, ``p``.

The quotient ``y = x / N`` is one division when ``N`` is a normal number,
else ``(mx / mN) 2**(ex - eN)`` with one final ``ldexp``.

Derivatives in scaled units.  With ``g_j = dN/dx_j = sign(x_j) (|x_j|/N)**(p-1)``
and ``G_j = sign(x_j) |x~_j|**(p-1) = sign(x_j) |x~_j|**p / |x~_j|`` (no
rounding of ``p - 1``), the products whose factors over- and underflow
separately are formed as

    g_j (y . dy) = G_j S**-1 sum_k x~_k dy_k,     (y g^T t)_i = x~_i S**-1 sum_j G_j t_j,

so ``dx = (dy - g (y . dy)) / N`` and ``ty = (t - y (g . t)) / N`` get ``1/N``
applied last (``p = inf``: ``G`` = the sign at the first maximum, ``S = f``).
A result whose exact value overflows float64 comes back as ``inf`` with the
row's status flag set; the Python layer raises ValueError.

Performance notes.  The plain loops of the derivative kernels are written
out: a per-row call of a function taking arrays, and even a scalar helper
inlined into the row scan, cost 3-6%.  Rows off the norm branch call
:func:`_off_norm_row`, and the scaled path runs in a second ``prange`` loop,
entered only when some row needs it.  The per-row residuals
are one ``(R, 8)`` float64 array (one cache line per row) rather than several
small arrays written from the threads, which was measurably faster in the
parallel builds.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from . import restamp
from ._dispatch import JIT, parallel_kernel
from .compensated import neumaier_add
from .lp import (_ROW_NONFINITE, _ROW_OK, _ROW_ZERO, _ST_OVERFLOW, _ST_ZERO, _TINY, _X_HI, _X_LO,
                 _row_norm_pair, _row_scan)
from .scaled import (_BIG, _NO_EXP, _T_HI, _T_LO, _dot_pair, _frexp, _ldexp, _norm_pair, _pair_add,
                     _pow_scaled)

__all__ = [
    "normalize_forward",
    "normalize_vjp",
    "normalize_jvp",
    "normalize_jacobian_blocks",
    "normalize_norm_gradient",
]

_G_LO = 2.0 ** -300              # smallest nonzero |g_j| of the plain path (p not 1, 2, inf)


@njit(**JIT)
def _forward_row(x, y, i, p, eps):
    """Row ``i`` of :func:`normalize_forward`: writes ``y[i]`` and returns
    ``(nv, Nm, eN, e, arg, kind, fast, status, need)``; ``need = 2`` (N
    overflows or is subnormal) leaves ``y[i]`` to the second loop."""
    D = x.shape[1]
    m, arg, kind = _row_scan(x, i)
    Nm = 0.0
    eN = np.int64(0)
    e = np.int64(0)
    fast = 0
    sti = 0
    if kind == _ROW_NONFINITE:
        d = m if m == m else np.nan
        nv = d
        Nm = d
    elif kind == _ROW_ZERO:
        nv = 0.0
        d = eps
        if not eps > 0.0:
            sti = _ST_ZERO
            d = np.nan
    else:
        Nm, eN, e = _row_norm_pair(x, i, p, m, arg)
        Nm, eN = _norm_pair(Nm, eN)
        nv = _ldexp(Nm, eN)
        if eps > 0.0 and nv < eps:
            d = eps
        elif nv >= _TINY and nv <= _BIG:
            d = nv
            # candidate for the plain derivative path (the derivative kernels
            # also check the smallest nonzero |x| and the cotangent range)
            if m <= _X_HI and (p == np.inf or (p >= 1.0 and p <= 4.0)):
                fast = 1
        else:
            return nv, Nm, eN, e, arg, kind, 0, 0, 2
    for j in range(D):
        y[i, j] = x[i, j] / d
    return nv, Nm, eN, e, arg, kind, fast, sti, 0


#: columns of the per-row residual array of normalize_forward
_NV, _NM, _EN, _E, _ARG, _KIND, _FAST, _STAT = 0, 1, 2, 3, 4, 5, 6, 7


@parallel_kernel
def normalize_forward(x, p, eps):
    """``y = x / max(N, eps)`` row-wise and the residuals.

    Returns ``(y, res)``; ``res`` is ``(R, 8)`` float64, one cache line per row
    (separate small per-row arrays written from the threads were measurably
    slower): ``nv`` the norm as a float (``inf`` when it overflows), ``N = Nm
    2**eN``, ``2**e`` the binade of ``max |x|``, ``arg`` the first argmax,
    ``kind`` 0 (finite, nonzero), 1 (NaN / inf inside, propagated), 2 (all
    zero), ``fast`` the rows that may take the plain derivative path, and the
    status (bit 2: zero norm with ``eps <= 0``, the caller raises).  Integers
    are exact in float64 (exponents are clamped to +-2**40).
    """
    R, D = x.shape
    y = np.empty_like(x)
    res = np.empty((R, 8))
    for i in prange(R):
        nv, Nm, eN, e, arg, kind, fast, sti, nd = _forward_row(x, y, i, p, eps)
        res[i, _NV] = nv
        res[i, _NM] = Nm
        res[i, _EN] = eN
        res[i, _E] = e
        res[i, _ARG] = arg
        res[i, _KIND] = kind
        res[i, _FAST] = fast
        res[i, _STAT] = sti + 8 * nd
    second = False
    for i in range(R):
        if res[i, _STAT] >= 8.0:
            second = True
            break
    if second:
        # N overflows or is subnormal: y = (mx / mN) 2**(ex - eN), one rounding
        for i in prange(R):
            if res[i, _STAT] < 8.0:
                continue
            res[i, _STAT] = 0.0
            Nm = res[i, _NM]
            eN = np.int64(res[i, _EN])
            for j in range(D):
                mx, ex = _frexp(x[i, j])
                y[i, j] = _ldexp(mx / Nm, ex - eN)
    return y, res


@njit(**JIT)
def _grad_norm(v, nv, p, is_arg):
    """``d||x||_p / dx_j`` on the plain path for the entry ``v = x_j`` (subgradient 0
    at ``x_j = 0`` for p <= 1; inf: the first max, ``is_arg``).  Scalars only, so
    the parallel loops that call it do no reference counting."""
    if p == np.inf:
        if not is_arg:
            return 0.0
        return 1.0 if v > 0.0 else (-1.0 if v < 0.0 else 0.0)
    if v == 0.0:
        return 0.0
    sg = 1.0 if v > 0.0 else -1.0
    if p == 1.0:
        return sg
    if p == 2.0:
        return v / nv
    return sg * (abs(v) / nv) ** (p - 1.0)


@njit(**JIT)
def _single(x, i):
    """True when row ``i`` has exactly one nonzero entry: then ``y = sign(x)`` is
    constant in that entry, whose derivative is exactly 0 (not a rounding residue)."""
    nnz = 0
    for j in range(x.shape[1]):
        if x[i, j] != 0.0:
            nnz += 1
    return nnz == 1


@njit(**JIT)
def _unit(p, m):
    """Mantissa ``mu`` of the scaled unit ``mu 2**e`` of the derivative formulas:
    1 (``x~ = x 2**-e``, exact) for ``p < 512`` and inf, ``f = m 2**-e`` (units of
    ``max |x|``, so the largest term is exactly 1 and terms far below it go to
    0 instead of crowding at the exponent clamp) for ``p >= 512``."""
    if p >= 512.0 and p != np.inf:
        fm, _ = _frexp(m)
        return fm
    return 1.0


@njit(**JIT)
def _G_pair(x, i, j, e, mu, arg, p):
    """``G_j = sign(x_j) |x^_j|**(p-1)`` as a pair, ``x^ = x / (mu 2**e)``; inf: sign at arg."""
    v = x[i, j]
    if p == np.inf:
        if j != arg or v == 0.0:
            return 0.0, np.int64(0)
        return (1.0 if v > 0.0 else -1.0), np.int64(0)
    if v == 0.0:
        return 0.0, np.int64(0)
    mv, ev = _frexp(v)
    a = abs(mv) / mu
    tm, te = _pow_scaled(a, ev - e, p)
    return _norm_pair(math.copysign(tm / a, v), te - (ev - e))


@njit(**JIT)
def _S_pair(x, i, e, mu, p, m):
    """``S = sum |x^_j|**p`` as a pair (inf: ``f = m 2**-e``), from the same terms as
    :func:`_G_pair`."""
    D = x.shape[1]
    if p == np.inf:
        fm, _ = _frexp(m)
        return fm, np.int64(0)
    emax = _NO_EXP
    for j in range(D):
        v = x[i, j]
        if v != 0.0:
            mv, ev = _frexp(v)
            tm, te = _pow_scaled(abs(mv) / mu, ev - e, p)
            if te > emax:
                emax = te
    s = 0.0
    comp = 0.0
    for j in range(D):
        v = x[i, j]
        if v != 0.0:
            mv, ev = _frexp(v)
            tm, te = _pow_scaled(abs(mv) / mu, ev - e, p)
            s, comp = neumaier_add(s, comp, _ldexp(tm, te - emax))
    return _norm_pair(s + comp, emax)


@njit(**JIT)
def _off_norm_row(res, t, out, i, eps):
    """Row ``i`` of a derivative off the norm branch (kind not 0, or clamped): NaN where
    the row holds NaN / inf, else ``t / eps`` (the clamp, zero rows included).
    Returns True where an entry of ``t / eps`` overflows float64 for a finite ``t``."""
    D = out.shape[1]
    if int(res[i, _KIND]) == _ROW_NONFINITE:
        for j in range(D):
            out[i, j] = np.nan
        return False
    over = False
    for j in range(D):
        r = t[i, j] / eps
        if abs(r) > _BIG and abs(t[i, j]) <= _BIG:
            over = True
        out[i, j] = r
    return over


@njit(**JIT)
def _normalize_vjp_row_scaled(x, dy, dx, i, Nm, eN, e, arg, p, m):
    """Scaled path of one row: ``dx_j = (dy_j - G_j T~ / S) / N``.  Returns overflow."""
    D = x.shape[1]
    mu = _unit(p, m)
    Tm, Te = _dot_pair(x[i], dy[i], e)
    Tm = Tm / mu
    Sm, Se = _S_pair(x, i, e, mu, p, m)
    single = _single(x, i)
    over = False
    for j in range(D):
        if single and j == arg:
            dx[i, j] = 0.0
            continue
        Gm, Ge = _G_pair(x, i, j, e, mu, arg, p)
        cm, ce = _norm_pair(Gm * Tm / Sm, Ge + Te - Se)
        dm, de = _frexp(dy[i, j])
        am, ae = _pair_add(dm, de, -cm, ce)
        r = _ldexp(am / Nm, ae - eN)
        if abs(r) > _BIG:
            over = True
        dx[i, j] = r
    return over


@parallel_kernel
def normalize_vjp(x, y, res, dy, p, eps):
    """``dx = (dy - g (y . dy)) / N`` (norm branch) or ``dy / eps`` (clamped).

    Plain path (row entries in ``[2**-120, 2**120]``, ``dy`` 0 or in
    ``[2**-364, 2**64)``, every nonzero ``|g_j| >= 2**-300``): ``y``, ``y dy``,
    ``g`` and ``g (y . dy)`` are normal numbers or below the rounding of the
    sums they enter.  Else the scaled path.  Returns ``(dx, status)``.
    """
    R, D = x.shape
    dx = np.empty_like(x)
    st = np.zeros(R, dtype=np.int8)
    need = np.zeros(R, dtype=np.int8)
    for i in prange(R):
        nv = res[i, _NV]
        if int(res[i, _KIND]) != _ROW_OK or (eps > 0.0 and nv < eps):
            if _off_norm_row(res, dy, dx, i, eps):
                st[i] = _ST_OVERFLOW
            continue
        a = np.int64(res[i, _ARG])
        ok = res[i, _FAST] == 1.0
        if ok:
            s = 0.0
            tmax = 0.0
            tmin = np.inf
            xmin = np.inf
            for j in range(D):
                t = dy[i, j]
                at = abs(t)
                ax = abs(x[i, j])
                tmax = at if at > tmax else tmax
                tmin = at if (at < tmin) & (at != 0.0) else tmin
                xmin = ax if (ax < xmin) & (ax != 0.0) else xmin
                s += y[i, j] * t
            ok = tmax < _T_HI and tmin >= _T_LO and xmin >= _X_LO
        if ok:
            if p == 2.0:
                for j in range(D):
                    dx[i, j] = (dy[i, j] - (x[i, j] / nv) * s) / nv
            elif p == 1.0:
                for j in range(D):
                    v = x[i, j]
                    g = 1.0 if v > 0.0 else (-1.0 if v < 0.0 else 0.0)
                    dx[i, j] = (dy[i, j] - g * s) / nv
            elif p == np.inf:
                for j in range(D):
                    dx[i, j] = dy[i, j] / nv
                g = 1.0 if x[i, a] > 0.0 else -1.0
                dx[i, a] = (dy[i, a] - g * s) / nv
            else:
                for j in range(D):
                    g = _grad_norm(x[i, j], nv, p, j == a)
                    if g != 0.0 and abs(g) < _G_LO:
                        ok = False
                        break
                    dx[i, j] = (dy[i, j] - g * s) / nv
        if not ok:
            need[i] = 1
    # the scaled path in a loop of its own: the plain loop above then does not
    # call the scaled-path functions (whose reference counting slows the threads down)
    if need.any():
        for i in prange(R):
            if need[i] != 1:
                continue
            a = np.int64(res[i, _ARG])
            if _normalize_vjp_row_scaled(x, dy, dx, i, res[i, _NM], np.int64(res[i, _EN]), np.int64(res[i, _E]), a, p,
                                         abs(x[i, a])):
                st[i] = _ST_OVERFLOW
    return dx, st


@njit(**JIT)
def _normalize_jvp_row_scaled(x, t, ty, i, Nm, eN, e, a, p):
    """Scaled path of one row: ``ty_i = (t_i - x^_i U / S) / N``, ``U = sum_j G_j t_j``.
    Returns overflow."""
    D = x.shape[1]
    mu = _unit(p, abs(x[i, a]))
    Sm, Se = _S_pair(x, i, e, mu, p, abs(x[i, a]))
    # U = sum_j G_j t_j, aligned to the largest term
    emax = _NO_EXP
    for j in range(D):
        Gm, Ge = _G_pair(x, i, j, e, mu, a, p)
        if Gm != 0.0 and t[i, j] != 0.0:
            _, et = _frexp(t[i, j])
            if Ge + et > emax:
                emax = Ge + et
    Um = 0.0
    Ue = np.int64(0)
    if emax != _NO_EXP:
        s = 0.0
        comp = 0.0
        for j in range(D):
            Gm, Ge = _G_pair(x, i, j, e, mu, a, p)
            if Gm != 0.0 and t[i, j] != 0.0:
                mt, et = _frexp(t[i, j])
                s, comp = neumaier_add(s, comp, _ldexp(Gm * mt, Ge + et - emax))
        Um, Ue = _norm_pair(s + comp, emax)
    single = _single(x, i)
    over = False
    for j in range(D):
        if single and j == a:
            ty[i, j] = 0.0
            continue
        xm, xe = _frexp(x[i, j])
        cm, ce = _norm_pair(xm / mu * Um / Sm, (xe - e) + Ue - Se)
        tm, te = _frexp(t[i, j])
        am, ae = _pair_add(tm, te, -cm, ce)
        r = _ldexp(am / Nm, ae - eN)
        if abs(r) > _BIG:
            over = True
        ty[i, j] = r
    return over


@parallel_kernel
def normalize_jvp(x, y, res, t, p, eps):
    """``ty = (t - y (g . t)) / N`` (norm branch) or ``t / eps`` (clamped).

    Scaled path: ``ty_i = (t_i - x~_i U / S) / N`` with ``U = sum_j G_j t_j``.
    Returns ``(ty, status)``.
    """
    R, D = x.shape
    ty = np.empty_like(x)
    st = np.zeros(R, dtype=np.int8)
    need = np.zeros(R, dtype=np.int8)
    for i in prange(R):
        nv = res[i, _NV]
        if int(res[i, _KIND]) != _ROW_OK or (eps > 0.0 and nv < eps):
            if _off_norm_row(res, t, ty, i, eps):
                st[i] = _ST_OVERFLOW
            continue
        a = np.int64(res[i, _ARG])
        ok = res[i, _FAST] == 1.0
        if ok:
            s = 0.0
            tmax = 0.0
            tmin = np.inf
            gmin = np.inf
            xmin = np.inf
            if p == 2.0 or p == 1.0 or p == np.inf:
                # |g| >= 2**-271 follows from the row range: no check of g
                for j in range(D):
                    tj = t[i, j]
                    at = abs(tj)
                    v = x[i, j]
                    ax = abs(v)
                    tmax = at if at > tmax else tmax
                    tmin = at if (at < tmin) & (at != 0.0) else tmin
                    xmin = ax if (ax < xmin) & (ax != 0.0) else xmin
                    if p == 2.0:
                        s += (v / nv) * tj
                    elif p == 1.0:
                        s += (1.0 if v > 0.0 else (-1.0 if v < 0.0 else 0.0)) * tj
                if p == np.inf:
                    s = (1.0 if x[i, a] > 0.0 else -1.0) * t[i, a]
                gmin = 1.0
            else:
                for j in range(D):
                    tj = t[i, j]
                    at = abs(tj)
                    ax = abs(x[i, j])
                    tmax = at if at > tmax else tmax
                    tmin = at if (at < tmin) & (at != 0.0) else tmin
                    xmin = ax if (ax < xmin) & (ax != 0.0) else xmin
                    g = _grad_norm(x[i, j], nv, p, j == a)
                    ag = abs(g)
                    gmin = ag if (ag < gmin) & (ag != 0.0) else gmin
                    s += g * tj
            ok = tmax < _T_HI and tmin >= _T_LO and gmin >= _G_LO and xmin >= _X_LO
        if ok:
            for j in range(D):
                ty[i, j] = (t[i, j] - y[i, j] * s) / nv
            continue
        need[i] = 1
    if need.any():
        for i in prange(R):
            if need[i] != 1:
                continue
            if _normalize_jvp_row_scaled(x, t, ty, i, res[i, _NM], np.int64(res[i, _EN]), np.int64(res[i, _E]), np.int64(res[i, _ARG]), p):
                st[i] = _ST_OVERFLOW
    return ty, st


@parallel_kernel
def normalize_jacobian_blocks(x, res, p, eps):
    """Per-row blocks ``J[i, a, b] = (delta_ab - y_a g_b) / N`` (or ``delta_ab / eps``),
    in scaled units: ``delta_ab / N - x~_a G_b / (S N)``.  Returns ``(J, status)``."""
    R, D = x.shape
    J = np.empty((R, D, D))
    st = np.zeros(R, dtype=np.int8)
    for i in prange(R):
        kind = int(res[i, _KIND])
        nv = res[i, _NV]
        if kind == _ROW_NONFINITE:
            for a in range(D):
                for b in range(D):
                    J[i, a, b] = np.nan
            continue
        if kind == _ROW_ZERO or (eps > 0.0 and nv < eps):
            inv = 1.0 / eps
            if abs(inv) > _BIG:
                st[i] = _ST_OVERFLOW
            for a in range(D):
                for b in range(D):
                    J[i, a, b] = inv if a == b else 0.0
            continue
        e = np.int64(res[i, _E])
        Nm = res[i, _NM]
        eN = np.int64(res[i, _EN])
        arg = np.int64(res[i, _ARG])
        mu = _unit(p, abs(x[i, arg]))
        Sm, Se = _S_pair(x, i, e, mu, p, abs(x[i, arg]))
        single = _single(x, i)
        for b in range(D):
            Gm, Ge = _G_pair(x, i, b, e, mu, arg, p)
            for a in range(D):
                if single and a == arg and b == arg:
                    J[i, a, b] = 0.0
                    continue
                xm, xe = _frexp(x[i, a])
                cm, ce = _norm_pair(xm / mu * Gm / Sm, (xe - e) + Ge - Se)
                if a == b:
                    cm, ce = _pair_add(1.0, np.int64(0), -cm, ce)
                else:
                    cm = -cm
                r = _ldexp(cm / Nm, ce - eN)
                if abs(r) > _BIG:
                    st[i] = _ST_OVERFLOW
                J[i, a, b] = r
    return J, st


@parallel_kernel
def normalize_norm_gradient(x, res, p):
    """``g = dN/dx`` per row: ``G_j S**(1/p) / S`` in scaled units (``S**(1/p) = N / (mu 2**e)``)."""
    R, D = x.shape
    g = np.empty_like(x)
    for i in prange(R):
        kind = int(res[i, _KIND])
        if kind != _ROW_OK:
            for j in range(D):
                g[i, j] = np.nan if kind == _ROW_NONFINITE else 0.0
            continue
        e = np.int64(res[i, _E])
        arg = np.int64(res[i, _ARG])
        mu = _unit(p, abs(x[i, arg]))
        Sm, Se = _S_pair(x, i, e, mu, p, abs(x[i, arg]))
        for j in range(D):
            Gm, Ge = _G_pair(x, i, j, e, mu, arg, p)
            g[i, j] = _ldexp(Gm * (res[i, _NM] / mu) / Sm, Ge + (np.int64(res[i, _EN]) - e) - Se)
    return g


restamp(globals())
