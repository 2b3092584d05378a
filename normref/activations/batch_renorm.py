"""Batch renormalization (Ioffe 2017, arXiv:1702.03275)."""
from __future__ import annotations

import numpy as np

from ..compose import Composite, Piece, Step
from ..numerics import all_finite, as_float64, check_finite_scalar, check_flag, check_shape
from ..recovery import Affine, Renorm, channel_shape
from ..reference.batch_renorm import batch_renorm as _reference
from ..catalogue import Catalogue
from ..layer_call import LayerCall
from ..registry import Case, Spec, register
from ..standardize import FixedStats, Standardization
from ..taxonomy import Area, AreaKind as A, Operation, OpKind as O, Recovery, RecoveryKind as R
from ._common import (RunningStats, affine_param, channel_axis_of, commit_updates, eps_value,
                      input_array, running_buffer, running_options)
from .batch_norm import channel_partition, running_buffers_fixed

__all__ = ["batch_renorm"]


def _clip_bound(name, value, lowest):
    """rmax / dmax: a finite real >= ``lowest``, or None (no clipping)."""
    if value is None:
        return None
    value = check_finite_scalar(name, value)
    if value < lowest:
        raise ValueError(f"{name} must be >= {lowest:g} (or None: no clipping), got {value!r}")
    return value


def _renorm_buffer(name, buf, C):
    if buf is None:
        raise ValueError(f"{name} is required when training=True: batch renormalization's "
                         f"correction r, d is computed from the running statistics")
    arr = as_float64(name, buf)
    check_shape(name, arr, (C,), "one value per channel")
    return arr


def correction(batch_mean, batch_rstd, running_mean, running_var, eps, rmax, dmax, std=False):
    r"""``(r, d)``: :math:`r = \mathrm{clip}(\sigma_B / \sigma, 1/r_{max}, r_{max})`,
    :math:`d = \mathrm{clip}((\mu_B - \mu) / \sigma, -d_{max}, d_{max})` with
    :math:`\sigma = \sqrt{\text{running\_var} + \epsilon}` and
    :math:`\sigma_B = 1/\text{batch\_rstd}`; with ``std=True`` ``running_var`` is
    a standard deviation and :math:`\sigma = \max(\text{running\_var}, \sqrt\epsilon)`
    (Keras).  An overflowing ratio is clipped like any other (to :math:`r_{max}`,
    :math:`\pm d_{max}`); without a bound (None) it stays inf and the output
    check reports it."""
    with np.errstate(all="ignore"):
        s2 = np.maximum(running_var, np.sqrt(eps)) ** 2 if std else running_var + eps
        bad = np.isfinite(s2) & ~(s2 > 0)
        if bad.any():
            c = int(np.flatnonzero(bad)[0])
            what = "max(running std, sqrt(eps))" if std else "running_var + eps"
            raise ValueError(
                f"{what} is not positive in channel {c} (running_var "
                f"{float(running_var[c])!r}, eps={eps!r}): sigma of the renormalization "
                f"correction r, d is undefined")
        inv = 1.0 / (np.maximum(running_var, np.sqrt(eps)) if std else np.sqrt(s2))
        r = inv / batch_rstd
        d = (batch_mean - running_mean) * inv
        if rmax is not None:
            r = np.clip(r, 1.0 / rmax, rmax)
        if dmax is not None:
            d = np.clip(d, -dmax, dmax)
    return r, d


class _KerasVariance(Piece):
    r"""Keras' moving variance from its moving standard deviation:
    :math:`v = \max(s^2 - \epsilon, 0)`, :math:`\partial v/\partial s = 2 s\,[s^2 > \epsilon]`
    (zero at the kink, as ReLU's gradient in TensorFlow)."""

    name = "variance from the running std"

    def __init__(self, eps):
        self.eps = eps

    def forward(self, s):
        with np.errstate(over="ignore", invalid="ignore"):
            self.slope = np.where(s * s > self.eps, 2.0 * s, 0.0)
            return np.maximum(s * s - self.eps, 0.0)

    def vjp(self, g):
        with np.errstate(over="ignore", invalid="ignore", under="ignore"):
            return (g * self.slope,)

    def jvp(self, t):
        with np.errstate(over="ignore", invalid="ignore", under="ignore"):
            return t * self.slope


