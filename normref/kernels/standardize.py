"""numba kernels for the standardize / scale-only operation over any partition.

Every kernel works on flat C-contiguous buffers seen through the 5-D block
shape ``(G1, G2, R1, R2, R3)`` and element strides ``st`` built by
:class:`normref.partition.Layout`: group ``(g1, g2)`` is the slab
``[g1, g2, :, :, :]``, made of rows ``[g1, g2, r1, r2, :]`` that are
contiguous (``st[4] == 1``), and its statistics are reduced over
``(R1, R2, R3)`` in lexicographic order.  Affine parameters are read from the
flattened parameter with strides ``ps``; along a row they are either constant
(``ps[4] == 0``: batch, instance, group norm) or contiguous (``ps[4] == 1``:
layer norm).  One set of kernels serves batch, layer, instance, group,
positional, batch-group and ghost-batch norm alike.

Per group the statistics kernel stores

* ``mu_hi``: the float64 mean of a first pass (plain sum);
* ``mu_lo``: the mean of ``d = x - mu_hi`` from a compensated second pass
  (``d`` is exact near the mean by Sterbenz' lemma; elsewhere the exact
  rounding error of the subtraction, from TwoSum, joins the compensated
  sum), held in *scaled* units (times ``scale``) so that
  ``(x - mean) * scale = (x * scale - mu_hi * scale) - mu_lo``: the correction
  is subtracted from ``d``, never added to ``mu_hi``;
* ``scale = 2**-k``: a power of two applied to ``d`` before squaring when the
  plain sums overflow or underflow (huge or subnormal data); 1 otherwise;
* ``F``: the multiplier such that ``xhat = (x * scale - mu_hi * scale - mu_lo) * F``;
* ``c``: the coefficient of the rank-one term of the Jacobian in scaled
  deviations, ``c f^2`` (below);
* ``var``: the biased variance (or mean square, for scale-only).

The variance is the corrected two-pass formula
``(sum d^2 - (sum d)^2 / n) / n`` with both sums compensated (TwoSum), which
is within a few ulps of the exact value at any offset.

Jacobian of the normalized group with respect to its input (``f`` the
multiplier as a function of the variance ``v``; ``c = 2 f'(v) / f^3``)::

    A = f * (I - [center] 1 1^T / n + c * xhat xhat^T / n)
      = f * (I - [center] 1 1^T / n) + (c f^2) * d d^T / n,   d = x - mean

which is symmetric, so the same kernel applies it for VJPs and JVPs:
``c = -1`` for ``f = (v + eps)^{-1/2}`` (eps inside the root), ``c = -(s + eps)/s``
for ``f = 1 / (s + eps)``, ``s = sqrt(v)`` (eps added to the standard
deviation), ``c = 0`` for fixed (running) statistics.  The kernels store and
use ``c f^2`` (``-f^2``, ``-1 / (s (s + eps))``, 0) with the deviations
``d`` rather than ``c`` with ``xhat``: when eps dwarfs the standard deviation
``c`` itself overflows (eps / s > 1e308) while ``c f^2`` and the rank-one
term do not.
"""
from __future__ import annotations

import math

from numba import njit, prange

from . import restamp
from ._dispatch import JIT, Kernel
from .compensated import two_sum

_TINY = 1e-280  # below this a sum of squares may have lost bits to underflow


# -- row helpers: one contiguous row of a group --------------------------------
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


@njit(**JIT)
def _row_moments(xr, scale, ms, s1, c1, s2, c2):
    """Compensated sums of d and d^2, d = xr * scale + ms (ms = -mu_hi * scale).

    The exact rounding error ``de`` of the subtraction (zero where Sterbenz'
    lemma applies) joins the compensation of the first sum, so the residual
    mean is exact to a few ulps at any offset.
    """
    for i in range(xr.size):
        d, de = two_sum(xr[i] * scale, ms)
        s1, t = two_sum(s1, d)
        c1 += t + de
        s2, t = two_sum(s2, d * d)
        c2 += t
    return s1, c1, s2, c2


@njit(**JIT)
def _row_out(xr, yr, s, as_, b0, f, g, bt):
    """y = xhat * g + bt with scalar affine (g = 1, bt = 0 when absent)."""
    for i in range(xr.size):
        yr[i] = (((xr[i] * s + as_) - b0) * f) * g + bt


