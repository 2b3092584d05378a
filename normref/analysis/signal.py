r"""Gradient explosion in batch-normalized networks at initialization (docs/theory.md item 8).

Yang, Pennington, Rao, Sohl-Dickstein & Schoenholz, "A Mean Field Theory of
Batch Normalization", ICLR 2019 (arXiv:1902.08129): in a deep fully connected
network with batch normalization, the gradient signal *grows* exponentially
from the top towards the input at initialization, whatever the weight
variance or the nonlinearity: batch norm itself causes the explosion.

The network (width :math:`n`, batch :math:`B`, depth :math:`L`):

.. math::

    h^l = W^l x^{l-1},\qquad x^l = \phi\big(\mathrm{BN}(h^l)\big),\qquad
    W^l_{ij} \sim \mathcal N(0, \sigma_w^2 / n),

BN in training mode over the batch, no affine parameters, before the
nonlinearity (biases omitted: BN removes them).  With :math:`\bar h^l =
\partial L / \partial h^l` for a random cotangent at the top, the per-layer
growth of the expected squared gradient norm

.. math::

    \lambda = \frac{\mathbb E\,\lVert \bar h^{l}\rVert^2}{\mathbb E\,\lVert \bar h^{l+1}\rVert^2}
            \;\Big(= \frac{\mathbb E\,\lVert \nabla_{W^{l}} L\rVert^2}{\mathbb E\,\lVert \nabla_{W^{l+1}} L\rVert^2}
            \text{ deep inside the network}\Big)

is, in the mean-field (infinite width) limit,

* :math:`\lambda = (B-2)/(B-3)` for the linear network :math:`\phi(u) = u`;
* :math:`\lambda \to \pi/(\pi-1) \approx 1.46694` for ReLU as :math:`B \to \infty`.

Both are independent of :math:`\sigma_w`.  Where they come from (the
library's own derivation, checked by the measurements below): the BN
backward map of one unit is :math:`\bar h_i = \sigma_i^{-1}(I - \tfrac1B 1 1^\top
- \tfrac1B \hat x_i \hat x_i^\top)\,\bar y_i`; the weight layer multiplies the
squared norm by :math:`\sigma_w^2` on average.  *Linear*: at the forward
fixed point the batch Gram matrix is isotropic on the centred subspace, so
:math:`B\sigma_i^2/\sigma_w^2 \cdot (B-1)/B \sim \chi^2_{B-1}` and
:math:`\mathbb E[\sigma_i^{-2}] = \sigma_w^{-2}(B-1)/(B-3)`; the projection keeps
:math:`(B-2)/(B-1)` of an isotropic centred cotangent: the product is
:math:`(B-2)/(B-3)`.  *ReLU* (:math:`B\to\infty`): the batch variance of
:math:`h` is :math:`\sigma_w^2 \operatorname{Var}[\mathrm{relu}(z)] =
\sigma_w^2 (\pi-1)/(2\pi)` for standardized :math:`z`, the ReLU derivative
halves the squared norm: :math:`\lambda = \tfrac12 \cdot 2\pi/(\pi-1)`.
(A value "~1.4674" is sometimes quoted; :math:`\pi/(\pi-1) = 1.466942\ldots`.)

Measurement (all derivatives through :mod:`normref.nets`, i.e. batch norm
through :func:`normref.vjp`, exact, float64): for each seed, one network
(Gaussian weights, :math:`\sigma_w = 1`), a Gaussian input batch and a
Gaussian cotangent at the top; one backward pass records
:math:`\lVert\bar h^l\rVert^2` and :math:`\lVert\nabla_{W^l}L\rVert^2` for every
layer.  The per-seed rate is the geometric mean of the successive ratios
:math:`g_l / g_{l+1}` over the middle layers (``window``: the bottom layers are
skipped while the forward Gram matrix converges to its fixed point, the top
ones while the backward signal forgets the cotangent).

The predictions are limits (width first, then batch), so the claims are
statistical extrapolations (docs/theory.md item 8):

* linear, :math:`B = 6, 8`: mean and standard error over seeds at widths
  256, 512, 1024, fitted by :math:`\lambda_\infty + a/n`
  (:func:`width_extrapolation`), against :math:`(B-2)/(B-3)`;
* ReLU, mean field: :func:`mean_field_growth` computes the infinite-width rate
  :math:`\lambda(B)` at finite :math:`B` by Monte Carlo over one unit's batch
  vector; fitted in :math:`1/B` (:func:`mean_field_fit`) against
  :math:`\pi/(\pi-1)`;
* ReLU, networks: :math:`B = 64` at widths 128, 256, 512 extrapolated in
  :math:`1/n`, minus the mean-field finite-:math:`B` excess.

Tolerances are ``N_STDERR`` (3) standard errors of the extrapolated constant
(:mod:`normref.analysis.fits`), and each row carries the wrong constants it must
reject (:math:`(B-1)/(B-2)`, :math:`(B-3)/(B-4)`; :math:`\sqrt2`, 1.43, 1.49).
Without the extrapolation the raw rates are biased by the finite size: the
ReLU rate at width 256 and :math:`B = 256` is about 1.455, 0.8% below the
limit, and at :math:`B = 64` about 1.49 (the mean-field :math:`\lambda(64)` is
1.4936: a :math:`+1.6/B` excess).
"""
from __future__ import annotations

