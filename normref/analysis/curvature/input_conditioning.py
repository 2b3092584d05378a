r"""Input conditioning (docs/theory.md item 6, LeCun et al. 1998): the Hessian of a
linear unit is the inputs' second moment, so a mean or an anisotropic
covariance raises its condition number; centering, batch-normalizing and
whitening the inputs lower it; K-FAC factors multiply condition numbers.
"""
from __future__ import annotations

import numpy as np
import autograd
import autograd.numpy as anp

from ...activations.batch_norm import batch_norm
from ..claims import Alternative, Claim
from .condition import DEFAULT_RTOL, condition_number
from .matrices import hessian, kfac_block, kfac_factors

__all__ = ["exact_moment_sample", "input_conditioning_claims", "sampled_conditioning_claims",
           "KAPPA_ALTERNATIVES"]


# ---------------------------------------------------------------- item 6 helpers
def exact_moment_sample(n, mean, cov, *, seed=0):
    r"""A sample ``X`` (n x d) whose empirical moments are exactly ``mean`` and ``cov``.

    Draw Gaussian noise, center it, whiten it with the inverse Cholesky
    factor of its biased covariance (so :math:`\frac1n Z^\top Z = I` to
    round-off), then map :math:`x = L z + \mu` with :math:`LL^\top = \Sigma`:
    :math:`\frac1n\sum x = \mu`, :math:`\frac1n\sum (x-\mu)(x-\mu)^\top = \Sigma`.
    """
    mean = np.asarray(mean, dtype=np.float64)
    cov = np.asarray(cov, dtype=np.float64)
    d = mean.size
    Z = np.random.default_rng(seed).standard_normal((n, d))
    Z -= Z.mean(axis=0)
    C = np.linalg.cholesky(Z.T @ Z / n)
    Z = np.linalg.solve(C, Z.T).T
    Z -= Z.mean(axis=0)
    L = np.linalg.cholesky(cov)
    return Z @ L.T + mean


def _linear_unit_loss(X, y):
    """Squared loss of a linear unit, mean over samples: (1/2N) sum (w.x - y)^2."""
    n = X.shape[0]

    def loss(w):
        r = anp.dot(X, w) - y
        return 0.5 * anp.sum(r * r) / n

    return loss


_LECUN = "LeCun, Bottou, Orr & Mueller 1998, Efficient BackProp, sec. 4.3 & 5"

#: the wrong formulas for kappa(Sigma = I, mean m 1, dimension d) the rows must reject
KAPPA_ALTERNATIVES = (
    ("1 + m^2 (the dimension forgotten)", lambda d, m: 1.0 + m * m),
    ("1 + d m (m for m^2)", lambda d, m: 1.0 + d * m),
    ("d m^2 (the 1 forgotten)", lambda d, m: d * m * m),
    ("1 + d^2 m^2 (||m 1||^2 taken as d^2 m^2)", lambda d, m: 1.0 + d * d * m * m),
)


def _kappa_alternatives(d, m):
    return tuple(Alternative(label, float(f(d, m))) for label, f in KAPPA_ALTERNATIVES)
_KFAC = "Martens & Grosse 2015, K-FAC (arXiv:1503.05671); LeCun et al. 1998"


