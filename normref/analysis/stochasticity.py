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
inputs that of the second-moment matrix.  The data have exact moments of a
constructed spectrum and mean, so the predictions are closed forms in the
construction's parameters; the measurements are autograd Hessians of the
loss on normref's whitened / standardized outputs.
"""
from __future__ import annotations

import autograd.numpy as anp
import numpy as np

from ..registry import REGISTRY
from .claims import Alternative, Claim, register_claims
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
        eps=1e-5, seed=0, per_point=False):
    """Monte-Carlo estimate of the stochastic normalization disturbance (see module doc).

    ``name``: ``"batch_norm"`` or a batch-whitening normalizer (whitening
    ``group_size`` features together; None: all).  ``data``: (n, d) array
    (default :func:`correlated_data` (1024, 16)).  ``per_point=True``: the array of
    the ``n_points`` per-point estimates (their mean is the SND) instead of the mean;
    the same ``seed`` picks the same points, so two settings can be compared point
    by point (:func:`paired_order`).
    """
    X = correlated_data(1024, 16) if data is None else np.asarray(data, dtype=np.float64)
    n = X.shape[0]
    if not 2 <= batch_size <= n:
        raise ValueError(f"batch_size must be in [2, {n}], got {batch_size}")
    rng = np.random.default_rng(seed)
    points = rng.choice(n, size=n_points, replace=False)
    vals = []
    for i in points:
        others = np.delete(np.arange(n), i)
        outs = np.empty((n_draws, X.shape[1]))
        for k in range(n_draws):
            idx = np.concatenate([[i], rng.choice(others, size=batch_size - 1, replace=False)])
            outs[k] = _apply(name, X[idx], group_size, T, eps)[0]
        vals.append(float(np.mean(np.linalg.norm(outs - outs.mean(axis=0), axis=1))))
    vals = np.asarray(vals)
    return vals if per_point else float(np.sum(vals) / n_points)


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


#: an adjacent pair of an SND ordering counts as resolved when the paired mean
#: difference exceeds this many standard errors (over the sample points)
Z_RESOLVED = 3.0


def paired_order(per_point, label, z=Z_RESOLVED):
    r"""The measured ordering of per-point SND estimates, with its resolution.

    ``per_point`` maps a key to the array of per-point estimates (the same points for
    every key).  Keys are sorted by their mean, largest first; each adjacent pair is
    joined by ``" > "`` when the paired difference :math:`d_i = a_i - b_i` over the
    :math:`P` points has :math:`\bar d > z\,s_d/\sqrt P`, and by ``" ~ "`` (unresolved)
    otherwise, so an ordering the Monte-Carlo noise could swap never equals a claimed
    one.  Returns ``(text, smallest z-score of an adjacent pair)``.
    """
    keys = sorted(per_point, key=lambda k: -float(np.mean(per_point[k])))
    parts, zmin = [f"{label}{keys[0]}"], np.inf
    for a, b in zip(keys, keys[1:]):
        d = np.asarray(per_point[a]) - np.asarray(per_point[b])
        zs = float(d.mean() / (d.std(ddof=1) / np.sqrt(d.size))) if d.std() > 0 else np.inf
        zmin = min(zmin, zs)
        parts.append((" > " if zs > z else " ~ ") + f"{label}{b}")
    return "".join(parts), zmin


def _fmt(values):
    return ", ".join(f"{k}: {float(np.mean(v)):.3g}" for k, v in values.items())


def _reversed(order):
    return " > ".join(reversed(order.split(" > ")))


def snd_claims(*, batch_sizes=(32, 64, 128, 256), group_sizes=(1, 4, 16), group_batch=64,
               Ts=(1, 3, 5, 7), seed=0, n_points=8, n_draws=48):
    """Rows for docs/theory.md item 10: the SND orderings, values in the claim text.

    Each measured ordering comes from :func:`paired_order`: an adjacent pair closer
    than ``Z_RESOLVED`` paired standard errors is written ``~`` and the row fails;
    the row text gives the smallest z-score.  Alternatives: the reversed ordering.
    """
    X = correlated_data(1024, 16, seed=seed)
    kw = dict(data=X, n_points=n_points, n_draws=n_draws, seed=seed, per_point=True)
    rows = []
    whitening = batch_whitening_names()

    def row(id_, text, pred, vals, label, extra_alts=()):
        meas, zmin = paired_order(vals, label)
        rows.append(Claim(
            id=id_, claim=f"{text} [{_fmt(vals)}; smallest adjacent z = {zmin:.1f}, "
                          f"resolved above {Z_RESOLVED:g}]",
            source=SOURCE_SND, predicted=pred, measured=meas, tolerance=0.0,
            alternatives=(Alternative("the reversed ordering", _reversed(pred)),) + extra_alts))

    for name in ("batch_norm",) + whitening:
        vals = {b: snd(name, batch_size=b, **kw) for b in batch_sizes}
        row(f"snd.{name}.batch_size",
            f"{name} (16 features, whitened together): SND grows as the batch shrinks",
            _order({b: -b for b in batch_sizes}, "b="), vals, "b=")
    # (not iter_norm: at T = 5 its SND is not monotone in the group size -- it
    # peaks near 8 channels here -- because the iteration leaves the
    # small-eigenvalue directions of larger groups less stretched)
    for name in (n for n in whitening if not _iterative(n)):
        vals = {g: snd(name, batch_size=group_batch, group_size=g, **kw) for g in group_sizes}
        row(f"snd.{name}.group_size", f"{name}, batch {group_batch}: SND grows with the "
            "whitening group size", _order({g: g for g in group_sizes}, "g="), vals, "g=")
    vals = {f"T={T}": snd("iter_norm", batch_size=group_batch, T=T, **kw) for T in Ts}
    zca = snd("zca_whitening", batch_size=group_batch, **kw)
    pred_T = _order({"ZCA": 1e9, **{f"T={t}": t for t in Ts}}, "")
    row("snd.iter_norm.T", f"iter_norm, batch {group_batch}, 16 features: SND grows with T, "
        f"below ZCA's {float(np.mean(zca)):.3g}", pred_T, {"ZCA": zca, **vals}, "",
        extra_alts=(Alternative("SND falls with T, still below ZCA",
                                " > ".join(["ZCA"] + [f"T={t}" for t in Ts])),))
    bn = snd("batch_norm", batch_size=group_batch, **kw)
    meas, zmin = paired_order({"ZCA": zca, "BN": bn}, "")
    rows.append(Claim(
        id="snd.zca_vs_batch_norm",
        claim=f"batch {group_batch}: full ZCA whitening disturbs more than batch norm "
              f"(ZCA {float(np.mean(zca)):.3g}, BN {float(np.mean(bn)):.3g}; paired z = "
              f"{zmin:.1f}, resolved above {Z_RESOLVED:g})",
        source=SOURCE_SND, predicted="ZCA > BN", measured=meas, tolerance=0.0,
        alternatives=(Alternative("batch norm disturbs more", "BN > ZCA"),)))
    return rows


def _linear_loss(Xh, y):
    n = Xh.shape[0]

    def loss(w):
        r = anp.dot(Xh, w) - y
        return 0.5 * anp.sum(r * r) / n

    return loss


def whitening_conditioning_claims(*, n=256, d=8, mean=1.5, eps=1e-5, seed=0, decay=0.5):
    r"""Hessian condition numbers of a linear unit fed raw, standardized and whitened inputs.

    The data (:func:`~normref.analysis.curvature.exact_moment_sample`) have *exactly*
    the biased covariance :math:`\Sigma = Q\,\mathrm{diag}(l)\,Q^\top`,
    :math:`l_i = \mathrm{decay}^i`, :math:`Q` a seeded random rotation, and the mean
    :math:`\mu = \mathrm{mean}\sqrt d\,q_1` along the top eigenvector :math:`q_1`
    (:math:`\lVert\mu
Vert^2 = d\,\mathrm{mean}^2`, as for the mean
    ``mean`` :math:`\cdot\mathbf 1`), so every prediction is a closed form in the
    construction's parameters, never recomputed from the data:

    * raw inputs, :math:`H = \Sigma + \mu\mu^\top` with eigenvalues
      :math:`l_1 + \lVert\mu
Vert^2, l_2, \dots, l_d`:
      :math:`\kappa = (l_1 + d\,\mathrm{mean}^2)/l_d`;
    * standardized inputs (``batch_norm``, eps): :math:`\kappa` of
      :math:`D\,C\,D` with :math:`C` the correlation matrix of :math:`\Sigma` and
      :math:`D = \mathrm{diag}(\sqrt{s_i/(s_i+\epsilon)})`, :math:`s_i = \Sigma_{ii}`;
    * whitened inputs (PCA, ZCA, Cholesky): :math:`\frac{l_1/(l_1+\epsilon)}{l_d/(l_d+\epsilon)}`;
    * IterNorm (:math:`T = 5`): eigenvalues :math:`\lambda p_5(\lambda)^2\,l/(l+\epsilon)`
      with :math:`\lambda = (l+\epsilon)/\mathrm{tr}(\Sigma+\epsilon I)` (theory item 9).

    Measured: :math:`\kappa` of the autograd Hessian of the loss on normref's outputs.
    Tolerance ``1e-8`` relative: rounding of the exact-moment construction and of the
    eigensolvers, amplified by :math:`\kappa \le 2.5\cdot10^3`.
    """
    from ..newton_schulz import newton_schulz_map
    from .curvature import exact_moment_sample

    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    l = decay ** np.arange(d)                       # descending: l[0] = l_max
    Sigma = (Q * l) @ Q.T
    mu = mean * np.sqrt(d) * Q[:, 0]
    X = exact_moment_sample(n, mu, Sigma, seed=seed + 2)
    y = np.random.default_rng(seed + 1).standard_normal(n)
    w0 = np.zeros(d)
    rows = []

    def measured(Xh):
        return condition_number(hessian(_linear_loss(Xh, y), w0)).kappa

    lmax, lmin = l.max(), l.min()
    m2 = d * mean * mean
    sdiag = np.diag(Sigma)
    corr = Sigma / np.sqrt(np.outer(sdiag, sdiag))
    shrink_d = np.sqrt(sdiag / (sdiag + eps))
    k_raw = (lmax + m2) / lmin
    k_corr = np.linalg.cond(corr)
    k_bn = np.linalg.cond(corr * np.outer(shrink_d, shrink_d))
    shrink = (lmax / (lmax + eps)) / (lmin / (lmin + eps))
    S_eps = Sigma + eps * np.eye(d)

    def iter_pred(T, with_eps=True):
        lam = (l + eps) / np.trace(S_eps)
        p, _ = newton_schulz_map(lam, T)
        ev = lam * p ** 2 * ((l / (l + eps)) if with_eps else 1.0)
        return float(ev.max() / ev.min())

    alt_raw = (Alternative("kappa(Sigma): the mean ignored", float(lmax / lmin)),
               Alternative("1 + ||mu||^2: item 6's Sigma = I formula", 1.0 + m2),
               Alternative("(l_max + ||mu||)/l_min: ||mu|| for ||mu||^2",
                           float((lmax + np.sqrt(m2)) / lmin)))
    alt_bn = (Alternative("batch norm changes nothing: the raw kappa", float(k_raw)),
              Alternative("kappa of the correlation matrix, eps ignored", float(k_corr)),
              Alternative("kappa(Sigma): centering without scaling", float(lmax / lmin)))
    alt_white = (Alternative("exactly 1: the eps shrinkage ignored", 1.0),
                 Alternative("the shrinkage inverted, ((l_max+eps)/l_max)/((l_min+eps)/l_min)",
                             float(1.0 / shrink)),
                 Alternative("eps counted twice, l/(l + 2 eps)",
                             float((lmax / (lmax + 2 * eps)) / (lmin / (lmin + 2 * eps)))))
    alt_iter = (Alternative("ZCA's value (T -> infinity)", float(shrink)),
                Alternative("the map with T = 4 (one iteration fewer)", iter_pred(4)),
                Alternative("the map with T = 6 (one iteration more)", iter_pred(6)),
                Alternative("the map without the eps shrinkage l/(l+eps)", iter_pred(5, False)))
    cases = [
        ("raw", X, k_raw, alt_raw),
        ("batch_norm", REGISTRY["batch_norm"].function(X, None, None, training=True, eps=eps),
         k_bn, alt_bn),
    ]
    whitening = batch_whitening_names()
    for name in whitening:
        Xh = REGISTRY[name].function(X, eps=eps)
        if _iterative(name):
            cases.append((name, Xh, iter_pred(5), alt_iter))
        else:
            cases.append((name, Xh, shrink, alt_white))
    kappas = {}
    for label, Xh, pred, alts in cases:
        k = measured(Xh)
        kappas[label] = k
        rows.append(Claim(
            id=f"conditioning.linear_unit.{label}",
            claim=f"condition number of a linear unit's Hessian, inputs {label} "
                  f"(d={d}, exact moments: spectrum {decay:g}^i, mean {mean:g} sqrt(d) along the "
                  f"top eigenvector, eps={eps:g}); predicted in closed form from the construction",
            source=SOURCE_COND, predicted=float(pred), measured=float(k), tolerance=1e-8,
            relative=True, alternatives=alts))
    groups = {"whitened": max(kappas[n_] for n_ in whitening if not _iterative(n_)),
              "standardized": kappas["batch_norm"], "raw": kappas["raw"]}
    order_meas = " < ".join(sorted(groups, key=groups.get))
    rows.append(Claim(
        id="conditioning.linear_unit.order",
        claim=f"whitening conditions better than standardizing, which beats raw inputs "
              f"[raw {kappas['raw']:.4g}, standardized {kappas['batch_norm']:.4g}, "
              f"ZCA {kappas['zca_whitening']:.6g}, IterNorm T=5 {kappas['iter_norm']:.4g}]",
        source=SOURCE_COND, predicted="whitened < standardized < raw",
        measured=order_meas, tolerance=0.0,
        alternatives=(Alternative("standardizing beats whitening",
                                  "standardized < whitened < raw"),
                      Alternative("the reversed ordering", "raw < standardized < whitened"))))
    return rows


@register_claims("stochasticity")
def stochasticity_claims():
    return snd_claims() + whitening_conditioning_claims()
