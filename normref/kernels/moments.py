r"""The statistics of one group for the standardization kernels
(:mod:`normref.kernels.standardize`): mean and biased variance (or mean
square), exact to a few ulps at any offset, in as few reads as the data allow.

Group ``(g1, g2)`` of the 5-D block view (see :mod:`normref.kernels.standardize`)
is read row by row; every sum is compensated in vectorized lanes
(:mod:`normref.kernels.compensated`) and combined into a double-double.

1. One read about 0: the lanes of :math:`\sum x` and :math:`\sum x^2`
   (scale-only: :math:`\sum x^2` alone).
2. Finalization in double-double (:func:`_finalize`): :math:`r = S_1 / n` with
   its remainder from Dekker's exact product, the mean :math:`K + r`
   *renormalized* into ``M_hi + M_lo`` (``M_hi`` the float64 nearest the mean,
   ``|M_lo| <= ulp(M_hi) / 2``), and :math:`n\sigma^2 = S_2 - S_1 r` with
   both products exact, clamped at 0.  Keeping the mean's low part as one
   unrenormalized double instead (the mean of a first plain pass plus a
   correction that may exceed its ulp) missed the 4-ulp target on large
   groups at offset 1e12 by up to 43 ulps, on outputs near zero.
3. Data far from 0 relative to their spread (:math:`\bar x^2 > 4\sigma^2`):
   the cancellation in :math:`S_2 - S_1 r` would cost accuracy, so a second
   read sums :math:`d = x - K` about :math:`K` = the mean just found
   (exact near :math:`K` by Sterbenz' lemma; elsewhere TwoSum's exact
   rounding error joins the first sum's error lanes).
4. Overflow, underflow (:math:`S_2 <` ``_TINY``), a constant group or
   non-finite data: moments about the plain mean (:func:`_plain_mean`, which
   survives an overflowing sum), with the deviations multiplied by a power of
   two (exact) so that squares neither overflow nor lose bits to underflow;
   the result is kept in scaled units (``scale``) and ``mu_lo`` absorbs what
   ``mu_hi`` loses to the subnormal grid.

The variance is then within a few ulps of the exact one and the mean within
about an ulp; the multiplier ``F`` follows the eps placement (inside the root
or on the standard deviation), see :func:`_group_stats`.
"""
from __future__ import annotations

import math

from numba import njit

from . import restamp
from ._dispatch import JIT
from .compensated import LANES, lane_add, lanes_total, two_prod, two_sum

_TINY = 1e-280  # below this a sum of squares may have lost bits to underflow


@njit(**JIT)
def _clear(acc, n):
    for i in range(n):
        acc[i] = 0.0


@njit(**JIT)
def _acc_moments(xr, acc):
    """Lanes of sum x and sum x^2 over a row (deviations about 0, unit scale)."""
    n = xr.size
    m = n - n % LANES
    for k in range(0, m, LANES):
        for j in range(LANES):
            xi = xr[k + j]
            lane_add(acc, j, LANES + j, xi)
            lane_add(acc, 2 * LANES + j, 3 * LANES + j, xi * xi)
    for j in range(n - m):
        xi = xr[m + j]
        lane_add(acc, j, LANES + j, xi)
        lane_add(acc, 2 * LANES + j, 3 * LANES + j, xi * xi)


@njit(**JIT)
def _acc_moments_shifted(xr, sc, ms, acc):
    """Lanes of sum d and sum d^2 over a row, d = x * sc + ms (ms = -K * sc, sc a
    power of two).  The exact rounding error of the subtraction (zero near K by
    Sterbenz' lemma) joins the first sum's error lanes.
    """
    n = xr.size
    m = n - n % LANES
    for k in range(0, m, LANES):
        for j in range(LANES):
            d, de = two_sum(xr[k + j] * sc, ms)
            lane_add(acc, j, LANES + j, d)
            acc[LANES + j] += de
            lane_add(acc, 2 * LANES + j, 3 * LANES + j, d * d)
    for j in range(n - m):
        d, de = two_sum(xr[m + j] * sc, ms)
        lane_add(acc, j, LANES + j, d)
        acc[LANES + j] += de
        lane_add(acc, 2 * LANES + j, 3 * LANES + j, d * d)


