"""The verification measures behind ``python -m normref check`` and the test-suite.

For one example case of a normalizer (a :class:`~normref.registry.Case` of its
``spec.examples``), each measure returns ``(error, tolerance)``:

* :func:`forward_error`  -- the fast forward against the autograd reference formula;
* :func:`vjp_error`      -- every VJP slot against autograd's VJP of the reference;
* :func:`jvp_error`      -- the JVP against autograd's forward mode on the reference;
* :func:`jacobian_error` -- the dense Jacobian against stacked VJPs of unit cotangents;
* :func:`fd_errors`      -- dot-product tests against central finite differences in
  random directions (:func:`normref.testing.check_vjp`).

Errors are relative to the scale of the rounding the quantity can carry, and
tolerances come from :mod:`normref.tolerance` (the rule the conformance judge
uses too).  :func:`check_case` runs all of them; :mod:`normref.check` prints them.

A case whose call returns several outputs (``return_stats=True``: ``(y,
mean, rstd)``) is measured output by output (each against its own scale,
the worst reported) with one cotangent per output; the reference returns
the same tuple.
"""
from __future__ import annotations

import math

import numpy as np

from . import autodiff
from .registry import flatten_outputs, split_outputs
from .tolerance import (DERIVATIVE_ULPS, EPS, FORWARD_ULPS, case_cond, cond,  # noqa: F401
                        rounding_scale as _rounding_scale, tolerance)

FD_RTOL = 1e-6
FD_ATOL = 1e-9


def _outputs(y):
    """A call's outputs as a tuple (the one array, or the tuple of a multi-output call)."""
    return tuple(y) if isinstance(y, tuple) else (y,)


def _like(parts, y):
    """``parts`` (one per output) packed like the call's output ``y``."""
    return tuple(parts) if isinstance(y, tuple) else parts[0]


def differentiable_slots(spec, case):
    """Positions of the differentiable array arguments of this call."""
    _, _, slots = autodiff.bind(spec.function, *case.fresh_args(), **case.kwargs)
    return [i for i, s in enumerate(slots) if s is not None]


def reference_jvp(f, x, t):
    """Forward-mode derivative of the reference ``f`` at ``x`` along ``t``.

    autograd's forward mode where it has the rules; otherwise (``eigh`` has
    no JVP rule) ``J t`` assembled row by row from reverse-mode VJPs of the
    unit cotangents.
    """
    import autograd

    try:
        ty = autograd.make_jvp(f)(x)(t)[1]
        return tuple(ty) if isinstance(ty, tuple) else ty
    except NotImplementedError:
        # one reverse pass per output element: (J t)_i = <J^T e_i, t>.  (Not
        # reverse-over-reverse: differentiating autograd's eigh rule again
        # squares its 1 / (l_i - l_j) sensitivity.)
        pullback, y = autograd.make_vjp(f)(x)
        y = np.asarray(y)
        out = np.empty(y.size)
        e = np.zeros(y.size)
        for i in range(y.size):
            e[i] = 1.0
            out[i] = float(np.sum(np.asarray(pullback(e.reshape(y.shape))) * t))
            e[i] = 0.0
        return out.reshape(y.shape)


def reference_of(spec, case, i):
    """The reference as a function of positional argument ``i`` alone."""

    def f(a):
        args = list(case.fresh_args())
        args[i] = a
        return spec.reference(*args, **case.kwargs)

    return f


def rounding_scale(spec, case, k, vec, transpose):
    """Size of the rounding a VJP (``transpose``) or JVP along ``vec`` can carry:
    the largest entry of :func:`normref.tolerance.rounding_scale` for the dense
    Jacobian of slot ``k``, with the floor of cancelling intermediate terms
    (the reference's textbook formulas have them for every normalizer), and at
    least 1e-300.  (Several outputs: the largest of :func:`output_scales`.)
    """
    return max(output_scales(spec, case, k, vec, transpose))


def output_scales(spec, case, k, vec, transpose):
    """:func:`rounding_scale` per output: for a VJP one scale (the outputs' rounding
    summed, ``vec`` one cotangent per output), for a JVP one per output."""
    J = _outputs(autodiff.jacobian(spec.function, *case.fresh_args(), wrt=k, **case.kwargs))
    y = _outputs(spec.function(*case.fresh_args(), **case.kwargs))
    x = case.args[0]
    if transpose:
        t = sum(_rounding_scale(Ji, vi, np.asarray(yi), x, transpose=True, floor=True)
                for Ji, vi, yi in zip(J, _outputs(vec), y))
        return [max(float(np.max(t, initial=0)), 1e-300)]
    return [max(float(np.max(_rounding_scale(Ji, vec, np.asarray(yi), x, transpose=False,
                                             floor=True), initial=0)), 1e-300)
            for Ji, yi in zip(J, y)]


def _ratio(err, scale):
    return float(err) / scale if scale > 0 else (0.0 if err == 0 else math.inf)


def forward_error(spec, case):
    """(relative error, tolerance) of the forward against the reference (the worst
    output's, for a call with several)."""
    y = spec.function(*case.fresh_args(), **case.kwargs)
    yr = spec.reference(*case.fresh_args(), **case.kwargs)
    if isinstance(y, tuple) != isinstance(yr, tuple) or len(_outputs(y)) != len(_outputs(yr)):
        return math.inf, 0.0
    worst = 0.0
    for a, r in zip(_outputs(y), _outputs(yr)):
        r = np.asarray(r)
        if np.shape(a) != np.shape(r) or a.dtype != np.float64:
            return math.inf, 0.0
        scale = max(1.0, float(np.max(np.abs(r), initial=0)))
        worst = max(worst, _ratio(float(np.max(np.abs(a - r), initial=0)), scale))
    return worst, tolerance("forward", case_cond(spec, case), EPS)


