"""Positional normalization (Li, Wu, Lim, Belongie & Weinberger 2019, arXiv:1907.04312)."""
from __future__ import annotations

import numpy as np

from .. import reference
from ..catalogue import Catalogue
from ..partition import Partition
from ..layer_call import LayerCall
from ..registry import Case, Spec, register
from ..taxonomy import Area, AreaKind as A, Operation, OpKind as O, Recovery, RecoveryKind as R
from ..standardize import Standardization
from ._common import eps_value, input_array

__all__ = ["positional_norm"]


def _bind(input, eps=1e-5):
    x = input_array(input, 2)
    N, C = x.shape[:2]
    HW = int(np.prod(x.shape[2:], dtype=np.int64))
    part = Partition("positional_norm", (N, C, HW), group_axes=(0, 2))
    return Standardization(x, part, eps=eps_value(eps))


def positional_norm(input, eps=1e-5):
    r"""Positional normalization (PONO): standardize across channels at each position.

    .. math::

        y_{n,:,p} = \frac{x_{n,:,p} - \mu_{np}}{\sqrt{\sigma_{np}^2 + \epsilon}}

    with mean and biased variance over the channel axis 1 for every sample n
    and spatial position p.  No affine recovery (PONO passes the moments on
    instead; :meth:`Standardization.group_mean` / ``group_var`` of the bound
    plan give them).  eps inside the root.

    Li, Wu, Lim, Belongie & Weinberger, "Positional Normalization", NeurIPS 2019.
    """
    return _bind(input, eps).forward()


#: the layer fact: each case over its features (the channels of one position)
_LAYER = LayerCall(lambda x, w, b, o: (x,))


def _strategy(draw, h):
    """Hypothesis draw of a call (``Spec.strategy``): at least two channels."""
    shape = draw(h.shapes(2, 4, max_side=5, max_size=h.MAX_SIZE // 2))
    if shape[1] < 2:
        shape = (shape[0], 2) + shape[2:]
    return (h.data(draw, shape),), {"eps": draw(h.eps_values())}


def _examples(rng):
    return [
        Case("NCHW", (rng.standard_normal((2, 4, 3, 2)),)),
        Case("NCL offset", (rng.standard_normal((2, 5, 3)) + 1e4,), {"eps": 1e-3}),
    ]


def _conformance_base(rng, o, h):
    """Conformance case: (N, C, *spatial), 0-2 spatial axes."""
    N = int(rng.integers(1, 4)) if o.get("n") is None else o["n"]
    C = int(rng.integers(2, 7))
    sp = h.spatial(rng, 0, 2)
    x = h.data(rng, (N, C) + sp)
    return [x, h.eps(rng)], {}, (), (0, slice(None)) + (0,) * len(sp)


register(Spec(
    name="positional_norm",
    function=positional_norm,
    bind=_bind,
    reference=reference.positional_norm,
    family="activations",
    nap=Area(A.POSITIONAL, "positional: C per (n, position)"),
    nop=Operation(O.STANDARDIZE, "standardize", centres=True),
    nrr=Recovery((R.NONE,), "none (moments shortcut downstream)"),
    citation="Li et al. 2019, Positional Normalization, NeurIPS, arXiv:1907.04312",
    examples=_examples,
    strategy=_strategy,
    layer=_LAYER,
    catalogue=Catalogue(base=_conformance_base, variants={"random": {}}),
))
