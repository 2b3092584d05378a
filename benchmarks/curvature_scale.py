"""Extremal eigenvalues of network curvature at scale: condition numbers of the
Gauss-Newton matrix of batch-norm / layer-norm MLPs with 1e3-1e5 parameters,
matrix-free (normref JVP/VJP products), invariance null space deflated, in the
scale metric (normref.analysis.curvature.network / invariances / condition).

Run: python benchmarks/curvature_scale.py [--sizes small,medium,large] [--tol 1e-8]
Prints: parameters, method, iterations, products, time, kappa, converged, error bound.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from normref import nets
from normref.analysis import curvature as cv

#: (d_in, width, K, N): widths chosen so that N (K - 1) exceeds the parameter count
SIZES = {"small": (10, 24, 5, 300), "medium": (32, 96, 10, 1500),
         "large": (64, 256, 10, 10000)}


def network(d_in, width, K, seed=0):
    g = np.random.default_rng(seed)
    return nets.MLP([nets.Linear(d_in, width, rng=g), nets.Norm("batch_norm"),
                     nets.Activation("tanh"), nets.Linear(width, width, rng=g),
                     nets.Norm("layer_norm"), nets.Activation("tanh"),
                     nets.Linear(width, K, rng=g)])


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="small,medium,large")
    ap.add_argument("--methods", default="lanczos,lobpcg")
    ap.add_argument("--tol", type=float, default=1e-8)
    ap.add_argument("--maxiter", type=int, default=20000)
    args = ap.parse_args(argv)
    print(f"{'size':8s} {'P':>7s} {'method':9s} {'iters':>7s} {'products':>8s} {'time/s':>8s} "
          f"{'kappa':>12s} {'conv':>5s} {'err':>8s}")
    for size in args.sizes.split(","):
        d_in, width, K, N = SIZES[size]
        rng = np.random.default_rng(1)
        x = rng.standard_normal((N, d_in))
        y = rng.integers(0, K, N)
        nc = cv.NetworkCurvature(network(d_in, width, K), x, y, "softmax_ce")
        for method in args.methods.split(","):
            kw = dict(tol=args.tol, maxiter=args.maxiter)
            t0 = time.perf_counter()
            rep = nc.condition("gauss_newton", method=method, **kw)
            dt = time.perf_counter() - t0
            print(f"{size:8s} {nc.P:7d} {method:9s} {rep.iterations:7d} {rep.matvecs:8d} "
                  f"{dt:8.1f} {rep.kappa:12.6g} {str(rep.converged):>5s} {rep.kappa_error:8.2g}",
                  flush=True)
        if nc.P <= 1500:
            t0 = time.perf_counter()
            rep = nc.condition("gauss_newton")
            print(f"{size:8s} {nc.P:7d} {'dense':9s} {0:7d} {0:8d} "
                  f"{time.perf_counter() - t0:8.1f} {rep.kappa:12.6g}", flush=True)


if __name__ == "__main__":
    main()
