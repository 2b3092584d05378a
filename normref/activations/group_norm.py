"""Group normalization (Wu & He 2018, arXiv:1803.08494)."""
from __future__ import annotations

import numpy as np

from .. import reference
from ..catalogue import Catalogue
from ..numerics import check_choice
from ..partition import Partition
from ..layer_call import LayerCall, REQUIRED
from ..registry import Case, Spec, register
from ..taxonomy import Area, AreaKind as A, Operation, OpKind as O, Recovery, RecoveryKind as R
from ..standardize import Standardization
from ._common import affine_param, eps_value, input_array, positive_int, stats_option

__all__ = ["group_norm"]


def channel_groups(x, num_groups):
    """(N, C, HW, C // G) after checking that G divides C."""
    G = positive_int("num_groups", num_groups)
    N, C = x.shape[:2]
    if C % G:
        raise ValueError(
            f"num_groups={G} must divide the number of channels C={C} (input shape {x.shape})"
        )
    return N, C, int(np.prod(x.shape[2:], dtype=np.int64)), G


def _bind(input, num_groups, weight=None, bias=None, eps=1e-5, *, affine="channel",
          return_stats=False):
    x = input_array(input, 2)
    N, C, HW, G = channel_groups(x, num_groups)
    check_choice("affine", affine, ("channel", "group"))
    pshape, axes = ((C,), (1, 2)) if affine == "channel" else ((G,), (1,))
    part = Partition("group_norm", (N, G, C // G, HW), group_axes=(0, 1), affine_axes=axes)
    ctx = f"affine={affine!r}, input shape {x.shape}, num_groups {G}"
    w = affine_param("weight", weight, pshape, ctx)
    b = affine_param("bias", bias, pshape, ctx)
    return Standardization(x, part, eps=eps_value(eps), weight=w, bias=b,
                           stats_shape=stats_option(return_stats, (N, G)))


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5, *, affine="channel",
               return_stats=False):
    r"""Group normalization: per sample, over groups of C/G channels and space.

    .. math::

        y = \frac{x - \mu_{ng}}{\sqrt{\sigma_{ng}^2 + \epsilon}} \gamma + \beta

    Channels ``[g C/G, (g+1) C/G)`` form group ``g`` (PyTorch order); mean and
    biased variance over those channels and all spatial axes of one sample.
    ``affine="channel"`` (PyTorch, ONNX opset 21): ``weight``/``bias`` of
    shape (C,); ``affine="group"`` (ONNX GroupNormalization opset 18): shape
    (num_groups,).  Mirrors ``torch.nn.functional.group_norm``; eps inside the
    root.  ``num_groups`` must be a positive divisor of C (ValueError).

    Statistics (``return_stats=True``): returns ``(y, mean, rstd)``, the
    mean and :math:`(\sigma_{ng}^2 + \epsilon)^{-1/2}` of each (sample,
    group), shape ``(N, num_groups)`` as ``torch.native_group_norm``'s
    ``mean`` / ``rstd`` (ONNX GroupNormalization outputs Y only).  float64,
    the mean compensated (about an ulp from the exact mean at any offset),
    rstd the multiplier the output was computed with; differentiable like the
    output (:func:`normref.vjp` takes one cotangent per output).  An input
    with no values per group (no spatial positions) is a ValueError then:
    their statistics are undefined (torch returns mean 0, rstd NaN).

    Wu & He, "Group Normalization", ECCV 2018.
    """
    return _bind(input, num_groups, weight, bias, eps, affine=affine,
                 return_stats=return_stats).forward()


#: the layer fact: each case, num_groups groups of its features (3 of 4 in the table)
_LAYER = LayerCall(lambda x, w, b, o: (x, o["num_groups"], w, b), weight=2, bias=3,
                   options={"num_groups": REQUIRED}, table={"num_groups": 3})


def _strategy(draw, h):
    """Hypothesis draw of a call (``Spec.strategy``): C = G x per, at least two values
    per group, per-channel or per-group affine."""
    st = h.st
    N, G, C, spatial = h.channel_groups(draw)
    x = h.data(draw, (N, C) + spatial)
    affine = draw(st.sampled_from(["channel", "group"]))
    w, b = h.affine(draw, (C,) if affine == "channel" else (G,))
    kwargs = {"eps": draw(h.eps_values())}
    if affine == "group":
        kwargs["affine"] = "group"
    return (x, G, w, b), kwargs


def _examples(rng):
    x = rng.standard_normal((2, 6, 3, 2))
    w, b = rng.standard_normal(6), rng.standard_normal(6)
    return [
        Case("G=3 per channel", (x, 3, w, b)),
        Case("G=2 per group", (x, 2, rng.standard_normal(2), rng.standard_normal(2)), {"affine": "group"}),
        Case("G=1 (layer-like)", (x + 1e4, 1)),
        Case("G=C (instance-like)", (x, 6, w, None), {"eps": 1e-3}),
        Case("no spatial", (rng.standard_normal((3, 4)), 2, None, rng.standard_normal(4))),
    ]


def _conformance_base(rng, o, h):
    """Conformance case: (N, G k, *spatial); options ``affine``, ``group_affine``
    (weight and bias per group, ``affine="group"``)."""
    N = int(rng.integers(1, 4)) if o.get("n") is None else o["n"]
    G = int(rng.integers(1, 4))
    k = int(rng.integers(1, 4))
    C = G * k
    sp = h.spatial(rng, 0 if k > 1 else 1, 2)
    x = h.data(rng, (N, C) + sp)
    pshape = (G,) if o.get("group_affine") else (C,)
    affine = o.get("affine", True)
    w = rng.standard_normal(pshape) + 1.0 if affine else None
    b = rng.standard_normal(pshape) if affine else None
    kwargs = {"affine": "group"} if o.get("group_affine") else {}
    return [x, G, w, b, h.eps(rng)], kwargs, (), (0, slice(0, k))


register(Spec(
    name="group_norm",
    function=group_norm,
    bind=_bind,
    reference=reference.group_norm,
    family="activations",
    nap=Area(A.GROUP, "group: (C/G, spatial) per (n, g)"),
    nop=Operation(O.STANDARDIZE, "standardize", centres=True),
    nrr=Recovery((R.AFFINE,), "affine per channel (or per group, ONNX opset 18)"),
    citation="Wu & He 2018, Group Normalization, ECCV, arXiv:1803.08494",
    examples=_examples,
    strategy=_strategy,
    layer=_LAYER,
    convention_options={"affine": ("channel", "group")},
    conventions={"affine": "channel: weight (C,) (PyTorch, ONNX-21); group: weight (G,) (ONNX-18)"},
    differentiable=("input", "weight", "bias"),
    catalogue=Catalogue(base=_conformance_base,
                        variants={"affine": {}, "plain": {"affine": False},
                                  "group_affine": {"group_affine": True}}),
))