@njit(**JIT)
def _acc_squares(xr, sc, acc):
    """Lanes of sum (x * sc)^2 over a row only (scale-only normalization).

    Two blocks of LANES per iteration (a lone TwoSum chain does not vectorize
    over 16 lanes); each lane still receives its elements in increasing order,
    exactly as in the other loops.
    """
    n = xr.size
    m = n - n % (2 * LANES)
    for k in range(0, m, 2 * LANES):
        for j in range(LANES):
            d = xr[k + j] * sc
            lane_add(acc, 2 * LANES + j, 3 * LANES + j, d * d)
            d = xr[k + LANES + j] * sc
            lane_add(acc, 2 * LANES + j, 3 * LANES + j, d * d)
    xt = xr[m:]  # the tail, through a view: indices provably non-negative
    if xt.size >= LANES:
        for j in range(LANES):
            d = xt[j] * sc
            lane_add(acc, 2 * LANES + j, 3 * LANES + j, d * d)
        xt = xt[LANES:]
    for j in range(xt.size):
        d = xt[j] * sc
        lane_add(acc, 2 * LANES + j, 3 * LANES + j, d * d)


@njit(**JIT)
def _row_sum(xr):
    """Plain sum in four interleaved lanes, combined in a fixed order."""
    n = xr.size
    q = n // 4
    a0 = 0.0
    a1 = 0.0
    a2 = 0.0
    a3 = 0.0
    for k in range(q):
        i = 4 * k
        a0 += xr[i]
        a1 += xr[i + 1]
        a2 += xr[i + 2]
        a3 += xr[i + 3]
    for i in range(4 * q, n):
        a0 += xr[i]
    return (a0 + a1) + (a2 + a3)


@njit(**JIT)
def _row_scaled_sum(xr, sc, s, cs):
    """Compensated sum of ``xr * sc`` added to (s, cs)."""
    for i in range(xr.size):
        s, t = two_sum(s, xr[i] * sc)
        cs += t
    return s, cs


@njit(**JIT)
def _row_max_dev(xr, half, mu, m):
    """max(m, max |xr * half - mu * half|), NaN-propagating."""
    mh = mu * half
    for i in range(xr.size):
        a = abs(xr[i] * half - mh)
        if not a <= m:
            m = a
    return m


# -- statistics of one group -----------------------------------------------------
@njit(**JIT)
def _group_sums(x, sh, st, g1, g2, center, sc, ms, acc):
    """Double-double sums ``(S1_hi, S1_lo, S2_hi, S2_lo)`` of d and d^2 over the group,
    d = x * sc + ms; ``ms = 0`` and ``sc = 1`` take the plain moments loop."""
    R1, R2, R3 = sh[2], sh[3], sh[4]
    g0 = g1 * st[0] + g2 * st[1]
    _clear(acc, 4 * LANES)
    for r1 in range(R1):
        for r2 in range(R2):
            b = g0 + r1 * st[2] + r2 * st[3]
            if not center:
                _acc_squares(x[b:b + R3], sc, acc)
            elif ms == 0.0 and sc == 1.0:
                _acc_moments(x[b:b + R3], acc)
            else:
                _acc_moments_shifted(x[b:b + R3], sc, ms, acc)
    a1, b1 = lanes_total(acc, 0) if center else (0.0, 0.0)
    a2, b2 = lanes_total(acc, 2)
    return a1, b1, a2, b2


@njit(**JIT)
def _finalize(a1, b1, a2, b2, Ks, n, center):
    """Mean and variance of a group from its double-double sums, in scaled units.

    With ``S1 = a1 + b1 = sum d``, ``S2 = a2 + b2 = sum d^2`` and ``d = x - K``
    (all scaled): ``r = S1 / n`` in double-double (Dekker's product for the
    remainder), the mean ``K + r`` renormalized into ``M_hi + M_lo`` (``M_hi``
    the float64 nearest the two-term sum, ``|M_lo| <= ulp(M_hi) / 2``), and
    ``n var = S2 - S1 r`` in double-double, clamped at 0.  Returns
    ``(M_hi, M_lo, var)``; scale-only: ``(0, 0, S2 / n)``.
    """
    if not center:
        return 0.0, 0.0, (a2 + b2) / n
    r = a1 / n
    p, pe = two_prod(r, n)
    r_lo = (((a1 - p) - pe) + b1) / n
    m_hi, e = two_sum(Ks, r)
    m_lo = e + r_lo
    h, e = two_prod(a1, r)
    t, e2 = two_sum(a2, -h)
    nv = t + ((e2 + b2) - (e + (a1 * r_lo + b1 * r)))
    v = nv / n
    if not v > 0.0:
        v = 0.0 if v <= 0.0 else v  # NaN stays NaN
    return m_hi, m_lo, v


