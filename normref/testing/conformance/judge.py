r"""normref's expected answer on a case, and the dtype-aware judgement of a framework's.

The rule (ulps of the target dtype at the scale of the output, tolerance
``ULPS[kind]`` times the conditioning) is :mod:`normref.tolerance`, shared
with ``python -m normref check``; the package docstring states it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ...registry import REGISTRY
from ...tolerance import (ULPS, conditioning, finite_input, rounding_scale, shift_sensitive,
                          tolerance)
from .rounding import check_dtype

__all__ = ["TOLERANCE_BASE", "expected_outputs", "Verdict", "case_conditioning", "vjp_scale",
           "judge", "check_kind"]

#: base tolerance, in ulps of the target dtype, per kind of check (:data:`normref.tolerance.ULPS`)
TOLERANCE_BASE = ULPS


def _expected_call(case):
    """(function, args, kwargs) for normref on the case (input in its dtype, stats copied)."""
    spec = REGISTRY[case.name]
    args = list(case.fresh_args())
    x = args[0]
    if isinstance(x, np.ndarray) and x.dtype.kind == "f" and case.dtype != "float64":
        # exact: the values are representable; rms_norm's eps=None then means finfo(dtype).eps
        args[0] = x.astype(case.dtype)
    return spec.function, args, dict(case.kwargs)


def expected_outputs(case):
    """normref's answer for the (rounded) case, in float64.

    Returns ``(y, grads, state)``: the forward, ``{slot: VJP}`` for
    ``case.cotangent(y.shape)`` over every differentiable positional slot,
    and ``{slot: running statistics after the call}`` for the slots the case
    mutates (run on copies: the case is left intact).  ``grads`` is a string
    instead -- the reason -- when the VJP has no finite exact value (it
    overflows float64, or the function is not differentiable there: normref's
    ValueError); gradients are then not judged.
    """
    from ...autodiff import vjp

    fn, args, kwargs = _expected_call(case)
    y, pullback = vjp(fn, *args, **kwargs)
    y = np.asarray(y, dtype=np.float64)
    try:
        g = pullback(case.cotangent(y.shape))
    except ValueError as e:
        g, grads = None, f"no exact VJP: {e}"
    if g is not None:
        grads = {i: np.asarray(v, dtype=np.float64) for i, v in enumerate(g) if v is not None}
    state = {i: np.asarray(args[i], dtype=np.float64).copy() for i in case.mutates
             if args[i] is not None}
    return y, grads, state


@dataclass
class Verdict:
    """The judgement of one check (see the module docstring for the rule)."""

    check: str
    dtype: str
    worst_ulps: float
    tolerance_ulps: float
    index: tuple | None
    expected: float
    actual: float
    passed: bool
    note: str = ""

    def __str__(self):
        where = "" if self.index is None else f" at index {self.index}"
        s = (f"{self.check} [{self.dtype}]: {self.worst_ulps:.4g} ulps (tolerance "
             f"{self.tolerance_ulps:.4g}){where}: expected {self.expected!r}, got {self.actual!r}")
        return s + (f" ({self.note})" if self.note else "")


def check_kind(check):
    """``"forward"``, ``"backward"`` or ``"state"``: the kind of ``"backward:<arg>"`` etc."""
    return check.split(":", 1)[0]


def case_conditioning(case):
    r"""The :math:`\kappa` of this (rounded) case: :func:`normref.tolerance.conditioning`
    of its registered normalizer in the case's dtype.

    For shift-sensitive normalizers the larger of
    :func:`normref.tolerance.case_cond` and :math:`1 + \max|x| / \min_g d_g`
    with :math:`d_g = \sqrt{\sigma_g^2 + \epsilon}` (or
    :math:`\sigma_g + \epsilon` for eps on the standard deviation) -- a
    constant group is judged at the amplification :math:`|x|/\sqrt\epsilon`
    that any rounding of its mean suffers.  For every normalizer, inputs in
    the subnormal range of the case's dtype, where each operation carries an
    absolute rather than relative rounding error, multiply :math:`\kappa` by
    :math:`\text{tiny}_T / \operatorname{rms}(x)`.
    """
    return conditioning(REGISTRY.get(case.name), case, case.dtype)


def vjp_scale(case, slot):
    r"""Componentwise size of the terms of the VJP of argument ``slot``:
    :math:`t = |J_k|^\top |\delta y|`, with :math:`\delta y` the case's
    cotangent (:func:`normref.tolerance.rounding_scale`).

    A floating-point VJP is a sum of products :math:`J_{ik}\,\delta y_i`;
    its rounding error is a few ulps of :math:`t`, not of the (possibly
    cancelled) result.  For the input gradient of a shift-sensitive
    normalizer the intermediate terms have size
    :math:`\operatorname{rms}(\delta y)\max(1, \operatorname{rms}(y))/\operatorname{std}(x)`
    even where :math:`J` itself cancels (a group of two values has
    :math:`J \approx 0`), so :math:`t` is at least that.
    Backward checks are judged at :math:`\max(|e_i|, s, t_i)`.
    """
    with np.errstate(over="ignore", invalid="ignore", under="ignore", divide="ignore"):
        return _vjp_scale(case, slot)


def _vjp_scale(case, slot):
    from ...autodiff import jacobian

    case, _ = finite_input(case)
    fn, args, kwargs = _expected_call(case)
    y = np.asarray(fn(*[a.copy() if isinstance(a, np.ndarray) else a for a in args], **kwargs))
    if y.size == 0:
        return None
    J = np.asarray(jacobian(fn, *args, wrt=slot, **kwargs), dtype=np.float64)
    return rounding_scale(J, case.cotangent(y.shape), y, args[0], transpose=True,
                          floor=shift_sensitive(REGISTRY.get(case.name)) and slot == 0)


def judge(case, expected, actual, dtype, check, cond=None, floor=None) -> Verdict:
    """Judge ``actual`` (the framework's) against ``expected`` (normref's, float64).

    Errors in ulps of ``dtype`` at the scale of the output, tolerance
    ``TOLERANCE_BASE[kind] * cond`` (``cond`` defaults to
    :func:`case_conditioning`); NaN / Inf positions must match exactly.
    For ``"backward:<arg>"`` checks of a registered case the scale is also at
    least ``floor`` (default :func:`vjp_scale` of that argument).
    """
    dtype = check_dtype(dtype)
    kind = check_kind(check)
    if kind not in TOLERANCE_BASE:
        raise ValueError(f"check must be 'forward', 'backward:<arg>' or 'state:<arg>', got {check!r}")
    if cond is None:
        cond = case_conditioning(case)
    tol = tolerance(kind, cond)
    e = np.asarray(expected, dtype=np.float64)
    try:
        a_raw = np.asarray(actual)
        if a_raw.dtype.kind not in "fiu":
            raise TypeError(f"dtype {a_raw.dtype}")
        a = a_raw.astype(np.float64)
    except (TypeError, ValueError) as exc:
        return Verdict(check, dtype, math.inf, tol, None, math.nan, math.nan, False,
                       note=f"output is not a real array: {exc}")
    if a.shape != e.shape:
        return Verdict(check, dtype, math.inf, tol, None, math.nan, math.nan, False,
                       note=f"shape {a.shape}, expected {e.shape}")
    if e.size == 0:
        return Verdict(check, dtype, 0.0, tol, None, 0.0, 0.0, True, note="empty")
    fin = np.isfinite(e)
    m = float(np.abs(e[fin]).max()) if fin.any() else 0.0
    s = m * float(np.sqrt(np.mean(np.square(e[fin] / m)))) if m > 0 else 0.0
    if floor is None and kind == "backward" and case.name in REGISTRY:
        arg = check.split(":", 1)[1]
        sig = REGISTRY[case.name].signature
        if arg in sig and sig.index(arg) < len(case.args):
            try:
                floor = vjp_scale(case, sig.index(arg))
            except Exception:  # noqa: BLE001  (the floor only widens; never crash the judgement)
                floor = None
    with np.errstate(invalid="ignore", over="ignore"):
        scale = np.maximum(np.abs(np.where(fin, e, 0.0)), s)
        if floor is not None and np.shape(floor) == e.shape:
            scale = np.maximum(scale, floor)
        scale = np.minimum(scale, float(np.finfo(dtype).max)).astype(dtype)
        spacing = np.spacing(scale).astype(np.float64)
        diff = np.abs(a - e)
        ulps = np.where(fin, diff / spacing, 0.0)
    # non-finite expected values must be matched exactly (NaN with NaN, Inf with same Inf)
    nan_e, nan_a = np.isnan(e), np.isnan(a)
    inf_mismatch = (~fin & ~nan_e) & ~(a == e)
    finite_broken = fin & ~np.isfinite(a)
    bad = (nan_e != nan_a) | inf_mismatch | finite_broken
    ulps = np.where(bad, np.inf, ulps)
    ulps = np.where(np.isnan(ulps), np.inf, ulps)
    flat = int(np.argmax(ulps))
    idx = tuple(int(i) for i in np.unravel_index(flat, e.shape))
    worst = float(ulps.ravel()[flat])
    note = ""
    if bad.any():
        note = f"{int(bad.sum())} element(s) with NaN/Inf where normref has not (or vice versa)"
    return Verdict(check, dtype, worst, tol, idx, float(e[idx]), float(a[idx]),
                   bool(worst <= tol), note=note)
