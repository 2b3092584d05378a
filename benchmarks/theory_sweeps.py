"""Long sweeps behind the statistical rows of docs/theory.md items 5 and 8.

Prints, for each configuration, the measured value per size (mean +- standard
error over seeds), the finite-size fit (form, chi^2 / dof), the extrapolated
constant with its standard error, and the margin of every alternative
(distance / (3 standard errors); > 1: rejected).  The registered claims
(``python -m normref check --theory``) run a smaller version of the same code.

    python benchmarks/theory_sweeps.py            # about 5 min on 2 cores
    python benchmarks/theory_sweeps.py --quick    # about 1 min: fewer seeds and sizes
"""
from __future__ import annotations

import argparse
import math
import time

from normref.analysis.dynamics import spherical_motion as S
from normref.analysis.signal import (linear_claim, mean_field_fit, relu_mean_field_claim,
                                     relu_network_claim, width_extrapolation)


def _row(claim):
    alts = ", ".join(f"{a.label}: {claim.margin(a):.2f}" for a in claim.alternatives)
    ok = "pass" if claim.passed else "FAIL"
    acc = claim.accepted_alternatives()
    return (f"  {claim.id}: measured {claim.measured:.5f} vs {claim.predicted:.5f} "
            f"(tolerance {claim.tolerance:.5f}) {ok}; margins {alts}"
            + (f"; ACCEPTS {[a.label for a in acc]}" if acc else ""))


def item8(quick):
    seeds = tuple(range(6 if quick else 16))
    widths = (256, 512) if quick else (128, 256, 512, 1024)
    batches = (6, 8) if quick else (6, 8, 12, 16)
    print(f"== item 8, linear: rate vs width, {len(seeds)} seeds, fit lambda + a/n "
          f"over widths >= 256 ==")
    t = time.time()
    fit_widths = tuple(n for n in widths if n >= 256)
    for B in batches:
        allw = width_extrapolation("linear", B, widths, seeds=seeds, together=batches)
        print(f"  B={B}: {allw.table()}")
        if len(fit_widths) > 2:
            print(_row(linear_claim(B, fit_widths, seeds=seeds, together=batches)))
    print(f"  ({time.time() - t:.0f} s)")

    print("== item 8, ReLU mean field: lambda(B) by Monte Carlo, fit l + c1/B + c2/B^2 ==")
    t = time.time()
    mf_b = (32, 64, 128, 256) if quick else (16, 32, 64, 128, 256, 512)
    samples = 100_000 if quick else 400_000
    fit, pts = mean_field_fit(mf_b, samples)
    for B, (r, e) in zip(mf_b, pts):
        print(f"  B={B}: {r:.5f} +- {e:.5f}   (lambda - pi/(pi-1)) * B = "
              f"{(r - math.pi / (math.pi - 1)) * B:.3f}")
    print(f"  fit: l_inf {fit.intercept:.5f} +- {fit.intercept_stderr:.5f}, c1 {fit.coef[1]:.3f}, "
          f"c2 {fit.coef[2]:.2f}, chi2 {fit.chi2:.2f} on {fit.dof} dof")
    print(_row(relu_mean_field_claim(mf_b, samples)))
    print(f"  ({time.time() - t:.0f} s)")

    rseeds = tuple(range(4 if quick else 8))
    print(f"== item 8, ReLU networks: rate vs width, {len(rseeds)} seeds ==")
    t = time.time()
    configs = ((64, (128, 256, 512)),) if quick else (
        (64, (128, 256, 512, 1024)), (128, (256, 512, 1024)), (256, (256, 512, 1024)))
    for B, ws in configs:
        ext = width_extrapolation("relu", B, ws, seeds=rseeds)
        print(f"  B={B}: {ext.table()}; fit l + a/n: {ext.limit:.4f} +- {ext.stderr:.4f} "
              f"(chi2 {ext.fit.chi2:.2f} on {ext.fit.dof} dof)")
        if 2 * B <= min(ws):
            print(_row(relu_network_claim(B, ws, seeds=rseeds)))
    print(f"  ({time.time() - t:.0f} s)")


def item5(quick):
    seeds = tuple(range(3 if quick else 8))
    steps, window = (3000, 2000) if quick else (4000, 2500)
    grids = {0.0: (0.002, 0.004, 0.008, 0.016), 0.5: (0.001, 0.002, 0.004, 0.008),
             0.9: (0.001, 0.002, 0.004, 0.008)}
    if quick:
        grids.pop(0.5)
    print(f"== item 5: ratios vs eta*lambda, {len(seeds)} seeds, {steps} steps, "
          f"last {window} ==")
    t = time.time()
    for mu, xs in grids.items():
        kw = dict(eta_lambdas=xs, seeds=seeds, steps=steps, window=window)
        r = S.smd_ratios(mu, **kw)
        print(f"  mu={mu:g}: angular update / sqrt(2 eta lambda/(1+mu)): "
              + ", ".join(f"{x:g}: {m:.4f}+-{e:.4f}" for x, (m, e) in zip(xs, r["angle"])))
        print(_row(S.angular_update_limit_claim(mu, **kw)))
        if mu == 0.0:
            print("  mu=0: mean |w|^4 / fixed point: "
                  + ", ".join(f"{x:g}: {m:.4f}+-{e:.4f}" for x, (m, e) in zip(xs, r["norm"])))
            print(_row(S.equilibrium_norm_limit_claim(**kw)))
    print(f"  ({time.time() - t:.0f} s)")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer seeds and sizes")
    p.add_argument("--item", choices=("5", "8", "all"), default="all")
    a = p.parse_args(argv)
    if a.item in ("8", "all"):
        item8(a.quick)
    if a.item in ("5", "all"):
        item5(a.quick)


if __name__ == "__main__":
    main()
