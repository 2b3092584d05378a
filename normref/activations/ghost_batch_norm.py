"""Ghost batch normalization (Hoffer, Hubara & Soudry 2017, arXiv:1705.08741)."""
from __future__ import annotations

import numpy as np

from .. import reference
from ..catalogue import Catalogue
from ..partition import Partition
from ..layer_call import LayerCall, REQUIRED
from ..registry import Case, Spec, register
from ..taxonomy import Area, AreaKind as A, Operation, OpKind as O, Recovery, RecoveryKind as R
from ..standardize import Standardization
from ..numerics import check_flag
from ._common import RunningStats, affine_param, eps_value, input_array, positive_int, running_options
from .batch_norm import channel_partition, running_buffers_fixed

__all__ = ["ghost_batch_norm"]


def _bind(input, virtual_batch_size, running_mean=None, running_var=None, weight=None,
          bias=None, training=True, momentum=0.1, eps=1e-5):
    x = input_array(input, 2)
    v = positive_int("virtual_batch_size", virtual_batch_size)
    N, C = x.shape[:2]
    HW = int(np.prod(x.shape[2:], dtype=np.int64))
    ctx = f"one value per channel, input shape {x.shape}"
    w = affine_param("weight", weight, (C,), ctx)
    b = affine_param("bias", bias, (C,), ctx)
    eps = eps_value(eps)
    training = check_flag("training", training)
    momentum = running_options(momentum)[0]
    if not training:
        return Standardization(x, channel_partition("ghost_batch_norm", x, 1), eps=eps,
                               weight=w, bias=b,
                               fixed=running_buffers_fixed(running_mean, running_var, C))
    if N % v:
        raise ValueError(
            f"virtual_batch_size={v} must divide the batch size N={N} (input shape {x.shape})"
        )
    if v * HW == 1:
        raise ValueError(
            f"Expected more than 1 value per channel in each virtual batch, got "
            f"virtual_batch_size={v} and input of shape {x.shape}"
        )
    part = Partition("ghost_batch_norm", (N // v, v, C, HW), group_axes=(0, 2), affine_axes=(2,))
    running = RunningStats(running_mean, running_var, C, momentum=momentum, owner="ghost_batch_norm")

    def update(plan):
        means, variances = plan.group_mean(), plan.group_var()
        # one update per ghost batch, in order
        running.update_many([(means[k], variances[k], v * HW) for k in range(means.shape[0])])

    return Standardization(x, part, eps=eps, weight=w, bias=b,
                           on_forward=update if running.active else None)


def ghost_batch_norm(input, virtual_batch_size, running_mean=None, running_var=None,
                     weight=None, bias=None, training=True, momentum=0.1, eps=1e-5):
    r"""Ghost batch normalization: batch norm within virtual sub-batches.

    .. math::

        y_{k} = \frac{x_{k} - \mu_{kc}}{\sqrt{\sigma_{kc}^2 + \epsilon}} \gamma_c + \beta_c

    The batch axis 0 is split into consecutive chunks ``k`` of
    ``virtual_batch_size`` samples; each chunk is batch-normalized with its
    own per-channel mean and biased variance.  The running statistics, if
    given, are updated once per chunk in order (PyTorch rule, unbiased
    variance), exactly as calling ``batch_norm`` on each chunk in turn.  Eval
    (``training=False``) is batch norm with the running statistics.

    Hoffer, Hubara & Soudry, "Train longer, generalize better: closing the
    generalization gap in large batch training of neural networks", NeurIPS 2017.
    """
    return _bind(input, virtual_batch_size, running_mean, running_var, weight, bias,
                 training, momentum, eps).forward()


#: the layer fact: training mode in virtual batches of the cases (4 of the table's 8)
_LAYER = LayerCall(lambda x, w, b, o: (x, o["virtual_batch_size"], None, None, w, b, True),
                   weight=4, bias=5, options={"virtual_batch_size": REQUIRED},
                   table={"virtual_batch_size": 4})


def _strategy(draw, h):
    """Hypothesis draw of a training call (``Spec.strategy``): N a multiple of the
    virtual batch size, at least two values per (virtual batch, channel)."""
    st = h.st
    vb = draw(st.integers(1, 4))
    chunks = draw(st.integers(1, 3))
    C = draw(st.integers(1, 4))
    spatial = draw(h.shapes(0, 2, max_side=4, max_size=max(1, h.MAX_SIZE // (vb * chunks * C))))
    if vb * h.prod(spatial) < 2:
        vb = 2
    x = h.data(draw, (vb * chunks, C) + tuple(spatial))
    rm = rv = None
    if draw(st.booleans()):
        rm, rv = h.running_stats(draw, C)
    w, b = h.affine(draw, (C,))
    kwargs = {"training": True, "momentum": 0.1, "eps": draw(h.eps_values())}
    return (x, vb, rm, rv, w, b), kwargs


def _examples(rng):
    x = rng.standard_normal((6, 3, 2))
    w, b = rng.standard_normal(3), rng.standard_normal(3)
    rm, rv = rng.standard_normal(3), rng.uniform(0.5, 2.0, 3)
    return [
        Case("v=2 affine", (x, 2, None, None, w, b)),
        Case("v=3 running", (x + 1e4, 3, rm.copy(), rv.copy(), w, None), mutates=(2, 3)),
        Case("v=N", (rng.standard_normal((4, 2)), 4)),
        Case("eval", (x, 2, rm, rv, w, b, False)),
    ]


def _conformance_base(rng, o, h):
    """Conformance case: N a multiple of the virtual batch size, batch-norm options."""
    v = int(rng.integers(2, 4))
    N = v * int(rng.integers(1, 4)) if o.get("n") is None else o["n"]
    C = int(rng.integers(1, 5))
    sp = h.spatial(rng, 0, 1)
    x = h.data(rng, (N, C) + sp)
    training, stats, rm, rv, w, b = h.running_and_affine(rng, C, o)
    args = [x, v, rm, rv, w, b, training, h.momentum(rng), h.eps(rng)]
    mutates = (2, 3) if training and stats else ()
    return args, {}, mutates, (slice(0, v), 0)


register(Spec(
    name="ghost_batch_norm",
    function=ghost_batch_norm,
    bind=_bind,
    reference=reference.ghost_batch_norm,
    family="activations",
    nap=Area(A.GHOST_BATCH, "ghost batch: (virtual batch, spatial) per (chunk, channel)", batch=True),
    nop=Operation(O.STANDARDIZE, "standardize", centres=True),
    nrr=Recovery((R.AFFINE,), "affine per channel"),
    citation="Hoffer, Hubara & Soudry 2017, Train longer, generalize better, NeurIPS, arXiv:1705.08741",
    examples=_examples,
    strategy=_strategy,
    layer=_LAYER,
    differentiable=("input", "weight", "bias", "running_mean", "running_var"),
    catalogue=Catalogue(base=_conformance_base,
                        variants={"train_affine": {}, "train_nostats": {"stats": False},
                                  "eval": {"training": False}}),
))