def input_conditioning_claims(configs=((2, 1.5), (8, 0.5), (16, 2.0), (32, 0.25)), *,
                              predict=lambda d, m: 1.0 + d * m * m, n=256, seed=0, sampled=True):
    r"""Rows for docs/theory.md item 6 (LeCun et al. 1998, "Efficient BackProp").

    A linear unit :math:`\hat y = w^\top x` with the mean squared loss
    :math:`L = \frac1{2N}\sum (w^\top x_n - y_n)^2` has the exact Hessian
    :math:`H = \frac1N\sum x_n x_n^\top = \Sigma + m m^\top` (biased
    empirical moments).  With :math:`\Sigma = I` and mean :math:`m\mathbf 1`
    in :math:`d` dimensions the eigenvalues are 1 (multiplicity
    :math:`d-1`) and :math:`1 + d m^2`, so :math:`\kappa = 1 + d m^2`.
    Centering leaves :math:`\kappa(\Sigma)`, whitening gives :math:`H = I`,
    and for Kronecker factors :math:`\kappa(A\otimes B) = \kappa(A)\kappa(B)`.

    Samples are built by :func:`exact_moment_sample` (moments exact to
    round-off), the Hessian by :func:`hessian` (autograd), the condition
    number by :func:`condition_number` (dense, rtol 1e-10 — nothing is
    excluded since every H here is positive definite).  ``predict(d, m)`` is
    the formula under test (replace it to see the rows fail).
    """
    rng = np.random.default_rng(seed)
    rows = []

    # H = Sigma + m m^T, checked once on a generic Sigma
    d = 8
    A = rng.standard_normal((d, d))
    Sigma = A @ A.T / d + 0.5 * np.eye(d)
    mu = rng.standard_normal(d)
    X = exact_moment_sample(n, mu, Sigma, seed=seed + 1)
    H = hessian(_linear_unit_loss(X, rng.standard_normal(n)), np.zeros(d))
    rows.append(Claim(
        "item6.hessian_is_second_moment",
        "linear unit, mean squared loss: exact Hessian (autograd) = E[x x^T] = Sigma + m m^T "
        "(max abs entry difference, d=8, generic Sigma)",
        _LECUN, 0.0, float(np.abs(H - (Sigma + np.outer(mu, mu))).max()), 1e-12,
        alternatives=(
            Alternative("H = Sigma (the mean forgotten)", 0.0, float(np.abs(H - Sigma).max())),
            Alternative("H = Sigma + 2 m m^T", 0.0,
                        float(np.abs(H - (Sigma + 2 * np.outer(mu, mu))).max())),
            Alternative("H = 2 (Sigma + m m^T) (the 1/2 of the loss forgotten)", 0.0,
                        float(np.abs(H - 2 * (Sigma + np.outer(mu, mu))).max())),
            Alternative("H = Sigma n/(n-1) + m m^T (the unbiased covariance)", 0.0,
                        float(np.abs(H - (Sigma * n / (n - 1) + np.outer(mu, mu))).max())))))

    for d, m in configs:
        X = exact_moment_sample(n, np.full(d, m), np.eye(d), seed=seed + d)
        y = rng.standard_normal(n)
        w0 = rng.standard_normal(d)
        rep = condition_number(hessian(_linear_unit_loss(X, y), w0))
        rows.append(Claim(
            f"item6.kappa_uncentered.d{d}_m{m:g}",
            f"Sigma=I, mean m*1, d={d}, m={m:g}: kappa(H) = 1 + d m^2",
            _LECUN, float(predict(d, m)), rep.kappa, 1e-9, relative=True,
            alternatives=_kappa_alternatives(d, m)))

    # centering and batch-normalizing the inputs (Sigma = I)
    d, m = 16, 2.0
    X = exact_moment_sample(n, np.full(d, m), np.eye(d), seed=seed + 100)
    y = rng.standard_normal(n)
    Xc = X - X.mean(axis=0)
    k_c = condition_number(hessian(_linear_unit_loss(Xc, y), np.zeros(d))).kappa
    rows.append(Claim(
        "item6.kappa_centered.identity",
        f"Sigma=I, mean {m:g}*1, d={d}: centering the inputs gives kappa(H) = kappa(Sigma) = 1",
        _LECUN, 1.0, k_c, 1e-9, relative=True,
        alternatives=(Alternative("centering changes nothing: 1 + d m^2", 1.0 + d * m * m),)))
    Xb = batch_norm(X, None, None, training=True)
    k_b = condition_number(hessian(_linear_unit_loss(Xb, y), np.zeros(d))).kappa
    rows.append(Claim(
        "item6.kappa_batch_norm_inputs.identity",
        f"Sigma=I, mean {m:g}*1, d={d}: inputs through normref.batch_norm (training, no "
        f"affine) give H = I/(1+eps), kappa = 1",
        _LECUN + "; Ioffe & Szegedy 2015", 1.0, k_b, 1e-9, relative=True,
        alternatives=(Alternative("batch norm changes nothing (or only rescales): 1 + d m^2",
                                  1.0 + d * m * m),)))

    # centering with a non-trivial Sigma: kappa(Sigma) from its constructed spectrum
    d = 10
    lam = np.logspace(0.0, 2.0, d)
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    Sigma = (Q * lam) @ Q.T
    X = exact_moment_sample(n, np.full(d, 1.5), Sigma, seed=seed + 200)
    y = rng.standard_normal(n)
    k_unc = condition_number(hessian(_linear_unit_loss(X, y), np.zeros(d))).kappa
    k_c = condition_number(hessian(_linear_unit_loss(X - X.mean(axis=0), y), np.zeros(d))).kappa
    rows.append(Claim(
        "item6.kappa_centered.sigma",
        f"Sigma with eigenvalues logspace(0,2,{d}), mean 1.5*1: centering gives "
        f"kappa(H) = kappa(Sigma) = lam_max/lam_min (uncentered measured {k_unc:.4g})",
        _LECUN, float(lam.max() / lam.min()), k_c, 1e-9, relative=True,
        alternatives=(Alternative("centering changes nothing: the uncentered kappa", float(k_unc)),
                      Alternative("sqrt(lam_max/lam_min) (the ratio of standard deviations)",
                                  float(np.sqrt(lam.max() / lam.min()))),
                      Alternative("(lam_max/lam_min)^2", float((lam.max() / lam.min()) ** 2)))))

    # whitening (ZCA from the empirical moments) gives H = I
    mu_hat = X.mean(axis=0)
    S_hat = (X - mu_hat).T @ (X - mu_hat) / n
    ev, V = np.linalg.eigh(S_hat)
    Xw = (X - mu_hat) @ (V / np.sqrt(ev)) @ V.T
    Hw = hessian(_linear_unit_loss(Xw, y), np.zeros(d))
    rows.append(Claim(
        "item6.whitening_identity",
        "whitened inputs (ZCA from the empirical moments): H = I (max abs entry of H - I)",
        _LECUN, 0.0, float(np.abs(Hw - np.eye(d)).max()), 1e-10,
        alternatives=(
            Alternative("H = the raw second moment Sigma + m m^T (whitening changes nothing)", 0.0,
                        float(np.abs(Hw - (S_hat + np.outer(mu_hat, mu_hat))).max())),
            Alternative("H = I n/(n-1) (whitened with the unbiased covariance)", 0.0,
                        float(np.abs(Hw - np.eye(d) * n / (n - 1)).max())))))
    sd = np.sqrt(np.diag(S_hat))
    rows.append(Claim(
        "item6.kappa_whitened", "whitened inputs: kappa(H) = 1",
        _LECUN, 1.0, condition_number(Hw).kappa, 1e-9, relative=True,
        alternatives=(Alternative("kappa(Sigma): whitening acts as centering",
                                  float(lam.max() / lam.min())),
                      Alternative("kappa of the correlation matrix: whitening acts as "
                                  "standardizing", float(np.linalg.cond(S_hat / np.outer(sd, sd)))))))

    # K-FAC: kappa(A kron B) = kappa(A) kappa(B) for random SPD factors
    a = rng.standard_normal((6, 6))
    b = rng.standard_normal((4, 4))
    A = a @ a.T + 0.1 * np.eye(6)
    B = b @ b.T + 0.1 * np.eye(4)
    kA, kB = condition_number(A).kappa, condition_number(B).kappa
    rows.append(Claim(
        "item6.kfac_kron_kappa.random_spd",
        "random SPD A (6x6), B (4x4): kappa(A kron B) = kappa(A) kappa(B)",
        _KFAC, kA * kB, condition_number(np.kron(A, B)).kappa, 1e-8, relative=True,
        alternatives=(Alternative("kappa(A) + kappa(B)", kA + kB),
                      Alternative("max(kappa(A), kappa(B))", max(kA, kB)),
                      Alternative("sqrt(kappa(A) kappa(B))", float(np.sqrt(kA * kB))))))

    # K-FAC factors of a real linear layer (second layer of a small tanh MLP)
    N, din, dh, K = 64, 5, 6, 3
    Xin = rng.standard_normal((N, din)) + 1.0
    W1 = rng.standard_normal((dh, din)) / np.sqrt(din)
    W2 = rng.standard_normal((K, dh)) / np.sqrt(dh)
    labels = rng.integers(0, K, N)
    h = np.tanh(Xin @ W1.T)

    def nll_of_s(s):  # mean cross-entropy as a function of the layer-2 pre-activations
        lse = anp.log(anp.sum(anp.exp(s), axis=1))
        return anp.mean(lse - s[np.arange(N), labels])

    delta = autograd.grad(nll_of_s)(h @ W2.T) * N      # per-sample dl_n/ds_n
    A, B = kfac_factors(h, delta)
    kA, kB = condition_number(A).kappa, condition_number(B).kappa
    rep = condition_number(kfac_block(A, B), method="dense")
    rows.append(Claim(
        "item6.kfac_kron_kappa.mlp_layer",
        f"K-FAC factors of a tanh MLP's output layer (N={N}, in={dh}, out={K}): "
        f"kappa(B kron A) = kappa(A) kappa(B) ({rep.n_excluded} null eigenvalue(s) of B "
        f"excluded: softmax deltas sum to 0, rtol {DEFAULT_RTOL:g})",
        _KFAC, kA * kB, rep.kappa, 1e-8, relative=True,
        alternatives=(Alternative("kappa(A) + kappa(B)", kA + kB),
                      Alternative("max(kappa(A), kappa(B))", max(kA, kB)),
                      Alternative("sqrt(kappa(A) kappa(B))", float(np.sqrt(kA * kB))),
                      Alternative("the null eigenvalues kept: max|lam| / min|lam|",
                                  float(np.max(np.abs(rep.eigenvalues))
                                        / max(np.min(np.abs(rep.eigenvalues)), 1e-300))))))
    if sampled:
        rows += sampled_conditioning_claims(predict=predict, seed=seed)
    return rows


