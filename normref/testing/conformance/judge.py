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
from ...tolerance import (ULPS, conditioning, element_conditioning, finite_input,
                          rounding_scale, shift_sensitive, tolerance)
from .rounding import check_dtype

__all__ = ["TOLERANCE_BASE", "expected_outputs", "Verdict", "case_conditioning",
           "element_cond", "vjp_scale", "judge", "check_kind"]

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
    #: the largest error in ulps over the judged elements (accuracy rankings)
    max_ulps: float = math.nan
    #: how many elements were judged for accuracy, and how many only for robustness
    #: (at the dtype's limit: the tolerance there accepts an error as large as the value)
    judged: int = 0
    limited: int = 0

    @property
    def at_limit(self):
        """Every element is beyond what the dtype can represent for any algorithm: the
        check judged robustness only (NaN / Inf positions), not accuracy."""
        return self.limited > 0 and self.judged == 0

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


def element_cond(case):
    r"""Per-input-element :math:`\kappa` of this (rounded) case
    (:func:`normref.tolerance.element_conditioning`), or None when the
    normalizer's conditioning is one number per case."""
    return element_conditioning(REGISTRY.get(case.name), case, case.dtype)


def vjp_scale(case, slot, kappa=None):
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

    With ``kappa`` (the per-output-element conditioning, the output's shape)
    returns ``(t, kappa_k)`` instead: the conditioning of each gradient
    element as the average of the output elements' weighted by the size of
    their terms,

    .. math::

        \kappa_k = \frac{\sum_i |J_{ik}|\,|\delta y_i|\,\kappa_i}{\sum_i |J_{ik}|\,|\delta y_i|},

    the rounding a gradient element inherits from the groups it sums over (a
    layer norm's weight gradient sums every row: one ill-conditioned row
    loosens it in proportion to its share).  Elements with no terms get
    :math:`\max_i \kappa_i`.
    """
    with np.errstate(over="ignore", invalid="ignore", under="ignore", divide="ignore"):
        return _vjp_scale(case, slot, kappa)


def _vjp_scale(case, slot, kappa=None):
    from ...autodiff import jacobian

    case, _ = finite_input(case)
    fn, args, kwargs = _expected_call(case)
    y = np.asarray(fn(*[a.copy() if isinstance(a, np.ndarray) else a for a in args], **kwargs))
    if y.size == 0:
        return None if kappa is None else (None, None)
    J = np.asarray(jacobian(fn, *args, wrt=slot, **kwargs), dtype=np.float64)
    ct = case.cotangent(y.shape)
    t = rounding_scale(J, ct, y, args[0], transpose=True,
                       floor=shift_sensitive(REGISTRY.get(case.name)) and slot == 0)
    if kappa is None:
        return t
    k = np.broadcast_to(np.asarray(kappa, dtype=np.float64), y.shape).ravel()
    Jm = np.nan_to_num(np.abs(J.reshape(y.size, -1)), nan=0.0, posinf=0.0)
    w = Jm.T @ np.abs(ct).ravel()
    kw = Jm.T @ (np.abs(ct).ravel() * k)
    top = float(k.max())
    kk = np.where(w > 0, kw / np.where(w > 0, w, 1.0), top)
    kk = np.clip(np.nan_to_num(kk, nan=top, posinf=top), 1.0, top)
    return t, kk.reshape(t.shape)


def _check_cond(case, check, shape, cond, floor):
    """``(kappa, floor)`` for a check: per element where the normalizer has per-group
    conditioning (:func:`element_cond`), else the case's one number."""
    kx = element_cond(case)
    if kx is None:
        return cond, floor
    kx = np.minimum(kx, cond)
    kind = check_kind(check)
    x_shape = np.shape(case.args[0])
    if kind == "forward":
        return (kx if tuple(shape) == tuple(x_shape) else cond), floor
    if kind == "backward":
        arg = check.split(":", 1)[1]
        sig = REGISTRY[case.name].signature
        if arg not in sig or sig.index(arg) >= len(case.args):
            return cond, floor
        slot = sig.index(arg)
        try:
            t, kk = vjp_scale(case, slot, kappa=kx)
        except Exception:  # noqa: BLE001  (conditioning is advisory: fall back to the case's)
            return cond, floor
        if t is None or np.shape(kk) != tuple(shape):
            return cond, floor
        return kk, (t if floor is None else floor)
    return cond, floor


def judge(case, expected, actual, dtype, check, cond=None, floor=None,
          elementwise=True) -> Verdict:
    r"""Judge ``actual`` (the framework's) against ``expected`` (normref's, float64).

    Errors in ulps of ``dtype`` at the scale of the output, tolerance
    ``TOLERANCE_BASE[kind] * kappa``; NaN / Inf positions must match exactly.
    ``cond`` (default :func:`case_conditioning`) is the case's conditioning;
    with ``elementwise`` (default) and a normalizer with per-group
    conditioning, each element is judged at its own group's
    :math:`\kappa` instead (:func:`element_cond`; backward checks: the
    weighted average of :func:`vjp_scale`), never above ``cond``.
    For ``"backward:<arg>"`` checks of a registered case the scale is also at
    least ``floor`` (default :func:`vjp_scale` of that argument).

    An element where the tolerance accepts an error as large as the value
    itself (:math:`b\,\kappa_i\,\operatorname{spacing}(s_i) \ge s_i`: the
    dtype cannot represent the data well enough for any algorithm, float32
    at offset 1e8) is judged for robustness only -- finite where normref is
    finite, NaN and Inf where normref has them -- and counted in
    ``Verdict.limited``; the verdict's accuracy (``worst_ulps``,
    ``max_ulps``, ``passed``) is over the other elements.
    """
    dtype = check_dtype(dtype)
    kind = check_kind(check)
    if kind not in TOLERANCE_BASE:
        raise ValueError(f"check must be 'forward', 'backward:<arg>' or 'state:<arg>', got {check!r}")
    if cond is None:
        cond = case_conditioning(case)
    e = np.asarray(expected, dtype=np.float64)
    tol_case = tolerance(kind, cond)
    try:
        a_raw = np.asarray(actual)
        if a_raw.dtype.kind not in "fiu":
            raise TypeError(f"dtype {a_raw.dtype}")
        a = a_raw.astype(np.float64)
    except (TypeError, ValueError) as exc:
        return Verdict(check, dtype, math.inf, tol_case, None, math.nan, math.nan, False,
                       note=f"output is not a real array: {exc}")
    if a.shape != e.shape:
        return Verdict(check, dtype, math.inf, tol_case, None, math.nan, math.nan, False,
                       note=f"shape {a.shape}, expected {e.shape}")
    if e.size == 0:
        return Verdict(check, dtype, 0.0, tol_case, None, 0.0, 0.0, True, note="empty",
                       max_ulps=0.0)
    kappa = cond
    if elementwise and case.name in REGISTRY and np.ndim(cond) == 0:
        kappa, floor = _check_cond(case, check, e.shape, float(cond), floor)
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
    tol = np.broadcast_to(np.asarray(tolerance(kind, 1.0) * np.asarray(kappa, dtype=np.float64)),
                          e.shape)
    with np.errstate(invalid="ignore", over="ignore"):
        scale = np.maximum(np.abs(np.where(fin, e, 0.0)), s)
        if floor is not None and np.shape(floor) == e.shape:
            scale = np.maximum(scale, floor)
        scale = np.minimum(scale, float(np.finfo(dtype).max)).astype(dtype)
        spacing = np.spacing(scale).astype(np.float64)
        diff = np.abs(a - e)
        ulps = np.where(fin, diff / spacing, 0.0)
        # the dtype's limit: the tolerance accepts an error as large as the scale itself
        limit = fin & (tol * spacing >= scale.astype(np.float64)) & (scale > 0)
    # non-finite expected values must be matched exactly (NaN with NaN, Inf with same Inf)
    nan_e, nan_a = np.isnan(e), np.isnan(a)
    inf_mismatch = (~fin & ~nan_e) & ~(a == e)
    finite_broken = fin & ~np.isfinite(a)
    bad = (nan_e != nan_a) | inf_mismatch | finite_broken
    ulps = np.where(bad, np.inf, ulps)
    ulps = np.where(np.isnan(ulps), np.inf, ulps)
    judged_mask = ~limit | bad
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(judged_mask, ulps / np.where(tol > 0, tol, 1.0), -1.0)
    flat = int(np.argmax(ratio))
    idx = tuple(int(i) for i in np.unravel_index(flat, e.shape))
    worst = float(ulps.ravel()[flat]) if judged_mask.ravel()[flat] else 0.0
    tol_at = float(tol.ravel()[flat])
    judged = int(np.count_nonzero(judged_mask & fin)) + int(np.count_nonzero(bad & ~fin))
    limited = int(np.count_nonzero(limit & ~bad))
    good = judged_mask & ~bad & fin
    max_ulps = float(ulps[good].max()) if good.any() else (math.inf if bad.any() else 0.0)
    notes = []
    if bad.any():
        notes.append(f"{int(bad.sum())} element(s) with NaN/Inf where normref has not (or vice versa)")
    if limited:
        notes.append(f"{limited} of {e.size} element(s) beyond what {dtype} can represent for any "
                     f"algorithm (judged for NaN/Inf only)")
    passed = bool(worst <= tol_at) if judged_mask.ravel()[flat] else True
    return Verdict(check, dtype, worst, tol_at, idx, float(e[idx]), float(a[idx]),
                   passed, note="; ".join(notes), max_ulps=max_ulps, judged=judged,
                   limited=limited)
