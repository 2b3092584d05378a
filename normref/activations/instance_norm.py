"""Instance normalization (Ulyanov, Vedaldi & Lempitsky 2016, arXiv:1607.08022)."""
from __future__ import annotations

import numpy as np

from .. import reference
from ..catalogue import Catalogue
from ..partition import Partition
from ..layer_call import LayerCall, channels_view
from ..registry import Case, Spec, register
from ..taxonomy import Area, AreaKind as A, Operation, OpKind as O, Recovery, RecoveryKind as R
from ..standardize import Standardization
from ..numerics import check_flag
from ._common import RunningStats, affine_param, eps_value, input_array, running_options
from .batch_norm import running_buffers_fixed

__all__ = ["instance_norm"]


def _bind(input, running_mean=None, running_var=None, weight=None, bias=None,
          use_input_stats=True, momentum=0.1, eps=1e-5):
    x = input_array(input, 2)
    N, C = x.shape[:2]
    HW = int(np.prod(x.shape[2:], dtype=np.int64))
    part = Partition("instance_norm", (N, C, HW), group_axes=(0, 1), affine_axes=(1,))
    ctx = f"one value per channel, input shape {x.shape}"
    w = affine_param("weight", weight, (C,), ctx)
    b = affine_param("bias", bias, (C,), ctx)
    eps = eps_value(eps)
    use_input_stats = check_flag("use_input_stats", use_input_stats)
    momentum = running_options(momentum)[0]
    if not use_input_stats:
        return Standardization(x, part, eps=eps, weight=w, bias=b,
                               fixed=running_buffers_fixed(running_mean, running_var, C,
                                                           "use_input_stats=False"))
    if HW == 1:
        raise ValueError(
            f"Expected more than 1 spatial element when training, got input of shape {x.shape}: "
            "instance statistics of one value are undefined"
        )
    running = RunningStats(running_mean, running_var, C, momentum=momentum, owner="instance_norm")

    def update(plan):
        # PyTorch: average over the batch of the per-instance statistics
        unb = HW / (HW - 1)
        running.unbiased = False
        running.update(plan.group_mean().mean(axis=0), (plan.group_var() * unb).mean(axis=0), HW)

    return Standardization(x, part, eps=eps, weight=w, bias=b,
                           on_forward=update if running.active else None)


def instance_norm(input, running_mean=None, running_var=None, weight=None, bias=None,
                  use_input_stats=True, momentum=0.1, eps=1e-5):
    r"""Instance normalization: per sample and channel, over the spatial axes.

    .. math::

        y_{nc} = \frac{x_{nc} - \mu_{nc}}{\sqrt{\sigma_{nc}^2 + \epsilon}} \gamma_c + \beta_c

    with mean and biased variance over the spatial axes of each (n, c).
    Mirrors ``torch.nn.functional.instance_norm``: with ``use_input_stats``
    (default) the instance statistics are used and, if given, the running
    statistics updated in place with the batch average of the per-instance
    means and unbiased variances; ``use_input_stats=False`` normalizes with
    ``running_mean`` / ``running_var`` (then differentiable).  One spatial
    element with ``use_input_stats`` raises ValueError.  eps inside the root.

    Ulyanov, Vedaldi & Lempitsky, "Instance Normalization: The Missing
    Ingredient for Fast Stylization", 2016.
    """
    return _bind(input, running_mean, running_var, weight, bias, use_input_stats,
                 momentum, eps).forward()



#: the layer fact: the features viewed as ``channels`` channels of F / channels positions
#: (one channel by default; the table's 3 channels of 4)
_LAYER = LayerCall(lambda x, w, b, o: (x, None, None, w, b, True), weight=3, bias=4,
                   view=channels_view("instance_norm"), options={"channels": 1}, table={"channels": 3})


def _strategy(draw, h):
    """Hypothesis draw of a call (``Spec.strategy``): at least two spatial values,
    running statistics or not (input statistics used)."""
    st = h.st
    N = draw(st.integers(1, 3))
    C = draw(st.integers(1, 4))
    spatial = draw(h.shapes(1, 2, max_side=5, max_size=max(2, h.MAX_SIZE // (N * C))))
    if h.prod(spatial) < 2:
        spatial = (2,) + tuple(spatial[1:])
    x = h.data(draw, (N, C) + tuple(spatial))
    rm = rv = None
    if draw(st.booleans()):
        rm, rv = h.running_stats(draw, C)
    w, b = h.affine(draw, (C,))
    return (x, rm, rv, w, b), {"use_input_stats": True, "eps": draw(h.eps_values())}


def _examples(rng):
    x = rng.standard_normal((2, 3, 4, 2))
    w, b = rng.standard_normal(3), rng.standard_normal(3)
    rm, rv = rng.standard_normal(3), rng.uniform(0.5, 2.0, 3)
    return [
        Case("affine", (x, None, None, w, b)),
        Case("running update", (x * 3 + 1, rm.copy(), rv.copy(), w, None), mutates=(1, 2)),
        Case("1d spatial", (rng.standard_normal((3, 2, 7)),)),
        Case("running stats", (x, rm, rv, w, b, False)),
    ]


def _conformance_base(rng, o, h):
    """Conformance case: (N, C, *spatial) with 1-2 spatial axes; option ``running``:
    "none", "update" (use_input_stats with running statistics) or "eval"."""
    N = int(rng.integers(1, 4)) if o.get("n") is None else o["n"]
    C = int(rng.integers(1, 5))
    sp = h.spatial(rng, 1, 2, 2, 5)
    x = h.data(rng, (N, C) + sp)
    mode = o.get("running", "none")
    rm = rng.standard_normal(C) * 0.5 if mode != "none" else None
    rv = rng.uniform(0.5, 2.0, C) if mode != "none" else None
    affine = o.get("affine", True)
    w = rng.standard_normal(C) + 1.0 if affine else None
    b = rng.standard_normal(C) if affine else None
    use_input_stats = mode != "eval"
    args = [x, rm, rv, w, b, use_input_stats, h.momentum(rng), h.eps(rng)]
    mutates = (1, 2) if mode == "update" else ()
    return args, {}, mutates, (0, 0)


register(Spec(
    name="instance_norm",
    function=instance_norm,
    bind=_bind,
    reference=reference.instance_norm,
    family="activations",
    nap=Area(A.INSTANCE, "instance: spatial per (n, c)"),
    nop=Operation(O.STANDARDIZE, "standardize (optional running statistics)", centres=True),
    nrr=Recovery((R.AFFINE,), "affine per channel"),
    citation="Ulyanov, Vedaldi & Lempitsky 2016, Instance Normalization, arXiv:1607.08022",
    examples=_examples,
    strategy=_strategy,
    layer=_LAYER,
    differentiable=("input", "weight", "bias", "running_mean", "running_var"),
    catalogue=Catalogue(
        base=_conformance_base,
        variants={"affine": {}, "plain": {"affine": False}, "running_update": {"running": "update"},
                  "running_eval": {"running": "eval"}},
    ),
))