def _keras_eval(x, part, eps, w, b, running_mean, running_var, C):
    """Eval with a running standard deviation: batch norm's eval with Keras' variance."""
    fixed = running_buffers_fixed(running_mean, running_var, C)
    kv = _KerasVariance(eps)
    veff = kv.forward(fixed.var)
    std = Standardization(x, part, eps=eps, weight=w, bias=b,
                          fixed=FixedStats(fixed.mean, veff, names=("running_mean", "veff")))
    values = {"input": x}
    ins = {"input": "input", "running_mean": "running_mean", "veff": "veff"}
    for nm, arr in (("weight", w), ("bias", b)):
        if arr is not None:
            values[nm] = arr
            ins[nm] = nm
    values["running_mean"], values["running_var"] = fixed.mean, fixed.var
    return Composite("batch_renorm", values, [Step("veff", _KerasVariance(eps), ("running_var",)),
                                              Step("y", std, ins)])


def _bind(input, running_mean, running_var, weight=None, bias=None, training=False,
          momentum=0.1, eps=1e-5, rmax=3.0, dmax=5.0, *, channel_axis=1,
          momentum_convention="torch", running_var_unbiased=True, num_batches_tracked=None,
          running_std=False, renorm_moments=None, renorm_momentum=0.99):
    x = input_array(input, 2)
    ax = channel_axis_of(x, channel_axis)
    C = x.shape[ax]
    part = channel_partition("batch_renorm", x, ax)
    ctx = f"one value per channel, input shape {x.shape}, channel axis {ax}"
    w = affine_param("weight", weight, (C,), ctx)
    b = affine_param("bias", bias, (C,), ctx)
    eps = eps_value(eps)
    training = check_flag("training", training)
    rmax = _clip_bound("rmax", rmax, 1.0)
    dmax = _clip_bound("dmax", dmax, 0.0)
    options = running_options(momentum, momentum_convention, running_var_unbiased,
                              num_batches_tracked)
    running_std = check_flag("running_std", running_std)
    renorm_momentum = check_finite_scalar("renorm_momentum", renorm_momentum)
    if (running_std or renorm_moments is not None) and eps < 0:
        raise ValueError(f"eps must be >= 0 with running_std or renorm_moments (sqrt(eps) floors "
                         f"the standard deviation, Keras), got {eps!r}")
    if running_std and training and (options[2] or options[0] is None):
        raise ValueError("running_std=True tracks sqrt(var_B + eps) of the biased batch variance "
                         "with a fixed momentum (Keras): pass running_var_unbiased=False and a "
                         "numeric momentum")
    if renorm_moments is not None:
        if not isinstance(renorm_moments, (tuple, list)) or len(renorm_moments) != 2:
            raise TypeError("renorm_moments must be a pair (renorm_mean, renorm_std) of numpy "
                            f"arrays updated in place, got {type(renorm_moments).__name__}")
        renorm_moments = tuple(running_buffer(nm, buf, (C,)) for nm, buf in
                               zip(("renorm_moments[0] (renorm_mean)",
                                    "renorm_moments[1] (renorm_std)"), renorm_moments))
    if not training:  # batch norm's eval, exactly (Keras: the variance from the running std)
        if running_std:
            return _keras_eval(x, part, eps, w, b, running_mean, running_var, C)
        return Standardization(x, part, eps=eps, weight=w, bias=b,
                               fixed=running_buffers_fixed(running_mean, running_var, C))
    if part.group_size == 1:
        raise ValueError(
            f"Expected more than 1 value per channel when training, got input of shape {x.shape} "
            f"(channel axis {ax}): the batch variance of one value is undefined")
    rm = _renorm_buffer("running_mean", running_mean, C)
    rv = _renorm_buffer("running_var", running_var, C)
    if running_std:  # updated here, not by RunningStats
        running_buffer("running_var", running_var, (C,))
    if x.size == 0:  # an empty batch: an empty output, every buffer unchanged (as batch_norm)
        return Standardization(x, part, eps=eps, weight=w, bias=b)
    momentum, momentum_convention, running_var_unbiased, num_batches_tracked = options
    running = RunningStats(running_mean, None if running_std else running_var, C,
                           momentum=momentum, momentum_convention=momentum_convention,
                           unbiased=running_var_unbiased,
                           num_batches_tracked=num_batches_tracked, owner="batch_renorm")
    std = Standardization(x, part, eps=eps)
    pshape = channel_shape(x.ndim, C, ax)
    # r, d from the running statistics (or Keras' renorm moments) as they were before
    # this call's update
    if renorm_moments is None:
        rm0, rv0, use_std = rm.copy(), rv.copy(), running_std
    else:
        rm0, rv0, use_std = (np.array(renorm_moments[0], dtype=np.float64),
                             np.array(renorm_moments[1], dtype=np.float64), True)

    def renorm():
        r, d = correction(std.group_mean(), std.group_rstd(), rm0, rv0, eps, rmax, dmax, use_std)
        return Renorm(r, d, pshape)

    values = {"input": x}
    aff_in = ["xr"]
    for nm, arr in (("weight", w), ("bias", b)):
        if arr is not None:
            values[nm] = arr
            aff_in.append(nm)
    steps = [Step("xhat", std, {"input": "input"}), Step("xr", renorm, ("xhat",))]
    if len(aff_in) > 1:
        steps.append(Step("y", Affine(pshape, w is not None, b is not None), tuple(aff_in)))

    def blend(old, batch, m):
        with np.errstate(over="ignore", invalid="ignore"):
            return m * old.astype(np.float64) + (1.0 - m) * batch

    def update(plan):
        mean, var = std.group_mean(), std.group_var()
        with np.errstate(over="ignore", invalid="ignore"):
            sd = np.sqrt(var + eps)  # Keras' batch standard deviation
        extra = []
        if running_std:
            keep = momentum if momentum_convention == "keras" else 1.0 - momentum
            extra.append(("running_var (running std)", running_var,
                          blend(running_var, sd, keep), all_finite(running_var)))
        if renorm_moments is not None:
            for nm, buf, batch in zip(("renorm_mean", "renorm_std"), renorm_moments, (mean, sd)):
                extra.append((nm, buf, blend(buf, batch, renorm_momentum), all_finite(buf)))
        # all or nothing: the extra buffers are checked (on copies) before anything is written
        commit_updates("batch_renorm", [(n, buf.copy(), new, ok) for n, buf, new, ok in extra])
        running.update(mean, var, part.group_size)
        commit_updates("batch_renorm", extra)

    return Composite("batch_renorm", values, steps, constants=(rm0, rv0),
                     on_forward=None if x.size == 0 else update)


