"""Layer normalization (Ba, Kiros & Hinton 2016, arXiv:1607.06450)."""
from __future__ import annotations

import numbers

import numpy as np

from .. import reference
from ..catalogue import Catalogue
from ..partition import Partition
from ..layer_call import LayerCall
from ..registry import Case, Spec, register
from ..taxonomy import Area, AreaKind as A, Operation, OpKind as O, Recovery, RecoveryKind as R
from ..standardize import Standardization
from ._common import affine_param, eps_value, input_array, stats_option

__all__ = ["layer_norm"]


def _is_int(n):
    return isinstance(n, numbers.Integral) and not isinstance(n, (bool, np.bool_))


def normalized_shape_of(input, normalized_shape):
    """Validate ``normalized_shape`` against the trailing axes of ``input``.

    An int or a tuple / list of ints (``torch.Size`` is a tuple); anything
    else (a generator, an array, floats, strings) is a TypeError.
    """
    if _is_int(normalized_shape):
        shape = (int(normalized_shape),)
    elif isinstance(normalized_shape, (tuple, list)) and all(_is_int(n) for n in normalized_shape):
        shape = tuple(int(n) for n in normalized_shape)
    else:
        raise TypeError(
            f"normalized_shape must be an int or a tuple of ints, got "
            f"{type(normalized_shape).__name__} {normalized_shape!r:.60}"
        )
    k = len(shape)
    if k == 0 or input.ndim < k or input.shape[input.ndim - k:] != shape:
        raise ValueError(
            f"normalized_shape {shape} must equal the trailing dimensions of input, "
            f"got input of shape {input.shape}"
        )
    return shape


def trailing_partition(name, input, shape):
    """Rows x features: one group per leading index, statistics over the trailing shape."""
    feat = int(np.prod(shape, dtype=np.int64))
    rows = int(np.prod(input.shape[: input.ndim - len(shape)], dtype=np.int64))
    return Partition(name, (rows, feat), group_axes=(0,), affine_axes=(1,))


def trailing_stats_shape(x, shape):
    """Shape of per-row statistics: the leading axes, the normalized ones kept as size 1."""
    return x.shape[: x.ndim - len(shape)] + (1,) * len(shape)


def _bind(input, normalized_shape, weight=None, bias=None, eps=1e-5, *, return_stats=False):
    x = input_array(input, 1, layout="(*, normalized_shape)")
    shape = normalized_shape_of(x, normalized_shape)
    ctx = f"normalized_shape {shape}"
    w = affine_param("weight", weight, shape, ctx)
    b = affine_param("bias", bias, shape, ctx)
    return Standardization(
        x, trailing_partition("layer_norm", x, shape), eps=eps_value(eps), weight=w, bias=b,
        stats_shape=stats_option(return_stats, trailing_stats_shape(x, shape)),
    )


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5, *, return_stats=False):
    r"""Layer normalization over the trailing ``normalized_shape`` axes.

    .. math::

        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} \gamma + \beta

    with mean and biased (population) variance over the last
    ``len(normalized_shape)`` axes of each sample; ``weight`` (:math:`\gamma`)
    and ``bias`` (:math:`\beta`) have shape ``normalized_shape``.  Mirrors
    ``torch.nn.functional.layer_norm``.  eps inside the root.

    Numerics: corrected two-pass moments with compensated sums (a few float64
    ulps from the exact result at any offset), float64 output.

    Statistics (``return_stats=True``): returns ``(y, mean, rstd)``, the mean
    and :math:`(\mathrm{Var}[x] + \epsilon)^{-1/2}` of each sample with shape
    ``input.shape[:-k] + (1,) * k``, ``k = len(normalized_shape)`` (the
    reduced axes kept as size 1): ``torch.native_layer_norm``'s ``mean`` /
    ``rstd`` and ONNX LayerNormalization's ``Mean`` / ``InvStdDev`` outputs
    (``axis = -k``).  normref's are float64, the mean the compensated one
    (within about an ulp of the exact mean at any offset) and rstd the
    multiplier the output was computed with.  Frameworks' dtypes differ:
    torch returns them in the input's dtype; ONNX's ``stash_type`` (default 1,
    float32) is their type -- the schema allows only float32 or bfloat16 --
    and, by the spec, the precision of the first stage.  ONNX Runtime 1.32
    still normalizes a float64 input in double and returns its statistics
    rounded to float32 (it has no kernel for stash_type=11 with these
    outputs); the ONNX reference evaluator returns them in the input's dtype.
    The three outputs are differentiable: :func:`normref.vjp` takes one
    cotangent per output (None for zero), :func:`normref.jvp` /
    :func:`normref.jacobian` give one tangent / Jacobian per output.

    Ba, Kiros & Hinton, "Layer Normalization", 2016.
    """
    return _bind(input, normalized_shape, weight, bias, eps,
                 return_stats=return_stats).forward()


#: the layer fact: each case over its features
_LAYER = LayerCall(lambda x, w, b, o: (x, (x.shape[-1],), w, b), weight=2, bias=3)


def _strategy(draw, h):
    """Hypothesis draw of a call (``Spec.strategy``): the trailing k axes normalized."""
    return h.layer_like(draw, rms=False)


def _examples(rng):
    x = rng.standard_normal((3, 8))
    x3 = rng.standard_normal((2, 3, 4, 5)) * 3.0 + 2.0
    w, b = rng.standard_normal(8), rng.standard_normal(8)
    w2, b2 = rng.standard_normal((4, 5)), rng.standard_normal((4, 5))
    return [
        Case("2d affine", (x, (8,), w, b)),
        Case("2d plain", (x, 8)),
        Case("4d over (4,5)", (x3, (4, 5), w2, b2), {"eps": 1e-3}),
        Case("offset 1e4", (x + 1e4, (8,), w, None)),
        Case("1d", (rng.standard_normal(6), (6,))),
    ]


def _conformance_base(rng, o, h):
    """Conformance case: 1-2 leading axes, 1-2 normalized axes, affine or not."""
    lead = tuple(int(s) for s in rng.integers(1, 5, size=int(rng.integers(1, 3))))
    if o.get("n") is not None:
        lead = (o["n"],) + lead[1:]
    norm = tuple(int(s) for s in rng.integers(2, 9, size=int(rng.integers(1, 3))))
    x = h.data(rng, lead + norm)
    affine = o.get("affine", True)
    w = rng.standard_normal(norm) + 1.0 if affine else None
    b = rng.standard_normal(norm) if affine else None
    return [x, norm, w, b, h.eps(rng)], {}, (), (0,) * len(lead)


register(Spec(
    name="layer_norm",
    function=layer_norm,
    bind=_bind,
    reference=reference.layer_norm,
    family="activations",
    nap=Area(A.LAYER, "layer: trailing normalized_shape per sample"),
    nop=Operation(O.STANDARDIZE, "standardize", centres=True),
    nrr=Recovery((R.AFFINE,), "affine (elementwise over normalized_shape)"),
    citation="Ba, Kiros & Hinton 2016, Layer Normalization, arXiv:1607.06450",
    examples=_examples,
    strategy=_strategy,
    layer=_LAYER,
    differentiable=("input", "weight", "bias"),
    catalogue=Catalogue(base=_conformance_base, variants={"affine": {}, "plain": {"affine": False}}),
))