@njit(**JIT)
def _row_out_vec(xr, yr, s, as_, b0, f, gr, br, has_g, has_b):
    """y = xhat * gamma + beta with per-element affine along the row."""
    for i in range(xr.size):
        xh = ((xr[i] * s + as_) - b0) * f
        if has_g:
            xh = xh * gr[i]
        if has_b:
            xh = xh + br[i]
        yr[i] = xh


@njit(**JIT)
def _row_proj_sums(xr, vr, s, as_, b0, f, gr, has_g, pgr, pbr, want):
    """Compensated sums of w = v * gamma and w * xhat over a row: (s1, c1, s2, c2).

    ``gr`` is the row's gamma (ignored unless ``has_g``); with ``want``,
    v * xhat and v are added into the parameter partial rows ``pgr``, ``pbr``.
    """
    s1 = 0.0
    c1 = 0.0
    s2 = 0.0
    c2 = 0.0
    for i in range(xr.size):
        xh = ((xr[i] * s + as_) - b0) * f
        v = vr[i]
        if want:
            pgr[i] += v * xh
            pbr[i] += v
        w = v * gr[i] if has_g else v
        s1, t = two_sum(s1, w)
        c1 += t
        s2, t = two_sum(s2, w * xh)
        c2 += t
    return s1, c1, s2, c2


@njit(**JIT)
def _row_proj_out(xr, vr, outr, s, as_, b0, f, g, m1, m2):
    """out = ((v g - m1) f + m2 d) s with scalar g, d the scaled deviation."""
    for i in range(xr.size):
        d = (xr[i] * s + as_) - b0
        outr[i] = ((vr[i] * g - m1) * f + m2 * d) * s


@njit(**JIT)
def _row_proj_out_vec(xr, vr, outr, s, as_, b0, f, gr, has_g, m1, m2):
    """out = ((v gamma - m1) f + m2 d) s with per-element gamma."""
    for i in range(xr.size):
        d = (xr[i] * s + as_) - b0
        w = vr[i] * gr[i] if has_g else vr[i]
        outr[i] = ((w - m1) * f + m2 * d) * s


# -- statistics of one group -----------------------------------------------------
@njit(**JIT)
def _group_moments(x, sh, st, g1, g2, center, scale):
    """Corrected two-pass moments of one group, data multiplied by ``scale``.

    Returns (mu_hi, s1, s2): first-pass mean (of unscaled data), and the
    compensated sums of ``d * scale`` and ``(d * scale)**2`` with
    ``d = x - mu_hi``.
    """
    R1, R2, R3 = sh[2], sh[3], sh[4]
    n = R1 * R2 * R3
    g0 = g1 * st[0] + g2 * st[1]
    st2, st3 = st[2], st[3]
    mu_hi = 0.0
    if center:
        acc = 0.0
        for r1 in range(R1):
            for r2 in range(R2):
                b = g0 + r1 * st2 + r2 * st3
                acc += _row_sum(x[b:b + R3]) * scale
        mu_hi = (acc / n) / scale
        if not math.isfinite(mu_hi):
            # the plain sum overflowed: redo it in a scaled, compensated way
            m = 0.0
            for r1 in range(R1):
                for r2 in range(R2):
                    b = g0 + r1 * st2 + r2 * st3
                    m = _row_max_dev(x[b:b + R3], 1.0, 0.0, m)
            if math.isfinite(m) and m > 0.0:
                _, e = math.frexp(m)
                sc = math.ldexp(1.0, -e)
                s = 0.0
                cs = 0.0
                for r1 in range(R1):
                    for r2 in range(R2):
                        b = g0 + r1 * st2 + r2 * st3
                        s, cs = _row_scaled_sum(x[b:b + R3], sc, s, cs)
                mu_hi = math.ldexp((s + cs) / n, e)
    s1 = 0.0
    c1 = 0.0
    s2 = 0.0
    c2 = 0.0
    ms = -(mu_hi * scale)
    for r1 in range(R1):
        for r2 in range(R2):
            b = g0 + r1 * st2 + r2 * st3
            s1, c1, s2, c2 = _row_moments(x[b:b + R3], scale, ms, s1, c1, s2, c2)
    return mu_hi, s1 + c1, s2 + c2


