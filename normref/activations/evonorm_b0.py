"""EvoNorm-B0 (Liu, Brock, Simonyan & Le 2020, arXiv:2004.02967)."""
from __future__ import annotations

import numpy as np

from ..compose import Composite, GroupStd, Maximum, Product, Quotient, SqrtShift, Step, Sum, View
from ..numerics import as_float64, check_flag, check_shape
from ..partition import Partition
from ..recovery import Affine, channel_shape
from ..reference.evonorm import evonorm_b0 as _reference
from ..catalogue import Catalogue
from ..layer_call import LayerCall
from ..registry import Case, Spec, register
from ..standardize import Standardization
from ..taxonomy import Area, AreaKind as A, Operation, OpKind as O, Recovery, RecoveryKind as R
from ._common import RunningStats, affine_param, eps_value, input_array, running_options

__all__ = ["evonorm_b0"]


def _bind(input, running_var, weight=None, bias=None, v=None, training=False, momentum=0.1,
          eps=1e-5, *, momentum_convention="torch", running_var_unbiased=True):
    x = input_array(input, 2)
    N, C = x.shape[:2]
    HW = int(np.prod(x.shape[2:], dtype=np.int64))
    ctx = f"one value per channel, input shape {x.shape}"
    w = affine_param("weight", weight, (C,), ctx)
    b = affine_param("bias", bias, (C,), ctx)
    vv = affine_param("v", v, (C,), ctx)
    eps = eps_value(eps)
    training = check_flag("training", training)
    momentum, momentum_convention, unbiased, _ = running_options(
        momentum, momentum_convention, running_var_unbiased)
    pshape = channel_shape(x.ndim, C)
    values = {"input": x}
    steps = []
    running = None
    if training:
        if N * HW == 1 and running_var is not None and unbiased:
            raise ValueError(
                f"Expected more than 1 value per channel when training, got input of shape "
                f"{x.shape}: the unbiased batch variance for running_var is undefined")
        running = RunningStats(None, running_var, C, momentum=momentum,
                               momentum_convention=momentum_convention, unbiased=unbiased,
                               owner="evonorm_b0")
        batch = Standardization(x, Partition("evonorm_b0", (N, C, HW), group_axes=(1,)), eps=eps)
        steps.append(Step("sB", GroupStd(batch), {"input": "input"}))
    else:
        if running_var is None:
            raise ValueError("running_var is required when training=False (eval mode divides "
                             "by sqrt(running_var + eps))")
        rv = as_float64("running_var", running_var)
        check_shape("running_var", rv, (C,), "one value per channel")
        with np.errstate(invalid="ignore"):
            bad = np.isfinite(rv) & ~(rv + eps > 0)
        if bad.any():
            c = int(np.flatnonzero(bad)[0])
            raise ValueError(f"running_var + eps is not positive in channel {c} (running_var "
                             f"{float(rv[c])!r}, eps={eps!r}): sqrt(running_var + eps) is undefined")
        values["running_var"] = rv
        steps.append(Step("sB", SqrtShift(eps), ("running_var",)))
    steps.append(Step("sB_", View(pshape), ("sB",)))
    if vv is None:
        steps.append(Step("q", Quotient(), ("input", "sB_")))
    else:
        values["v"] = vv
        inst = Standardization(x, Partition("evonorm_b0", (N, C, HW), group_axes=(0, 1)), eps=eps)
        steps += [
            Step("sHW", GroupStd(inst), {"input": "input"}),
            Step("sHW_", View((N, C) + (1,) * (x.ndim - 2)), ("sHW",)),
            Step("v_", View(pshape), ("v",)),
            Step("vx", Product(), ("v_", "input")),
            Step("right", Sum(), ("vx", "sHW_")),
            Step("den", Maximum(), ("sB_", "right")),
            Step("q", Quotient(), ("input", "den")),
        ]
    aff = tuple(nm for nm, arr in (("weight", w), ("bias", b)) if arr is not None)
    for nm, arr in (("weight", w), ("bias", b)):
        if arr is not None:
            values[nm] = arr
    if aff:
        steps.append(Step("y", Affine(pshape, w is not None, b is not None), ("q",) + aff))

    def update(plan):
        running.update(None, batch.group_var(), N * HW)

    active = running is not None and running.active and x.size > 0
    return Composite("evonorm_b0", values, steps, on_forward=update if active else None)


