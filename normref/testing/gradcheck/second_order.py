"""Second derivatives: :func:`gradgradcheck`, the fast VJP's derivative
against reverse-over-reverse through the autograd reference.
"""
from __future__ import annotations

import functools

import numpy as np

from .common import (SEED, _as_inputs, _central_directional, _copy_args, _evaluate, _fail,
                     _func_name, _slots, _unravel)

__all__ = ["gradgradcheck"]


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

    from ...autodiff import vjp
    from ...registry import spec_of

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
