"""Numba kernels of ``weight_norm``: ``w = g v / ||v||`` over rows (slices of ``v``).

Layout and the norm (``p = 2``) as in :mod:`normref.kernels.lp`: one row =
one ``prange`` iteration, ``||v|| = rs 2**e`` with ``2**e`` the binade bound
of ``max |v|`` and ``rs = sqrt(sum (v 2**-e)**2)`` in ``[0.5, sqrt(D)]``.

Plain path: rows with entries and ``g`` in ``[2**-120, 2**120]`` (or ``g =
0``) whose cotangent / tangent entries (and ``tg``) are 0 or in ``[2**-364,
2**64)``: then ``u = v / n >= 2**-271``, ``g / n`` and every product are
normal numbers or below the rounding of the sum they enter, so PyTorch's
formulas in float64 are as exact as float64 allows.  Scaled path otherwise,
in ``(mantissa, exponent)`` pairs (:mod:`normref.kernels.scaled`), with
``u_j = (mv_j / rs) 2**(ev_j - e)`` and ``u . t = (sum v~ t) / rs``:

    dv_j = (g / rs) 2**-e (dw_j - u_j (u . dw)),
    tw_j = tg u_j + (g / rs) 2**-e (tv_j - u_j (u . tv)),

each with one final ``ldexp``; an exact result that overflows float64 comes
back as ``inf`` with the row's status bit 1 set (the Python layer raises).

Both derivatives are one kernel, :func:`_weight_norm_derivative`: the JVP is
the VJP formula of ``v`` applied to ``tv``, plus ``tg u``.  Its plain loop is
written out (see the performance notes of :mod:`normref.kernels.normalize`).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import restamp
from ._dispatch import JIT, parallel_kernel
from .lp import (_ROW_NONFINITE, _ROW_OK, _ROW_ZERO, _ST_OVERFLOW, _ST_ZERO, _TINY, _X_HI, _X_LO,
                 _row_norm_pair, _row_scan)
from .scaled import _BIG, _T_HI, _T_LO, _dot_pair, _frexp, _in_t_range, _ldexp, _norm_pair, _pair_add

__all__ = ["weight_norm_forward", "weight_norm_vjp", "weight_norm_jvp"]


@njit(**JIT)
def _wn_forward_row(v, g, w, i):
    """Row ``i`` of :func:`weight_norm_forward`: writes ``w[i]``, returns
    ``(nv, rs, e, kind, fast, status)``."""
    D = v.shape[1]
    m, arg, kind = _row_scan(v, i)
    gi = g[i]
    e = np.int64(0)
    if kind != _ROW_OK:
        nv = m if kind == _ROW_NONFINITE else 0.0
        if kind == _ROW_ZERO:
            for j in range(D):
                w[i, j] = np.nan
            return nv, nv, e, kind, 0, _ST_ZERO
        for j in range(D):
            w[i, j] = v[i, j] * (gi / nv)
        return nv, nv, e, kind, 0, 0
    rs, _, e = _row_norm_pair(v, i, 2.0, m, arg)   # p = 2: ||v|| = rs 2**e
    nv = _ldexp(rs, e)
    ag = abs(gi)
    # candidate for the plain derivative path (the derivative kernels also
    # check the smallest nonzero |v| and the cotangent range)
    fast = 1 if m <= _X_HI and (ag == 0.0 or (ag >= _X_LO and ag <= _X_HI)) else 0
    q = gi / nv if nv <= _BIG else 0.0
    if (nv >= _TINY and nv <= _BIG and abs(q) >= _TINY and abs(q) <= _BIG) or ag == 0.0 \
            or gi != gi:
        # q = g / n is a normal number: w = v * q has one more rounding only
        for j in range(D):
            w[i, j] = v[i, j] * q
        return nv, rs, e, kind, fast, 0
    gm, ge = _frexp(gi)
    over = False
    for j in range(D):
        mv, ev = _frexp(v[i, j])
        r = _ldexp(gm * mv / rs, ge + ev - e)
        if abs(r) > _BIG:
            over = True
        w[i, j] = r
    return nv, rs, e, kind, fast, (_ST_OVERFLOW if over else 0)


#: columns of the per-row residual array of weight_norm_forward
_WNV, _WRS, _WE, _WKIND, _WFAST, _WSTAT = 0, 1, 2, 3, 4, 5


@parallel_kernel
def weight_norm_forward(v, g):
    """``w = g v / ||v||`` row-wise; ``g`` has one entry per row.

    Returns ``(w, res)``, ``res`` of shape ``(R, 8)`` (one cache line per row):
    ``nv`` the float norm (``inf`` when it overflows), ``||v|| = rs 2**e`` with
    ``rs = sqrt(sum (v 2**-e)**2)`` in ``[0.5, sqrt(D)]``, ``kind`` as in
    :func:`normref.kernels.normalize.normalize_forward`, ``fast`` the rows
    that may take the plain derivative path, ``status`` bit 1: an entry of
    ``w`` overflows, bit 2: zero norm.  ``w = v * (g / n)``, PyTorch's
    evaluation order, when ``q = g / n`` is a normal number; else ``w_j = (mg
    mv_j / rs) 2**(eg + ev_j - e)`` with one rounding (``g = 1e-300``, ``n =
    1e300``: ``q`` underflows, ``w`` does not).
    """
    R, D = v.shape
    w = np.empty_like(v)
    res = np.empty((R, 8))
    for i in prange(R):
        nv, rs, e, kind, fast, sti = _wn_forward_row(v, g, w, i)
        res[i, _WNV] = nv
        res[i, _WRS] = rs
        res[i, _WE] = e
        res[i, _WKIND] = kind
        res[i, _WFAST] = fast
        res[i, _WSTAT] = sti
    return w, res


@njit(**JIT)
def _wn_row_scaled(v, t, out, i, rs, e, gi, tgi, tangent):
    """Scaled path of one row: ``out_j = (g / rs) 2**-e (t_j - u_j s)``, ``s = u . t``
    (``tangent``: plus ``tg u_j``).  Returns ``(sm, se, overflow)``, ``s = sm 2**se``."""
    Tm, Te = _dot_pair(v[i], t[i], e)
    sm, se = _norm_pair(Tm / rs, Te)
    gm, ge = _frexp(gi)
    tgm, tge = _frexp(tgi)
    over = False
    for j in range(v.shape[1]):
        mv, ev = _frexp(v[i, j])
        um, ue = _norm_pair(mv / rs, ev - e)           # u_j
        cm, ce = _norm_pair(um * sm, ue + se)          # u_j s
        dm, de = _frexp(t[i, j])
        am, ae = _pair_add(dm, de, -cm, ce)
        pm, pe = gm / rs * am, ge - e + ae
        if tangent:
            bm, be = _norm_pair(pm, pe)
            pm, pe = _pair_add(tgm * um, tge + ue, bm, be)
        r = _ldexp(pm, pe)
        if abs(r) > _BIG:
            over = True
        out[i, j] = r
    return sm, se, over


@parallel_kernel
def _weight_norm_derivative(v, res, g, t, tg, tangent):
    """``s = u . t`` and ``out = (g / n) (t - u s)`` with ``u = v / n`` (``tangent``:
    plus ``tg u``) row-wise; returns ``(out, s, status)``.  ``t`` is ``dw`` (VJP:
    ``dv = out``, ``dg = s``) or ``tv`` (JVP: ``tw = out``); ``tg`` is read only
    for the JVP.  Plain path: rows on the forward's plain path whose ``t``
    entries (and ``tg``) are 0 or in ``[2**-364, 2**64)``."""
    R, D = v.shape
    out = np.empty_like(v)
    dg = np.empty(R)
    st = np.zeros(R, dtype=np.int8)
    need = np.zeros(R, dtype=np.int8)
    for i in prange(R):
        nv = res[i, _WNV]
        if int(res[i, _WKIND]) != _ROW_OK:
            for j in range(D):
                out[i, j] = np.nan
            dg[i] = np.nan
            continue
        ok = res[i, _WFAST] == 1.0 and (not tangent or _in_t_range(tg[i]))
        if ok:
            s = 0.0
            tmax = 0.0
            tmin = np.inf
            vmin = np.inf
            for j in range(D):
                tj = t[i, j]
                at = abs(tj)
                av = abs(v[i, j])
                tmax = at if at > tmax else tmax
                tmin = at if (at < tmin) & (at != 0.0) else tmin
                vmin = av if (av < vmin) & (av != 0.0) else vmin
                s += (v[i, j] / nv) * tj
            ok = tmax < _T_HI and tmin >= _T_LO and vmin >= _X_LO
        if ok:
            dg[i] = s
            q = g[i] / nv
            if tangent:
                for j in range(D):
                    u = v[i, j] / nv
                    out[i, j] = tg[i] * u + q * (t[i, j] - u * s)
            else:
                for j in range(D):
                    out[i, j] = q * (t[i, j] - (v[i, j] / nv) * s)
            continue
        need[i] = 1
    if need.any():
        for i in prange(R):
            if need[i] != 1:
                continue
            sm, se, over = _wn_row_scaled(v, t, out, i, res[i, _WRS], np.int64(res[i, _WE]), g[i], tg[i], tangent)
            dg[i] = _ldexp(sm, se)
            if over:
                st[i] = _ST_OVERFLOW
    return out, dg, st


def weight_norm_vjp(v, res, g, dw):
    """``dg = u . dw``, ``dv = (g / n) (dw - u (u . dw))`` with ``u = v / n``;
    returns ``(dv, dg, status)``."""
    return _weight_norm_derivative(v, res, g, dw, g, False)


def weight_norm_jvp(v, res, g, tv, tg):
    """``tw = tg u + (g / n) (tv - u (u . tv))`` with ``u = v / n``; ``(tw, status)``."""
    tw, _, st = _weight_norm_derivative(v, res, g, tv, tg, True)
    return tw, st


restamp(globals())
