"""Derivative checks for registered normalizers.

* :func:`gradcheck` / :func:`gradgradcheck` -- PyTorch's keyword names and
  defaults, for normref functions: first derivatives (the fast VJP, and the
  JVP on request) against central finite differences; second derivatives
  against the autograd reference.
* :func:`check_vjp` / :func:`check_jvp` -- dot-product tests in random
  directions, the cheap test the generic suite and ``python -m normref check``
  run on every registered example:

  .. math::

      \\langle v, J u\\rangle_{\\text{JVP}}
      = \\langle J^\\top v, u\\rangle_{\\text{VJP}}
      \\approx \\Big\\langle v, \\frac{f(x + h u) - f(x - h u)}{2h}\\Big\\rangle .

Directions are Gaussian, never all ones: an all-ones cotangent annihilates
the input gradient of every standardizer (the rows of its Jacobian sum to
zero), so it would pass any backward that is merely zero-mean.

Every function evaluation receives fresh copies of every array argument, so
training-mode calls that update running statistics in place never touch the
caller's arrays (and every evaluation sees the same statistics).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "GradcheckError",
    "gradcheck",
    "gradgradcheck",
    "check_vjp",
    "check_jvp",
    "DotTestResult",
]

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
    return np.asarray(func(*_copy_args(args), **kwargs), dtype=np.float64)


def _slots(func, args, **kwargs):
    from ..autodiff import bind

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


# --------------------------------------------------------------------------- gradcheck


def gradcheck(func, inputs, *, eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=True,
              nondet_tol=0.0, check_undefined_grad=True, check_grad_dtypes=False,
              check_batched_grad=False, check_batched_forward_grad=False,
              check_forward_ad=False, check_backward_ad=True, fast_mode=False,
              masked=None):
    """Check normref's first derivatives of ``func(*inputs)`` against finite differences.

    The keywords and defaults are those of ``torch.autograd.gradcheck``.

    Parameters
    ----------
    func : callable
        A registered normref function, or a ``functools.partial`` of one (bind
        keyword hyper-parameters such as ``training=True`` there).
    inputs : tuple
        The positional arguments.  Float arrays are copied to float64; the
        differentiable ones are those whose pullback slot is not None (see
        :func:`normref.vjp`).  Every evaluation receives fresh copies, so
        running statistics of the caller are never modified.
    eps : float
        Finite-difference step.  The numerical derivative is the central
        difference :math:`(f(x + \\epsilon e_k) - f(x - \\epsilon e_k)) / (x^+_k - x^-_k)`,
        divided by the step actually taken after rounding (exactly
        :math:`2\\epsilon` unless ``x_k`` is large).
    atol, rtol : float
        Entry ``(r, c)`` of the Jacobian passes when
        :math:`|J^{an}_{rc} - J^{num}_{rc}| \\le \\mathrm{atol} + \\mathrm{rtol}|J^{num}_{rc}|`.
    raise_exception : bool
        Raise :class:`GradcheckError` on failure (default); else return False.
    nondet_tol : float
        Reentrancy: two independent VJP calls with the same random cotangent
        must agree to ``nondet_tol`` (default 0: bit for bit, which normref's
        fixed-order kernels guarantee).
    check_undefined_grad : bool
        torch checks that an undefined output gradient is handled; the normref
        analogue is a zero cotangent, whose pullback must be exactly zero.
    check_grad_dtypes : bool
        Each gradient must be float64 with its argument's shape.
    check_batched_grad, check_batched_forward_grad, masked :
        Accepted for signature compatibility; normref has no vmap and no
        sparse/masked arrays, so they are ignored.
    check_forward_ad : bool
        Also check :func:`normref.jvp` (column by column in slow mode).
    check_backward_ad : bool
        Check :func:`normref.vjp` (default True).
    fast_mode : bool
        Instead of full Jacobians compare, per differentiable input ``i``,
        :math:`v^\\top J^{num}_i u_i` with :math:`(J_i^\\top v) \\cdot u_i` (and
        :math:`v^\\top (J_i u_i)` from the JVP), for Gaussian unit vectors
        :math:`u_i, v` drawn with the fixed seed :data:`SEED`; the tolerance is
        :math:`\\mathrm{atol}\\,\\|u_i\\|_1 \\|v\\|_1 + \\mathrm{rtol}\\,|n|`, the
        slow-mode bound carried through the two contractions.

    Returns
    -------
    bool
        True on success (False on failure when ``raise_exception=False``).
    """
    from ..autodiff import jvp, vjp

    del check_batched_grad, check_batched_forward_grad, masked  # no meaning here
    args = _as_inputs(inputs)
    name = _func_name(func)
    slots = _slots(func, args)
    diff = [i for i, s in enumerate(slots) if s is not None]
    if not diff:
        raise ValueError(
            f"gradcheck: no differentiable array among the {len(args)} positional inputs "
            f"of {name}"
        )
    if not (check_backward_ad or check_forward_ad):
        raise ValueError("gradcheck: check_backward_ad and check_forward_ad are both False")
    label = {i: f"input {i} ({slots[i]})" for i in diff}

    y, pullback = vjp(func, *_copy_args(args))
    y = np.asarray(y, dtype=np.float64)
    ny = y.size
    rng = np.random.default_rng(SEED)

    # --- structural checks on the pullback -----------------------------------
    if check_backward_ad:
        v = rng.standard_normal(y.shape)
        g1 = pullback(v)
        _, pullback2 = vjp(func, *_copy_args(args))
        g2 = pullback2(v.copy())
        for i in diff:
            if check_grad_dtypes and (
                not isinstance(g1[i], np.ndarray)
                or g1[i].dtype != np.float64
                or g1[i].shape != np.shape(args[i])
            ):
                return _fail(
                    f"{name}: gradient of {label[i]} has dtype "
                    f"{getattr(g1[i], 'dtype', type(g1[i]))} and shape {np.shape(g1[i])}; "
                    f"expected float64 {np.shape(args[i])}",
                    raise_exception,
                )
            dev = float(np.max(np.abs(g1[i] - g2[i]))) if g1[i].size else 0.0
            if not dev <= nondet_tol:
                return _fail(
                    f"{name}: backward is not reentrant for {label[i]}: two calls "
                    f"with the same cotangent differ by up to {dev:.6g} "
                    f"(nondet_tol={nondet_tol:g})",
                    raise_exception,
                )
        if check_undefined_grad:
            gz = pullback(np.zeros(y.shape))
            for i in diff:
                if np.any(gz[i] != 0):
                    return _fail(
                        f"{name}: a zero cotangent gives a nonzero gradient for {label[i]} "
                        f"(max |g| = {float(np.max(np.abs(gz[i]))):.6g})",
                        raise_exception,
                    )

    if fast_mode:
        v = rng.standard_normal(ny)
        v /= np.linalg.norm(v) or 1.0
        gv = pullback(v.reshape(y.shape)) if check_backward_ad else None
        for i in diff:
            x = args[i]
            u = rng.standard_normal(x.shape)
            u /= np.linalg.norm(u) or 1.0

            def f_i(xi, i=i):
                return _evaluate(func, _perturbed(args, i, xi))

            dnum, t = _central_directional(f_i, x, u, eps)
            n = float(v @ dnum.ravel())
            tol = atol * float(np.abs(t).sum()) * float(np.abs(v).sum()) + rtol * abs(n)
            results = []
            if check_backward_ad:
                results.append(("VJP", float(np.vdot(gv[i], t))))
            if check_forward_ad:
                tans = tuple(t if j == i else None for j in range(len(args)))
                _, ty = jvp(func, _copy_args(args), tans)
                results.append(("JVP", float(v @ np.asarray(ty).ravel())))
            for what, a in results:
                if not abs(a - n) <= tol:
                    return _fail(
                        f"{name}: fast gradcheck failed for {label[i]} ({what}): "
                        f"v^T J u numerical {n!r} vs analytical {a!r}, |difference| "
                        f"{abs(a - n):.6g} > tolerance {tol:.6g} "
                        f"(atol*|u|_1*|v|_1 + rtol*|n|). Run with fast_mode=False to "
                        f"locate the worst entry.",
                        raise_exception,
                    )
        return True

    # --- slow mode: full Jacobians ----------------------------------------------
    numerical = {}
    for i in diff:
        n_i = np.size(args[i])
        cols = [_central_column(func, args, i, k, eps) for k in range(n_i)]
        numerical[i] = np.stack(cols, axis=1) if cols else np.zeros((ny, 0))

    if check_backward_ad:
        rows = {i: np.zeros((ny, np.size(args[i]))) for i in diff}
        for r in range(ny):
            e = np.zeros(ny)
            e[r] = 1.0
            g = pullback(e.reshape(y.shape))
            for i in diff:
                rows[i][r] = np.asarray(g[i]).ravel()
        for i in diff:
            msg = _compare_jacobians(
                rows[i], numerical[i], atol=atol, rtol=rtol, what="VJP",
                slot_label=label[i], y_shape=y.shape, x_shape=np.shape(args[i]),
            )
            if msg:
                return _fail(f"{name}: {msg}", raise_exception)

    if check_forward_ad:
        for i in diff:
            n_i = np.size(args[i])
            cols = []
            for k in range(n_i):
                t = np.zeros(n_i)
                t[k] = 1.0
                tans = tuple(
                    t.reshape(np.shape(args[i])) if j == i else None
                    for j in range(len(args))
                )
                _, ty = jvp(func, _copy_args(args), tans)
                cols.append(np.asarray(ty, dtype=np.float64).ravel())
            an = np.stack(cols, axis=1) if cols else np.zeros((ny, 0))
            msg = _compare_jacobians(
                an, numerical[i], atol=atol, rtol=rtol, what="JVP",
                slot_label=label[i], y_shape=y.shape, x_shape=np.shape(args[i]),
            )
            if msg:
                return _fail(f"{name}: {msg}", raise_exception)
    return True


# --------------------------------------------------------------------------- gradgradcheck


def _unwrap_partial(func):
    pre, kwargs = (), {}
    while isinstance(func, functools.partial):
        pre = func.args + pre
        kwargs = {**func.keywords, **kwargs}
        func = func.func
    return func, pre, kwargs


def gradgradcheck(func, inputs, grad_outputs=None, *, eps=1e-6, atol=1e-5, rtol=1e-3,
                  gen_non_contig_grad_outputs=False, raise_exception=True, nondet_tol=0.0,
                  check_undefined_grad=True, check_grad_dtypes=False,
                  check_batched_grad=False, check_fwd_over_rev=False,
                  check_rev_over_rev=True, fast_mode=False, masked=False):
    """Check second derivatives: the derivative of the VJP map.

    The map checked is

    .. math::

        H(x_1, \\dots, x_k, v) = \\big(J_{x_1}^\\top v, \\dots, J_{x_k}^\\top v\\big)

    over the differentiable inputs :math:`x_i` and the cotangent :math:`v`
    (``grad_outputs``; seeded Gaussian if None, never all ones), as
    ``torch.autograd.gradgradcheck`` does.

    * numerically: central differences (step ``eps``) of normref's fast VJP;
    * analytically: reverse-over-reverse through the autograd reference
      ``spec.reference`` -- :math:`H` is written with ``autograd.make_vjp`` of
      the reference and differentiated again with ``make_vjp``
      (Hessian-vector products).

    normref's second derivatives *are* the reference's: the fast path has no
    second-order code, so this check ties the fast first derivatives to the
    reference's second derivatives, which is what makes the latter trustworthy.

    Comparison as in :func:`gradcheck` (slow mode: full Jacobian of :math:`H`;
    ``fast_mode``: :math:`w^\\top J_H u` for seeded Gaussian unit vectors).
    ``nondet_tol``, ``check_undefined_grad``, ``check_grad_dtypes``,
    ``check_batched_grad``, ``check_fwd_over_rev`` and ``masked`` are accepted
    for signature compatibility and ignored (reverse-over-reverse through the
    reference is the only second-order path); ``gen_non_contig_grad_outputs``
    passes a non-contiguous view of the cotangent to normref's VJP.
    """
    import autograd.numpy as anp
    from autograd import make_vjp

    from ..autodiff import vjp
    from ..registry import spec_of

    del nondet_tol, check_undefined_grad, check_grad_dtypes, check_batched_grad
    del check_fwd_over_rev, masked
    if not check_rev_over_rev:
        return True
    args = _as_inputs(inputs)
    name = _func_name(func)
    slots = _slots(func, args)
    diff = [i for i, s in enumerate(slots) if s is not None]
    if not diff:
        raise ValueError(
            f"gradgradcheck: no differentiable array among the inputs of {name}"
        )
    base, pre, kw = _unwrap_partial(func)
    spec = spec_of(base)
    y = _evaluate(func, args)
    rng = np.random.default_rng(SEED + 1)
    if grad_outputs is None:
        v0 = rng.standard_normal(y.shape)
    else:
        if isinstance(grad_outputs, (tuple, list)):
            if len(grad_outputs) != 1:
                raise ValueError("gradgradcheck: normref functions have one output")
            grad_outputs = grad_outputs[0]
        v0 = np.array(grad_outputs, dtype=np.float64)
        if v0.shape != y.shape:
            raise ValueError(
                f"grad_outputs has shape {v0.shape}, expected the output shape {y.shape}"
            )

    shapes = [np.shape(args[i]) for i in diff]
    sizes = [int(np.prod(s, dtype=np.int64)) for s in shapes]
    offs = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    n_p = int(offs[-1])
    theta0 = np.concatenate([np.ravel(args[i]) for i in diff] + [v0.ravel()])

    def split(theta):
        return [theta[offs[j]:offs[j + 1]].reshape(shapes[j]) for j in range(len(diff))]

    # (a) numerical: H through normref's fast VJP
    def H_fast(theta):
        full = list(args)
        for i, p in zip(diff, split(theta)):
            full[i] = np.array(p)
        v = theta[n_p:].reshape(y.shape)
        if gen_non_contig_grad_outputs:
            big = np.zeros(y.shape + (2,))
            big[..., 0] = v
            v = big[..., 0]
        _, pb = vjp(func, *_copy_args(full))
        g = pb(v)
        return np.concatenate([np.ravel(g[i]) for i in diff])

    # (b) analytical: reverse-over-reverse through the autograd reference
    full_const = pre + _copy_args(args)

    def ref_of_params(flat_p):
        full = list(_copy_args(full_const))
        for i, j in zip(diff, range(len(diff))):
            full[len(pre) + i] = anp.reshape(flat_p[offs[j]:offs[j + 1]], shapes[j])
        return spec.reference(*full, **kw)

    def H_ref(theta):
        vjp_fun, _ = make_vjp(ref_of_params)(theta[:n_p])
        return vjp_fun(anp.reshape(theta[n_p:], y.shape))

    vjp2, h0 = make_vjp(H_ref)(theta0)
    h0 = np.asarray(h0, dtype=np.float64)
    n_out = h0.size

    def place(k):
        """Human-readable location of entry ``k`` of theta / of H's output."""
        if k >= n_p:
            return f"grad_outputs{_unravel(k - n_p, y.shape)}"
        j = int(np.searchsorted(offs, k, side="right") - 1)
        return f"input {diff[j]} ({slots[diff[j]]}){_unravel(k - offs[j], shapes[j])}"

    if fast_mode:
        u = rng.standard_normal(theta0.size)
        u /= np.linalg.norm(u)
        w = rng.standard_normal(n_out)
        w /= np.linalg.norm(w)
        dnum, t = _central_directional(H_fast, theta0, u, eps)
        n = float(w @ dnum)
        a = float(np.asarray(vjp2(w)) @ t)
        tol = atol * float(np.abs(t).sum()) * float(np.abs(w).sum()) + rtol * abs(n)
        if not abs(a - n) <= tol:
            return _fail(
                f"{name}: fast gradgradcheck failed: w^T J u numerical {n!r} vs "
                f"analytical (reference) {a!r}, |difference| {abs(a - n):.6g} > "
                f"tolerance {tol:.6g}",
                raise_exception,
            )
        return True

    num = np.zeros((n_out, theta0.size))
    for k in range(theta0.size):
        tp = theta0.copy()
        tm = theta0.copy()
        tp[k] += eps
        tm[k] -= eps
        num[:, k] = (H_fast(tp) - H_fast(tm)) / float(tp[k] - tm[k])
    an = np.zeros_like(num)
    for r in range(n_out):
        e = np.zeros(n_out)
        e[r] = 1.0
        an[r] = np.asarray(vjp2(e), dtype=np.float64)
    diffs = np.abs(an - num)
    tol = atol + rtol * np.abs(num)
    bad = ~(diffs <= tol)
    if bad.any():
        excess = np.where(bad, np.where(np.isnan(diffs), np.inf, diffs - tol), -np.inf)
        r, c = np.unravel_index(int(np.argmax(excess)), an.shape)
        return _fail(
            f"{name}: second-derivative mismatch (reference reverse-over-reverse vs "
            f"finite differences of normref's VJP), {int(bad.sum())} of {bad.size} "
            f"entries over tolerance (atol={atol:g}, rtol={rtol:g});\n"
            f"  worst entry: d grad[{place(r)}] / d {place(c)}\n"
            f"  numerical:  {float(num[r, c])!r}\n"
            f"  analytical: {float(an[r, c])!r}",
            raise_exception,
        )
    return True


