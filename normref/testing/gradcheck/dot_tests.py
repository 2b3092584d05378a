r"""Dot-product tests in random directions: :func:`check_vjp` and
:func:`check_jvp` (VJP and JVP against central differences along a ladder of
steps scaled by each input's spread, and VJP against JVP).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .common import N_RUNGS, SEED, _copy_args, _evaluate, _func_name

__all__ = ["check_vjp", "check_jvp", "DotTestResult"]


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
    from ...autodiff import jvp, vjp
    from ...registry import flatten_outputs, split_outputs

    if rng is None:
        rng = np.random.default_rng(SEED)
    elif not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    name = _func_name(func)
    args = tuple(args)
    y, pullback = vjp(func, *_copy_args(args), **kwargs)
    # a call with several outputs: v, J u and the differences live on the outputs
    # raveled and concatenated; the pullback takes them cut back into a tuple
    shapes = [np.shape(o) for o in y] if isinstance(y, tuple) else None

    def pack(flat):
        return flat if shapes is None else split_outputs(flat, shapes)

    y = np.asarray(y, dtype=np.float64) if shapes is None else flatten_outputs(y)
    # which slots are differentiable: ask the pullback once
    probe = pullback(pack(np.zeros(y.shape)))
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
        g = pb(pack(v))
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
            ty = np.asarray(ty, dtype=np.float64) if shapes is None else flatten_outputs(ty)
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