@njit(**JIT)
def _group_stats(x, sh, st, g1, g2, center, eps, eps_outside):
    """(mu_hi, mu_lo, scale, F, c, var) of one group, see the module docstring."""
    R1, R2, R3 = sh[2], sh[3], sh[4]
    n = R1 * R2 * R3
    scale = 1.0
    mu_hi, s1, s2 = _group_moments(x, sh, st, g1, g2, center, 1.0)
    if math.isfinite(mu_hi) and (not math.isfinite(s2) or s2 < _TINY):
        # rescale by a power of two (exact) so that squares neither overflow
        # nor lose bits to underflow; the deviations are measured at half
        # scale when they may overflow themselves
        half = 0.5 if not math.isfinite(s2) else 1.0
        m = 0.0
        g0 = g1 * st[0] + g2 * st[1]
        for r1 in range(R1):
            for r2 in range(R2):
                b = g0 + r1 * st[2] + r2 * st[3]
                m = _row_max_dev(x[b:b + R3], half, mu_hi, m)
        if math.isfinite(m) and m > 0.0:
            _, e = math.frexp(m)
            if half != 1.0:
                e += 1
            # keep the scale a normal power of two (1 / scale finite)
            e = min(max(e, -1022), 1022)
            scale = math.ldexp(1.0, -e)
            mu_hi, s1, s2 = _group_moments(x, sh, st, g1, g2, center, scale)
    r = s1 / n  # residual mean of d, in scaled units
    if center:
        v = (s2 - s1 * r) / n
        if v < 0.0:
            v = 0.0
    else:
        v = s2 / n
    mu_lo = r if center else 0.0  # scaled units: never rounded to the subnormal grid
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


# -- kernels -------------------------------------------------------------------------
def _standardize_forward(x, sh, st, ps, gamma, beta, has_gamma, has_beta, center, eps,
                         eps_outside, fixed_mean, fixed_rstd, fixed_scale, use_fixed, y,
                         mu_hi, mu_lo, scale, F, c, var, x_copy, copy_x):
    """Statistics and output of every group, fused so each group is read hot.

    ``fixed_mean`` / ``fixed_rstd`` (one value per group: the mean and
    ``(var + eps)^-1/2``) replace the batch statistics when ``use_fixed``
    (running statistics, ``c = 0``), the deviations formed at ``fixed_scale``
    (1, or 1/2 for data near the float64 maximum, so that ``x - mean``
    cannot overflow).  Writes the per-group statistics into the 1-D arrays.
    With ``copy_x`` the input is also copied into ``x_copy`` while each row
    is hot (a private copy for derivatives taken later, at the cost of one
    extra write instead of a separate copy).
    """
    G2, R1, R2, R3 = sh[1], sh[2], sh[3], sh[4]
    st0, st1, st2, st3 = st[0], st[1], st[2], st[3]
    ps0, ps1, ps2, ps3, ps4 = ps[0], ps[1], ps[2], ps[3], ps[4]
    for g in prange(sh[0] * G2):
        g1 = g // G2
        g2 = g - g1 * G2
        if use_fixed:
            a, b0, s, f, cc, vv = (fixed_mean[g], 0.0, fixed_scale, fixed_rstd[g] / fixed_scale,
                                   0.0, 0.0)
        else:
            a, b0, s, f, cc, vv = _group_stats(x, sh, st, g1, g2, center, eps, eps_outside)
        as_ = -(a * s)
        mu_hi[g] = a
        mu_lo[g] = b0
        scale[g] = s
        F[g] = f
        c[g] = cc
        var[g] = vv
        g0 = g1 * st0 + g2 * st1
        p0 = g1 * ps0 + g2 * ps1
        for r1 in range(R1):
            for r2 in range(R2):
                b = g0 + r1 * st2 + r2 * st3
                pb = p0 + r1 * ps2 + r2 * ps3
                if ps4 == 0:
                    gv = gamma[pb] if has_gamma else 1.0
                    bv = beta[pb] if has_beta else 0.0
                    _row_out(x[b:b + R3], y[b:b + R3], s, as_, b0, f, gv, bv)
                else:
                    _row_out_vec(x[b:b + R3], y[b:b + R3], s, as_, b0, f,
                                 gamma[pb:pb + R3] if has_gamma else gamma[:0],
                                 beta[pb:pb + R3] if has_beta else beta[:0],
                                 has_gamma, has_beta)
                if copy_x:
                    for i in range(b, b + R3):
                        x_copy[i] = x[i]