# --------------------------------------------------------------------------- dot tests


@dataclass
class DotTestResult:
    """Outcome of :func:`check_vjp` / :func:`check_jvp`.

    The three ``*_vs_*`` numbers are the worst (over directions) relative
    discrepancies ``|a - b| / scale`` with the Cauchy-Schwarz scale
    ``max(||v|| ||J u||, ||J^T v|| ||u||)`` (so a dot product that happens to
    cancel to ~0 is not reported as a huge relative error).
    """

    function: str
    n_directions: int
    step: float
    vjp_vs_fd: float
    jvp_vs_fd: float
    vjp_vs_jvp: float
    passed: bool
    subject: str
    directions: list = field(default_factory=list)

    def as_dict(self):
        return {
            "function": self.function,
            "subject": self.subject,
            "n_directions": self.n_directions,
            "step": self.step,
            "vjp_vs_fd": self.vjp_vs_fd,
            "jvp_vs_fd": self.jvp_vs_fd,
            "vjp_vs_jvp": self.vjp_vs_jvp,
            "passed": self.passed,
        }

    def __bool__(self):
        return self.passed


def _spread(x):
    """Natural scale of an array for the finite-difference step.

    The standard deviation of its values (so ``1e4 + N(0,1)`` gets a step of
    ``1e-6``, not ``1e-2``); for constant arrays the largest magnitude; 1 for
    all-zero arrays.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.size > 1:
        s = float(np.std(x))
        if s > 0 and np.isfinite(s):
            return s
    m = float(np.max(np.abs(x))) if x.size else 0.0
    return m if m > 0 and np.isfinite(m) else 1.0


def _dot_test(subject, func, args, kwargs, *, rng, n_directions, step, rtol, atol,
              adjoint_rtol, raise_exception):
    from ..autodiff import jvp, vjp

    if rng is None:
        rng = np.random.default_rng(SEED)
    elif not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    name = _func_name(func)
    args = tuple(args)
    y, pullback = vjp(func, *_copy_args(args), **kwargs)
    y = np.asarray(y, dtype=np.float64)
    # which slots are differentiable: ask the pullback once
    probe = pullback(np.zeros(y.shape))
    diff = [i for i, g in enumerate(probe) if g is not None]
    if not diff:
        raise ValueError(f"{name}: no differentiable positional argument in this call")
    base = [np.asarray(args[i], dtype=np.float64) for i in diff]
    scales = [_spread(x) for x in base]

    def f_of(point):
        full = list(args)
        for i, p in zip(diff, point):
            full[i] = p
        return _evaluate(func, full, **kwargs)

    worst = {"vjp_vs_fd": 0.0, "jvp_vs_fd": 0.0, "vjp_vs_jvp": 0.0}
    records = []
    failures = []
    for d in range(n_directions):
        # direction: Gaussian, scaled per input by its spread
        dirs0 = [s * rng.standard_normal(x.shape) for x, s in zip(base, scales)]
        v = rng.standard_normal(y.shape)
        vnorm = float(np.linalg.norm(v))
        _, pb = vjp(func, *_copy_args(args), **kwargs)
        g = pb(v)
        gnorm = float(np.sqrt(sum(np.vdot(g[i], g[i]) for i in diff)))
        norm0 = float(np.sqrt(sum(np.vdot(t, t) for t in dirs0)))
        rungs = []
        for k in range(N_RUNGS):
            h = step * 10.0**k
            # central differences at h and h/2, Richardson-combined:
            # (4 D(h/2) - D(h)) / 3 cancels the h^2 term.  Each uses the direction
            # actually taken after rounding x +- h t; J is linear, so the
            # combination approximates J applied to the same combination of them.
            fds, effs = [], []
            for hh in (h, 0.5 * h):
                plus = [x + hh * t for x, t in zip(base, dirs0)]
                minus = [x - hh * t for x, t in zip(base, dirs0)]
                effs.append([(p - m) / (2.0 * hh) for p, m in zip(plus, minus)])
                fds.append((f_of(plus) - f_of(minus)) / (2.0 * hh))
            fd_vec = (4.0 * fds[1] - fds[0]) / 3.0
            dirs = [(4.0 * t2 - t1) / 3.0 for t1, t2 in zip(effs[0], effs[1])]
            tans = [None] * len(args)
            for i, t in zip(diff, dirs):
                tans[i] = t
            _, ty = jvp(func, _copy_args(args), tuple(tans), **kwargs)
            ty = np.asarray(ty, dtype=np.float64)
            unorm = float(np.sqrt(sum(np.vdot(t, t) for t in dirs)))
            rungs.append({
                "h": h,
                # the rounded points must really differ along the direction: at
                # x ~ 1e12 a step of 1e-6 vanishes and the test would be vacuous
                "valid": unorm >= 0.5 * norm0,
                "fd": float(np.vdot(v, fd_vec)),
                "vjp": float(sum(np.vdot(g[i], t) for i, t in zip(diff, dirs))),
                "jvp": float(np.vdot(v, ty)),
                "scale": max(vnorm * float(np.linalg.norm(ty)), gnorm * unorm,
                             vnorm * float(np.linalg.norm(fd_vec))),
            })
        # pick the pair of neighbouring steps whose finite differences agree best.
        # The criterion uses the subject's discrepancy e_k = analytical_k - fd_k:
        # a wrong derivative adds the same error to every e_k (the directions of
        # the rungs differ only by rounding), which cancels in e_k - e_{k+1}, so
        # the choice measures only the finite differences' own consistency.
        def disc(r):
            sc = r["scale"] if r["scale"] > 0 else 1.0
            return (r[subject] - r["fd"]) / sc

        valid = [r for r in rungs if r["valid"]]
        if not valid:
            raise ValueError(
                f"{name}: every finite-difference step ({step:g} .. "
                f"{step * 10.0 ** (N_RUNGS - 1):g} x spread) vanishes when added to "
                f"the inputs (offset too large for their spread); raise step"
            )
        jumps = [
            abs(disc(rungs[k]) - disc(rungs[k + 1]))
            if rungs[k]["valid"] and rungs[k + 1]["valid"] else np.inf
            for k in range(N_RUNGS - 1)
        ]
        jumps = [np.inf if np.isnan(j) else j for j in jumps]
        if np.isfinite(min(jumps)):
            kbest = int(np.argmin(jumps))
            pair = (rungs[kbest], rungs[kbest + 1])
        else:
            pair = (valid[-1], valid[-1])
        scale = max(pair[0]["scale"], pair[1]["scale"])
        fd = 0.5 * (pair[0]["fd"] + pair[1]["fd"])
        vj = 0.5 * (pair[0]["vjp"] + pair[1]["vjp"])
        jv = 0.5 * (pair[0]["jvp"] + pair[1]["jvp"])
        r0 = rungs[0]
        rec = {}
        for key, a, b, rt, sc in (
            ("vjp_vs_fd", vj, fd, rtol, scale),
            ("jvp_vs_fd", jv, fd, rtol, scale),
            ("vjp_vs_jvp", r0["vjp"], r0["jvp"], adjoint_rtol, r0["scale"]),
        ):
            err = abs(a - b)
            rel = err / sc if sc > 0 else (0.0 if err == 0 else float("inf"))
            if np.isnan(err):
                rel = float("inf")
            rec[key] = rel
            worst[key] = max(worst[key], rel)
            checked = key == "vjp_vs_jvp" or key.startswith(subject)
            if checked and not err <= atol + rt * sc:
                failures.append((d, key, a, b, rel, rt))
        rec.update(vjp=vj, jvp=jv, fd=fd, scale=scale, h=pair[0]["h"])
        records.append(rec)

    result = DotTestResult(
        function=name, n_directions=n_directions, step=step, passed=not failures,
        subject=subject, directions=records, **worst,
    )
    if failures and raise_exception:
        lines = [
            f"{name}: dot-product test of the {subject.upper()} failed "
            f"(steps {step:g} .. {step * 10.0 ** (N_RUNGS - 1):g} x spread of each input; "
            f"rtol={rtol:g}, "
            f"adjoint_rtol={adjoint_rtol:g}, atol={atol:g})"
        ]
        for d, key, a, b, rel, rt in failures:
            left, right = key.split("_vs_")
            lines.append(
                f"  direction {d}: <.,.> {left.upper()} = {a!r} vs {right.upper()} = {b!r}, "
                f"relative discrepancy {rel:.3g} > {rt:g}"
            )
        r0 = records[failures[0][0]]
        vj_ok = abs(r0["vjp"] - r0["fd"]) <= atol + rtol * r0["scale"]
        jv_ok = abs(r0["jvp"] - r0["fd"]) <= atol + rtol * r0["scale"]
        if vj_ok != jv_ok:
            lines.append(
                f"  diagnosis: the {'VJP' if vj_ok else 'JVP'} agrees with finite "
                f"differences, the {'JVP' if vj_ok else 'VJP'} does not"
            )
        raise AssertionError("\n".join(lines))
    return result


_DOT_DOC = """

    Dot-product test in ``n_directions`` random directions: for Gaussian
    ``u`` (one per differentiable positional argument, scaled by that
    argument's spread) and Gaussian ``v`` (output space, never all ones),

    .. math::

        \\langle v, J u\\rangle_{JVP} = \\langle J^\\top v, u\\rangle_{VJP}
        \\approx \\Big\\langle v, \\frac{f(x + h u) - f(x - h u)}{2h}\\Big\\rangle .

    Step: the direction of argument ``x`` is ``spread(x) * N(0, 1)`` with
    ``spread`` the standard deviation of ``x`` (its largest magnitude when
    constant, 1 when zero).  So the perturbation follows the *spread*, not the
    magnitude: for ``1e4 + N(0, 1)`` a relative step would be 1e4 times too
    large and the truncation error would swamp the check.  Each finite
    difference is the Richardson combination ``(4 D(h/2) - D(h)) / 3`` of
    central differences ``D`` (truncation O(h^4)), evaluated on the ladder
    ``h = step * 10**k``, ``k = 0..5`` (1e-6 .. 0.1 by default): no single step
    suits both a function with features finer than the data's spread (LRN on
    large inputs: small h) and one whose output barely moves (RMS norm of
    ``1e8 + N(0, 1)``: rounding error ``~1e-16 * 1e8 / h``, large h).  The
    pair of neighbouring rungs whose discrepancies agree best is used (a wrong
    derivative shifts every rung's discrepancy equally, so it cannot steer the
    choice); the reported value is the pair's mean.  The direction used on the
    analytical side is the one the rounded points ``x +- h u`` actually
    differ by.  Accuracy is then ~1e-9 relative or better, hence ``rtol=1e-6``.

    Discrepancies are relative to the Cauchy-Schwarz scale
    ``max(||v|| ||J u||, ||J^T v|| ||u||)``: pass when
    ``|a - b| <= atol + rtol * scale`` (``adjoint_rtol`` for VJP vs JVP, an
    identity exact up to rounding, hence much tighter).

    Parameters
    ----------
    func : registered normref function or functools.partial of one
    *args, **kwargs : the call ``func(*args, **kwargs)``.  Array arguments are
        copied before every evaluation (running statistics are never mutated).
        Note the finite-difference step is named ``step`` (not ``eps``) so that
        a normalizer's own ``eps=`` keyword reaches the normalizer.
    rng : numpy Generator or seed, optional (default: seeded, reproducible)
    n_directions : int
    step : float
    rtol, atol : float -- tolerance against finite differences
    adjoint_rtol : float -- tolerance of VJP against JVP
    raise_exception : bool -- raise AssertionError with details on failure

    Returns
    -------
    DotTestResult
        worst relative discrepancies ``vjp_vs_fd``, ``jvp_vs_fd``,
        ``vjp_vs_jvp`` and ``passed``; ``as_dict()`` for tables.
    """


def check_vjp(func, *args, rng=None, n_directions=3, step=1e-6, rtol=1e-6, atol=1e-9,
              adjoint_rtol=1e-10, raise_exception=True, **kwargs):
    return _dot_test("vjp", func, args, kwargs, rng=rng, n_directions=n_directions,
                     step=step, rtol=rtol, atol=atol, adjoint_rtol=adjoint_rtol,
                     raise_exception=raise_exception)


def check_jvp(func, *args, rng=None, n_directions=3, step=1e-6, rtol=1e-6, atol=1e-9,
              adjoint_rtol=1e-10, raise_exception=True, **kwargs):
    return _dot_test("jvp", func, args, kwargs, rng=rng, n_directions=n_directions,
                     step=step, rtol=rtol, atol=atol, adjoint_rtol=adjoint_rtol,
                     raise_exception=raise_exception)


check_vjp.__doc__ = (
    "Check :func:`normref.vjp` of ``func(*args, **kwargs)`` (asserts VJP vs finite "
    "differences and VJP vs JVP)." + _DOT_DOC
)
check_jvp.__doc__ = (
    "Check :func:`normref.jvp` of ``func(*args, **kwargs)`` (asserts JVP vs finite "
    "differences and VJP vs JVP)." + _DOT_DOC
)
