"""Root-mean-square layer normalization (Zhang & Sennrich 2019, arXiv:1910.07467)."""
from __future__ import annotations

import numpy as np

from .. import reference
from ..catalogue import Catalogue
from ..layer_call import LayerCall
from ..registry import Case, Spec, register
from ..taxonomy import Area, AreaKind as A, Operation, OpKind as O, Recovery, RecoveryKind as R
from ..standardize import Standardization
from ._common import affine_param, eps_value, input_array, stats_option
from .layer_norm import normalized_shape_of, trailing_partition, trailing_stats_shape

__all__ = ["rms_norm"]


def _bind(input, normalized_shape, weight=None, eps=None, *, return_stats=False):
    x = input_array(input, 1, layout="(*, normalized_shape)")
    dtype = input.dtype if isinstance(input, np.ndarray) else np.asarray(input).dtype
    shape = normalized_shape_of(x, normalized_shape)
    w = affine_param("weight", weight, shape, f"normalized_shape {shape}")
    eps = float(np.finfo(dtype).eps) if eps is None else eps_value(eps)
    return Standardization(x, trailing_partition("rms_norm", x, shape), eps=eps,
                           center=False, weight=w,
                           stats_shape=stats_option(return_stats, trailing_stats_shape(x, shape)))


def rms_norm(input, normalized_shape, weight=None, eps=None, *, return_stats=False):
    r"""RMS normalization over the trailing ``normalized_shape`` axes.

    .. math::

        y = \frac{x}{\sqrt{\frac1n \sum_i x_i^2 + \epsilon}} \gamma

    No centering and no bias.  ``eps=None`` uses the machine epsilon of the
    *input's* dtype (``finfo(input.dtype).eps``), as
    ``torch.nn.functional.rms_norm`` does; eps inside the root.  The mean
    square is a compensated sum of squares, rescaled by a power of two for
    huge or subnormal data.  Note Keras' ``rms_scaling`` divides by the
    variance instead: that is :func:`layer_norm` without centering's mean.

    Statistics (``return_stats=True``): returns ``(y, rstd)`` with
    :math:`\mathrm{rstd} = (\frac1n \sum_i x_i^2 + \epsilon)^{-1/2}` per
    row, shape ``input.shape[:-k] + (1,) * k`` like :func:`layer_norm`'s (and
    like the ``rstd`` of PyTorch's private ``torch._fused_rms_norm``).  There
    is no mean: RMS norm subtracts none, so the output depends on no mean and
    the mean is not a statistic of the normalization (it is
    ``input.mean(axis)``, with the gradient ``1/n``, should a caller want it).
    rstd is the float64 multiplier the output was computed with (compensated
    mean square) and is differentiable like the output (:func:`normref.vjp`
    takes one cotangent per output).

    Zhang & Sennrich, "Root Mean Square Layer Normalization", NeurIPS 2019.
    """
    return _bind(input, normalized_shape, weight, eps, return_stats=return_stats).forward()


#: the layer fact: each case over its features (a gain, no bias)
_LAYER = LayerCall(lambda x, w, b, o: (x, (x.shape[-1],), w), weight=2)


def _strategy(draw, h):
    """Hypothesis draw of a call (``Spec.strategy``): the trailing k axes, centred data."""
    return h.layer_like(draw, rms=True)


def _examples(rng):
    x = rng.standard_normal((3, 8))
    return [
        Case("affine", (x, (8,), rng.standard_normal(8))),
        Case("eps None", (x * 5 + 2, 8)),
        Case("4d", (rng.standard_normal((2, 3, 2, 3)), (2, 3), rng.standard_normal((2, 3))), {"eps": 1e-5}),
        Case("offset 1e4", (x + 1e4, (8,))),
    ]


def _conformance_base(rng, o, h):
    """Conformance case: like layer norm's; option ``eps_none`` (the dtype's machine eps)."""
    lead = tuple(int(s) for s in rng.integers(1, 5, size=int(rng.integers(1, 3))))
    if o.get("n") is not None:
        lead = (o["n"],) + lead[1:]
    norm = tuple(int(s) for s in rng.integers(2, 9, size=int(rng.integers(1, 3))))
    x = h.data(rng, lead + norm)
    w = rng.standard_normal(norm) + 1.0 if o.get("affine", True) else None
    eps = None if o.get("eps_none") else h.eps(rng)
    return [x, norm, w, eps], {}, (), (0,) * len(lead)


register(Spec(
    name="rms_norm",
    function=rms_norm,
    bind=_bind,
    reference=reference.rms_norm,
    family="activations",
    nap=Area(A.LAYER, "layer: trailing normalized_shape per sample"),
    nop=Operation(O.SCALE, "scale only: divide by the root mean square", centres=False),
    nrr=Recovery((R.SCALE,), "scale (elementwise gamma)"),
    citation="Zhang & Sennrich 2019, Root Mean Square Layer Normalization, NeurIPS, arXiv:1910.07467",
    examples=_examples,
    strategy=_strategy,
    layer=_LAYER,
    conventions={"eps": "None -> finfo(input dtype).eps (PyTorch)"},
    differentiable=("input", "weight"),
    catalogue=Catalogue(base=_conformance_base,
                        variants={"affine": {}, "plain": {"affine": False},
                                  "eps_none": {"eps_none": True}}),
))
