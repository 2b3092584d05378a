"""The shared case helpers: the namespace ``h`` every catalogue ``base(rng, options, h)`` receives.

A normalizer module draws its cases with these (so the distributions are the
same for every normalizer, and the module never imports :mod:`normref.testing`).
Each takes the :class:`numpy.random.Generator` of the case first; the draws
are part of the case ids' contract (:func:`~normref.testing.conformance.case_from_id`
rebuilds a case bit for bit), so changing one changes the catalogue.
"""
from __future__ import annotations

import numpy as np

__all__ = ["spatial", "data", "eps", "momentum", "running_and_affine", "whitening_data",
           "identity_cov_block"]


def spatial(rng, lo=0, hi=2, smin=2, smax=4):
    """A spatial shape: ``lo .. hi`` axes, each of ``smin .. smax`` elements."""
    nd = int(rng.integers(lo, hi + 1))
    return tuple(int(s) for s in rng.integers(smin, smax + 1, size=nd))


def data(rng, shape):
    """Gaussian data with a random spread and a small random centre."""
    return rng.standard_normal(shape) * float(rng.uniform(0.5, 2.0)) + float(rng.uniform(-1, 1))


def eps(rng):
    """One of the eps values frameworks use (1e-5, 1e-3) and a large one (0.1)."""
    return float(rng.choice([1e-5, 1e-3, 0.1]))


def momentum(rng):
    """A momentum in [0.05, 0.5], rounded to three digits."""
    return float(np.round(rng.uniform(0.05, 0.5), 3))


def running_and_affine(rng, C, o):
    """(training, stats, running_mean, running_var, weight, bias) of a batch-norm-like variant.

    Options: ``training`` (default True), ``stats`` (running statistics given;
    default True, always in eval), ``affine`` (default True).
    """
    training = o.get("training", True)
    stats = o.get("stats", True) or not training
    rm = rng.standard_normal(C) * 0.5 if stats else None
    rv = rng.uniform(0.5, 2.0, C) if stats else None
    affine = o.get("affine", True)
    w = rng.standard_normal(C) + 1.0 if affine else None
    b = rng.standard_normal(C) if affine else None
    return training, stats, rm, rv, w, b


def whitening_data(rng, N, C, sp):
    """Correlated channels: Gaussian data mixed by a random matrix near I."""
    mix = np.eye(C) + 0.5 * rng.standard_normal((C, C))
    return np.einsum("dc,nc...->nd...", mix, data(rng, (N, C) + sp))


def identity_cov_block(rng, g, reps):
    """A (g, 4 * reps) block with covariance exactly I: orthogonal +-1 rows (row 17)."""
    H = np.array([[1.0, 1.0], [1.0, -1.0]])
    while H.shape[0] < g + 1:
        H = np.kron(H, np.array([[1.0, 1.0], [1.0, -1.0]]))
    rows = H[1:g + 1]  # orthogonal to the all-ones row: centred, norms equal
    return np.tile(rows, (1, reps)) * float(rng.choice([1.0, 2.0, 0.5]))