def evonorm_b0(input, running_var, weight=None, bias=None, v=None, training=False,
               momentum=0.1, eps=1e-5, *, momentum_convention="torch",
               running_var_unbiased=True):
    r"""EvoNorm-B0: batch-dependent normalization-activation, for (N, C, *spatial) input.

    .. math::

        y = \frac{x}{\max\big(\sqrt{\sigma_B^2 + \epsilon},\;
             v\,x + \sqrt{\sigma_{HW}^2 + \epsilon}\big)}\,\gamma + \beta

    :math:`\sigma_B^2` the biased variance of each channel over (N, spatial)
    (``running_var`` in eval, then differentiable), :math:`\sigma_{HW}^2` the
    biased variance over the spatial axes of each (n, c), ``v`` per channel;
    ``v=None`` (no nonlinearity, timm's ``apply_act=False``) divides by the
    batch standard deviation alone.  No mean is subtracted from x.  Training
    updates ``running_var`` in place (when given) from the batch variance:
    ``momentum_convention="torch"`` with the unbiased ``n/(n-1)`` variance by
    default (timm's EvoNorm2dB0); the TensorFlow reference (tensorflow/tpu)
    is ``momentum=0.9, momentum_convention="keras", running_var_unbiased=False``.
    Both place eps inside both roots; timm's default eps is 1e-3, the
    paper's and TF's 1e-5 (the default here).

    Derivatives are composed (:mod:`normref.compose`): the group standard
    deviations' :math:`\dot s = \frac1n\sum \hat x \dot x`, the quotient, and
    the maximum, whose cotangent goes to the larger branch (half to each at
    an exact tie, as ``torch.maximum``).  Numerics: statistics from the
    standardization kernels (corrected two-pass moments); an intermediate
    that overflows (``v x``) is a ValueError, never a silent ``x / inf = 0``.

    Liu, Brock, Simonyan & Le, "Evolving Normalization-Activation Layers",
    NeurIPS 2020.
    """
    return _bind(input, running_var, weight, bias, v, training, momentum, eps,
                 momentum_convention=momentum_convention,
                 running_var_unbiased=running_var_unbiased).forward()


#: the layer fact: training mode, the features as channels (each a one-position
#: "instance": then var_HW = 0 and the max compares the batch std with v x + sqrt(eps))
_LAYER = LayerCall(lambda x, w, b, o: (x, None, w, b, o["v"], True), weight=2, bias=3,
                   options={"v": None})


def _strategy(draw, h):
    """Hypothesis draw of a call (``Spec.strategy``): training or eval, v per channel or
    None, more than one value per channel in training."""
    st = h.st
    training = draw(st.booleans())
    shape = draw(h.shapes(2, 4, max_side=5))
    if h.prod(shape[2:]) < 2:  # the instance variance needs two spatial values ...
        shape = shape[:2] + (2,) + tuple(shape[3:])
    C = shape[1]
    x = h.data(draw, shape)
    _, rv = h.running_stats(draw, C)
    w, b = h.affine(draw, (C,))
    v = draw(st.one_of(st.none(), h.float_arrays((C,), scale=2.0)))
    kwargs = {"training": training, "momentum": draw(st.sampled_from([0.1, 0.5])),
              "eps": draw(h.eps_values())}
    return (x, rv, w, b, v), kwargs


def _examples(rng):
    x = rng.standard_normal((3, 4, 3, 2))
    w, b = rng.standard_normal(4) + 1.0, rng.standard_normal(4)
    # v of both signs and sizes: each branch of the max wins somewhere
    v = np.array([1.5, -0.8, 0.3, 4.0])
    rv = rng.uniform(0.5, 2.0, 4)
    return [
        Case("train affine v", (x, rv.copy(), w, b, v, True), mutates=(1,)),
        Case("train TF conventions", (x * 2 + 1, rv.copy(), None, b, v, True, 0.9),
             {"momentum_convention": "keras", "running_var_unbiased": False}, mutates=(1,)),
        Case("train no running_var, v=None", (x, None, w, None, None, True)),
        Case("eval v", (x, rv, w, b, v, False)),
        Case("eval v=None 1d", (rng.standard_normal((4, 3, 5)), rv[:3], None, None, None, False),
             {"eps": 1e-3}),
    ]


def _conformance_base(rng, o, h):
    """Conformance case: (N, C, *spatial); options ``training``, ``stats`` (running_var
    given), ``affine``, ``v`` (False: v=None, the batch std alone), ``n``."""
    n = o.get("n")
    N = int(rng.integers(2, 5)) if n is None else n
    C = int(rng.integers(2, 6))
    sp = h.spatial(rng, 1, 2)
    x = h.data(rng, (N, C) + sp)
    training, stats, _, rv, w, b = h.running_and_affine(rng, C, o)
    v = rng.standard_normal(C) * 1.5 if o.get("v", True) else None
    args = [x, rv, w, b, v, training, h.momentum(rng), h.eps(rng)]
    return args, {}, (1,) if training and stats else (), (slice(None), 0)


register(Spec(
    name="evonorm_b0",
    function=evonorm_b0,
    bind=_bind,
    reference=_reference,
    family="activations",
    nap=Area(A.BATCH, "batch: (N, spatial) per channel, and spatial per (n, c)", batch=True),
    nop=Operation(O.COMPOSED, "x / max(batch std, v x + instance std): no mean subtracted",
                  centres=False),
    nrr=Recovery((R.AFFINE,), "affine per channel"),
    citation="Liu, Brock, Simonyan & Le 2020, Evolving Normalization-Activation Layers, "
             "NeurIPS, arXiv:2004.02967",
    examples=_examples,
    strategy=_strategy,
    layer=_LAYER,
    convention_options={"momentum_convention": ("torch", "keras"),
                        "running_var_unbiased": (True, False)},
    conventions={
        "momentum_convention": "torch (timm) or keras (TF reference, momentum 0.9)",
        "running_var_unbiased": "True: n/(n-1) batch variance (timm); False: biased (TF)",
        "eps": "inside both roots; 1e-5 (paper, TF), timm uses 1e-3",
        "v": "None: no nonlinearity, x / batch std",
    },
    differentiable=("input", "weight", "bias", "v", "running_var"),
    catalogue=Catalogue(
        base=_conformance_base,
        variants={"train_affine": {}, "train_nostats": {"stats": False},
                  "train_v_none": {"v": False}, "eval_affine": {"training": False}},
    ),
))
