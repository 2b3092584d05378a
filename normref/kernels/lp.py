"""Numba kernels for Lp norms of rows: ``normalize`` and ``weight_norm``.

Layout: a C-contiguous ``(R, D)`` float64 array; every row is an independent
group (one ``prange`` iteration) reduced left to right (the norm's sum with a
Neumaier compensated sum), so results do not depend on the number of threads.

Two evaluations of every quantity, chosen per row:

* the **plain path**, ordinary float64 formulas, taken for the derivatives
  when ``p`` is 1, 2, inf or in ``[1, 4]``, the row's nonzero entries lie in
  ``[2**-120, 2**120]`` and the cotangent / tangent entries are 0 or in
  ``[2**-364, 2**64)`` (and, for other ``p`` in ``[1, 4]``, every nonzero
  ``|g_j| >= 2**-300``): then every intermediate (``y``, ``g``, ``y * dy``,
  their sums, ``1/N``) is a normal number or a contribution below the
  rounding of the sum it enters, so the plain formulas are as exact as
  float64 allows;
* the **scaled path** everywhere else: every factor is carried as a pair
  ``(mantissa, integer exponent)`` (``x = m 2**e`` exactly, from ``frexp``),
  products and quotients multiply mantissas and add exponents, sums are
  taken relative to the largest term's exponent, powers ``(m 2**k)**q`` split
  ``q k`` exactly into an integer and a fraction (:func:`_pow_scaled`), and
  each result is formed by one final ``ldexp``.  Nothing over- or underflows
  before that last step, whatever the magnitudes of ``x``, ``g``, ``p``.

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

Performance notes.  The scaled path of a row runs in a second ``prange``
loop, entered only when some row needs it, so that the plain loop calls no
function taking arrays; the per-row residuals are one ``(R, 8)`` float64
array (one cache line per row) rather than several small arrays written from
the threads -- both were measurably faster in the parallel builds.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ._dispatch import parallel_kernel

__all__ = [
    "lp_norm_rows",
    "normalize_forward",
    "normalize_vjp",
    "normalize_jvp",
    "normalize_jacobian_blocks",
    "normalize_norm_gradient",
    "weight_norm_forward",
    "weight_norm_vjp",
    "weight_norm_jvp",
]

_BIG = 1.7976931348623157e308
_TINY = 2.2250738585072014e-308  # smallest normal float64
_LN2 = math.log(2.0)
_EXP_CAP = 1 << 40               # |exponent| beyond this means 0 or inf
_NO_EXP = -(1 << 62)             # "no term yet" marker for max-exponent scans
# plain-path bounds (see the module docstring and the kernels)
_X_HI = 2.0 ** 120
_X_LO = 2.0 ** -120
_T_HI = 2.0 ** 64
_T_LO = 2.0 ** -364
_G_LO = 2.0 ** -300

# row kinds
_ROW_OK = 0
_ROW_NONFINITE = 1
_ROW_ZERO = 2
# status bits
_ST_OVERFLOW = 1
_ST_ZERO = 2


# ---------------------------------------------------------------- scaled arithmetic
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
def _dot_scaled(x, i, w, e0):
    """``sum_j x[i, j] w[i, j] 2**-e0`` as a pair, exact up to a compensated sum.

    Each product is ``(mx mw) 2**(ex + ew)``; the terms are aligned to the
    largest exponent (smaller ones only lose what is below ``2**-1074`` of it).
    """
    D = x.shape[1]
    emax = _NO_EXP
    for j in range(D):
        a = x[i, j]
        b = w[i, j]
        if a != 0.0 and b != 0.0:
            _, ea = _frexp(a)
            _, eb = _frexp(b)
            if ea + eb > emax:
                emax = ea + eb
    if emax == _NO_EXP:
        return 0.0, np.int64(0)
    s = 0.0
    comp = 0.0
    for j in range(D):
        a = x[i, j]
        b = w[i, j]
        if a != 0.0 and b != 0.0:
            ma, ea = _frexp(a)
            mb, eb = _frexp(b)
            t = _ldexp(ma * mb, ea + eb - emax)
            z = s + t
            if abs(s) >= abs(t):
                comp += (s - z) + t
            else:
                comp += (t - z) + s
            s = z
    return _norm_pair(s + comp, emax - e0)


# ---------------------------------------------------------------- norms
@njit(cache=True, fastmath=False)
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


@njit(cache=True, fastmath=False)
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
            t = (a / m) ** p
            z = s + t
            if abs(s) >= abs(t):
                comp += (s - z) + t
            else:
                comp += (t - z) + s
            s = z
        if nnz == 1:
            return fm, e, e
        return fm * (s + comp) ** (1.0 / p), e, e
    if p == 1.0 or p == 2.0:
        # one nonzero entry needs no special case: S = |x~| (p = 1) and
        # sqrt(fl(x~**2)) = |x~| (p = 2) are exact
        for j in range(D):
            a = abs(math.ldexp(x[i, j], -e))
            t = a if p == 1.0 else a * a
            z = s + t
            if abs(s) >= abs(t):
                comp += (s - z) + t
            else:
                comp += (t - z) + s
            s = z
        s = s + comp
        return (s if p == 1.0 else math.sqrt(s)), e, e
    if p >= 1.0:
        for j in range(D):
            a = abs(math.ldexp(x[i, j], -e))
            nnz += 1 if a != 0.0 else 0
            t = a ** p
            z = s + t
            if abs(s) >= abs(t):
                comp += (s - z) + t
            else:
                comp += (t - z) + s
            s = z
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
        z = s + t
        if abs(s) >= abs(t):
            comp += (s - z) + t
        else:
            comp += (t - z) + s
        s = z
    if nnz == 0:
        return fm, e, e
    L = math.log1p(s + comp) / (p * _LN2)
    vm, ve = _exp2_pair(L)
    return vm, ve + e, e


@njit(cache=True, fastmath=False)
def _row_norm(x, i, p):
    """``(||x[i]||_p, index of the first max |x|)``; NaN propagates, inf gives inf."""
    m, arg, kind = _row_scan(x, i)
    if kind != _ROW_OK:
        return m, arg
    Nm, eN, _ = _row_norm_pair(x, i, p, m, arg)
    return _ldexp(Nm, eN), arg


@parallel_kernel(cache=True, fastmath=False)
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


# ---------------------------------------------------------------- normalize
@njit(cache=True, fastmath=False)
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
        fm, e = _frexp(m)
        if p == np.inf:
            Nm = fm
            eN = e
        elif not (p == 1.0 or p == 2.0):
            Nm, eN, e = _row_norm_pair(x, i, p, m, arg)
        else:
            # S = sum |x 2**-e|**p, compensated; one nonzero entry needs no
            # special case: S = |x~| (p = 1) and sqrt(fl(x~**2)) = |x~| are exact
            s = 0.0
            comp = 0.0
            for j in range(D):
                a = abs(math.ldexp(x[i, j], -e))
                t = a if p == 1.0 else a * a
                z = s + t
                if abs(s) >= abs(t):
                    comp += (s - z) + t
                else:
                    comp += (t - z) + s
                s = z
            s = s + comp
            Nm = s if p == 1.0 else math.sqrt(s)
            eN = e
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


@parallel_kernel(cache=True, fastmath=False)
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


@njit(cache=True, fastmath=False)
def _in_t_range(v):
    a = abs(v)
    return a == 0.0 or (a >= _T_LO and a < _T_HI)


@njit(cache=True, fastmath=False)
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


@njit(cache=True, fastmath=False)
def _single(x, i):
    """True when row ``i`` has exactly one nonzero entry: then ``y = sign(x)`` is
    constant in that entry, whose derivative is exactly 0 (not a rounding residue)."""
    nnz = 0
    for j in range(x.shape[1]):
        if x[i, j] != 0.0:
            nnz += 1
    return nnz == 1


@njit(cache=True, fastmath=False)
def _unit(p, m):
    """Mantissa ``mu`` of the scaled unit ``mu 2**e`` of the derivative formulas:
    1 (``x~ = x 2**-e``, exact) for ``p < 512`` and inf, ``f = m 2**-e`` (units of
    ``max |x|``, so the largest term is exactly 1 and terms far below it go to
    0 instead of crowding at the exponent clamp) for ``p >= 512``."""
    if p >= 512.0 and p != np.inf:
        fm, _ = _frexp(m)
        return fm
    return 1.0


@njit(cache=True, fastmath=False)
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


@njit(cache=True, fastmath=False)
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
            t = _ldexp(tm, te - emax)
            z = s + t
            if abs(s) >= abs(t):
                comp += (s - z) + t
            else:
                comp += (t - z) + s
            s = z
    return _norm_pair(s + comp, emax)


@njit(cache=True, fastmath=False)
def _normalize_vjp_row_scaled(x, dy, dx, i, Nm, eN, e, arg, p, m):
    """Scaled path of one row: ``dx_j = (dy_j - G_j T~ / S) / N``.  Returns overflow."""
    D = x.shape[1]
    mu = _unit(p, m)
    Tm, Te = _dot_scaled(x, i, dy, e)
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


@parallel_kernel(cache=True, fastmath=False)
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
        kind = int(res[i, _KIND])
        nv = res[i, _NV]
        if kind == _ROW_NONFINITE:
            for j in range(D):
                dx[i, j] = np.nan
            continue
        if kind == _ROW_ZERO or (eps > 0.0 and nv < eps):
            for j in range(D):
                r = dy[i, j] / eps
                if abs(r) > _BIG and abs(dy[i, j]) <= _BIG:
                    st[i] = _ST_OVERFLOW
                dx[i, j] = r
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
    # the scaled path in a loop of its own: the plain loop above then calls no
    # function taking arrays (whose reference counting slows the threads down)
    if need.any():
        for i in prange(R):
            if need[i] != 1:
                continue
            a = np.int64(res[i, _ARG])
            if _normalize_vjp_row_scaled(x, dy, dx, i, res[i, _NM], np.int64(res[i, _EN]), np.int64(res[i, _E]), a, p,
                                         abs(x[i, a])):
                st[i] = _ST_OVERFLOW
    return dx, st


@njit(cache=True, fastmath=False)
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
                term = _ldexp(Gm * mt, Ge + et - emax)
                z = s + term
                if abs(s) >= abs(term):
                    comp += (s - z) + term
                else:
                    comp += (term - z) + s
                s = z
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


@parallel_kernel(cache=True, fastmath=False)
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
        kind = int(res[i, _KIND])
        nv = res[i, _NV]
        if kind == _ROW_NONFINITE:
            for j in range(D):
                ty[i, j] = np.nan
            continue
        if kind == _ROW_ZERO or (eps > 0.0 and nv < eps):
            for j in range(D):
                r = t[i, j] / eps
                if abs(r) > _BIG and abs(t[i, j]) <= _BIG:
                    st[i] = _ST_OVERFLOW
                ty[i, j] = r
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


@parallel_kernel(cache=True, fastmath=False)
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


@parallel_kernel(cache=True, fastmath=False)
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


# ---------------------------------------------------------------- weight_norm
@njit(cache=True, fastmath=False)
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


@parallel_kernel(cache=True, fastmath=False)
def weight_norm_forward(v, g):
    """``w = g v / ||v||`` row-wise; ``g`` has one entry per row.

    Returns ``(w, res)``, ``res`` of shape ``(R, 8)`` (one cache line per row):
    ``nv`` the float norm (``inf`` when it overflows), ``||v|| = rs 2**e`` with
    ``rs = sqrt(sum (v 2**-e)**2)`` in ``[0.5, sqrt(D)]``, ``kind`` as in
    :func:`normalize_forward`, ``fast`` the rows that may take the plain
    derivative path, ``status`` bit 1: an entry of ``w`` overflows, bit 2: zero
    norm.  ``w = v * (g / n)``, PyTorch's evaluation order, when ``q = g / n``
    is a normal number; else ``w_j = (mg mv_j / rs) 2**(eg + ev_j - e)`` with
    one rounding (``g = 1e-300``, ``n = 1e300``: ``q`` underflows, ``w`` does
    not).
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