def batch_renorm(input, running_mean, running_var, weight=None, bias=None, training=False,
                 momentum=0.1, eps=1e-5, rmax=3.0, dmax=5.0, *, channel_axis=1,
                 momentum_convention="torch", running_var_unbiased=True,
                 num_batches_tracked=None, running_std=False, renorm_moments=None,
                 renorm_momentum=0.99):
    r"""Batch renormalization: batch norm corrected towards the running statistics.

    Training, per channel over every other axis (biased batch variance):

    .. math::

        \sigma_B = \sqrt{\sigma_B^2 + \epsilon}, \quad
        \sigma = \sqrt{\hat\sigma^2 + \epsilon}, \quad
        r = \mathrm{clip}\Big(\frac{\sigma_B}{\sigma}, \frac1{r_{max}}, r_{max}\Big), \quad
        d = \mathrm{clip}\Big(\frac{\mu_B - \hat\mu}{\sigma}, -d_{max}, d_{max}\Big),

        \hat x = \frac{x - \mu_B}{\sigma_B}\, r + d, \qquad y = \gamma \hat x + \beta,

    with :math:`\hat\mu, \hat\sigma^2` = ``running_mean``, ``running_var`` as they
    were before the call (both required in training); they are then updated in
    place exactly as :func:`~normref.batch_norm` updates them (same ``momentum``,
    ``momentum_convention``, ``running_var_unbiased``, ``num_batches_tracked``).
    ``r`` and ``d`` are **constants in every derivative** (the paper's
    stop-gradient): the VJP is :math:`r` times batch norm's, composed with the
    affine recovery (:mod:`normref.compose`); where ``r`` and ``d`` are clipped
    they are locally constant and this is the exact derivative of the function,
    elsewhere it deliberately is not (the function itself is then
    :math:`(x - \hat\mu)/\sigma`, affine in x).  ``rmax >= 1`` and ``dmax >= 0``
    (None: no clipping, Keras' ``renorm_clipping`` without that key);
    ``rmax=1, dmax=0`` is batch norm.  Eval (``training=False``) is batch norm's
    eval, :math:`(x - \hat\mu)/\sigma\,\gamma + \beta`, differentiable in the
    running statistics too.

    Keras' BatchNormalization(renorm=True) conventions (keyword options):

    * ``running_std=True``: ``running_var`` holds a running *standard
      deviation* :math:`\hat s` (Keras' ``moving_stddev``), updated towards the
      batch's :math:`\sqrt{\sigma_B^2 + \epsilon}` (biased; needs
      ``running_var_unbiased=False`` and a numeric momentum), with
      :math:`\sigma = \max(\hat s, \sqrt\epsilon)` in r and d; eval uses
      Keras' derived variance :math:`\max(\hat s^2 - \epsilon, 0)` (its
      derivative :math:`2\hat s` where positive, 0 at the kink);
    * ``renorm_moments=(renorm_mean, renorm_std)``: separate buffers (C,) for
      r and d, :math:`r = \sigma_B / \max(s_r, \sqrt\epsilon)`,
      :math:`d = (\mu_B - \mu_r) / \max(s_r, \sqrt\epsilon)`, updated in
      place as ``m old + (1 - m) batch`` with ``renorm_momentum`` (Keras
      0.99) towards the batch mean and standard deviation; ``running_mean`` /
      ``running_var`` are then only updated (and used in eval).

    Keras' other defaults: ``momentum=0.99, momentum_convention="keras"``,
    ``eps=1e-3``, ``channel_axis=-1``; its ``renorm_clipping`` has a separate
    ``rmin`` (here ``1/rmax``).  All buffer updates are all or nothing.

    Numerics: batch statistics from batch norm's kernel (corrected two-pass
    moments), eps inside both roots; a ratio that overflows is clipped like
    any other.

    Ioffe, "Batch Renormalization: Towards Reducing Minibatch Dependence in
    Batch-Normalized Models", NeurIPS 2017.
    """
    return _bind(input, running_mean, running_var, weight, bias, training, momentum, eps,
                 rmax, dmax, channel_axis=channel_axis, momentum_convention=momentum_convention,
                 running_var_unbiased=running_var_unbiased,
                 num_batches_tracked=num_batches_tracked, running_std=running_std,
                 renorm_moments=renorm_moments, renorm_momentum=renorm_momentum).forward()


