"""Batch normalization (Ioffe & Szegedy 2015, arXiv:1502.03167)."""
from __future__ import annotations

import numpy as np

from .. import reference
from ..catalogue import Catalogue
from ..partition import Partition
from ..layer_call import LayerCall
from ..registry import Case, Spec, register
from ..taxonomy import Area, AreaKind as A, Operation, OpKind as O, Recovery, RecoveryKind as R
from ..standardize import FixedStats, Standardization
from ._common import (RunningStats, affine_param, channel_axis_of, eps_value, input_array,
                      running_options, stats_option)
from ..numerics import as_float64, check_flag, check_shape

__all__ = ["batch_norm"]


def channel_partition(name, x, axis):
    """(before, C, after): one group per channel, statistics over all other axes."""
    before = int(np.prod(x.shape[:axis], dtype=np.int64))
    after = int(np.prod(x.shape[axis + 1:], dtype=np.int64))
    return Partition(name, (before, x.shape[axis], after), group_axes=(1,), affine_axes=(1,))


def running_buffers_fixed(running_mean, running_var, C, flag="training=False"):
    """Running statistics as the fixed statistics of eval mode (differentiable)."""
    for name, buf in (("running_mean", running_mean), ("running_var", running_var)):
        if buf is None:
            raise ValueError(f"{name} is required when {flag} (eval mode uses running statistics)")
    rm = as_float64("running_mean", running_mean)
    rv = as_float64("running_var", running_var)
    check_shape("running_mean", rm, (C,), "one value per channel")
    check_shape("running_var", rv, (C,), "one value per channel")
    return FixedStats(rm, rv, names=("running_mean", "running_var"))


def _bind(input, running_mean, running_var, weight=None, bias=None, training=False,
          momentum=0.1, eps=1e-5, *, channel_axis=1, momentum_convention="torch",
          running_var_unbiased=True, num_batches_tracked=None, return_stats=False):
    x = input_array(input, 2)
    ax = channel_axis_of(x, channel_axis)
    C = x.shape[ax]
    stats = stats_option(return_stats, (C,))
    part = channel_partition("batch_norm", x, ax)
    ctx = f"one value per channel, input shape {x.shape}, channel axis {ax}"
    w = affine_param("weight", weight, (C,), ctx)
    b = affine_param("bias", bias, (C,), ctx)
    eps = eps_value(eps)
    training = check_flag("training", training)
    options = running_options(momentum, momentum_convention, running_var_unbiased,
                              num_batches_tracked)
    if not training:
        return Standardization(x, part, eps=eps, weight=w, bias=b,
                               fixed=running_buffers_fixed(running_mean, running_var, C),
                               stats_shape=stats)
    count = part.group_size
    if count == 1:
        raise ValueError(
            f"Expected more than 1 value per channel when training, got input of shape {x.shape} "
            f"(channel axis {ax}): the batch variance of one value is undefined"
        )
    momentum, momentum_convention, running_var_unbiased, num_batches_tracked = options
    running = RunningStats(running_mean, running_var, C, momentum=momentum,
                           momentum_convention=momentum_convention,
                           unbiased=running_var_unbiased,
                           num_batches_tracked=num_batches_tracked)

    def update(plan):
        running.update(plan.group_mean(), plan.group_var(), count)

    return Standardization(x, part, eps=eps, weight=w, bias=b,
                           on_forward=update if running.active else None, stats_shape=stats)


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5, *, channel_axis=1, momentum_convention="torch",
               running_var_unbiased=True, num_batches_tracked=None, return_stats=False):
    r"""Batch normalization, per channel over the batch and spatial axes.

    .. math::

        y = \frac{x - \mu_B}{\sqrt{\sigma_B^2 + \epsilon}} \gamma + \beta

    Training: :math:`\mu_B, \sigma_B^2` are the mean and the biased variance of
    each channel over every other axis, and the running statistics are
    updated in place (PyTorch): ``running = (1 - m) running + m batch`` with
    the *unbiased* batch variance ``n/(n-1) var``.  Eval
    (``training=False``): :math:`\mu, \sigma^2` are ``running_mean``,
    ``running_var`` (then differentiable arguments too).  Mirrors
    ``torch.nn.functional.batch_norm``.

    Conventions (keyword options; PyTorch is the default):
    ``channel_axis`` (1; -1 for channels-last), ``momentum_convention``
    (``"torch"`` or ``"keras"``: ``running = m running + (1 - m) batch``),
    ``running_var_unbiased`` (False: biased, as Keras / Flax / ONNX),
    ``momentum=None`` with ``num_batches_tracked`` (cumulative average, the
    counter incremented in place).  Momentum outside [0, 1] and negative eps
    are applied literally; ``var + eps <= 0`` raises.

    Training with one value per channel raises ValueError (PyTorch's
    "Expected more than 1 value per channel when training"); an empty batch
    returns an empty output and leaves the running statistics unchanged.

    Numerics: corrected two-pass moments with compensated sums, eps inside the
    root, float64 output.

    Statistics (``return_stats=True``): returns ``(y, mean, rstd)``, one value
    per channel (shape ``(C,)``, whatever ``channel_axis``).  Training: the
    batch mean and :math:`(\sigma_B^2 + \epsilon)^{-1/2}` with the biased
    variance -- ``torch.native_batch_norm``'s ``save_mean`` / ``save_invstd``
    -- float64, the mean compensated (about an ulp from the exact mean at any
    offset); the running statistics are updated as without the keyword.
    Eval: the statistics the output was normalized with, a copy of
    ``running_mean`` and :math:`(\text{running\_var} + \epsilon)^{-1/2}`,
    differentiable in the running buffers (:math:`\partial r / \partial v =
    -r^3/2`).  PyTorch's CPU kernel returns empty tensors in eval (it saves
    nothing for a backward that needs no batch statistics) and ONNX
    BatchNormalization has no statistics outputs in inference mode; normref
    returns the statistics used so the outputs mean the same in both modes.
    An empty batch in training is then a ValueError (no values per channel).
    Every output is differentiable (:func:`normref.vjp` takes one cotangent
    per output).

    Ioffe & Szegedy, "Batch Normalization: Accelerating Deep Network Training
    by Reducing Internal Covariate Shift", ICML 2015.
    """
    return _bind(input, running_mean, running_var, weight, bias, training, momentum, eps,
                 channel_axis=channel_axis, momentum_convention=momentum_convention,
                 running_var_unbiased=running_var_unbiased,
                 num_batches_tracked=num_batches_tracked, return_stats=return_stats).forward()