@njit(cache=True, fastmath=False)
def _weight_norm_vjp_row_scaled(v, dw, dv, dg, i, rs, e, gi):
    """Scaled path of one row (see :func:`weight_norm_vjp`); returns overflow."""
    D = v.shape[1]
    Tm, Te = _dot_scaled(v, i, dw, e)
    sm, se = _norm_pair(Tm / rs, Te)          # dg as a pair
    dg[i] = _ldexp(sm, se)
    gm, ge = _frexp(gi)
    over = False
    for j in range(D):
        mv, ev = _frexp(v[i, j])
        cm, ce = _norm_pair(mv / rs * sm, (ev - e) + se)   # u_j dg
        dm, de = _frexp(dw[i, j])
        am, ae = _pair_add(dm, de, -cm, ce)
        r = _ldexp(gm / rs * am, ge - e + ae)
        if abs(r) > _BIG:
            over = True
        dv[i, j] = r
    return over


@njit(cache=True, fastmath=False)
def _weight_norm_jvp_row_scaled(v, tv, tw, i, rs, e, gi, tgi):
    """Scaled path of one row (see :func:`weight_norm_jvp`); returns overflow."""
    D = v.shape[1]
    Tm, Te = _dot_scaled(v, i, tv, e)
    sm, se = _norm_pair(Tm / rs, Te)          # u . tv
    gm, ge = _frexp(gi)
    tgm, tge = _frexp(tgi)
    over = False
    for j in range(D):
        mv, ev = _frexp(v[i, j])
        um, ue = _norm_pair(mv / rs, ev - e)   # u_j
        cm, ce = _norm_pair(um * sm, ue + se)
        dm, de = _frexp(tv[i, j])
        am, ae = _pair_add(dm, de, -cm, ce)
        bm, be = _norm_pair(gm / rs * am, ge - e + ae)
        hm, he = _pair_add(tgm * um, tge + ue, bm, be)
        r = _ldexp(hm, he)
        if abs(r) > _BIG:
            over = True
        tw[i, j] = r
    return over


