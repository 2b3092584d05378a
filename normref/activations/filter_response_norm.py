"""Filter response normalization with the thresholded linear unit (Singh & Krishnan 2020,
arXiv:1911.09737)."""
from __future__ import annotations

import numpy as np

from ..compose import Composite, Step
from ..partition import Partition
from ..recovery import Threshold, channel_shape
from ..reference.filter_response_norm import filter_response_norm as _reference
from ..catalogue import Catalogue
from ..layer_call import LayerCall, channels_view
from ..registry import Case, Spec, register
from ..standardize import Standardization
from ..taxonomy import Area, AreaKind as A, Operation, OpKind as O, Recovery, RecoveryKind as R
from ._common import affine_param, eps_value, input_array

__all__ = ["filter_response_norm"]


def _bind(input, weight=None, bias=None, tau=None, eps=1e-6):
    x = input_array(input, 2)
    N, C = x.shape[:2]
    HW = int(np.prod(x.shape[2:], dtype=np.int64))
    ctx = f"one value per channel, input shape {x.shape}"
    w = affine_param("weight", weight, (C,), ctx)
    b = affine_param("bias", bias, (C,), ctx)
    t = affine_param("tau", tau, (C,), ctx)
    eps = eps_value(eps)
    part = Partition("filter_response_norm", (N, C, HW), group_axes=(0, 1), affine_axes=(1,))
    frn = Standardization(x, part, eps=eps, center=False, weight=w, bias=b)
    if t is None:
        return frn
    values = {"input": x}
    ins = {"input": "input"}
    for nm, arr in (("weight", w), ("bias", b)):
        if arr is not None:
            values[nm] = arr
            ins[nm] = nm
    values["tau"] = t
    steps = [Step("frn", frn, ins), Step("y", Threshold(channel_shape(x.ndim, C)), ("frn", "tau"))]
    return Composite("filter_response_norm", values, steps)


def filter_response_norm(input, weight=None, bias=None, tau=None, eps=1e-6):
    r"""Filter response normalization (FRN), optionally followed by the TLU.

    For (N, C, *spatial) input, per sample and channel:

    .. math::

        \nu^2_{nc} = \frac1{HW}\sum_{s} x_{ncs}^2, \qquad
        y = \gamma_c \frac{x}{\sqrt{\nu^2_{nc} + \epsilon}} + \beta_c, \qquad
        z = \max(y, \tau_c) \ \ (\text{TLU, when } \tau \text{ is given})

    No mean is subtracted (the mean square, not the variance).  eps inside the
    root, 1e-6 (paper; timm uses 1e-5; TF Addons adds a learned
    :math:`|\epsilon_l|` to :math:`|\epsilon|` -- pass the sum).  The TLU's
    derivative at a tie :math:`y = \tau` sends half the cotangent to each
    (``torch.maximum``'s choice, timm's FRN; see :mod:`normref.recovery`).
    Without ``tau`` this is scale-only instance normalization with an affine
    recovery; the TLU is composed after it (:mod:`normref.compose`).
    Numerics: the mean square is the standardization kernel's compensated,
    power-of-two-rescaled sum of squares (no overflow for huge x).

    Singh & Krishnan, "Filter Response Normalization Layer: Eliminating Batch
    Dependence in the Training of Deep Neural Networks", CVPR 2020.
    """
    return _bind(input, weight, bias, tau, eps).forward()


#: the layer fact: the features viewed as ``channels`` channels of F / channels positions
#: (one channel by default; the table's 3 channels of 4), optional TLU threshold tau
_LAYER = LayerCall(lambda x, w, b, o: (x, w, b, o["tau"]), weight=1, bias=2,
                   view=channels_view("filter_response_norm"), options={"channels": 1, "tau": None}, table={"channels": 3})


def _strategy(draw, h):
    """Hypothesis draw of a call (``Spec.strategy``): rank 2-4, affine or not, a TLU
    threshold per channel or None."""
    st = h.st
    shape = draw(h.shapes(2, 4, max_side=5))
    C = shape[1]
    x = draw(h.float_arrays(shape, scale=h.scales()))  # scale only: centred data
    w, b = h.affine(draw, (C,))
    tau = draw(st.one_of(st.none(), h.float_arrays((C,), scale=0.5)))
    return (x, w, b, tau), {"eps": draw(h.eps_values())}


def _examples(rng):
    x = rng.standard_normal((2, 3, 4, 3))
    w, b = rng.standard_normal(3) + 1.0, rng.standard_normal(3)
    tau = np.array([-0.2, 0.4, 0.1])  # the threshold is active on part of every channel
    return [
        Case("affine TLU", (x, w, b, tau)),
        Case("FRN no TLU", (x * 5 + 1, w, b)),
        Case("TLU only", (x, None, None, tau), {"eps": 1e-5}),
        Case("TLU no spatial", (rng.standard_normal((5, 3)), w, None, tau)),
        Case("bias, TLU, 1d spatial", (rng.standard_normal((2, 3, 6)), None, b, b + 0.3)),
    ]


def _conformance_base(rng, o, h):
    """Conformance case: (N, C, *spatial); options ``affine``, ``tlu`` (False: no tau), ``n``."""
    N = int(rng.integers(1, 4)) if o.get("n") is None else o["n"]
    C = int(rng.integers(1, 5))
    x = h.data(rng, (N, C) + h.spatial(rng, 1, 2))
    affine = o.get("affine", True)
    w = rng.standard_normal(C) + 1.0 if affine else None
    b = rng.standard_normal(C) if affine else None
    tau = rng.standard_normal(C) * 0.5 if o.get("tlu", True) else None
    return [x, w, b, tau, h.eps(rng)], {}, (), (0, 0)


register(Spec(
    name="filter_response_norm",
    function=filter_response_norm,
    bind=_bind,
    reference=_reference,
    family="activations",
    nap=Area(A.INSTANCE, "instance: spatial per (n, c)"),
    nop=Operation(O.SCALE, "scale only: divide by the root mean square", centres=False),
    nrr=Recovery((R.AFFINE, R.THRESHOLD), "affine per channel, then max(y, tau) (TLU)"),
    citation="Singh & Krishnan 2020, Filter Response Normalization Layer, CVPR, arXiv:1911.09737",
    examples=_examples,
    strategy=_strategy,
    layer=_LAYER,
    conventions={
        "eps": "inside the root, 1e-6 (paper); timm 1e-5; TF Addons |eps| + |learned eps|",
        "tau": "None: no TLU; tie y == tau splits the gradient 0.5 / 0.5 (torch.maximum)",
    },
    differentiable=("input", "weight", "bias", "tau"),
    catalogue=Catalogue(
        base=_conformance_base,
        variants={"affine_tlu": {}, "plain_tlu": {"affine": False}, "no_tlu": {"tlu": False}},
    ),
))
