"""Batch group normalization (Zhou et al. 2020, "Batch Group Normalization")."""
from __future__ import annotations

from .. import reference
from ..catalogue import Catalogue
from ..partition import Partition
from ..layer_call import LayerCall, REQUIRED
from ..registry import Case, Spec, register
from ..taxonomy import Area, AreaKind as A, Operation, OpKind as O, Recovery, RecoveryKind as R
from ..standardize import Standardization
from ._common import affine_param, eps_value, input_array
from .group_norm import channel_groups

__all__ = ["batch_group_norm"]


def _bind(input, num_groups, weight=None, bias=None, eps=1e-5):
    x = input_array(input, 2)
    N, C, HW, G = channel_groups(x, num_groups)
    if N * (C // G) * HW == 1:
        raise ValueError(
            f"Expected more than 1 value per group, got input of shape {x.shape} with "
            f"num_groups={G}"
        )
    part = Partition("batch_group_norm", (N, G, C // G, HW), group_axes=(1,), affine_axes=(1, 2))
    ctx = f"one value per channel, input shape {x.shape}"
    w = affine_param("weight", weight, (C,), ctx)
    b = affine_param("bias", bias, (C,), ctx)
    return Standardization(x, part, eps=eps_value(eps), weight=w, bias=b)


def batch_group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    r"""Batch group normalization: statistics per channel group over the batch.

    .. math::

        y = \frac{x - \mu_g}{\sqrt{\sigma_g^2 + \epsilon}} \gamma_c + \beta_c

    Channels ``[g C/G, (g+1) C/G)`` form group ``g``; mean and biased variance
    over (N, C/G, spatial).  Per-channel affine, eps inside the root.  Batch
    statistics only (the training-mode forward of the paper).  G = C is batch
    norm; G = 1 normalizes the whole batch with one mean and variance.

    Zhou, Sun, Ye, Lan, Luo, Lai, Esperanca, Yang & Li, "Batch Group
    Normalization", 2020.
    """
    return _bind(input, num_groups, weight, bias, eps).forward()


#: the layer fact: num_groups groups of features over the whole batch (3 of 4 in the table)
_LAYER = LayerCall(lambda x, w, b, o: (x, o["num_groups"], w, b), weight=2, bias=3,
                   options={"num_groups": REQUIRED}, table={"num_groups": 3})


def _strategy(draw, h):
    """Hypothesis draw of a call (``Spec.strategy``): C = G x per, at least two values
    per (batch, group)."""
    N, G, C, spatial = h.channel_groups(draw, over_batch=True)
    x = h.data(draw, (N, C) + spatial)
    w, b = h.affine(draw, (C,))
    return (x, G, w, b), {"eps": draw(h.eps_values())}


def _examples(rng):
    x = rng.standard_normal((3, 4, 2, 2))
    return [
        Case("G=2 affine", (x, 2, rng.standard_normal(4), rng.standard_normal(4))),
        Case("G=1", (x * 2 + 1e4, 1)),
        Case("G=C 2d", (rng.standard_normal((5, 3)), 3, None, rng.standard_normal(3))),
    ]


def _conformance_base(rng, o, h):
    """Conformance case: (N >= 2, G k, *spatial), affine or not."""
    N = int(rng.integers(2, 4)) if o.get("n") is None else o["n"]
    G = int(rng.integers(1, 4))
    k = int(rng.integers(1, 3))
    C = G * k
    sp = h.spatial(rng, 0, 2)
    x = h.data(rng, (N, C) + sp)
    affine = o.get("affine", True)
    w = rng.standard_normal(C) + 1.0 if affine else None
    b = rng.standard_normal(C) if affine else None
    return [x, G, w, b, h.eps(rng)], {}, (), (slice(None), slice(0, k))


register(Spec(
    name="batch_group_norm",
    function=batch_group_norm,
    bind=_bind,
    reference=reference.batch_group_norm,
    family="activations",
    nap=Area(A.BATCH_GROUP, "batch-group: (N, C/G, spatial) per channel group", batch=True),
    nop=Operation(O.STANDARDIZE, "standardize", centres=True),
    nrr=Recovery((R.AFFINE,), "affine per channel"),
    citation="Zhou et al. 2020, Batch Group Normalization, arXiv preprint",
    examples=_examples,
    strategy=_strategy,
    layer=_LAYER,
    differentiable=("input", "weight", "bias"),
    catalogue=Catalogue(base=_conformance_base, variants={"affine": {}, "plain": {"affine": False}}),
))