def _standardize_project(x, sh, st, ps, gamma, has_gamma, v, center, mu_hi, mu_lo, scale,
                         F, c, out, sum_v, sum_vx, want_param_grads, nchunks,
                         pg_gamma, pg_beta):
    """Apply the symmetric per-group Jacobian ``A`` to ``gamma * v``.

    ``out = A (gamma * v)`` group by group (``gamma`` skipped when not
    ``has_gamma``).  Also stores per group ``sum_v = sum(gamma v)`` and
    ``sum_vx = sum(gamma v xhat)``.  With ``want_param_grads``, ``v`` is a
    cotangent ``dy`` and ``pg_gamma[k, p]`` / ``pg_beta[k, p]`` receive chunk
    ``k``'s partial sums of ``dy * xhat`` and ``dy`` for parameter index ``p``;
    chunks are fixed blocks of groups, so the result does not depend on the
    number of threads.
    """
    G2, R1, R2, R3 = sh[1], sh[2], sh[3], sh[4]
    st0, st1, st2, st3 = st[0], st[1], st[2], st[3]
    ps0, ps1, ps2, ps3, ps4 = ps[0], ps[1], ps[2], ps[3], ps[4]
    G = sh[0] * G2
    n = R1 * R2 * R3
    per = (G + nchunks - 1) // nchunks
    for k in prange(nchunks):
        for g in range(k * per, min(G, (k + 1) * per)):
            g1 = g // G2
            g2 = g - g1 * G2
            a = mu_hi[g]
            b0 = mu_lo[g]
            s = scale[g]
            f = F[g]
            as_ = -(a * s)
            g0 = g1 * st0 + g2 * st1
            p0 = g1 * ps0 + g2 * ps1
            S1 = 0.0
            C1 = 0.0
            S2 = 0.0
            C2 = 0.0
            for r1 in range(R1):
                for r2 in range(R2):
                    b = g0 + r1 * st2 + r2 * st3
                    pb = p0 + r1 * ps2 + r2 * ps3
                    if ps4 == 0:
                        # scalar gamma along the row: sums of v and v * xhat,
                        # which are also the parameter partial sums
                        r_s1, r_c1, r_s2, r_c2 = _row_proj_sums(
                            x[b:b + R3], v[b:b + R3], s, as_, b0, f, gamma[:0], False,
                            pg_gamma[0, :0], pg_beta[0, :0], False)
                        t1 = r_s1 + r_c1
                        t2 = r_s2 + r_c2
                        if want_param_grads:
                            pg_gamma[k, pb] += t2
                            pg_beta[k, pb] += t1
                        gv = gamma[pb] if has_gamma else 1.0
                        S1, t = two_sum(S1, t1 * gv)
                        C1 += t
                        S2, t = two_sum(S2, t2 * gv)
                        C2 += t
                    else:
                        r_s1, r_c1, r_s2, r_c2 = _row_proj_sums(
                            x[b:b + R3], v[b:b + R3], s, as_, b0, f,
                            gamma[pb:pb + R3] if has_gamma else gamma[:0], has_gamma,
                            pg_gamma[k, pb:pb + R3] if want_param_grads else pg_gamma[0, :0],
                            pg_beta[k, pb:pb + R3] if want_param_grads else pg_beta[0, :0],
                            want_param_grads)
                        S1, t = two_sum(S1, r_s1)
                        C1 += t + r_c1
                        S2, t = two_sum(S2, r_s2)
                        C2 += t + r_c2
            s1 = S1 + C1
            s2 = S2 + C2
            sum_v[g] = s1
            sum_vx[g] = s2
            m1 = s1 / n if center else 0.0
            # c = 0 (fixed statistics): no rank-one term, even where s2 is NaN;
            # s2 = 0 (a constant group): none either, even where c f^2 overflows
            m2 = c[g] * (s2 / n) if c[g] != 0.0 and s2 != 0.0 else 0.0
            for r1 in range(R1):
                for r2 in range(R2):
                    b = g0 + r1 * st2 + r2 * st3
                    pb = p0 + r1 * ps2 + r2 * ps3
                    if ps4 == 0:
                        gv = gamma[pb] if has_gamma else 1.0
                        _row_proj_out(x[b:b + R3], v[b:b + R3], out[b:b + R3], s, as_, b0, f, gv, m1, m2)
                    else:
                        _row_proj_out_vec(x[b:b + R3], v[b:b + R3], out[b:b + R3], s, as_, b0, f,
                                          gamma[pb:pb + R3] if has_gamma else gamma[:0], has_gamma,
                                          m1, m2)


