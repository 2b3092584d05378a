"""Extremal eigenvalues of network curvature at scale: condition numbers of the
Gauss-Newton matrix of batch-norm MLPs (Linear -> BN -> tanh -> Linear -> BN ->
tanh -> Linear, softmax cross-entropy) from 1e3 to 1e5 parameters, matrix-free
(normref JVP/VJP products), in the scale metric, checked against dense eigh
where dense is possible (normref.analysis.curvature.network / invariances /
condition).

Two regimes, two spaces:

* primal -- the batch has more output directions than parameters
  (N (K - 1) > P): the Gauss-Newton matrix is nonsingular once the invariance
  directions are projected out; kappa on that complement;
* dual -- fewer (N (K - 1) < P, the usual one for a large network on one
  batch): the primal matrix is singular beyond the invariances, and kappa on
  its range is that of the m x m output-space Gram matrix (``space="dual"``).

Run: python benchmarks/curvature_scale.py [--cases 1e3-primal,1e3-dual,1e4-primal,1e5-dual]
     [--methods lanczos,arpack,lobpcg,lobpcg-none] [--tol 1e-10]
Prints per case and method: parameters P, retained dimension, products,
seconds, kappa, converged, first-order and gap error estimates, and the
relative difference from dense when dense was run.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from normref import nets
from normref.analysis import curvature as cv

#: name -> (d_in, width, K, N, space, dense?)
CASES = {
    "1e3-primal": (10, 24, 5, 1200, "primal", True),
    "1e3-dual": (10, 24, 5, 100, "dual", True),
    "1e4-primal": (32, 96, 20, 2000, "primal", False),
    "1e4-dual": (32, 96, 10, 300, "dual", False),
    "1e5-dual": (64, 256, 10, 1000, "dual", False),
    "1e5-primal": (64, 256, 20, 8000, "primal", False),
}


def network(d_in, width, K, seed=0):
    g = np.random.default_rng(seed)
    return nets.MLP([nets.Linear(d_in, width, rng=g), nets.Norm("batch_norm"),
                     nets.Activation("tanh"), nets.Linear(width, width, rng=g),
                     nets.Norm("batch_norm"), nets.Activation("tanh"),
                     nets.Linear(width, K, rng=g)])


def _method(name):
    if name == "lobpcg-none":
        return "lobpcg", dict(preconditioner=None)
    return name, {}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", default="1e3-primal,1e3-dual,1e4-primal,1e5-dual")
    ap.add_argument("--methods", default="lanczos",
                    help="comma list of lanczos, arpack, lobpcg (K-FAC preconditioned), "
                         "lobpcg-none; the 1e3 cases always add dense")
    ap.add_argument("--tol", type=float, default=1e-10)
    ap.add_argument("--maxiter", type=int, default=None)
    args = ap.parse_args(argv)
    print(f"{'case':11s} {'P':>6s} {'dim':>6s} {'method':12s} {'products':>8s} {'time/s':>7s} "
          f"{'kappa':>13s} {'conv':>5s} {'err1':>8s} {'err2':>8s} {'vs dense':>9s}")
    for case in args.cases.split(","):
        d_in, width, K, N, space, dense = CASES[case]
        rng = np.random.default_rng(1)
        x = rng.standard_normal((N, d_in))
        y = rng.integers(0, K, N)
        t0 = time.perf_counter()
        nc = cv.NetworkCurvature(network(d_in, width, K), x, y, "softmax_ce")
        inv = nc.invariances()
        r = inv.basis(metric=False).shape[1]
        print(f"# {case}: P={nc.P}, N={N}, K={K}, output rank m={nc.output_rank()}, "
              f"{r} invariance directions ({inv.counts()}), setup "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
        ref = None
        if dense:
            t0 = time.perf_counter()
            rep = nc.condition("gauss_newton", space=space)
            ref = rep.kappa
            dim = nc.P - rep.null_space_dim if space == "primal" else rep.n
            print(f"{case:11s} {nc.P:6d} {dim:6d} {'dense':12s} {'-':>8s} "
                  f"{time.perf_counter() - t0:7.1f} {rep.kappa:13.7g}", flush=True)
        for name in args.methods.split(","):
            method, kw = _method(name)
            if args.maxiter is not None:
                kw["maxiter"] = args.maxiter
            t0 = time.perf_counter()
            rep = nc.condition("gauss_newton", method=method, space=space, tol=args.tol, **kw)
            dt = time.perf_counter() - t0
            dim = nc.P - rep.null_space_dim if space == "primal" else rep.n
            vs = f"{abs(rep.kappa / ref - 1):9.2g}" if ref else f"{'-':>9s}"
            print(f"{case:11s} {nc.P:6d} {dim:6d} {name:12s} {rep.matvecs:8d} {dt:7.1f} "
                  f"{rep.kappa:13.7g} {str(rep.converged):>5s} {rep.kappa_error:8.2g} "
                  f"{rep.kappa_error_gap:8.2g} {vs}", flush=True)


if __name__ == "__main__":
    main()