def _layer_args(x, w, b, o):
    """Training mode against fresh running statistics 0 and 1 (so the layer is a pure
    function; ``rmax``, ``dmax``, ``eps`` pass through as keywords)."""
    F = x.shape[1]
    return (x, np.zeros(F), np.ones(F), w, b, True)


#: the layer fact: training mode, the features as channels, running statistics 0 and 1
_LAYER = LayerCall(_layer_args, weight=3, bias=4)


def _strategy(draw, h):
    """Hypothesis draw of a call (``Spec.strategy``): eval mode; training with
    rmax = 1, dmax = 0 (batch norm); or training with running statistics placed so
    that r and d are clipped in every channel (then locally constant, and the
    stop-gradient derivative is the function's own: finite differences can judge it)."""
    st = h.st
    mode = draw(st.sampled_from(["eval", "plain", "clipped"]))
    shape = draw(h.shapes(2, 4, max_side=5))
    if mode != "eval" and shape[0] * h.prod(shape[2:]) < 2:
        shape = (2,) + shape[1:]
    C = shape[1]
    x = h.data(draw, shape)
    w, b = h.affine(draw, (C,))
    eps = draw(h.eps_values())
    rm, rv = h.running_stats(draw, C)
    kwargs = {"training": mode != "eval", "eps": eps}
    if mode == "plain":
        kwargs.update(rmax=1.0, dmax=0.0)
    elif mode == "clipped":
        axes = (0,) + tuple(range(2, x.ndim))
        sd = np.sqrt(np.var(x, axis=axes) + eps)
        # sqrt(rv + eps) = sd / 10 (r = 10, clipped to rmax) where eps leaves room, else
        # sd * 10 (r = 0.1, clipped to 1/rmax); the mean 10 running stds away (|d| = 10)
        r = draw(st.sampled_from([10.0, 0.1]))
        rv = (sd / r) ** 2 - eps
        rv = np.where(rv > 0, rv, (10.0 * sd) ** 2 - eps)
        rm = np.mean(x, axis=axes) - draw(st.sampled_from([1.0, -1.0])) * 10.0 * np.sqrt(rv + eps)
    return (x, rm, rv, w, b), kwargs


