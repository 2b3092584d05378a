"""First derivatives: :func:`gradcheck`, ``torch.autograd.gradcheck``'s
keywords and defaults for normref functions (the fast VJP, and the JVP on
request, against central finite differences).
"""
from __future__ import annotations

import numpy as np

from .common import (SEED, _as_inputs, _central_column, _central_directional, _compare_jacobians,
                     _copy_args, _evaluate, _fail, _func_name, _perturbed, _slots)

__all__ = ["gradcheck"]


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
    from ...autodiff import jvp, vjp

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
