r"""Stochasticity of batch normalization and whitening, and the conditioning whitening buys.

**Stochastic normalization disturbance** (theory item 10; Huang, Zhou, Zhu,
Liu & Shao 2019, *Iterative Normalization*, arXiv:1904.03441, sec. 4; Huang
et al. 2020, *An Investigation into the Stochasticity of Batch Whitening*,
arXiv:2003.12327).  A normalizer computed from batch statistics gives a
sample :math:`x` an output that depends on the other members of its batch:

.. math::

    \mathrm{SND}(x) = \mathbb E_B\,\lVert F(x; B) - \mathbb E_B F(x; B)\rVert

over random mini-batches :math:`B \ni x`.  :func:`snd` estimates it by Monte
Carlo: a fixed dataset of ``n_data`` correlated Gaussian vectors in
:math:`d` dimensions; for each of ``n_points`` samples, ``n_draws`` batches
of ``batch_size`` (the sample plus others drawn without replacement); the
mean distance to the mean output, averaged over the samples.  The same seed
draws the same batches for every normalizer, so differences between rows
are not sampling noise of the batches.  Reported orderings: SND grows as
the batch shrinks and, for whitening, as the whitening group grows (the
papers' explanation of why group-wise whitening and large batches train
better) -- for PCA, ZCA and Cholesky; IterNorm's SND grows with its number
of iterations T toward ZCA's (its approximation stretches small-eigenvalue
directions less), and at T = 5 it is not monotone in the group size (it
peaks near 8 channels on this data), so no group-size row is claimed for it.

**Conditioning** (LeCun et al. 1998; Desjardins et al. 2015).  A linear
unit with squared loss has Hessian :math:`H = \frac1N\hat X^\top\hat X` of
its inputs :math:`\hat X`; whitened inputs give :math:`H = I` (condition
number 1, with eps: :math:`l_{\max}(l_{\min}+\epsilon)/(l_{\min}(l_{\max}+\epsilon))`),
standardized inputs the condition number of the correlation matrix, raw
inputs that of the second-moment matrix.  The predictions are computed
from the data with NumPy; the measurements are autograd Hessians of the
loss on normref's whitened / standardized outputs.
"""
from __future__ import annotations

import autograd.numpy as anp
import numpy as np

from ..registry import REGISTRY
from .claims import Claim, register_claims
from .curvature import condition_number, hessian

__all__ = ["correlated_data", "batch_whitening_names", "snd", "snd_table", "snd_claims",
           "whitening_conditioning_claims", "stochasticity_claims"]

SOURCE_SND = ("Huang et al. 2019 (IterNorm, arXiv:1904.03441) sec. 4; "
              "Huang et al. 2020 (Stochasticity of Batch Whitening, arXiv:2003.12327)")
SOURCE_COND = "LeCun et al. 1998 (Efficient BackProp); Desjardins et al. 2015 (Natural Neural Networks)"



def batch_whitening_names():
    """The registered batch-whitening normalizers, in registration order: those whose
    Spec whitens (``spec.whitening``) with statistics over the batch (``spec.batch_axis``)."""
    return tuple(n for n, s in REGISTRY.items() if s.whitening and s.batch_axis)


def _iterative(name):
    """An iterative whitening (IterNorm's Newton-Schulz steps): the signature takes ``T``."""
    return REGISTRY[name].slot("T") is not None


#: the batch-whitening normalizers registered when this module was imported
#: (:func:`batch_whitening_names` reads the registry at call time)
WHITENING = batch_whitening_names()