def sampled_conditioning_claims(configs=((8, 0.5), (4, 1.5)), *, n=16384, n_seeds=16,
                                predict=lambda d, m: 1.0 + d * m * m, seed=0):
    r"""The statistical form of :math:`\kappa = 1 + d m^2`: ordinary Gaussian samples.

    For each seed, ``n`` points :math:`x \sim \mathcal N(m\mathbf 1, I_d)` (no moment
    fixing); :math:`\kappa` of the autograd Hessian :math:`\frac1n X^\top X` of the
    linear unit's loss.  Measured: the mean :math:`\bar\kappa` over ``n_seeds`` seeds.
    The sample Hessian's bulk eigenvalues (the :math:`d - 1` directions orthogonal
    to the mean) spread over the Marchenko--Pastur interval
    :math:`[(1-\sqrt\gamma)^2, (1+\sqrt\gamma)^2]`, :math:`\gamma = (d-1)/n`, so the
    smallest one sits below 1 and :math:`\kappa` is biased upwards by at most
    :math:`(1-\sqrt\gamma)^{-2} - 1` relative (to first order); the top eigenvalue
    :math:`1 + d m^2` fluctuates by :math:`O(\sqrt{2/n})` relative, which the
    standard error over seeds measures.  Relative tolerance:

    .. math::

        \tau = (1 - \sqrt\gamma)^{-2} - 1 + 3\,\mathrm{SE}(\bar\kappa) / (1 + d m^2).

    The configurations keep the alternatives of :data:`KAPPA_ALTERNATIVES` more than
    :math:`\tau` away (``d m^2`` at ``d = 16, m = 2`` is only 1.5% from ``1 + d m^2``
    and is left to the exact-moment rows).
    """
    rows = []
    for d, m in configs:
        ks = []
        for s in range(n_seeds):
            X = np.random.default_rng(seed + 1000 + 37 * d + s).standard_normal((n, d)) + m
            y = np.zeros(n)
            ks.append(condition_number(hessian(_linear_unit_loss(X, y), np.zeros(d))).kappa)
        ks = np.asarray(ks)
        mean = float(ks.mean())
        se = float(ks.std(ddof=1) / np.sqrt(n_seeds))
        pred = float(predict(d, m))
        gamma = (d - 1) / n
        bias = 1.0 / (1.0 - np.sqrt(gamma)) ** 2 - 1.0
        tol = float(bias + 3.0 * se / abs(pred))
        rows.append(Claim(
            f"item6.kappa_uncentered_sampled.d{d}_m{m:g}",
            f"ordinary samples N(m 1, I), d={d}, m={m:g}, n={n}, {n_seeds} seeds: mean kappa(H) = "
            f"1 + d m^2 (mean {mean:.5g} +- {se:.2g} SE; tolerance = Marchenko-Pastur bias bound "
            f"{bias:.3g} + 3 SE/prediction {3 * se / abs(pred):.2g})",
            _LECUN, pred, mean, tol, relative=True, alternatives=_kappa_alternatives(d, m)))
    return rows
