"""Shared pieces of the derivative checks: the seed and the finite-difference
ladder, the error type, argument copying, slot lookup, central differences and
the Jacobian comparison with its worst-entry report.
"""
from __future__ import annotations

import functools

import numpy as np

__all__ = ["SEED", "N_RUNGS", "GradcheckError"]

#: seed of every random direction drawn here (fast mode, default cotangents)
SEED = 20240517
#: finite-difference steps of the dot tests: step * 10**k, k = 0 .. N_RUNGS-1
N_RUNGS = 6


class GradcheckError(AssertionError, RuntimeError):
    """A derivative check failed (an AssertionError and, like torch's, a RuntimeError)."""


# --------------------------------------------------------------------------- helpers


def _copy_args(args):
    return tuple(np.array(a, copy=True) if isinstance(a, np.ndarray) else a for a in args)


def _as_inputs(inputs):
    if isinstance(inputs, np.ndarray) or not isinstance(inputs, (tuple, list)):
        inputs = (inputs,)
    # float arrays -> float64 copies (gradcheck is a float64 check, like torch's
    # double-precision requirement); anything else (ints, counters, flags) as is
    return tuple(
        np.array(a, dtype=np.float64) if isinstance(a, np.ndarray) and a.dtype.kind == "f"
        else a
        for a in inputs
    )


def _func_name(func):
    base = func
    while isinstance(base, functools.partial):
        base = base.func
    return getattr(base, "__name__", repr(base))


def _evaluate(func, args, **kwargs):
    """``func(*args, **kwargs)`` as float64; a call with several outputs (a tuple) as
    one vector, the outputs raveled and concatenated in order."""
    from ...registry import flatten_outputs

    out = func(*_copy_args(args), **kwargs)
    return flatten_outputs(out) if isinstance(out, tuple) else np.asarray(out, dtype=np.float64)


def _slots(func, args, **kwargs):
    from ...autodiff import bind

    _, _, slots = bind(func, *_copy_args(args), **kwargs)
    return slots


def _perturbed(args, i, xp):
    out = list(args)
    out[i] = xp
    return tuple(out)


def _fail(msg, raise_exception):
    if raise_exception:
        raise GradcheckError(msg)
    return False


def _unravel(flat, shape):
    return tuple(int(k) for k in np.unravel_index(int(flat), shape)) if shape else ()


def _compare_jacobians(analytical, numerical, *, atol, rtol, what, slot_label, y_shape,
                       x_shape):
    """None if allclose(analytical, numerical), else a failure message."""
    diff = np.abs(analytical - numerical)
    tol = atol + rtol * np.abs(numerical)
    bad = ~(diff <= tol)
    if not bad.any():
        return None
    excess = np.where(bad, np.where(np.isnan(diff), np.inf, diff - tol), -np.inf)
    r, c = np.unravel_index(int(np.argmax(excess)), analytical.shape)
    return (
        f"Jacobian mismatch for {slot_label} ({what} vs numerical), "
        f"{int(bad.sum())} of {bad.size} entries over tolerance "
        f"(|a - n| <= atol + rtol*|n|, atol={atol:g}, rtol={rtol:g});\n"
        f"  worst entry: d output{_unravel(r, y_shape)} / d input{_unravel(c, x_shape)}\n"
        f"  numerical:  {float(numerical[r, c])!r}\n"
        f"  analytical: {float(analytical[r, c])!r}\n"
        f"  max |a - n| = {float(np.nanmax(diff)) if not np.isnan(diff).all() else float('nan'):.6g}"
    )


def _central_column(func, args, i, k, eps):
    """(f(x + eps e_k) - f(x - eps e_k)) / (actual step), flattened."""
    x = args[i]
    xp = x.copy()
    xm = x.copy()
    xp.flat[k] += eps
    xm.flat[k] -= eps
    step = float(xp.flat[k] - xm.flat[k])  # the step actually taken, after rounding
    yp = _evaluate(func, _perturbed(args, i, xp))
    ym = _evaluate(func, _perturbed(args, i, xm))
    return ((yp - ym) / step).ravel()


def _central_directional(fun, x, t, eps):
    """Central difference of ``fun`` along ``t``, with the step actually taken.

    Returns ``(df, t_eff)``: ``df = (fun(x + eps t) - fun(x - eps t)) / (2 eps)``
    and ``t_eff = (x+ - x-) / (2 eps)``, the direction the rounded points
    really differ by; use it on the analytical side.
    """
    xp = x + eps * t
    xm = x - eps * t
    t_eff = (xp - xm) / (2.0 * eps)
    return (fun(xp) - fun(xm)) / (2.0 * eps), t_eff
