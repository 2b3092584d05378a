"""ONNX MeanVarianceNormalization."""
from __future__ import annotations

import numbers

import numpy as np

from .. import reference
from ..catalogue import Catalogue
from ..numerics import check_choice
from ..partition import Partition
from ..layer_call import LayerCall
from ..registry import Case, Spec, register
from ..taxonomy import Area, AreaKind as A, Operation, OpKind as O, Recovery, RecoveryKind as R
from ..standardize import Standardization
from ._common import eps_value, input_array

__all__ = ["mean_variance_norm"]


def _axes_of(x, axes):
    """``axes`` as a sorted tuple of distinct non-negative axes of ``x`` (an int or ints)."""
    def is_int(a):
        return isinstance(a, numbers.Integral) and not isinstance(a, (bool, np.bool_))

    if is_int(axes):
        axes = (axes,)
    if not isinstance(axes, (tuple, list)) or not all(is_int(a) for a in axes):
        raise TypeError(f"axes must be an int or a tuple of ints, got {type(axes).__name__} {axes!r:.60}")
    axes = tuple(int(a) for a in axes)
    for a in axes:
        if not -x.ndim <= a < x.ndim:
            raise ValueError(f"axes {axes} out of range for input of shape {x.shape}")
    norm = tuple(sorted({a % x.ndim for a in axes}))
    if len(norm) != len(axes):
        raise ValueError(f"axes {axes} repeat an axis (input shape {x.shape})")
    return norm


def _bind(input, axes=(0, 2, 3), eps=1e-9, *, eps_placement="std"):
    x = input_array(input, 1)
    ax = _axes_of(x, axes)
    check_choice("eps_placement", eps_placement, ("std", "variance"))
    groups = tuple(a for a in range(x.ndim) if a not in ax)
    part = Partition("mean_variance_norm", x.shape, group_axes=groups)
    return Standardization(x, part, eps=eps_value(eps), eps_outside=eps_placement == "std")


def mean_variance_norm(input, axes=(0, 2, 3), eps=1e-9, *, eps_placement="std"):
    r"""ONNX MeanVarianceNormalization over ``axes``.

    .. math::

        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{E}[(x - \mathrm{E}[x])^2]} + \epsilon}

    Mean and biased variance over ``axes`` (ONNX default (0, 2, 3): per
    channel of NCHW).  ONNX's function body adds ``eps = 1e-9`` to the
    standard deviation (``eps_placement="std"``, the default here);
    ``eps_placement="variance"`` puts it under the root like the other
    normalizers.  Computed stably (corrected two-pass), where ONNX's body uses
    ``E[x^2] - E[x]^2``.  With eps on the standard deviation the derivative of
    the standard deviation at a constant group is taken as 0 (the one-sided
    limit is unbounded); the output there is exactly 0.
    """
    return _bind(input, axes, eps, eps_placement=eps_placement).forward()


#: the layer fact: per feature over the batch (``axes=(0,)``)
_LAYER = LayerCall(lambda x, w, b, o: (x, o["axes"]), options={"axes": (0,)})


def _strategy(draw, h):
    """Hypothesis draw of a call (``Spec.strategy``): rank 4, several axis sets, both
    eps placements."""
    st = h.st
    shape = draw(h.shapes(4, 4, max_side=4, max_size=h.MAX_SIZE // 2))
    axes = draw(st.sampled_from([(0, 2, 3), (2, 3), (1, 2, 3), (0, 1, 2, 3), (1,)]))
    if h.prod(shape[a] for a in axes) < 2:
        shape = tuple(s if a != axes[-1] else max(s, 2) for a, s in enumerate(shape))
    x = h.data(draw, shape)
    placement = draw(st.sampled_from(["std", "variance"]))
    eps = draw(st.sampled_from([1e-9, 1e-5, 1e-3]))
    return (x, axes, eps), {"eps_placement": placement}


def _examples(rng):
    x = rng.standard_normal((2, 3, 2, 2))
    return [
        Case("default axes", (x,)),
        Case("axes (1,) eps var", (x * 4 + 1e4, (1,), 1e-5), {"eps_placement": "variance"}),
        Case("axes (0, -1)", (rng.standard_normal((3, 2, 4)), (0, -1))),
    ]


#: (axes, ndim) of the conformance cases: ONNX's default and other reductions
_CONFORMANCE_AXES = [((0, 2, 3), 4), ((2, 3), 4), ((1,), 3), ((0, -1), 3), ((1, 2), 3)]


def _conformance_base(rng, o, h):
    """Conformance case: one of :data:`_CONFORMANCE_AXES`; option ``eps_variance``."""
    axes, nd = _CONFORMANCE_AXES[int(rng.integers(len(_CONFORMANCE_AXES)))]
    shape = [int(rng.integers(2, 5)) for _ in range(nd)]
    if o.get("n") is not None:
        shape[0] = o["n"]
    x = h.data(rng, tuple(shape))
    kwargs = {"eps_placement": "variance"} if o.get("eps_variance") else {}
    red = {a % nd for a in axes}
    group0 = tuple(slice(None) if i in red else 0 for i in range(nd))
    eps = float(rng.choice([1e-9, 1e-5, 1e-3]))
    return [x, axes, eps], kwargs, (), group0


register(Spec(
    name="mean_variance_norm",
    function=mean_variance_norm,
    bind=_bind,
    reference=reference.mean_variance_norm,
    family="activations",
    nap=Area(A.AXES, "given axes"),
    nop=Operation(O.STANDARDIZE, "standardize (eps on the standard deviation, ONNX)", centres=True),
    nrr=Recovery((R.NONE,), "none"),
    citation="ONNX operator MeanVarianceNormalization (opset 13)",
    examples=_examples,
    strategy=_strategy,
    layer=_LAYER,
    convention_options={"eps_placement": ("std", "variance")},
    conventions={"eps_placement": "std: (x-mean)/(std+eps) as ONNX's function body; variance: /sqrt(var+eps)"},
    catalogue=Catalogue(
        base=_conformance_base,
        variants={"random": {}, "eps_variance": {"eps_variance": True}},
        exclude={"neg_eps_momentum": "eps sits on the standard deviation by default (std + eps, "
                                     "ONNX): a negative eps puts a pole at std = |eps|, not the "
                                     "regularization of variance + eps > 0 that row 19 states"},
    ),
))