@parallel_kernel(cache=True, fastmath=False)
def weight_norm_vjp(v, res, g, dw):
    """``dg = u . dw``, ``dv = (g / n) (dw - u (u . dw))`` with ``u = v / n``.

    Plain path: rows on the forward's plain path with ``dw`` entries 0 or in
    ``[2**-364, 2**64)`` (then ``u >= 2**-271``, ``g / n`` and every product
    are normal or below the rounding of their sum).  Scaled path:
    ``dg = (sum v~ dw) / rs``, ``u_j = (mv_j / rs) 2**(ev_j - e)``,
    ``dv_j = (g / rs) 2**-e (dw_j - u_j dg)`` in pairs.  Returns ``(dv, dg, status)``.
    """
    R, D = v.shape
    dv = np.empty_like(v)
    dg = np.empty(R)
    st = np.zeros(R, dtype=np.int8)
    need = np.zeros(R, dtype=np.int8)
    for i in prange(R):
        nv = res[i, _WNV]
        if int(res[i, _WKIND]) != _ROW_OK:
            for j in range(D):
                dv[i, j] = np.nan
            dg[i] = np.nan
            continue
        ok = res[i, _WFAST] == 1.0
        if ok:
            s = 0.0
            tmax = 0.0
            tmin = np.inf
            vmin = np.inf
            for j in range(D):
                t = dw[i, j]
                at = abs(t)
                av = abs(v[i, j])
                tmax = at if at > tmax else tmax
                tmin = at if (at < tmin) & (at != 0.0) else tmin
                vmin = av if (av < vmin) & (av != 0.0) else vmin
                s += (v[i, j] / nv) * t
            ok = tmax < _T_HI and tmin >= _T_LO and vmin >= _X_LO
        if ok:
            dg[i] = s
            q = g[i] / nv
            for j in range(D):
                dv[i, j] = q * (dw[i, j] - (v[i, j] / nv) * s)
            continue
        need[i] = 1
    if need.any():
        for i in prange(R):
            if need[i] != 1:
                continue
            if _weight_norm_vjp_row_scaled(v, dw, dv, dg, i, res[i, _WRS], np.int64(res[i, _WE]), g[i]):
                st[i] = _ST_OVERFLOW
    return dv, dg, st