def vjp_error(spec, case, rng):
    """(worst relative error over slots, tolerance) of the VJP against autograd."""
    import autograd

    y, pullback = autodiff.vjp(spec.function, *case.fresh_args(), **case.kwargs)
    dy = _like([rng.standard_normal(np.shape(o)) for o in _outputs(y)], y)
    grads = pullback(dy)
    worst = 0.0
    for k in differentiable_slots(spec, case):
        ref = autograd.make_vjp(reference_of(spec, case, k))(case.args[k])[0](dy)
        err = float(np.max(np.abs(grads[k] - ref), initial=0))
        worst = max(worst, _ratio(err, rounding_scale(spec, case, k, dy, True)))
    return worst, tolerance("backward", case_cond(spec, case), EPS)


def jvp_error(spec, case, rng):
    """(relative error, tolerance) of the JVP (all slots at once) against autograd."""
    slots = differentiable_slots(spec, case)
    tangents = [None] * len(case.args)
    for k in slots:
        tangents[k] = rng.standard_normal(np.shape(case.args[k]))
    y, ty = autodiff.jvp(spec.function, case.fresh_args(), tangents, **case.kwargs)
    expected = [np.zeros(np.shape(o)) for o in _outputs(y)]
    scales = [0.0] * len(expected)
    for k in slots:
        ref = _outputs(reference_jvp(reference_of(spec, case, k), case.args[k], tangents[k]))
        expected = [e + np.asarray(r) for e, r in zip(expected, ref)]
        scales = [s + t for s, t in zip(scales, output_scales(spec, case, k, tangents[k], False))]
    worst = max(_ratio(float(np.max(np.abs(t - e), initial=0)), s)
                for t, e, s in zip(_outputs(ty), expected, scales))
    return worst, tolerance("backward", case_cond(spec, case), EPS)


def jacobian_error(spec, case):
    """(relative error, tolerance) of the dense Jacobians against stacked VJPs."""
    y, pullback = autodiff.vjp(spec.function, *case.fresh_args(), **case.kwargs)
    shapes = [np.shape(o) for o in _outputs(y)]
    m = sum(int(np.prod(s, dtype=np.int64)) for s in shapes)
    worst = 0.0
    for k in differentiable_slots(spec, case):
        Js = _outputs(autodiff.jacobian(spec.function, *case.fresh_args(), wrt=k, **case.kwargs))
        pshape = np.shape(case.args[k])
        if len(Js) != len(shapes) or any(Ji.shape != s + pshape for Ji, s in zip(Js, shapes)):
            return math.inf, 0.0
        J = flatten_outputs(Js)
        rows = []
        for j in range(m):
            e = np.zeros(m)
            e[j] = 1.0
            rows.append(pullback(_like(split_outputs(e, shapes), y))[k].ravel())
        stacked = np.array(rows).reshape(J.shape)
        scale = max(1.0, float(np.abs(stacked).max(initial=0)))
        worst = max(worst, _ratio(np.abs(J - stacked).max(initial=0), scale))
    return worst, 1e-12


def fd_errors(spec, case, rng):
    """((vjp-fd, tol), (jvp-fd, tol)): dot-product tests against finite differences.

    The error of a direction is ``|a - fd| / (scale + FD_ATOL / FD_RTOL)`` with
    the Cauchy-Schwarz scale of :func:`normref.testing.check_vjp`, so that it
    is below ``FD_RTOL`` exactly when ``|a - fd| <= FD_ATOL + FD_RTOL * scale``:
    the absolute floor covers directions whose exact derivative cancels to
    ~0 (a group of two values), where neither side can carry relative accuracy.
    """
    from .testing import check_vjp

    args = case.fresh_args()
    if np.asarray(args[0]).size == 0:
        return (0.0, FD_RTOL), (0.0, FD_RTOL)
    res = check_vjp(spec.function, *args, rng=rng, raise_exception=False, rtol=FD_RTOL,
                    atol=FD_ATOL, **case.kwargs)
    worst = {"vjp": 0.0, "jvp": 0.0}
    for rec in res.directions:
        denom = rec["scale"] + FD_ATOL / FD_RTOL
        for k in worst:
            err = abs(rec[k] - rec["fd"])
            worst[k] = max(worst[k], err / denom if np.isfinite(err) else math.inf)
    return (worst["vjp"], FD_RTOL), (worst["jvp"], FD_RTOL)


CHECKS = ("forward", "vjp", "jvp", "jacobian", "vjp-fd", "jvp-fd")


def check_case(spec, case, seed=0):
    """{check: (error, tolerance)} for one case."""
    rng = np.random.default_rng(seed)
    out = {
        "forward": forward_error(spec, case),
        "vjp": vjp_error(spec, case, rng),
        "jvp": jvp_error(spec, case, rng),
        "jacobian": jacobian_error(spec, case),
    }
    out["vjp-fd"], out["jvp-fd"] = fd_errors(spec, case, rng)
    return out