#: the layer fact: training mode, the features as channels, no running statistics
_LAYER = LayerCall(lambda x, w, b, o: (x, None, None, w, b, True), weight=3, bias=4)


def _strategy(draw, h):
    """Hypothesis draw of a call (``Spec.strategy``; ``h`` = normref.testing.strategies.HELPERS):
    training or eval, rank 2-4, more than one value per channel in training, affine or not."""
    st = h.st
    training = draw(st.booleans())
    shape = draw(h.shapes(2, 4, max_side=5))
    if training and shape[0] * h.prod(shape[2:]) < 2:
        shape = (2,) + shape[1:]  # more than one value per channel
    C = shape[1]
    x = h.data(draw, shape)
    rm, rv = h.running_stats(draw, C)
    w, b = h.affine(draw, (C,))
    kwargs = {
        "training": training,
        "momentum": draw(st.sampled_from([0.1, 0.01, 0.5])),
        "eps": draw(h.eps_values()),
    }
    return (x, rm, rv, w, b), kwargs


def _examples(rng):
    x = rng.standard_normal((4, 3, 2, 2))
    x2 = rng.standard_normal((6, 4)) * 2.0 - 1.0
    w, b = rng.standard_normal(3) + 1.5, rng.standard_normal(3)
    rm, rv = rng.standard_normal(3), rng.uniform(0.5, 2.0, 3)
    return [
        Case("train NCHW affine", (x, rm.copy(), rv.copy(), w, b, True), mutates=(1, 2)),
        Case("train 2d no stats", (x2, None, None, None, None, True)),
        Case("train offset 1e4", (x2 + 1e4, None, None, rng.standard_normal(4), None, True)),
        Case("train channels-last", (np.moveaxis(x, 1, -1).copy(), None, None, w, b, True),
             {"channel_axis": -1}),
        Case("eval", (x, rm, rv, w, b, False)),
        Case("eval keras-style eps", (x2, rng.standard_normal(4), rng.uniform(0.5, 2.0, 4)), {"eps": 1e-3}),
    ]


def _conformance_base(rng, o, h):
    """Conformance case: (N, C, *spatial), running statistics and affine per the
    options (``training``, ``stats``, ``affine``, ``channels_last``, ``n``, ``spatial``)."""
    n = o.get("n")
    N = int(rng.integers(2, 5)) if n is None else n
    C = int(rng.integers(2, 6))
    sp = o.get("spatial") or h.spatial(rng, 0 if N >= 2 else 1, 2)
    if not sp and N < 4:
        N = 4
    x = h.data(rng, (N, C) + sp)
    training, stats, rm, rv, w, b = h.running_and_affine(rng, C, o)
    args = [x, rm, rv, w, b, training, h.momentum(rng), h.eps(rng)]
    kwargs = {}
    group0 = (slice(None), 0)
    if o.get("channels_last"):
        args[0] = np.ascontiguousarray(np.moveaxis(x, 1, -1))
        kwargs["channel_axis"] = -1
        group0 = (Ellipsis, 0)
    mutates = (1, 2) if training and stats else ()
    return args, kwargs, mutates, group0


register(Spec(
    name="batch_norm",
    function=batch_norm,
    bind=_bind,
    reference=reference.batch_norm,
    family="activations",
    nap=Area(A.BATCH, "batch: (N, spatial) per channel", batch=True),
    nop=Operation(O.STANDARDIZE, "standardize (batch statistics in training, running statistics in eval)", centres=True),
    nrr=Recovery((R.AFFINE,), "affine per channel"),
    citation="Ioffe & Szegedy 2015, Batch Normalization, ICML, arXiv:1502.03167",
    examples=_examples,
    strategy=_strategy,
    layer=_LAYER,
    convention_options={"momentum_convention": ("torch", "keras"),
                        "running_var_unbiased": (True, False)},
    conventions={
        "momentum_convention": "torch: new = (1-m) old + m batch; keras: new = m old + (1-m) batch",
        "running_var_unbiased": "True: running variance gets n/(n-1) var (PyTorch); False: biased",
        "channel_axis": "1 (NCHW, PyTorch); -1 for channels-last",
        "eps": "inside the square root, default 1e-5",
    },
    differentiable=("input", "weight", "bias", "running_mean", "running_var"),
    catalogue=Catalogue(
        base=_conformance_base,
        variants={
            "train_affine": {}, "train_plain": {"affine": False},
            "train_nostats": {"stats": False}, "eval_affine": {"training": False},
            "eval_plain": {"training": False, "affine": False},
            "channels_last_train": {"channels_last": True},
            "channels_last_eval": {"channels_last": True, "training": False},
        },
        only={"n1_spatial": ("4", {"n": 1, "spatial": (2, 3)})},
    ),
))