@parallel_kernel(cache=True, fastmath=False)
def weight_norm_jvp(v, res, g, tv, tg):
    """``tw = tg u + (g / n) (tv - u (u . tv))`` with ``u = v / n``; ``(tw, status)``."""
    R, D = v.shape
    tw = np.empty_like(v)
    st = np.zeros(R, dtype=np.int8)
    need = np.zeros(R, dtype=np.int8)
    for i in prange(R):
        nv = res[i, _WNV]
        if int(res[i, _WKIND]) != _ROW_OK:
            for j in range(D):
                tw[i, j] = np.nan
            continue
        ok = res[i, _WFAST] == 1.0 and _in_t_range(tg[i])
        if ok:
            s = 0.0
            tmax = 0.0
            tmin = np.inf
            vmin = np.inf
            for j in range(D):
                t = tv[i, j]
                at = abs(t)
                av = abs(v[i, j])
                tmax = at if at > tmax else tmax
                tmin = at if (at < tmin) & (at != 0.0) else tmin
                vmin = av if (av < vmin) & (av != 0.0) else vmin
                s += (v[i, j] / nv) * t
            ok = tmax < _T_HI and tmin >= _T_LO and vmin >= _X_LO
        if ok:
            q = g[i] / nv
            for j in range(D):
                u = v[i, j] / nv
                tw[i, j] = tg[i] * u + q * (tv[i, j] - u * s)
            continue
        need[i] = 1
    if need.any():
        for i in prange(R):
            if need[i] != 1:
                continue
            if _weight_norm_jvp_row_scaled(v, tv, tw, i, res[i, _WRS], np.int64(res[i, _WE]), g[i], tg[i]):
                st[i] = _ST_OVERFLOW
    return tw, st
