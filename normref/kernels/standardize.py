"""numba kernels for the standardize / scale-only operation over any partition.

Every kernel works on flat C-contiguous buffers seen through the 5-D block
shape ``(G1, G2, R1, R2, R3)`` and element strides ``st`` built by
:class:`normref.partition.Layout`: group ``(g1, g2)`` is the slab
``[g1, g2, :, :, :]`` and its statistics are reduced over ``(R1, R2, R3)`` in
lexicographic order.  Affine parameters are read from the flattened
parameter with strides ``ps`` (zero where the parameter does not vary), so
one kernel serves batch, layer, instance, group, positional, batch-group and
ghost-batch norm alike.

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
* ``c``: the coefficient of the rank-one term of the Jacobian (below);
* ``var``: the biased variance (or mean square, for scale-only).

The variance is the corrected two-pass formula
``(sum d^2 - (sum d)^2 / n) / n`` with both sums compensated (TwoSum), which
is within a few ulps of the exact value at any offset.

Jacobian of the normalized group with respect to its input (``f`` the
multiplier as a function of the variance ``v``; ``c = 2 f'(v) / f^3``)::

    A = f * (I - [center] 1 1^T / n + c * xhat xhat^T / n)

which is symmetric, so the same kernel applies it for VJPs and JVPs:
``c = -1`` for ``f = (v + eps)^{-1/2}`` (eps inside the root), ``c = -(s + eps)/s``
for ``f = 1 / (s + eps)``, ``s = sqrt(v)`` (eps added to the standard
deviation), ``c = 0`` for fixed (running) statistics.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

_TINY = 1e-280  # below this a sum of squares may have lost bits to underflow


_JIT = dict(cache=True, fastmath=False, error_model="numpy")

#: below this many elements a kernel runs serially: thread launch costs more
#: than it saves.  Serial and parallel builds reduce every group in the same
#: order, so their results are bit-identical.
PARALLEL_MIN_SIZE = 1 << 15


class _Kernel:
    """One kernel source compiled twice: serial and ``parallel=True``."""

    def __init__(self, py_func):
        self.py_func = py_func
        self.__doc__ = py_func.__doc__
        self.__name__ = py_func.__name__.lstrip("_")
        self.serial = njit(**_JIT)(py_func)
        self.parallel = njit(parallel=True, **_JIT)(py_func)

    def __call__(self, size, *args):
        k = self.parallel if size >= PARALLEL_MIN_SIZE else self.serial
        return k(*args)


@njit(inline="always", **_JIT)
def _two_sum(a, b):
    s = a + b
    bp = s - a
    return s, (a - (s - bp)) + (b - bp)


@njit(**_JIT)
def _group_moments(x, sh, st, g1, g2, center, scale):
    """Corrected two-pass moments of one group, data multiplied by ``scale``.

    Returns (mu_hi, s1, s2): first-pass mean (of unscaled data), and the
    compensated sums of ``d * scale`` and ``(d * scale)**2`` with
    ``d = x - mu_hi``.
    """
    st0, st1, st2, st3, st4 = st[0], st[1], st[2], st[3], st[4]
    R1, R2, R3 = sh[2], sh[3], sh[4]
    n = R1 * R2 * R3
    g0 = g1 * st0 + g2 * st1
    s4 = st4
    mu_hi = 0.0
    if center:
        a0 = 0.0
        a1 = 0.0
        for r1 in range(R1):
            for r2 in range(R2):
                b = g0 + r1 * st2 + r2 * st3
                h = R3 // 2
                for r3 in range(h):
                    a0 += x[b + (2 * r3) * s4]
                    a1 += x[b + (2 * r3 + 1) * s4]
                if R3 % 2:
                    a0 += x[b + (R3 - 1) * s4]
        mu_hi = ((a0 + a1) * scale / n) / scale
        if not math.isfinite(mu_hi):
            # the plain sum overflowed: redo it in a scaled, compensated way
            m = 0.0
            for r1 in range(R1):
                for r2 in range(R2):
                    b = g0 + r1 * st2 + r2 * st3
                    for r3 in range(R3):
                        a = abs(x[b + r3 * s4])
                        if not a <= m:
                            m = a
            if math.isfinite(m) and m > 0.0:
                _, e = math.frexp(m)
                sc = math.ldexp(1.0, -e)
                s = 0.0
                cs = 0.0
                for r1 in range(R1):
                    for r2 in range(R2):
                        b = g0 + r1 * st2 + r2 * st3
                        for r3 in range(R3):
                            s, t = _two_sum(s, x[b + r3 * s4] * sc)
                            cs += t
                mu_hi = math.ldexp((s + cs) / n, e)
    s1 = 0.0
    c1 = 0.0
    s2 = 0.0
    c2 = 0.0
    ms = -(mu_hi * scale)
    for r1 in range(R1):
        for r2 in range(R2):
            b = g0 + r1 * st2 + r2 * st3
            for r3 in range(R3):
                # d = x - mu_hi in scaled units, with the exact rounding error
                # de of the subtraction (zero where Sterbenz applies) folded
                # into the residual sum: the residual mean is exact to a few
                # ulps at any offset
                d, de = _two_sum(x[b + r3 * s4] * scale, ms)
                s1, t = _two_sum(s1, d)
                c1 += t + de
                s2, t = _two_sum(s2, d * d)
                c2 += t
    return mu_hi, s1 + c1, s2 + c2


@njit(**_JIT)
def _group_stats(x, sh, st, g1, g2, center, eps, eps_outside):
    """(mu_hi, mu_lo, scale, F, c, var) of one group, see the module docstring."""
    st0, st1, st2, st3, st4 = st[0], st[1], st[2], st[3], st[4]
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
        g0 = g1 * st0 + g2 * st1
        for r1 in range(R1):
            for r2 in range(R2):
                b = g0 + r1 * st2 + r2 * st3
                for r3 in range(R3):
                    a = abs(x[b + r3 * st4] * half - mu_hi * half)
                    if not a <= m:
                        m = a
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
            c = -den / sd if sd > 0.0 else 0.0
    else:
        es = (eps * scale) * scale  # 0 for eps = 0 (scale * scale may overflow)
        if math.isinf(es):
            # eps dominates the (tiny) variance beyond float64 resolution
            F = (1.0 / math.sqrt(eps)) / scale
        else:
            F = 1.0 / math.sqrt(v + es)
        c = -1.0
    return mu_hi, mu_lo, scale, F, c, var


def _standardize_forward(x, sh, st, ps, gamma, beta, has_gamma, has_beta, center, eps,
                        eps_outside, fixed_mean, fixed_var, use_fixed, y,
                        mu_hi, mu_lo, scale, F, c, var):
    """Statistics and output of every group, fused so each group is read hot.

    ``fixed_mean`` / ``fixed_var`` (one value per group) replace the batch
    statistics when ``use_fixed`` (running statistics: ``F = (var + eps)^-1/2``,
    ``c = 0``).  Writes the per-group statistics into the 1-D arrays.
    """
    st0, st1, st2, st3, st4 = st[0], st[1], st[2], st[3], st[4]
    ps0, ps1, ps2, ps3, ps4 = ps[0], ps[1], ps[2], ps[3], ps[4]
    G2, R1, R2, R3 = sh[1], sh[2], sh[3], sh[4]
    for g in prange(sh[0] * G2):
        g1 = g // G2
        g2 = g - g1 * G2
        if use_fixed:
            a, b0, s, f, cc, vv = fixed_mean[g], 0.0, 1.0, 1.0 / math.sqrt(fixed_var[g] + eps), 0.0, fixed_var[g]
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
                for r3 in range(R3):
                    i = b + r3 * st4
                    xh = ((x[i] * s + as_) - b0) * f
                    p = pb + r3 * ps4
                    if has_gamma:
                        xh = xh * gamma[p]
                    if has_beta:
                        xh = xh + beta[p]
                    y[i] = xh


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
    st0, st1, st2, st3, st4 = st[0], st[1], st[2], st[3], st[4]
    ps0, ps1, ps2, ps3, ps4 = ps[0], ps[1], ps[2], ps[3], ps[4]
    G2, R1, R2, R3 = sh[1], sh[2], sh[3], sh[4]
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
            s1 = 0.0
            c1 = 0.0
            s2 = 0.0
            c2 = 0.0
            for r1 in range(R1):
                for r2 in range(R2):
                    b = g0 + r1 * st2 + r2 * st3
                    pb = p0 + r1 * ps2 + r2 * ps3
                    for r3 in range(R3):
                        i = b + r3 * st4
                        p = pb + r3 * ps4
                        xh = ((x[i] * s + as_) - b0) * f
                        w = v[i]
                        if want_param_grads:
                            pg_gamma[k, p] += w * xh
                            pg_beta[k, p] += w
                        if has_gamma:
                            w = w * gamma[p]
                        s1, t = _two_sum(s1, w)
                        c1 += t
                        s2, t = _two_sum(s2, w * xh)
                        c2 += t
            s1 = s1 + c1
            s2 = s2 + c2
            sum_v[g] = s1
            sum_vx[g] = s2
            m1 = s1 / n if center else 0.0
            # c = 0 (fixed statistics): no rank-one term, even where s2 is NaN
            m2 = c[g] * (s2 / n) if c[g] != 0.0 else 0.0
            for r1 in range(R1):
                for r2 in range(R2):
                    b = g0 + r1 * st2 + r2 * st3
                    pb = p0 + r1 * ps2 + r2 * ps3
                    for r3 in range(R3):
                        i = b + r3 * st4
                        xh = ((x[i] * s + as_) - b0) * f
                        w = v[i]
                        if has_gamma:
                            w = w * gamma[pb + r3 * ps4]
                        out[i] = ((w - m1 + m2 * xh) * f) * s


def _standardize_xhat(x, sh, st, mu_hi, mu_lo, scale, F, out):
    """The normalized values ``xhat`` of every group (no affine)."""
    st0, st1, st2, st3, st4 = st[0], st[1], st[2], st[3], st[4]
    G2, R1, R2, R3 = sh[1], sh[2], sh[3], sh[4]
    for g in prange(sh[0] * G2):
        g1 = g // G2
        g2 = g - g1 * G2
        a = mu_hi[g]
        b0 = mu_lo[g]
        s = scale[g]
        f = F[g]
        as_ = -(a * s)
        g0 = g1 * st0 + g2 * st1
        for r1 in range(R1):
            for r2 in range(R2):
                b = g0 + r1 * st2 + r2 * st3
                for r3 in range(R3):
                    i = b + r3 * st4
                    out[i] = ((x[i] * s + as_) - b0) * f


standardize_forward = _Kernel(_standardize_forward)
standardize_project = _Kernel(_standardize_project)
standardize_xhat = _Kernel(_standardize_xhat)
