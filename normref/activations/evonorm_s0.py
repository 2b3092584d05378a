"""EvoNorm-S0 (Liu, Brock, Simonyan & Le 2020, arXiv:2004.02967)."""
from __future__ import annotations

from ..compose import Composite, GroupStd, Product, Quotient, Sigmoid, Step, View
from ..partition import Partition
from ..recovery import Affine, channel_shape
from ..reference.evonorm import evonorm_s0 as _reference
from ..catalogue import Catalogue
from ..layer_call import REQUIRED, LayerCall
from ..registry import Case, Spec, register
from ..standardize import Standardization
from ..taxonomy import Area, AreaKind as A, Operation, OpKind as O, Recovery, RecoveryKind as R
from ._common import affine_param, eps_value, input_array
from .group_norm import channel_groups

__all__ = ["evonorm_s0"]


def _bind(input, num_groups, weight=None, bias=None, v=None, eps=1e-5):
    x = input_array(input, 2)
    N, C, HW, G = channel_groups(x, num_groups)
    ctx = f"one value per channel, input shape {x.shape}"
    w = affine_param("weight", weight, (C,), ctx)
    b = affine_param("bias", bias, (C,), ctx)
    vv = affine_param("v", v, (C,), ctx)
    eps = eps_value(eps)
    S = (N, G, C // G, HW)
    plan = Standardization(x, Partition("evonorm_s0", S, group_axes=(0, 1)), eps=eps)
    pshape = channel_shape(x.ndim, C)
    values = {"input": x}
    steps = [Step("s", GroupStd(plan), {"input": "input"}),
             Step("s_", View((N, G, 1, 1)), ("s",))]
    num = "input"
    if vv is not None:
        values["v"] = vv
        steps += [Step("v_", View(pshape), ("v",)),
                  Step("vx", Product(), ("v_", "input")),
                  Step("gate", Sigmoid(), ("vx",)),
                  Step("num", Product(), ("input", "gate"))]
        num = "num"
    steps += [Step("num_", View(S), (num,)),
              Step("q_", Quotient(), ("num_", "s_")),
              Step("q", View(x.shape), ("q_",))]
    aff = tuple(nm for nm, arr in (("weight", w), ("bias", b)) if arr is not None)
    for nm, arr in (("weight", w), ("bias", b)):
        if arr is not None:
            values[nm] = arr
    if aff:
        steps.append(Step("y", Affine(pshape, w is not None, b is not None), ("q",) + aff))
    return Composite("evonorm_s0", values, steps)


def evonorm_s0(input, num_groups, weight=None, bias=None, v=None, eps=1e-5):
    r"""EvoNorm-S0: sample-based normalization-activation, for (N, C, *spatial) input.

    .. math::

        y = \frac{x\,\mathrm{sigmoid}(v x)}{\sqrt{\sigma_{ng}^2 + \epsilon}}\,\gamma + \beta

    :math:`\sigma_{ng}^2` the biased variance over the channels
    ``[g C/G, (g+1) C/G)`` and the spatial axes of sample n (group norm's
    groups; ``num_groups`` must divide C, as timm asserts -- the TF reference
    instead lowers the group count until it divides), ``v`` per channel.
    ``v=None`` (no nonlinearity) gives :math:`x / \sqrt{\sigma_{ng}^2 + \epsilon}`:
    no mean is subtracted from x, only from the variance.  eps inside the
    root (1e-5, paper and timm's S0; timm's S0a uses 1e-3).

    Derivatives are composed (:mod:`normref.compose`): the group standard
    deviation's :math:`\dot s = \frac1n \sum \hat x \dot x`, the sigmoid gate
    :math:`s(1-s)`, products and the quotient.  The gate is
    ``scipy.special.expit`` (no overflow for any v x); statistics come from the
    standardization kernel (corrected two-pass moments, rescaled for huge data).

    Liu, Brock, Simonyan & Le, "Evolving Normalization-Activation Layers",
    NeurIPS 2020.
    """
    return _bind(input, num_groups, weight, bias, v, eps).forward()


#: the layer fact: each case, num_groups groups of its features (3 of 4 in the table)
_LAYER = LayerCall(lambda x, w, b, o: (x, o["num_groups"], w, b, o["v"]), weight=2, bias=3,
                   options={"num_groups": REQUIRED, "v": None}, table={"num_groups": 3})


def _strategy(draw, h):
    """Hypothesis draw of a call (``Spec.strategy``): C = G x per, at least two values
    per group, v per channel or None."""
    st = h.st
    N, G, C, spatial = h.channel_groups(draw)
    x = h.data(draw, (N, C) + spatial)
    w, b = h.affine(draw, (C,))
    v = draw(st.one_of(st.none(), h.float_arrays((C,), scale=2.0)))
    return (x, G, w, b, v), {"eps": draw(h.eps_values())}


def _examples(rng):
    x = rng.standard_normal((2, 6, 3, 2))
    w, b = rng.standard_normal(6) + 1.0, rng.standard_normal(6)
    v = rng.standard_normal(6) * 2.0
    return [
        Case("G=3 affine v", (x, 3, w, b, v)),
        Case("G=2 v, no affine", (x * 3 + 2, 2, None, None, v)),
        Case("G=1 v=None", (x, 1, w, None)),
        Case("G=C bias only, 1d", (rng.standard_normal((3, 4, 5)), 4, None, b[:4], v[:4]),
             {"eps": 1e-3}),
    ]


def _conformance_base(rng, o, h):
    """Conformance case: (N, G k, *spatial); options ``affine``, ``v`` (False: v=None), ``n``."""
    N = int(rng.integers(1, 4)) if o.get("n") is None else o["n"]
    G = int(rng.integers(1, 4))
    k = int(rng.integers(1, 4))
    C = G * k
    x = h.data(rng, (N, C) + h.spatial(rng, 0 if k > 1 else 1, 2))
    affine = o.get("affine", True)
    w = rng.standard_normal(C) + 1.0 if affine else None
    b = rng.standard_normal(C) if affine else None
    v = rng.standard_normal(C) * 1.5 if o.get("v", True) else None
    return [x, G, w, b, v, h.eps(rng)], {}, (), (0, slice(0, k))


register(Spec(
    name="evonorm_s0",
    function=evonorm_s0,
    bind=_bind,
    reference=_reference,
    family="activations",
    nap=Area(A.GROUP, "group: (C/G, spatial) per (n, g)"),
    nop=Operation(O.COMPOSED, "x sigmoid(v x) / group std: no mean subtracted from x",
                  centres=False),
    nrr=Recovery((R.AFFINE,), "affine per channel"),
    citation="Liu, Brock, Simonyan & Le 2020, Evolving Normalization-Activation Layers, "
             "NeurIPS, arXiv:2004.02967",
    examples=_examples,
    strategy=_strategy,
    layer=_LAYER,
    conventions={
        "num_groups": "must divide C (timm); the TF reference lowers it until it does",
        "eps": "inside the root, 1e-5 (paper, timm S0); timm S0a 1e-3",
        "v": "None: no nonlinearity, x / group std",
    },
    differentiable=("input", "weight", "bias", "v"),
    catalogue=Catalogue(
        base=_conformance_base,
        variants={"affine": {}, "plain": {"affine": False}, "v_none": {"v": False}},
    ),
))