def _examples(rng):
    x = rng.standard_normal((4, 3, 2, 2)) * 0.5 + 0.3
    x2 = rng.standard_normal((6, 4))
    w, b = rng.standard_normal(3) + 1.5, rng.standard_normal(3)
    # running statistics far from the batch's: r and d clipped in every channel, so
    # locally constant (the stop-gradient derivative is then the function's own)
    far_m, wide_v = np.array([40.0, -35.0, 38.0]), np.array([16.0, 25.0, 30.0])
    narrow_v = np.array([1e-3, 2e-3, 5e-3])
    return [
        Case("train clipped r < 1/rmax, d", (x, far_m.copy(), wide_v.copy(), w, b, True),
             mutates=(1, 2)),
        Case("train clipped r = rmax, d", (x * 4, -far_m.copy(), narrow_v.copy(), w, None, True,
                                           0.2, 1e-3, 2.0, 1.0), mutates=(1, 2)),
        Case("train rmax=1 dmax=0 (batch norm)", (x2 + 3.0, rng.standard_normal(4),
                                                  rng.uniform(0.5, 2.0, 4), None, None, True,
                                                  0.1, 1e-5, 1.0, 0.0), mutates=(1, 2)),
        Case("train keras momentum, biased, channels-last",
             (np.moveaxis(x, 1, -1).copy(), far_m.copy(), wide_v.copy(), None, b, True, 0.99),
             {"channel_axis": -1, "momentum_convention": "keras", "running_var_unbiased": False},
             mutates=(1, 2)),
        Case("train keras running std", (x, far_m.copy(), np.sqrt(wide_v), w, b, True, 0.99,
                                          1e-3, 3.0, 5.0),
             {"momentum_convention": "keras", "running_var_unbiased": False,
              "running_std": True}, mutates=(1, 2)),
        Case("eval keras running std", (x, far_m, np.array([2.0, 0.01, 1.5]), w, b, False),
             {"running_std": True, "eps": 1e-3}),
        Case("eval", (x, rng.standard_normal(3), rng.uniform(0.5, 2.0, 3), w, b, False)),
        Case("eval 2d", (x2, rng.standard_normal(4), rng.uniform(0.5, 2.0, 4)), {"eps": 1e-3}),
    ]


def _conformance_base(rng, o, h):
    """Conformance case: (N, C, *spatial) with running statistics (training reads them for
    r, d); options ``training``, ``affine``, ``tight`` (rmax 1.5, dmax 0.5: r and d clipped
    in most channels), ``n``."""
    n = o.get("n")
    N = int(rng.integers(2, 5)) if n is None else n
    C = int(rng.integers(2, 6))
    sp = h.spatial(rng, 0 if N >= 2 else 1, 2)
    if not sp and N < 4 and n is None:
        N = 4
    x = h.data(rng, (N, C) + sp)
    training, _, rm, rv, w, b = h.running_and_affine(rng, C, {**o, "stats": True})
    rmax, dmax = (1.5, 0.5) if o.get("tight") else (3.0, 5.0)
    args = [x, rm, rv, w, b, training, h.momentum(rng), h.eps(rng), rmax, dmax]
    return args, {}, (1, 2) if training else (), (slice(None), 0)


register(Spec(
    name="batch_renorm",
    function=batch_renorm,
    bind=_bind,
    reference=_reference,
    family="activations",
    nap=Area(A.BATCH, "batch: (N, spatial) per channel", batch=True),
    nop=Operation(O.STANDARDIZE, "standardize with batch statistics, corrected towards the "
                  "running ones (running statistics in eval)", centres=True),
    nrr=Recovery((R.RENORM, R.AFFINE), "renorm r x + d (constants in derivatives), then affine "
                 "per channel"),
    citation="Ioffe 2017, Batch Renormalization, NeurIPS, arXiv:1702.03275",
    examples=_examples,
    strategy=_strategy,
    layer=_LAYER,
    convention_options={"momentum_convention": ("torch", "keras"),
                        "running_var_unbiased": (True, False), "running_std": (False, True)},
    conventions={
        "rmax, dmax": "clipping bounds of r and d (3, 5 as the paper's final values); None: no clip",
        "momentum_convention": "torch: new = (1-m) old + m batch; keras: new = m old + (1-m) batch",
        "running_var_unbiased": "True: running variance gets n/(n-1) var (PyTorch); False: biased",
        "channel_axis": "1 (NCHW); -1 for channels-last (Keras)",
        "gradient": "r and d are stop-gradient constants (paper, Keras)",
        "running_std": "False: running_var is a variance; True: a standard deviation (Keras)",
        "renorm_moments": "None: r, d from the running statistics (paper); a pair of separate "
                          "renorm mean / std buffers (Keras, renorm_momentum 0.99)",
    },
    differentiable=("input", "weight", "bias", "running_mean", "running_var"),
    catalogue=Catalogue(
        base=_conformance_base,
        variants={"train_affine": {}, "train_plain": {"affine": False},
                  "train_tight": {"tight": True}, "eval_affine": {"training": False}},
    ),
))
