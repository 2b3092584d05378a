"""``python -m normref check``: verify every registered normalizer.

For every example case of every normalizer (``spec.examples``) it measures

* ``forward``  -- the numba forward against the autograd reference formula;
* ``vjp``      -- every VJP slot against autograd's VJP of the reference;
* ``jvp``      -- the JVP against autograd's forward mode on the reference;
* ``jacobian`` -- the dense Jacobian against stacked VJPs of unit cotangents;
* ``vjp-fd`` / ``jvp-fd`` -- dot-product tests against central finite
  differences in random directions (:func:`normref.testing.check_vjp`).

Each measure is an error relative to the scale of the rounding the quantity
can carry, next to its tolerance (both from :mod:`normref.tolerance`, the rule
the conformance judge uses too); the table prints, per normalizer, the
worst error of each check and exits non-zero if any exceeds its tolerance.
The measures live in :mod:`normref.verification` (re-exported here); this
module prints them.  A run is a list of units (normalizer, draw) computed by
:func:`check_unit`; ``--seeds N`` checks N draws of the examples and
``--dask`` computes the units on a Dask cluster (:mod:`normref.distributed`),
merged in the same order, so the table is the serial one.  The test-suite asserts the same measures
(tests/test_registry.py).
"""
from __future__ import annotations

import math
import numbers
import time

import numpy as np

from .registry import REGISTRY
from .tolerance import DERIVATIVE_ULPS, EPS, FORWARD_ULPS, tolerance  # noqa: F401
from .verification import (CHECKS, FD_ATOL, FD_RTOL, check_case, cond, case_cond,  # noqa: F401
                           differentiable_slots, fd_errors, forward_error, jacobian_error,
                           jvp_error, reference_jvp, reference_of, rounding_scale, vjp_error)


def _examples(spec, draw):
    """The example cases of draw ``draw``: draw 0 is ``spec.examples(default_rng(1234))``
    (the check's own), draw ``k`` uses the generator seeded ``[1234, k]``."""
    return spec.examples(np.random.default_rng(1234 if draw == 0 else [1234, draw]))


def check_unit(name, draw=0, seed=0):
    """Check the example cases of one draw of one normalizer (a unit of a sweep).

    Case ``i`` of draw 0 uses direction seed ``seed + i`` (the serial check's),
    of draw ``k > 0`` the seed sequence ``[seed + i, k]``.  Returns ``(number
    of cases, {check: worst error}, set of failing checks, failures)``, a
    failure as in :func:`run` (labels of draws ``k > 0`` end with ``", draw k"``).
    """
    spec = REGISTRY[name]
    worst = {c: 0.0 for c in CHECKS}
    bad = set()
    failures = []
    cases = _examples(spec, draw)
    for i, case in enumerate(cases):
        label = case.label if draw == 0 else f"{case.label}, draw {draw}"
        try:
            res = check_case(spec, case, seed=seed + i if draw == 0 else [seed + i, draw])
        except Exception as e:  # a crash is a failure of the case, reported
            for c in CHECKS:
                worst[c] = math.inf
                bad.add(c)
            failures.append((name, label, "exception", f"{type(e).__name__}: {e}", None))
            continue
        for c, (err, tol) in res.items():
            worst[c] = max(worst[c], err)
            if not err <= tol:
                bad.add(c)
                failures.append((name, label, c, err, tol))
    return len(cases), worst, bad, failures


def _serial(fn, units):
    return [fn(*u) for u in units]


def run(names=None, seed=0, out=print, seeds=1, map_units=None):
    """Check the named normalizers (all by default); print a table; return failures.

    A failure is ``(normalizer, case label, check, error, tolerance)``; an
    exception raised while checking a case is reported as a failure of every
    check of that case.  ``seeds=N`` checks ``N`` draws of every normalizer's
    examples (:func:`check_unit`; draw 0 alone by default).  ``map_units(fn,
    units)`` computes ``[fn(*u) for u in units]`` in order (serially by
    default; :func:`normref.distributed.units_on_cluster` on a Dask cluster):
    the table is the same either way.
    """
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(seeds, (bool, np.bool_)) or not isinstance(seeds, numbers.Integral) or seeds < 1:
        raise ValueError(f"seeds must be a positive integer, got {seeds!r}")
    names = sorted(REGISTRY) if not names else list(names)
    for n in names:
        if n not in REGISTRY:
            raise KeyError(f"no normalizer named {n!r}; registered: {', '.join(sorted(REGISTRY))}")
    width = max(len(n) for n in names) + 2
    head = f"{'normalizer':<{width}}{'cases':>6}" + "".join(f"{c:>11}" for c in CHECKS) + "  status"
    out("worst error per check, relative to the rounding scale (tolerances: forward "
        f"{FORWARD_ULPS:g} eps x cond, derivatives {DERIVATIVE_ULPS:g} eps x cond, "
        f"finite differences {FD_RTOL:g})")
    out(head)
    out("-" * len(head))
    failures = []
    t0 = time.perf_counter()
    units = [(n, k, seed) for n in names for k in range(seeds)]
    done = iter((map_units or _serial)(check_unit, units))
    for n in names:
        ncases, worst, bad = 0, {c: 0.0 for c in CHECKS}, set()
        for _ in range(seeds):
            m, w, b, f = next(done)
            ncases += m
            worst = {c: max(worst[c], w[c]) for c in CHECKS}
            bad |= b
            failures += f
        cells = "".join(
            f"{('%.1e' % worst[c]) + ('!' if c in bad else ' '):>11}" for c in CHECKS
        )
        out(f"{n:<{width}}{ncases:>6}{cells}  {'FAIL' if bad else 'ok'}")
    out("-" * len(head))
    out(f"{len(names)} normalizers, {len(failures)} failures, {time.perf_counter() - t0:.1f} s")
    for n, label, c, err, tol in failures:
        if tol is None:
            out(f"FAIL {n} [{label}]: {err}")
        else:
            out(f"FAIL {n} [{label}] {c}: error {err:.3e} > tolerance {tol:.3e}")
    return failures


def run_theory(providers=None, out=print):
    """Print the theory section: one row per claim; return the failing claims.

    Claims come from :mod:`normref.analysis` (invariance, curvature,
    dynamics, signal): each row gives the source, the predicted value, the
    value normref measured, the tolerance and pass / FAIL.
    """
    from .analysis.claims import all_claims

    t0 = time.perf_counter()
    claims = all_claims(providers)
    out("")
    out("theory: predicted vs measured")
    head = f"{'id':<44}{'predicted':>16}{'measured':>16}{'tolerance':>14}  status  source"
    out(head)
    out("-" * len(head))

    def fmt(v):
        return f"{v:.6g}" if isinstance(v, (int, float)) else str(v)

    for c in claims:
        tol = f"{c.tolerance:.2g}{' rel' if c.relative else ''}"
        out(f"{c.id:<44}{' ' + fmt(c.predicted):>16}{' ' + fmt(c.measured):>16}{tol:>14}  "
            f"{'ok' if c.passed else 'FAIL':<6}  {c.source}")
    failing = [c for c in claims if not c.passed]
    out("-" * len(head))
    out(f"{len(claims)} claims, {len(failing)} failing, {time.perf_counter() - t0:.1f} s")
    return claims, failing