import contextlib
import functools
import ctypes
import math
from dataclasses import dataclass, field

import numba
import numpy as np

from .claims import Alternative, Claim, register_claims
from .fits import polyfit_intercept
from ..nets import MLP, Activation, Linear, Norm
from ..registry import REGISTRY

__all__ = [
    "SOURCE", "predicted_growth", "bn_network", "gradient_norms", "GrowthMeasurement",
    "measure_growth", "mean_field_growth", "WidthExtrapolation", "width_extrapolation",
    "relu_mean_field_claim", "relu_network_claim", "linear_claim", "growth_claims",
    "mean_field_fit", "signal_claims",
    "LINEAR_BATCHES", "LINEAR_WIDTHS", "RELU_BATCH", "RELU_WIDTHS", "MF_BATCHES",
    "N_STDERR",
]

SOURCE = ("Yang, Pennington, Rao, Sohl-Dickstein & Schoenholz 2019, A Mean Field Theory of "
          "Batch Normalization, ICLR (arXiv:1902.08129)")

#: batch sizes of the linear rows (small B: the alternatives (B-1)/(B-2) and
#: (B-3)/(B-4) are far from (B-2)/(B-3)) and the widths extrapolated over
LINEAR_BATCHES = (6, 8)
LINEAR_WIDTHS = (256, 512, 1024)
#: the ReLU network row: one batch size, widths >= 2 B
RELU_BATCH = 64
RELU_WIDTHS = (128, 256, 512)
#: seeds (one network each) per (width, B) point
SEEDS = tuple(range(8))
#: batch sizes and Monte Carlo samples of the mean-field ReLU rate
MF_BATCHES = (32, 64, 128, 256)
MF_SAMPLES = 100_000
#: tolerances are this many standard errors of the extrapolated constant
N_STDERR = 3.0


