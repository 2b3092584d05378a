r"""Conditioning and tolerances: one rule for ``python -m normref check`` and the conformance judge.

Both harnesses compare a computed array with an exact (or more accurate)
one and accept an error of a few units in the last place of the working
precision, times how much the case may amplify rounding.  This module is
that rule; :mod:`normref.check` (normref against its autograd reference, in
float64) and :mod:`normref.testing.conformance` (a framework against
normref, in the framework's dtype) both import it, and it imports neither.

Tolerance
---------
A check of kind ``k`` on a case of conditioning :math:`\kappa` passes when

.. math::

    \text{error} \le b_k \, \kappa \ \text{units of rounding}, \qquad
    b_{\text{forward}} = b_{\text{state}} = 16, \quad b_{\text{backward}} = 64,

(:data:`ULPS`, :func:`tolerance`).  "backward" is every derivative check
(VJP, JVP, dense Jacobian): a derivative sums more rounded terms than the
forward.  The unit is one ulp of the target dtype at the scale of the output
in the conformance judge, and ``EPS`` relative to the scale in ``check``.

Conditioning
------------
:func:`cond` -- :math:`1 + \max|x| / \operatorname{std}(x)`, the factor by
which an offset amplifies the rounding of a textbook two-pass formula;
:func:`case_cond` -- the same with the spread of the tightest statistics
group, :math:`1 + \max|x| / \sigma_{\min}` (for whitening, times the
covariance's condition number); :func:`conditioning` -- the judge's
:math:`\kappa` in a dtype :math:`T`: for shift-sensitive normalizers
(:func:`shift_sensitive`: they subtract a mean and do not whiten) the larger
of :func:`case_cond` and :math:`1 + \max|x| / \min_g d_g` with
:math:`d_g = \sqrt{\sigma_g^2 + \epsilon}` (or :math:`\sigma_g + \epsilon`
for eps on the standard deviation), so a constant group is judged at the
amplification :math:`|x|/\sqrt\epsilon` any rounding of its mean suffers,
and 1 for the others, whose condition number is :math:`O(1)`; subnormal
inputs multiply it by :math:`\text{tiny}_T / \operatorname{rms}(x)`.
:func:`element_conditioning` is the same per element -- :math:`\kappa_g` of
the element's own statistics group (:func:`group_conditioning`) -- which the
conformance judge uses so that one ill-conditioned group does not loosen the
others.

Rounding scale of a derivative
------------------------------
A floating-point VJP :math:`\sum_i J_{ik}\,\delta y_i` carries a rounding
error of a few ulps of the sum of the magnitudes of its terms,
:math:`t = |J|^\top |\delta y|` (JVP: :math:`|J|\,|v|`), not of the possibly
cancelled result (:func:`rounding_scale`).  For the input gradient of a
shift-sensitive normalizer the intermediate terms
:math:`\delta y\, w / \sigma` have size
:math:`\operatorname{rms}(\delta y) \max(1, \operatorname{rms}(y)) / \operatorname{std}(x)`
even where :math:`J` cancels (a group of two values has :math:`J \approx 0`),
so :math:`t` is at least that.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

__all__ = ["EPS", "ULPS", "FORWARD_ULPS", "DERIVATIVE_ULPS", "tolerance", "shift_sensitive",
           "cond", "case_cond", "conditioning", "element_conditioning", "group_conditioning",
           "rounding_scale", "finite_input"]

EPS = float(np.finfo(np.float64).eps)

#: base tolerance, in units of rounding, per kind of check ("backward": any derivative)
ULPS = {"forward": 16.0, "backward": 64.0, "state": 16.0}
FORWARD_ULPS = ULPS["forward"]
DERIVATIVE_ULPS = ULPS["backward"]


def tolerance(kind, kappa, unit=1.0):
    """``ULPS[kind] * kappa * unit``: the accepted error of a check of ``kind``.

    ``unit`` is the size of one unit of rounding (1 when the error is already
    counted in ulps, :data:`EPS` for a relative error in float64).
    """
    if kind not in ULPS:
        raise ValueError(f"kind must be one of {tuple(ULPS)}, got {kind!r}")
    return ULPS[kind] * float(kappa) * unit


def shift_sensitive(spec):
    """Whether rounding of ``spec``'s output grows with an offset of its input:
    it subtracts a mean and does not whiten (``spec.centres and not spec.whitening``).
    ``None`` (an unregistered normalizer) is not."""
    return spec is not None and bool(spec.centres and not spec.whitening)


def cond(x):
    """How much an input's offset amplifies rounding in a textbook formula.

    ``1 + max|x| / std(x)``: about 4 for centred data, 1e4 for ``1e4 + N(0,1)``
    (the reference's plain two-pass variance loses that factor; normref's
    kernels do not).
    """
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return 1.0
    sd = float(np.std(x))
    return 1.0 + float(np.max(np.abs(x))) / (sd if sd > 0 else 1.0)


def case_cond(spec, case):
    """:func:`cond` with the spread of the tightest statistics group.

    For standardizers the reference loses ``max|x| / sigma_g`` in the group
    with the smallest standard deviation, not the global one (positional
    norm over two channels at offset 1e4, say); for whitening, :func:`cond`
    times the covariance's condition number (``plan.rounding_cond()``).
    """
    x = np.asarray(case.args[0], dtype=np.float64)
    if x.size == 0:
        return 1.0
    plan = spec.bind(*case.fresh_args(), **case.kwargs)
    if hasattr(plan, "rounding_cond"):  # whitening: the covariance's condition number
        return cond(x) * plan.rounding_cond()
    if hasattr(plan, "group_var") and getattr(plan, "fixed", None) is None:
        var = np.asarray(plan.group_var()).ravel()
        var = var[np.isfinite(var) & (var > 0)]
        if var.size:
            return 1.0 + float(np.max(np.abs(x))) / float(np.sqrt(var.min()))
    return cond(x)


def finite_input(case):
    """``(case, x)`` with the non-finite entries of the input replaced by the mean of
    the finite ones (so the clean groups of a case with a NaN group are measured)."""
    x = np.asarray(case.args[0], dtype=np.float64)
    if np.all(np.isfinite(x)):
        return case, x
    fin = x[np.isfinite(x)]
    x = np.where(np.isfinite(x), x, fin.mean() if fin.size else 0.0)
    return dataclasses.replace(case, args=(x,) + tuple(case.args[1:])), x


def conditioning(spec, case, dtype="float64"):
    r"""The judge's :math:`\kappa` (module docstring) of ``case`` in ``dtype``.

    ``spec`` is the case's registered normalizer or None; the result is
    finite and at least 1.
    """
    x = np.asarray(case.args[0], dtype=np.float64) if case.args else np.zeros(0)
    if x.size == 0:
        return 1.0
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        return _conditioning(spec, case, dtype)


def _conditioning(spec, case, dtype):
    case, x = finite_input(case)
    kappa = 1.0
    if shift_sensitive(spec):
        try:
            kappa = float(case_cond(spec, case))
            plan = spec.bind(*case.fresh_args(), **case.kwargs)
            eps = getattr(plan, "eps", None)
            if hasattr(plan, "group_var") and getattr(plan, "fixed", None) is None and eps is not None:
                var = np.asarray(plan.group_var(), dtype=np.float64).ravel()
                var = var[np.isfinite(var)]
                with np.errstate(invalid="ignore"):
                    den = (np.sqrt(var) + eps) if getattr(plan, "eps_outside", False) \
                        else np.sqrt(np.maximum(var + eps, 0.0))
                den = den[den > 0]
                if den.size:
                    kappa = max(kappa, 1.0 + float(np.max(np.abs(x))) / float(den.min()))
        except Exception:  # noqa: BLE001  (conditioning is advisory; never crash the judgement)
            kappa = float(cond(x))
    kappa *= _subnormal_factor(x, dtype)
    return kappa if math.isfinite(kappa) and kappa >= 1.0 else 1.0


def _subnormal_factor(x, dtype):
    r""":math:`\text{tiny}_T / \operatorname{rms}(x)` when the nonzero inputs are subnormal
    in ``dtype`` on average, else 1 (each operation then carries an absolute error)."""
    nz = np.abs(x[x != 0])
    if nz.size:
        tiny = float(np.finfo(dtype).tiny)
        rms = float(np.sqrt(np.mean(np.square(nz / nz.max())))) * float(nz.max())
        if 0 < rms < tiny:
            return tiny / rms
    return 1.0


def group_conditioning(spec, case, dtype="float64"):
    r"""Per-group :math:`\kappa_g` of a shift-sensitive standardization, or None.

    Returns ``(kappa_split, plan)``: :math:`\kappa_g = 1 + \max_{i \in g}|x_i| / d_g`
    with :math:`d_g = \sqrt{\sigma_g^2 + \epsilon}` (or :math:`\sigma_g + \epsilon`
    for eps on the standard deviation), broadcast over the plan's split shape
    (size 1 on the reduced axes), times the subnormal factor of the whole input.
    This is the amplification any algorithm working in the target dtype
    suffers in group :math:`g`: rounding the mean costs
    :math:`u \max_g|x|` absolutely, divided by :math:`d_g`; a correct two-pass
    variance costs no more.  None for a normalizer that is not
    shift-sensitive, a plan without a partition (composites), or fixed
    (running) statistics, whose conditioning is not per group.
    """
    if not shift_sensitive(spec):
        return None
    with np.errstate(over="ignore", invalid="ignore", under="ignore", divide="ignore"):
        case, x = finite_input(case)
        if x.size == 0:
            return None
        try:
            plan = spec.bind(*case.fresh_args(), **case.kwargs)
            part = getattr(plan, "partition", None)
            if (part is None or not hasattr(plan, "group_var")
                    or getattr(plan, "fixed", None) is not None or getattr(plan, "eps", None) is None
                    or tuple(part.group_axes) != tuple(sorted(part.group_axes))):
                return None
            split = tuple(part.split_shape)
            xs = np.abs(np.asarray(plan.x, dtype=np.float64).reshape(split))
            amax = xs.max(axis=part.reduce_axes, keepdims=True) if part.reduce_axes else xs
            gshape = tuple(n if a in part.group_axes else 1 for a, n in enumerate(split))
            var = np.asarray(plan.group_var(), dtype=np.float64).reshape(gshape)
            eps = float(plan.eps)
            den = (np.sqrt(var) + eps) if getattr(plan, "eps_outside", False) \
                else np.sqrt(np.maximum(var + eps, 0.0))
        except Exception:  # noqa: BLE001  (conditioning is advisory; never crash the judgement)
            return None
        kappa = 1.0 + amax / den
        kappa = np.where(np.isfinite(kappa) & (den > 0), kappa, np.nan)
        if np.isnan(kappa).all():
            return None
        fallback = float(np.nanmax(kappa))
        kappa = np.where(np.isnan(kappa), fallback, kappa) * _subnormal_factor(x, dtype)
        return np.maximum(kappa, 1.0), plan


def element_conditioning(spec, case, dtype="float64"):
    r"""The judge's conditioning per input element: :math:`\kappa_g` of the element's
    statistics group (:func:`group_conditioning`), an array of the input's shape,
    never above the case's :func:`conditioning`; None when the normalizer has no
    per-group conditioning (then the case's one number applies to every element).

    So a well-conditioned group is judged tightly even when another group of
    the case sits at an offset of 1e4 or is constant.
    """
    got = group_conditioning(spec, case, dtype)
    if got is None:
        return None
    kappa, plan = got
    shape = np.shape(case.args[0])
    split = tuple(plan.partition.split_shape)
    out = np.broadcast_to(kappa, split).reshape(shape)
    return np.minimum(out, conditioning(spec, case, dtype))


def _rms(a):
    a = np.asarray(a, dtype=np.float64)
    return float(np.sqrt(np.mean(np.square(a)))) if a.size else 1.0


def rounding_scale(J, v, y, x, *, transpose=True, floor=False):
    r"""Componentwise size of the rounding a derivative can carry (module docstring).

    ``J`` -- the dense Jacobian, shape ``y.shape + p.shape``; ``v`` -- the
    cotangent (``transpose=True``, a VJP: the result has ``p``'s shape) or the
    tangent (``transpose=False``, a JVP: ``y``'s shape); ``y`` -- the output;
    ``x`` -- the input; ``floor`` -- the computation has intermediate terms
    that cancel, of size
    :math:`\operatorname{rms}(v)\max(1, \operatorname{rms}(y))/\operatorname{std}(x)`,
    which then bound the scale from below.  The conformance judge sets it for
    the input gradient of a shift-sensitive normalizer (a framework's
    centred backward); ``python -m normref check`` for every derivative, since
    the autograd reference differentiates textbook formulas whose terms
    cancel for any normalizer (weight norm of one-element slices: an exact
    gradient 0 from terms of size :math:`1/\lVert v\rVert`).
    Non-finite entries of ``J`` count as 0 (they are judged by position).
    """
    y = np.asarray(y)
    J = np.asarray(J, dtype=np.float64)
    pshape = J.shape[y.ndim:]
    with np.errstate(over="ignore", invalid="ignore", under="ignore", divide="ignore"):
        Jm = np.nan_to_num(np.abs(J.reshape(y.size, -1)), nan=0.0, posinf=0.0)
        va = np.abs(np.asarray(v, dtype=np.float64)).ravel()
        t = np.nan_to_num(Jm.T @ va if transpose else Jm @ va, nan=0.0, posinf=0.0)
        if floor:
            x = np.asarray(x, dtype=np.float64)
            sd = float(np.std(x)) if x.size else 1.0
            yf = y[np.isfinite(y)]
            inter = _rms(va) * max(1.0, _rms(yf) if yf.size else 1.0) / (sd if sd > 0 else 1.0)
            if math.isfinite(inter):
                t = np.maximum(t, inter)
    return t.reshape(pshape if transpose else y.shape)
