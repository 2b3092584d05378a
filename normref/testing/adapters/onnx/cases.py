"""The ONNX operators under test, the constants and the conventions record of
the adapters, and the helpers that read and rewrite a conformance case
(parameters by name, positional slots, float32 attribute values).
"""
from __future__ import annotations

import dataclasses
import inspect

import numpy as np

__all__ = ["ONNX_OPS", "MVN_EPS", "LP_EPS"]

#: normref normalizer -> (ONNX operator, opset of the version under test)
ONNX_OPS = {
    "batch_norm": ("BatchNormalization", 15),
    "instance_norm": ("InstanceNormalization", 22),
    "layer_norm": ("LayerNormalization", 17),
    "group_norm": ("GroupNormalization", 21),  # 18 for per-group affine
    "rms_norm": ("RMSNormalization", 23),
    "local_response_norm": ("LRN", 13),
    "normalize": ("LpNormalization", 22),
    "mean_variance_norm": ("MeanVarianceNormalization", 13),
}

#: ONNX MeanVarianceNormalization-13 adds this constant (a float32) to the std
MVN_EPS = float(np.float32(1e-9))
#: smallest positive double: ``max(||x||, LP_EPS)`` is ``||x||`` for any nonzero fibre
LP_EPS = float(np.nextafter(0.0, 1.0))

_CONVENTIONS = {
    "attributes": "epsilon, momentum, alpha, beta, bias are float32 attributes "
                  "(normref gets the float32-rounded values)",
    "BN momentum": "training_mode=1: new = m old + (1 - m) batch (ONNX default m = 0.9); "
                   "no cumulative average",
    "BN running variance": "biased (population) batch variance",
    "BN training output": "Y normalized with the batch statistics",
    "eps defaults": "1e-5 (BN, IN, LN, GN, RMSNorm; no dtype-dependent RMSNorm default); "
                    "MVN: fixed 1e-9 added to the std; LpNormalization: none, 0 for a zero norm",
    "variance formula": "LayerNormalization / GroupNormalization / MVN function bodies use "
                        "E[x^2] - E[x]^2",
    "LRN window": "channels [c - floor((n-1)/2), c + ceil((n-1)/2)], alpha / n",
    "GroupNorm affine": "opset 18: per group (G,); opset 21: per channel (C,)",
    "RMS definition": "RMSNormalization-23: x / sqrt(mean(x^2) + eps) * scale",
    "L2 normalize": "LpNormalization: x / ||x||_p, p in {1, 2}, no eps",
    "stash_type": "float32 for float32 inputs; double requested for float64 inputs where "
                  "the implementation offers it",
}


def _f32(v):
    """The value a float32 ONNX attribute holds for ``v``."""
    return float(np.float32(v))


# ---------------------------------------------------------------- case helpers

def _spec(case):
    from ....registry import REGISTRY

    try:
        return REGISTRY[case.name]
    except KeyError:
        raise ValueError(f"case {getattr(case, 'id', case)!r}: unknown normalizer {case.name!r}") from None


def _params(case):
    """``{parameter name: value}`` of the call, defaults filled in."""
    sig = inspect.signature(_spec(case).function)
    bound = sig.bind(*case.args, **dict(case.kwargs))
    bound.apply_defaults()
    return dict(bound.arguments)


def _slot(case, pname):
    """Positional slot of parameter ``pname`` in ``case.args`` (None if passed by keyword)."""
    names = list(inspect.signature(_spec(case).function).parameters)
    i = names.index(pname)
    return i if i < len(case.args) else None


def _with(case, conventions, mutates=None, **updates):
    """``case`` with parameters replaced (in ``args`` when passed positionally,
    else in ``kwargs``) and ``conventions`` merged into its record."""
    names = list(inspect.signature(_spec(case).function).parameters)
    args = list(case.args)
    kwargs = dict(case.kwargs)
    for pname, value in updates.items():
        i = names.index(pname)
        if i < len(args):
            args[i] = value
        else:
            kwargs[pname] = value
    conv = dict(getattr(case, "conventions", {}) or {})
    conv.update(conventions)
    changes = dict(args=tuple(args), kwargs=kwargs, conventions=conv)
    if mutates is not None:
        changes["mutates"] = tuple(mutates)
    return dataclasses.replace(case, **changes)


def _shape_len(normalized_shape):
    if isinstance(normalized_shape, (int, np.integer)):
        return 1
    return len(tuple(normalized_shape))