def _openblas():
    """(get, set) of the loaded OpenBLAS thread count, or None (best effort, Linux)."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower() and "/" in line}
    except OSError:
        return None
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for get, put in (("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
                         ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
                         ("openblas_get_num_threads", "openblas_set_num_threads")):
            if hasattr(lib, get) and hasattr(lib, put):
                g, s_ = getattr(lib, get), getattr(lib, put)
                g.restype, s_.argtypes = ctypes.c_int, [ctypes.c_int]
                return g, s_
    return None


@contextlib.contextmanager
def single_threaded():
    """numba kernels and OpenBLAS on one thread inside the block (restored after).

    The measurement is a long chain of small products and normalizer calls;
    two thread pools (numba's parallel kernels above 32768 elements, OpenBLAS)
    spinning on two shared cores made it three times slower than one thread.
    """
    before = numba.get_num_threads()
    blas = _openblas()
    blas_before = blas[0]() if blas else None
    numba.set_num_threads(1)
    if blas:
        blas[1](1)
    try:
        yield
    finally:
        numba.set_num_threads(before)
        if blas:
            blas[1](blas_before)


def predicted_growth(activation, batch=None):
    r"""Mean-field per-layer growth of the squared gradient norm.

    ``"linear"``: :math:`(B-2)/(B-3)` (needs ``batch`` > 3); ``"relu"``: the
    :math:`B\to\infty` limit :math:`\pi/(\pi-1)` (``batch`` ignored).
    """
    if activation in ("linear", "identity"):
        if batch is None or batch <= 3:
            raise ValueError(f"the linear prediction (B-2)/(B-3) needs B > 3, got {batch}")
        return (batch - 2.0) / (batch - 3.0)
    if activation == "relu":
        return math.pi / (math.pi - 1.0)
    raise ValueError(f"no prediction for activation {activation!r}")


def bn_network(width, depth, activation, *, norm="batch_norm", init="gaussian", scale=1.0,
               eps=1e-10, rng=None):
    r"""The network of Yang et al.: ``depth`` blocks Linear(no bias) -> norm -> activation.

    ``norm=None`` drops the normalizer (the control without batch norm);
    ``init`` / ``scale`` as :class:`normref.nets.Linear` (``"gaussian"``:
    :math:`\sigma_w` = ``scale``; ``"orthogonal"``: norm-preserving).  ``norm``: any
    registered normalizer usable as a :class:`normref.nets.Norm` layer, without
    affine parameters; ``eps`` (default 1e-10, negligible against the O(1)
    batch variances; inside the root for BN) goes to every normalizer whose
    signature has one.
    """
    act = {"linear": "identity"}.get(activation, activation)
    rng = np.random.default_rng(rng)
    layers = []
    for _ in range(depth):
        layers.append(Linear(width, width, bias=False, init=init, scale=scale, rng=rng))
        if norm is not None:
            spec = REGISTRY.get(norm)  # (an unknown name: Norm raises ValueError)
            kwargs = {"eps": eps} if spec is not None and spec.slot("eps") is not None else {}
            layers.append(Norm(norm, affine=False, **kwargs))
        layers.append(Activation(act))
    return MLP(layers)


def gradient_norms(net, batch, rng):
    r"""One backward pass of a Gaussian cotangent from the top of ``net``.

    Returns ``(pre, weight)``: arrays over the Linear layers (input first) of
    :math:`\lVert \partial L/\partial h^l \rVert^2` (``h^l`` the Linear output)
    and :math:`\lVert \nabla_{W^l} L \rVert^2`, for ``L = <dy, net(x)>`` with
    ``x`` and ``dy`` standard Gaussian of shape ``(batch, width)``.  The weight
    gradient is :math:`\bar h^\top x` with ``x`` the layer input, and its squared
    Frobenius norm is computed as :math:`\langle x x^\top, \bar h \bar h^\top\rangle`
    (two B x B Gram matrices instead of the width x width product).
    """
    width = net.layers[0].d_in
    trace = net.trace(rng.standard_normal((batch, width)))
    _, _, outs = trace.backward(rng.standard_normal(trace.output.shape), params=False)
    pre, weight = [], []
    for k, layer in enumerate(net.layers):
        if isinstance(layer, Linear):
            d, x = outs[k], trace.inputs[k]
            pre.append(float(np.sum(d * d)))
            weight.append(float(np.sum((x @ x.T) * (d @ d.T))))
    return np.array(pre), np.array(weight)


@dataclass
class GrowthMeasurement:
    """Per-layer growth of squared gradient norms measured on random networks.

    ``rate`` / ``rate_pre``: pooled geometric mean of :math:`g_l/g_{l+1}` over
    the window, weight gradients / pre-activation gradients; ``stderr``: standard
    error of the weight rate from the spread of the per-seed rates;
    ``profile``: mean over seeds of :math:`\\log g_l` (weights), input layer first.
    """

    activation: str
    batch: int
    width: int
    depth: int
    window: tuple
    rate: float
    rate_pre: float
    stderr: float
    seed_rates: np.ndarray = field(repr=False)
    profile: np.ndarray = field(repr=False)


def _window(depth, window):
    if window is None:
        lo, hi = max(1, depth // 5), depth - max(1, depth // 8)
    else:
        lo, hi = window
    if not 0 <= lo < hi - 1 < depth:
        raise ValueError(f"window {window} does not fit depth {depth}")
    return lo, hi


def _run(activation, batches, width, depth, seeds, logs, window, net_kwargs):
    lo, hi = window
    for seed in seeds:
        rng = np.random.default_rng([seed, width, depth])
        net = bn_network(width, depth, activation, rng=rng, **net_kwargs)
        for B in batches:
            pre, weight = gradient_norms(net, B, rng)
            lw, lp = np.log(weight), np.log(pre)
            logs[B][0].append(lw[lo:hi - 1] - lw[lo + 1:hi])
            logs[B][1].append(lp[lo:hi - 1] - lp[lo + 1:hi])
            logs[B][2].append(lw)


def measure_growth(activation, batches, width, *, depth=30, seeds=(0, 1, 2, 3, 4, 5),
                   window=None, norm="batch_norm", init="gaussian", scale=1.0, eps=1e-10):
    """Measure the per-layer gradient growth for each batch size in ``batches``.

    One network per seed (seeded ``seed``), reused for every batch size.  The
    window ``(lo, hi)`` uses the ratios ``g[l]/g[l+1]`` for ``lo <= l < hi - 1``
    (default: skip the bottom fifth and the top eighth).  Returns
    ``{batch: GrowthMeasurement}``.
    """
    lo, hi = _window(depth, window)
    logs = {B: ([], [], []) for B in batches}
    with single_threaded():
        _run(activation, batches, width, depth, seeds, logs, (lo, hi),
             dict(norm=norm, init=init, scale=scale, eps=eps))
    out = {}
    for B, (rw, rp, prof) in logs.items():
        rw, rp = np.array(rw), np.array(rp)
        per_seed = np.exp(rw.mean(axis=1))
        rate = float(np.exp(rw.mean()))
        se = float(per_seed.std(ddof=1) / np.sqrt(len(per_seed))) if len(per_seed) > 1 else float("nan")
        out[B] = GrowthMeasurement(activation, B, width, depth, (lo, hi), rate,
                                   float(np.exp(rp.mean())), se, per_seed, np.mean(prof, axis=0))
    return out


def mean_field_growth(batch, samples=MF_SAMPLES, rng=0, activation="relu"):
    r"""The infinite-width growth rate at finite batch ``B``, by Monte Carlo over
    one unit's batch vector; returns ``(rate, stderr)``.

    At infinite width (the mean-field limit of Yang et al.) the pre-activations
    of one unit over the batch are Gaussian with an exchangeable covariance
    (the BSB1 fixed point).  Batch norm sees only the centred part :math:`Ph`
    (:math:`P = I - \tfrac1B 11^\top`), and :math:`Ph \sim \mathcal N(0, sP)`
    whatever the fixed point: :math:`\mathrm{BN}(h) = \sqrt B\,\hat u` with
    :math:`u = Pz`, :math:`z \sim \mathcal N(0, I_B)`.  The backward covariance
    of the gradients over the batch is then a multiple of :math:`P` (exchangeable
    and centred by the BN backward map), and one layer multiplies it by

    .. math::

        \lambda(B) = \mathbb E\Big[\frac{B}{\lVert u\rVert^2}\Big]\,
        \frac{\mathbb E\,\lVert P D (P - \hat u\hat u^\top)\rVert_F^2}
             {\mathbb E\,\lVert P\,\phi(\sqrt B\,\hat u)\rVert^2}
        = \frac{B}{B-3}\,\frac{\mathbb E\,F(\hat u)}{\mathbb E\,S(\hat u)},

    :math:`D = \operatorname{diag}\phi'(\sqrt B\hat u)` (radius and direction of
    :math:`u` are independent, :math:`\lVert u\rVert^2 \sim \chi^2_{B-1}`).  With
    :math:`d` the 0/1 diagonal of :math:`D` and :math:`k = \sum d`:
    :math:`F = k(1-\tfrac1B) - \tfrac1B(k - k^2/B) - \sum_{d_i=1}\hat u_i^2
    + \tfrac1B(\sum_{d_i=1}\hat u_i)^2` and :math:`S = \lVert r\rVert^2 - (\sum r)^2/B`,
    :math:`r = \phi(\sqrt B\hat u)` -- :math:`O(B)` per sample.  ``"linear"``
    gives :math:`F = B-2`, :math:`S = B` and exactly :math:`(B-2)/(B-3)`; ReLU
    tends to :math:`\tfrac12\cdot 2\pi/(\pi-1)` as :math:`B\to\infty`.  The
    standard error is the delta-method error of the ratio of sample means.
    """
    B = int(batch)
    if B <= 3:
        raise ValueError(f"the mean-field rate needs B > 3, got {B}")
    rng = np.random.default_rng(rng)
    F, S = [], []
    for start in range(0, samples, 20_000):  # chunks bound the memory
        z = rng.standard_normal((min(20_000, samples - start), B))
        u = z - z.mean(axis=1, keepdims=True)
        uh = u / np.linalg.norm(u, axis=1, keepdims=True)
        if activation == "relu":
            d = (uh > 0).astype(np.float64)
        elif activation in ("linear", "identity"):
            d = np.ones_like(uh)
        else:
            raise ValueError(f"no mean-field rate for activation {activation!r}")
        k = d.sum(axis=1)
        F.append(k * (1 - 1 / B) - (k - k ** 2 / B) / B
                 - np.sum(d * uh ** 2, axis=1) + np.sum(d * uh, axis=1) ** 2 / B)
        r = math.sqrt(B) * uh * d
        S.append(np.sum(r ** 2, axis=1) - np.sum(r, axis=1) ** 2 / B)
    F, S = np.concatenate(F), np.concatenate(S)
    mF, mS = F.mean(), S.mean()
    rate = B / (B - 3) * mF / mS
    c = np.cov(F, S)
    rel_var = (c[0, 0] / mF ** 2 + c[1, 1] / mS ** 2 - 2 * c[0, 1] / (mF * mS)) / F.size
    return float(rate), float(rate * math.sqrt(max(rel_var, 0.0)))


@dataclass
class WidthExtrapolation:
    r"""The network rate at one batch size over growing widths, and its
    :math:`n\to\infty` limit from the fit :math:`\lambda(n) = \lambda_\infty + a/n`.

    ``rates`` / ``stderrs``: per width, mean over seeds of the per-seed rate and
    its standard error; ``fit``: :class:`normref.analysis.fits.Fit` in ``1/width``."""

    activation: str
    batch: int
    widths: tuple
    depth: int
    seeds: int
    rates: tuple
    stderrs: tuple
    fit: object

    @property
    def limit(self):
        return self.fit.intercept

    @property
    def stderr(self):
        return self.fit.intercept_stderr

    def table(self):
        return ", ".join(f"n={n}: {r:.4f}+-{e:.4f}" for n, r, e in zip(self.widths, self.rates,
                                                                     self.stderrs))


@functools.lru_cache(maxsize=8)
def _seed_rates(activation, batches, width, depth, seeds, window, norm, init, scale):
    ms = measure_growth(activation, batches, width, depth=depth, seeds=seeds, window=window,
                        norm=norm, init=init, scale=scale)
    return {B: m.seed_rates for B, m in ms.items()}


def width_extrapolation(activation, batch, widths, *, depth=30, seeds=SEEDS, window=None,
                        norm="batch_norm", init="gaussian", scale=1.0, together=None):
    r"""Measure the rate at ``batch`` for each width (:func:`measure_growth`, one
    network per seed) and extrapolate in :math:`1/n`.

    The finite-width form: the leading finite-width corrections to the
    statistics of a wide network are :math:`O(1/n)` (the fluctuation of the
    batch Gram matrix around its mean-field value is :math:`O(n^{-1/2})` with
    zero mean, so a smooth statistic of it -- here :math:`\mathbb E[\sigma^{-2}]`
    and the backward map -- moves by its variance, :math:`O(1/n)`; Yaida 2020,
    arXiv:1910.00019; Roberts, Yaida & Hanin 2022), and the geometric mean of the
    layer ratios sits below their mean by half the variance of the log ratio,
    also :math:`O(1/n)`.  Hence :math:`\lambda(n) = \lambda_\infty + a/n +
    O(n^{-2})`; the coefficient grows with :math:`B` (the expansion is in
    :math:`B/n`), so the widths are kept at :math:`n \ge 2B`, and the fit's
    :math:`\chi^2` tests the form.  Per width the rate is the mean of the
    per-seed rates (independent networks), its error their standard error.
    ``together``: batch sizes measured on the same networks (memoized), so that
    rows at several B share the runs.
    """
    together = tuple(together) if together else (batch,)
    if batch not in together:
        raise ValueError(f"batch {batch} not among {together}")
    rates, errs = [], []
    for n in widths:
        sr = _seed_rates(activation, together, n, depth, tuple(seeds), window, norm, init,
                         scale)[batch]
        rates.append(float(np.mean(sr)))
        errs.append(float(np.std(sr, ddof=1) / math.sqrt(len(sr))))
    fit = polyfit_intercept([1.0 / n for n in widths], rates, errs, degree=1)
    return WidthExtrapolation(activation, batch, tuple(widths), depth, len(seeds), tuple(rates),
                              tuple(errs), fit)


RELU_LIMIT = math.pi / (math.pi - 1.0)
#: wrong constants a ReLU row must reject
RELU_ALTERNATIVES = (("sqrt(2)", math.sqrt(2.0)), ("1.43", 1.43), ("1.49", 1.49))


def _relu_alts():
    return tuple(Alternative(label, value) for label, value in RELU_ALTERNATIVES)


@functools.lru_cache(maxsize=4)
def mean_field_fit(batches=MF_BATCHES, samples=MF_SAMPLES, seed=0):
    r"""``(fit, points)``: the mean-field ReLU rate :math:`\lambda(B)`
    (:func:`mean_field_growth`) at each ``B``, fitted by
    :math:`\lambda_\infty + c_1/B + c_2/B^2` (the batch statistics enter through
    smooth functions of sample moments over :math:`B` draws, whose biases are
    series in :math:`1/B`; e.g. :math:`\mathbb E[B/\chi^2_{B-1}] = B/(B-3)`)."""
    pts = tuple(mean_field_growth(B, samples, rng=[seed, B]) for B in batches)
    fit = polyfit_intercept([1.0 / B for B in batches], [p[0] for p in pts],
                            [p[1] for p in pts], degree=2)
    return fit, pts


def relu_mean_field_claim(batches=MF_BATCHES, samples=MF_SAMPLES):
    """Row ``item8.relu.mean_field``: the mean-field rate extrapolated to B -> inf."""
    fit, pts = mean_field_fit(batches, samples)
    tol = N_STDERR * fit.intercept_stderr
    table = ", ".join(f"B={B}: {r:.5f}+-{e:.5f}" for B, (r, e) in zip(batches, pts))
    return Claim(
        id="item8.relu.mean_field",
        claim=(f"infinite-width ReLU-BN growth rate lambda(B) (Monte Carlo, {samples} samples "
               f"per B: {table}) fitted by l_inf + c1/B + c2/B^2 (chi2 {fit.chi2:.2f} on "
               f"{fit.dof} dof): l_inf = {fit.intercept:.5f}+-{fit.intercept_stderr:.5f} "
               f"-> pi/(pi-1); tolerance {N_STDERR:g} s.e. of the fit"),
        source=SOURCE, predicted=RELU_LIMIT, measured=fit.intercept, tolerance=tol,
        alternatives=_relu_alts())


def relu_network_claim(batch=RELU_BATCH, widths=RELU_WIDTHS, *, seeds=SEEDS, depth=30,
                       norm="batch_norm", init="gaussian", scale=1.0, mf_samples=2 * MF_SAMPLES):
    r"""Row ``item8.relu.network.B<B>``: networks' constant :math:`\pi/(\pi-1)`.

    The network rate at batch ``B`` is extrapolated to infinite width
    (:func:`width_extrapolation`), and its finite-batch excess is removed with
    the mean-field curve: measured :math:`\lambda_{net}(B, \infty) -
    [\lambda_{MF}(B) - \lambda_{MF,\infty}]`, where :math:`\lambda_{MF,\infty}`
    is the extrapolation of :func:`mean_field_fit` (not the predicted constant).
    Tolerance: ``N_STDERR`` times the three errors added in quadrature.
    """
    ext = width_extrapolation("relu", batch, widths, depth=depth, seeds=seeds, norm=norm,
                              init=init, scale=scale)
    mf, mf_se = mean_field_growth(batch, mf_samples, rng=[1, batch])
    fit, _ = mean_field_fit()
    excess = mf - fit.intercept
    measured = ext.limit - excess
    se = math.sqrt(ext.stderr ** 2 + mf_se ** 2 + fit.intercept_stderr ** 2)
    net = f"depth {depth}, {norm or 'NO normalizer'}, {init} init, {ext.seeds} seeds per width"
    return Claim(
        id=f"item8.relu.network.B{batch}",
        claim=(f"ReLU net ({net}), B={batch}, per-layer growth of E||grad_W||^2: {ext.table()}; "
               f"fit l + a/n: {ext.limit:.4f}+-{ext.stderr:.4f} (chi2 {ext.fit.chi2:.2f} on "
               f"{ext.fit.dof} dof; mean field at this B {mf:.4f}+-{mf_se:.4f}); minus the "
               f"mean-field finite-B excess {excess:.4f} -> pi/(pi-1); tolerance {N_STDERR:g} "
               f"s.e. ({se:.4f})"),
        source=SOURCE, predicted=RELU_LIMIT, measured=measured, tolerance=N_STDERR * se,
        alternatives=_relu_alts())


def linear_claim(batch, widths=LINEAR_WIDTHS, *, seeds=SEEDS, depth=30, norm="batch_norm",
                 init="gaussian", scale=1.0, together=None):
    r"""Row ``item8.linear.B<B>``: the width-extrapolated linear rate vs
    :math:`(B-2)/(B-3)` (exact in :math:`B` at infinite width: no fit in B).
    Alternatives :math:`(B-1)/(B-2)` and :math:`(B-3)/(B-4)`."""
    ext = width_extrapolation("linear", batch, widths, depth=depth, seeds=seeds, norm=norm,
                              init=init, scale=scale, together=together)
    B = batch
    net = f"depth {depth}, {norm or 'NO normalizer'}, {init} init, {ext.seeds} seeds per width"
    return Claim(
        id=f"item8.linear.B{B}",
        claim=(f"linear net ({net}), B={B}, per-layer growth of E||grad_W||^2: {ext.table()}; "
               f"fit l + a/n (chi2 {ext.fit.chi2:.2f} on {ext.fit.dof} dof): "
               f"{ext.limit:.4f}+-{ext.stderr:.4f} -> (B-2)/(B-3); tolerance {N_STDERR:g} s.e."),
        source=SOURCE, predicted=predicted_growth("linear", B), measured=ext.limit,
        tolerance=N_STDERR * ext.stderr,
        alternatives=(Alternative("(B-1)/(B-2)", (B - 1.0) / (B - 2.0)),
                      Alternative("(B-3)/(B-4)", (B - 3.0) / (B - 4.0)),
                      Alternative("no growth", 1.0)))


def growth_claims(linear_batches=LINEAR_BATCHES, relu_batches=(RELU_BATCH,), *,
                  linear_widths=LINEAR_WIDTHS, relu_widths=RELU_WIDTHS, seeds=SEEDS, depth=30,
                  norm="batch_norm", init="gaussian", scale=1.0):
    """The network rows (:func:`linear_claim` per linear batch, then
    :func:`relu_network_claim` per ReLU batch).  ``norm`` / ``init`` / ``scale``
    change the measured network only (the prediction stays the batch-norm one):
    ``norm=None, init="orthogonal"`` is the control that must fail."""
    kw = dict(seeds=seeds, depth=depth, norm=norm, init=init, scale=scale)
    rows = [linear_claim(B, linear_widths, together=tuple(linear_batches), **kw)
            for B in linear_batches]
    rows += [relu_network_claim(B, relu_widths, **kw) for B in relu_batches]
    return rows


@register_claims("signal")
def signal_claims():
    """Item 8 rows: item8.linear.B<B> (B in LINEAR_BATCHES), item8.relu.mean_field,
    item8.relu.network.B<RELU_BATCH>."""
    rows = growth_claims()
    rows.insert(len(LINEAR_BATCHES), relu_mean_field_claim())
    return rows