def correlated_data(n, d, *, seed=0, decay=0.8):
    """``n`` Gaussian vectors in ``d`` dimensions with a spread spectrum
    (eigenvalues ``decay**i``) in a random orientation."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    scale = np.sqrt(decay ** np.arange(d))
    return (rng.standard_normal((n, d)) * scale) @ Q.T


def _apply(name, batch, group_size, T, eps):
    """``name`` on the batch as its ``layer=`` fact calls it on (N, features) activations
    (training mode, no affine), with those of ``group_size``, ``T``, ``eps`` its
    signature takes (batch norm takes only eps)."""
    if name not in REGISTRY:
        raise ValueError(f"snd: unknown normalizer {name!r}; registered: "
                         f"{', '.join(sorted(REGISTRY))}")
    spec = REGISTRY[name]
    if spec.layer is None or spec.layer.form != "activations":
        raise ValueError(f"snd: {name!r} declares no activations-form layer= fact")
    options, _ = spec.layer.resolve({}, f"snd({name!r})")
    kw = {k: v for k, v in (("group_size", group_size), ("T", T), ("eps", eps))
          if spec.slot(k) is not None}
    return spec.function(*spec.layer.arguments(batch, None, None, options), **kw)


def snd(name, *, batch_size, group_size=None, T=5, data=None, n_points=8, n_draws=64,
        eps=1e-5, seed=0):
    """Monte-Carlo estimate of the stochastic normalization disturbance (see module doc).

    ``name``: ``"batch_norm"`` or a batch-whitening normalizer (whitening
    ``group_size`` features together; None: all).  ``data``: (n, d) array
    (default :func:`correlated_data` (1024, 16)).
    """
    X = correlated_data(1024, 16) if data is None else np.asarray(data, dtype=np.float64)
    n = X.shape[0]
    if not 2 <= batch_size <= n:
        raise ValueError(f"batch_size must be in [2, {n}], got {batch_size}")
    rng = np.random.default_rng(seed)
    points = rng.choice(n, size=n_points, replace=False)
    total = 0.0
    for i in points:
        others = np.delete(np.arange(n), i)
        outs = np.empty((n_draws, X.shape[1]))
        for k in range(n_draws):
            idx = np.concatenate([[i], rng.choice(others, size=batch_size - 1, replace=False)])
            outs[k] = _apply(name, X[idx], group_size, T, eps)[0]
        total += float(np.mean(np.linalg.norm(outs - outs.mean(axis=0), axis=1)))
    return total / n_points


def snd_table(names=None, batch_sizes=(32, 64, 128, 256), group_size=None, **kwargs):
    """``{name: {batch_size: SND}}``; ``names`` default: batch norm and every registered
    batch-whitening normalizer."""
    if names is None:
        names = ("batch_norm",) + batch_whitening_names()
    return {nm: {b: snd(nm, batch_size=b, group_size=group_size, **kwargs) for b in batch_sizes}
            for nm in names}


def _order(values, label):
    """The keys of ``values`` from the largest value to the smallest, as text."""
    return " > ".join(f"{label}{k}" for k in sorted(values, key=lambda k: -values[k]))


def _fmt(values):
    return ", ".join(f"{k}: {v:.3g}" for k, v in values.items())


def snd_claims(*, batch_sizes=(32, 64, 128, 256), group_sizes=(1, 4, 16), group_batch=64,
               Ts=(1, 3, 5, 7), seed=0, n_points=8, n_draws=48):
    """Rows for docs/theory.md item 10: the SND orderings, values in the claim text."""
    X = correlated_data(1024, 16, seed=seed)
    kw = dict(data=X, n_points=n_points, n_draws=n_draws, seed=seed)
    rows = []
    whitening = batch_whitening_names()
    for name in ("batch_norm",) + whitening:
        vals = {b: snd(name, batch_size=b, **kw) for b in batch_sizes}
        pred = _order({b: -b for b in batch_sizes}, "b=")
        rows.append(Claim(
            id=f"snd.{name}.batch_size",
            claim=f"{name} (16 features, whitened together): SND grows as the batch shrinks "
                  f"[{_fmt(vals)}]",
            source=SOURCE_SND, predicted=pred, measured=_order(vals, "b="), tolerance=0.0))
    # (not iter_norm: at T = 5 its SND is not monotone in the group size -- it
    # peaks near 8 channels here -- because the iteration leaves the
    # small-eigenvalue directions of larger groups less stretched)
    for name in (n for n in whitening if not _iterative(n)):
        vals = {g: snd(name, batch_size=group_batch, group_size=g, **kw) for g in group_sizes}
        rows.append(Claim(
            id=f"snd.{name}.group_size",
            claim=f"{name}, batch {group_batch}: SND grows with the whitening group size "
                  f"[{_fmt(vals)}]",
            source=SOURCE_SND, predicted=_order({g: g for g in group_sizes}, "g="),
            measured=_order(vals, "g="), tolerance=0.0))
    vals = {T: snd("iter_norm", batch_size=group_batch, T=T, **kw) for T in Ts}
    zca = snd("zca_whitening", batch_size=group_batch, **kw)
    rows.append(Claim(
        id="snd.iter_norm.T",
        claim=f"iter_norm, batch {group_batch}, 16 features: SND grows with T, below ZCA's "
              f"{zca:.3g} [{_fmt(vals)}]",
        source=SOURCE_SND, predicted=_order({"ZCA": 1e9, **{f"T={t}": t for t in Ts}}, ""),
        measured=_order({"ZCA": zca, **{f"T={t}": v for t, v in vals.items()}}, ""),
        tolerance=0.0))
    bn = snd("batch_norm", batch_size=group_batch, **kw)
    rows.append(Claim(
        id="snd.zca_vs_batch_norm",
        claim=f"batch {group_batch}: full ZCA whitening disturbs more than batch norm "
              f"(ZCA {zca:.3g}, BN {bn:.3g}); ratio ZCA/BN > 1",
        source=SOURCE_SND, predicted="ZCA > BN", measured="ZCA > BN" if zca > bn else "BN >= ZCA",
        tolerance=0.0))
    return rows


def _linear_loss(Xh, y):
    n = Xh.shape[0]

    def loss(w):
        r = anp.dot(Xh, w) - y
        return 0.5 * anp.sum(r * r) / n

    return loss


def whitening_conditioning_claims(*, n=256, d=8, mean=1.5, eps=1e-5, seed=0):
    """Hessian condition numbers of a linear unit fed raw, standardized and whitened inputs."""
    X = correlated_data(n, d, seed=seed, decay=0.5) + mean
    y = np.random.default_rng(seed + 1).standard_normal(n)
    w0 = np.zeros(d)
    rows = []

    def measured(Xh):
        return condition_number(hessian(_linear_loss(Xh, y), w0)).kappa

    Xc = X - X.mean(axis=0)
    l = np.linalg.eigvalsh(Xc.T @ Xc / n)
    corr = np.corrcoef(X, rowvar=False)
    cases = [
        ("raw", X, np.linalg.cond(X.T @ X / n)),
        ("batch_norm", REGISTRY["batch_norm"].function(X, None, None, training=True, eps=eps),
         # standardized with eps: the correlation matrix scaled by var / (var + eps)
         np.linalg.cond(corr * np.outer(*(2 * [np.sqrt(np.diag(Xc.T @ Xc / n) /
                                                       (np.diag(Xc.T @ Xc / n) + eps))])))),
    ]
    shrink = (l[-1] / (l[-1] + eps)) / (l[0] / (l[0] + eps))
    whitening = batch_whitening_names()
    for name in whitening:
        pred = shrink if not _iterative(name) else None
        Xh = REGISTRY[name].function(X, eps=eps)
        if _iterative(name):  # eigenvalues lam p_T(lam)^2 of the normalized covariance (T = 5)
            from ..whiten import newton_schulz_map

            S = Xc.T @ Xc / n + eps * np.eye(d)
            lam = np.linalg.eigvalsh(S / np.trace(S))
            p, _ = newton_schulz_map(lam, 5)
            # the data part: (l / (l + eps)) * lam p^2 for each eigen-direction
            ev = lam * p ** 2 * (l / (l + eps))
            pred = ev.max() / ev.min()
        cases.append((name, Xh, pred))
    kappas = {}
    for label, Xh, pred in cases:
        k = measured(Xh)
        kappas[label] = k
        rows.append(Claim(
            id=f"conditioning.linear_unit.{label}",
            claim=f"condition number of a linear unit's Hessian, inputs {label} "
                  f"(d={d}, mean {mean}, eps={eps:g}); predicted from the data's spectrum",
            source=SOURCE_COND, predicted=float(pred), measured=float(k), tolerance=1e-8,
            relative=True))
    order_pred = "whitened < standardized < raw"
    ok = max(kappas[n_] for n_ in whitening if not _iterative(n_)) \
        < kappas["batch_norm"] < kappas["raw"]
    rows.append(Claim(
        id="conditioning.linear_unit.order",
        claim=f"whitening conditions better than standardizing, which beats raw inputs "
              f"[raw {kappas['raw']:.4g}, standardized {kappas['batch_norm']:.4g}, "
              f"ZCA {kappas['zca_whitening']:.6g}, IterNorm T=5 {kappas['iter_norm']:.4g}]",
        source=SOURCE_COND, predicted=order_pred,
        measured=order_pred if ok else "not in that order", tolerance=0.0))
    return rows


@register_claims("stochasticity")
def stochasticity_claims():
    return snd_claims() + whitening_conditioning_claims()