def _standardize_xhat(x, sh, st, mu_hi, mu_lo, scale, F, out):
    """The normalized values ``xhat`` of every group (no affine)."""
    G2, R1, R2, R3 = sh[1], sh[2], sh[3], sh[4]
    st0, st1, st2, st3 = st[0], st[1], st[2], st[3]
    for g in prange(sh[0] * G2):
        g1 = g // G2
        g2 = g - g1 * G2
        a = mu_hi[g]
        s = scale[g]
        as_ = -(a * s)
        g0 = g1 * st0 + g2 * st1
        for r1 in range(R1):
            for r2 in range(R2):
                b = g0 + r1 * st2 + r2 * st3
                _row_out(x[b:b + R3], out[b:b + R3], s, as_, mu_lo[g], F[g], 1.0, 0.0)


@njit(**JIT)
def _row_stats_pullback(xr, outr, s, as_, b0, f, a, k):
    """outr += a + k xhat (no k term where xhat = 0: k may overflow there)."""
    for i in range(xr.size):
        xh = ((xr[i] * s + as_) - b0) * f
        outr[i] += (a + k * xh) if xh != 0.0 else a


def _standardize_stats_pullback(x, sh, st, mu_hi, mu_lo, scale, F, a, k, out):
    """Add the pullback of the statistics outputs to ``out``: ``a[g] + k[g] * xhat``
    on every element of group g (``a`` = mean cotangent / n, ``k`` = rstd cotangent
    times ``c r^2 / n``, true units), xhat formed as :func:`_standardize_xhat` does."""
    G2, R1, R2, R3 = sh[1], sh[2], sh[3], sh[4]
    st0, st1, st2, st3 = st[0], st[1], st[2], st[3]
    for g in prange(sh[0] * G2):
        g1 = g // G2
        g2 = g - g1 * G2
        s = scale[g]
        as_ = -(mu_hi[g] * s)
        g0 = g1 * st0 + g2 * st1
        for r1 in range(R1):
            for r2 in range(R2):
                b = g0 + r1 * st2 + r2 * st3
                _row_stats_pullback(x[b:b + R3], out[b:b + R3], s, as_, mu_lo[g], F[g], a[g], k[g])


standardize_forward = Kernel(_standardize_forward)
standardize_project = Kernel(_standardize_project)
standardize_xhat = Kernel(_standardize_xhat)
standardize_stats_pullback = Kernel(_standardize_stats_pullback)


@njit(**JIT)
def standardize_jacobian(idx, xh, gam, f, cf, center, J):
    """Write the dense Jacobian of every group into the zero matrix ``J`` (2-D).

    ``idx[g]`` are the flat positions of group g's elements, ``xh[g]`` their
    normalized values, ``gam[g]`` their gamma (ones without affine), ``f[g]``
    the multiplier and ``cf[g] = c_g f_g``; block
    ``J[idx_a, idx_b] = gam_a (f_g (delta_ab - center / n) + cf_g xh_a xh_b / n)``.
    """
    G, n = idx.shape
    for g in range(G):
        fg = f[g]
        cg = cf[g] / n
        for a in range(n):
            row = idx[g, a]
            ga = gam[g, a]
            xa = cg * xh[g, a]
            for b in range(n):
                v = fg * ((1.0 if a == b else 0.0) - center / n)
                if cg != 0.0:
                    v += xa * xh[g, b]
                J[row, idx[g, b]] = ga * v


restamp(globals())
