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

Per group the statistics (:func:`normref.kernels.moments._group_stats`: one
read of the group in the common case, compensated in vectorized lanes,
finalized in double-double) are stored as

* ``mu_hi``: the float64 nearest the mean (data units);
* ``mu_lo``: the rest of the mean, ``|mu_lo| <= ulp(mu_hi) / 2`` in scaled
  units (times ``scale``), so that
  ``(x - mean) * scale = (x * scale - mu_hi * scale) - mu_lo``: ``x - mu_hi``
  is exact near the mean (Sterbenz' lemma) and the correction is subtracted
  from it, never added to ``mu_hi``;
* ``scale = 2**-k``: a power of two applied to the deviations before squaring
  when the plain sums overflow or underflow (huge or subnormal data); 1
  otherwise;
* ``F``: the multiplier such that ``xhat = (x * scale - mu_hi * scale - mu_lo) * F``;
* ``c``: the coefficient of the rank-one term of the Jacobian in scaled
  deviations, ``c f^2`` (below);
* ``var``: the biased variance (or mean square, for scale-only).

Each group's output is written right after its statistics, while the group
is still in cache; the backward's two compensated sums per group run in the
same vectorized lanes (:func:`_acc_proj`), measuring the cotangent's range on
the way (``vrange``), and every output loop counts its non-finite results
(``nonfinite``), so that no separate pass over the data is needed for
either check.  All reductions run in a fixed order per group (each group's
lanes start from zero, whatever the chunking of groups among threads): the
results are bit-identical for any thread count and either build.

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

import numpy as np
from numba import njit, prange

from . import restamp
from ._dispatch import JIT, Kernel
from .compensated import LANES, lane_add, lanes_total, two_sum
from .moments import _clear, _group_stats

_FMAX = 1.7976931348623157e308  # the largest float64: |y| <= _FMAX is "finite"


# -- row helpers: one contiguous row x[b:b + n] of a group -------------------------
# Accumulators, packed in one array ``acc`` of 4 * LANES doubles: lanes of the
# sum of the deviations d (q = 0, rounding errors in q = 1) and of d^2 (q = 2,
# errors in q = 3); the projection sums of the backward use the same layout
# for w and w * xhat.
@njit(inline="always", **JIT)
def _lane_range(acc, j, v):
    """Lane ``j`` of the largest |v| (NaN-propagating, acc[4L:5L]) and of the
    smallest nonzero |v| (acc[5L:6L])."""
    a = abs(v)
    t = acc[4 * LANES + j]
    acc[4 * LANES + j] = a if not a <= t else t
    t = acc[5 * LANES + j]
    acc[5 * LANES + j] = a if a < t and a > 0.0 else t


@njit(**JIT)
def _lanes_range(acc):
    """(largest |v|, smallest nonzero |v|) over the range lanes, NaN-propagating."""
    top = 0.0
    low = math.inf
    for j in range(LANES):
        a = acc[4 * LANES + j]
        top = a if not a <= top else top
        low = min(low, acc[5 * LANES + j])
    return top, low


@njit(**JIT)
def _acc_proj(xr, vr, s, as_, b0, f, acc):
    """Lanes of sum w and sum w * xhat over a row, w = v (no gamma along the row), and
    the range lanes of |v|."""
    n = xr.size
    m = n - n % LANES
    for k in range(0, m, LANES):
        for j in range(LANES):
            w = vr[k + j]
            lane_add(acc, j, LANES + j, w)
            lane_add(acc, 2 * LANES + j, 3 * LANES + j, w * (((xr[k + j] * s + as_) - b0) * f))
            _lane_range(acc, j, w)
    for j in range(n - m):
        w = vr[m + j]
        lane_add(acc, j, LANES + j, w)
        lane_add(acc, 2 * LANES + j, 3 * LANES + j, w * (((xr[m + j] * s + as_) - b0) * f))
        _lane_range(acc, j, w)


@njit(**JIT)
def _acc_proj_vec(xr, vr, gr, s, as_, b0, f, acc):
    """Lanes of sum w and sum w * xhat over a row, w = v * gamma (gamma along the row),
    and the range lanes of |v|."""
    n = xr.size
    m = n - n % LANES
    for k in range(0, m, LANES):
        for j in range(LANES):
            v = vr[k + j]
            w = v * gr[k + j]
            lane_add(acc, j, LANES + j, w)
            lane_add(acc, 2 * LANES + j, 3 * LANES + j, w * (((xr[k + j] * s + as_) - b0) * f))
            _lane_range(acc, j, v)
    for j in range(n - m):
        v = vr[m + j]
        w = v * gr[m + j]
        lane_add(acc, j, LANES + j, w)
        lane_add(acc, 2 * LANES + j, 3 * LANES + j, w * (((xr[m + j] * s + as_) - b0) * f))
        _lane_range(acc, j, v)


@njit(**JIT)
def _row_param_partials(xr, vr, s, as_, b0, f, pgr, pbr):
    """pgr += v * xhat, pbr += v along a row (parameter-gradient partial rows)."""
    for i in range(xr.size):
        v = vr[i]
        pgr[i] += v * (((xr[i] * s + as_) - b0) * f)
        pbr[i] += v


@njit(**JIT)
def _row_out(xr, yr, s, as_, b0, f, g, bt):
    """y = xhat * g + bt with scalar affine (g = 1, bt = 0 when absent); returns the
    number of non-finite outputs."""
    nf = 0
    for i in range(xr.size):
        y = (((xr[i] * s + as_) - b0) * f) * g + bt
        yr[i] = y
        nf += not abs(y) <= _FMAX
    return nf


@njit(**JIT)
def _row_out_vec(xr, yr, s, as_, b0, f, gr, br, has_g, has_b):
    """y = xhat * gamma + beta with per-element affine along the row; returns the
    number of non-finite outputs."""
    nf = 0
    for i in range(xr.size):
        xh = ((xr[i] * s + as_) - b0) * f
        if has_g:
            xh = xh * gr[i]
        if has_b:
            xh = xh + br[i]
        yr[i] = xh
        nf += not abs(xh) <= _FMAX
    return nf


@njit(**JIT)
def _row_proj_out(xr, vr, outr, s, as_, b0, f, g, m1, m2):
    """out = ((v g - m1) f + m2 d) s with scalar g, d the scaled deviation; returns
    the number of non-finite outputs."""
    nf = 0
    for i in range(xr.size):
        d = (xr[i] * s + as_) - b0
        o = ((vr[i] * g - m1) * f + m2 * d) * s
        outr[i] = o
        nf += not abs(o) <= _FMAX
    return nf


@njit(**JIT)
def _row_proj_out_vec(xr, vr, outr, s, as_, b0, f, gr, has_g, m1, m2):
    """out = ((v gamma - m1) f + m2 d) s with per-element gamma; returns the number
    of non-finite outputs."""
    nf = 0
    for i in range(xr.size):
        d = (xr[i] * s + as_) - b0
        w = vr[i] * gr[i] if has_g else vr[i]
        o = ((w - m1) * f + m2 * d) * s
        outr[i] = o
        nf += not abs(o) <= _FMAX
    return nf


# -- kernels -------------------------------------------------------------------------
@njit(**JIT)
def _chunking(G):
    """Fixed blocks of groups for prange, each owning one accumulator array
    (results do not depend on the blocks: every group's sums start from zero)."""
    per = max(1, min(64, G // 64))
    return per, (G + per - 1) // per


def _standardize_forward(x, sh, st, ps, gamma, beta, has_gamma, has_beta, center, eps,
                         eps_outside, fixed_mean, fixed_rstd, fixed_scale, use_fixed, y,
                         mu_hi, mu_lo, scale, F, c, var, x_copy, copy_x, nonfinite):
    """Statistics and output of every group, fused so each group is read hot.

    ``fixed_mean`` / ``fixed_rstd`` (one value per group: the mean and
    ``(var + eps)^-1/2``) replace the batch statistics when ``use_fixed``
    (running statistics, ``c = 0``), the deviations formed at ``fixed_scale``
    (1, or 1/2 for data near the float64 maximum, so that ``x - mean``
    cannot overflow).  Writes the per-group statistics into the 1-D arrays.
    With ``copy_x`` the input is also copied into ``x_copy`` while each row
    is hot (a private copy for derivatives taken later, at the cost of one
    extra write instead of a separate copy).  ``nonfinite[g]`` receives the
    number of non-finite outputs of group g (so that the caller needs no
    separate pass to check the output).
    """
    G2, R1, R2, R3 = sh[1], sh[2], sh[3], sh[4]
    st0, st1, st2, st3 = st[0], st[1], st[2], st[3]
    ps0, ps1, ps2, ps3, ps4 = ps[0], ps[1], ps[2], ps[3], ps[4]
    G = sh[0] * G2
    per, nblocks = _chunking(G)
    for k in prange(nblocks):
        acc = np.empty(4 * LANES)
        for g in range(k * per, min(G, (k + 1) * per)):
            g1 = g // G2
            g2 = g - g1 * G2
            nf = 0
            if use_fixed:
                a, b0, s, f, cc, vv = (fixed_mean[g], 0.0, fixed_scale,
                                       fixed_rstd[g] / fixed_scale, 0.0, 0.0)
            else:
                a, b0, s, f, cc, vv = _group_stats(x, sh, st, g1, g2, center, eps,
                                                   eps_outside, acc)
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
                        nf += _row_out(x[b:b + R3], y[b:b + R3], s, as_, b0, f, gv, bv)
                    else:
                        nf += _row_out_vec(x[b:b + R3], y[b:b + R3], s, as_, b0, f,
                                           gamma[pb:pb + R3] if has_gamma else gamma[:0],
                                           beta[pb:pb + R3] if has_beta else beta[:0],
                                           has_gamma, has_beta)
                    if copy_x:
                        for i in range(b, b + R3):
                            x_copy[i] = x[i]
            nonfinite[g] = nf


def _standardize_project(x, sh, st, ps, gamma, has_gamma, v, center, mu_hi, mu_lo, scale,
                         F, c, out, sum_v, sum_vx, want_param_grads, nchunks,
                         pg_gamma, pg_beta, nonfinite, vrange):
    """Apply the symmetric per-group Jacobian ``A`` to ``gamma * v``.

    ``out = A (gamma * v)`` group by group (``gamma`` skipped when not
    ``has_gamma``).  Also stores per group ``sum_v = sum(gamma v)`` and
    ``sum_vx = sum(gamma v xhat)``, both compensated in vectorized lanes.
    With ``want_param_grads``, ``v`` is a cotangent ``dy`` and
    ``pg_gamma[k, p]`` / ``pg_beta[k, p]`` receive chunk ``k``'s partial sums
    of ``dy * xhat`` and ``dy`` for parameter index ``p``; chunks are fixed
    blocks of groups, so the result does not depend on the number of threads.
    Per group, ``nonfinite[g]`` receives the number of non-finite entries of
    ``out`` and ``vrange[g]`` the largest and the smallest nonzero ``|v|``
    (what :func:`normref.numerics.power_bands` decides by), so that neither
    needs a pass of its own.
    """
    G2, R1, R2, R3 = sh[1], sh[2], sh[3], sh[4]
    st0, st1, st2, st3 = st[0], st[1], st[2], st[3]
    ps0, ps1, ps2, ps3, ps4 = ps[0], ps[1], ps[2], ps[3], ps[4]
    G = sh[0] * G2
    n = R1 * R2 * R3
    per = (G + nchunks - 1) // nchunks
    for k in prange(nchunks):
        acc = np.empty(6 * LANES)
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
            _clear(acc, 4 * LANES)
            for j in range(LANES):
                acc[4 * LANES + j] = 0.0
                acc[5 * LANES + j] = math.inf
            for r1 in range(R1):
                for r2 in range(R2):
                    b = g0 + r1 * st2 + r2 * st3
                    pb = p0 + r1 * ps2 + r2 * ps3
                    if ps4 == 0:
                        # scalar gamma along the row: sums of v and v * xhat,
                        # which are also the parameter partial sums
                        _clear(acc, 4 * LANES)
                        _acc_proj(x[b:b + R3], v[b:b + R3], s, as_, b0, f, acc)
                        h, lo = lanes_total(acc, 0)
                        t1 = h + lo
                        h, lo = lanes_total(acc, 2)
                        t2 = h + lo
                        if want_param_grads:
                            pg_gamma[k, pb] += t2
                            pg_beta[k, pb] += t1
                        gv = gamma[pb] if has_gamma else 1.0
                        S1, t = two_sum(S1, t1 * gv)
                        C1 += t
                        S2, t = two_sum(S2, t2 * gv)
                        C2 += t
                    else:
                        if has_gamma:
                            _acc_proj_vec(x[b:b + R3], v[b:b + R3], gamma[pb:pb + R3],
                                          s, as_, b0, f, acc)
                        else:
                            _acc_proj(x[b:b + R3], v[b:b + R3], s, as_, b0, f, acc)
                        if want_param_grads:
                            _row_param_partials(x[b:b + R3], v[b:b + R3], s, as_, b0, f,
                                                pg_gamma[k, pb:pb + R3], pg_beta[k, pb:pb + R3])
            if ps4 == 0:
                s1 = S1 + C1
                s2 = S2 + C2
            else:
                h, lo = lanes_total(acc, 0)
                s1 = h + lo
                h, lo = lanes_total(acc, 2)
                s2 = h + lo
            sum_v[g] = s1
            sum_vx[g] = s2
            vrange[g, 0], vrange[g, 1] = _lanes_range(acc)
            nf = 0
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
                        nf += _row_proj_out(x[b:b + R3], v[b:b + R3], out[b:b + R3], s, as_, b0,
                                            f, gv, m1, m2)
                    else:
                        nf += _row_proj_out_vec(x[b:b + R3], v[b:b + R3], out[b:b + R3], s, as_,
                                                b0, f, gamma[pb:pb + R3] if has_gamma else gamma[:0],
                                                has_gamma, m1, m2)
            nonfinite[g] = nf


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