@njit(**JIT)
def _plain_mean(x, sh, st, g1, g2):
    """First-pass float64 mean of a group; where the plain sum overflows, a scaled
    compensated sum.  NaN / inf propagate."""
    R1, R2, R3 = sh[2], sh[3], sh[4]
    n = R1 * R2 * R3
    g0 = g1 * st[0] + g2 * st[1]
    acc = 0.0
    for r1 in range(R1):
        for r2 in range(R2):
            b = g0 + r1 * st[2] + r2 * st[3]
            acc += _row_sum(x[b:b + R3])
    mu = acc / n
    if not math.isfinite(mu):
        m = 0.0
        for r1 in range(R1):
            for r2 in range(R2):
                b = g0 + r1 * st[2] + r2 * st[3]
                m = _row_max_dev(x[b:b + R3], 1.0, 0.0, m)
        if math.isfinite(m) and m > 0.0:
            _, e = math.frexp(m)
            sc = math.ldexp(1.0, -e)
            s = 0.0
            cs = 0.0
            for r1 in range(R1):
                for r2 in range(R2):
                    b = g0 + r1 * st[2] + r2 * st[3]
                    s, cs = _row_scaled_sum(x[b:b + R3], sc, s, cs)
            mu = math.ldexp((s + cs) / n, e)
    return mu


@njit(**JIT)
def _group_stats(x, sh, st, g1, g2, center, eps, eps_outside, acc):
    """(mu_hi, mu_lo, scale, F, c, var) of one group, see the module docstring."""
    R1, R2, R3 = sh[2], sh[3], sh[4]
    n = R1 * R2 * R3
    scale = 1.0
    # one read about 0: enough unless the data sit far from 0 relative to their
    # spread (|mean|^2 > 4 var), then one more about the mean just found
    a1, b1, a2, b2 = _group_sums(x, sh, st, g1, g2, center, 1.0, 0.0, acc)
    K = 0.0
    M_hi, M_lo, v = _finalize(a1, b1, a2, b2, 0.0, n, center)
    if center and math.isfinite(M_hi) and M_hi * M_hi > 4.0 * v:
        K = M_hi
        a1, b1, a2, b2 = _group_sums(x, sh, st, g1, g2, center, 1.0, -K, acc)
        M_hi, M_lo, v = _finalize(a1, b1, a2, b2, K, n, center)
    if not (math.isfinite(a1) and math.isfinite(a2) and math.isfinite(M_hi)) or a2 < _TINY:
        # overflow, underflow, a constant group or non-finite data: moments about
        # the plain mean, rescaled by a power of two (exact) so that squares
        # neither overflow nor lose bits to underflow; the deviations are
        # measured at half scale when they may overflow themselves
        K = _plain_mean(x, sh, st, g1, g2) if center else 0.0
        a1, b1, a2, b2 = _group_sums(x, sh, st, g1, g2, center, 1.0, -K, acc)
        if math.isfinite(K) and (not math.isfinite(a2) or a2 < _TINY):
            half = 0.5 if not math.isfinite(a2) else 1.0
            m = 0.0
            g0 = g1 * st[0] + g2 * st[1]
            for r1 in range(R1):
                for r2 in range(R2):
                    b = g0 + r1 * st[2] + r2 * st[3]
                    m = _row_max_dev(x[b:b + R3], half, K, m)
            if math.isfinite(m) and m > 0.0:
                _, e = math.frexp(m)
                if half != 1.0:
                    e += 1
                # keep the scale a normal power of two (1 / scale finite)
                e = min(max(e, -1022), 1022)
                scale = math.ldexp(1.0, -e)
                a1, b1, a2, b2 = _group_sums(x, sh, st, g1, g2, center, scale, -(K * scale), acc)
        M_hi, M_lo, v = _finalize(a1, b1, a2, b2, K * scale, n, center)
    # mu_hi in data units; whatever it loses to the subnormal grid moves into mu_lo
    mu_hi = M_hi / scale
    back = mu_hi * scale
    mu_lo = M_lo + (M_hi - back) if M_hi != back else M_lo
    var = (v / scale) / scale
    if eps_outside:
        sd = math.sqrt(v)
        es = eps * scale
        if math.isinf(es):
            # eps dominates the (tiny) deviation beyond float64 resolution
            F = (1.0 / eps) / scale
            c = 0.0
        else:
            den = sd + es
            # den <= 0 (negative eps): undefined, the NaN is reported by the caller
            F = 1.0 / den if den > 0.0 else math.nan
            # c f^2 = -1 / (s (s + eps)): finite where c = -(s + eps) / s overflows
            c = -1.0 / (sd * den) if sd > 0.0 and den > 0.0 else 0.0
    else:
        es = (eps * scale) * scale  # 0 for eps = 0 (scale * scale may overflow)
        if math.isinf(es):
            # eps dominates the (tiny) variance beyond float64 resolution
            F = (1.0 / math.sqrt(eps)) / scale
        else:
            F = 1.0 / math.sqrt(v + es)
        c = -(F * F)  # c f^2 with c = -1
    return mu_hi, mu_lo, scale, F, c, var


restamp(globals())
