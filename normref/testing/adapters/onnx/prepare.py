"""``prepare``, per operator: the case rewritten to the conventions the ONNX
operator implements (float32 attributes, momentum convention, eps placement,
per-group parameters), or None when the operator cannot express it.
"""
from __future__ import annotations

import numpy as np

from .cases import LP_EPS, MVN_EPS, _f32, _shape_len, _slot, _with


# ---------------------------------------------------------------- prepare, per op

def _prepare_batch_norm(adapter, case, p):
    x = np.asarray(p["input"])
    if x.ndim < 2 or p["channel_axis"] not in (1, 1 - x.ndim):
        return None  # ONNX BatchNormalization is channels-first
    if p["momentum"] is None:
        return None  # no cumulative moving average in ONNX
    conv = {"eps": _f32(p["eps"]), "momentum": _f32(p["momentum"])}
    rec = {"attributes": "float32", "channel_axis": 1}
    if p["training"]:
        conv.update(momentum_convention="keras", running_var_unbiased=False)
        rec.update(momentum_convention="keras", running_var_unbiased=False,
                   training_output="batch statistics")
    return _with(case, {**rec, **conv}, **conv)


def _prepare_instance_norm(adapter, case, p):
    if not p["use_input_stats"]:
        return None  # ONNX InstanceNormalization always uses the input statistics
    x = np.asarray(p["input"])
    if x.ndim < 3:
        return None
    updates = {"eps": _f32(p["eps"])}
    mutates = list(case.mutates)
    for name in ("running_mean", "running_var"):
        if p[name] is not None:
            updates[name] = None
            s = _slot(case, name)
            if s in mutates:
                mutates.remove(s)
    return _with(case, {"attributes": "float32", "running statistics": "none (dropped)",
                        "eps": updates["eps"]}, mutates=mutates, **updates)


def _prepare_layer_norm(adapter, case, p):
    eps = _f32(p["eps"])
    return _with(case, {"attributes": "float32", "eps": eps,
                        "axis": -_shape_len(p["normalized_shape"])}, eps=eps)


def _group_is_const(w, G):
    w = np.asarray(w, dtype=np.float64).reshape(G, -1)
    return bool(np.all(w == w[:, :1]))


def _prepare_group_norm(adapter, case, p):
    eps = _f32(p["eps"])
    if p["affine"] == "group":
        return _with(case, {"attributes": "float32", "eps": eps, "opset": 18,
                            "affine": "group"}, eps=eps)
    if adapter.supports_opset(21):
        return _with(case, {"attributes": "float32", "eps": eps, "opset": 21,
                            "affine": "channel"}, eps=eps)
    # opset 18 only: per-group scale and bias
    G = int(p["num_groups"])
    updates = {"eps": eps, "affine": "group"}
    exact = True
    for name in ("weight", "bias"):
        w = p[name]
        if w is None:
            continue
        w = np.asarray(w)
        exact &= _group_is_const(w, G)
        updates[name] = np.asarray(w, dtype=np.float64).reshape(G, -1)[:, 0].copy()
    return _with(case, {"attributes": "float32", "eps": eps, "opset": 18, "affine": "group",
                        "per-group parameters": "collapsed exactly" if exact
                        else "first channel of each group"}, **updates)


def _prepare_rms_norm(adapter, case, p):
    if p["eps"] is None:
        # ONNX has no dtype-dependent default: run() passes finfo(dtype).eps explicitly
        return _with(case, {"axis": -_shape_len(p["normalized_shape"]),
                            "eps": "None -> epsilon attribute = finfo(dtype).eps"})
    eps = _f32(p["eps"])
    return _with(case, {"attributes": "float32", "eps": eps,
                        "axis": -_shape_len(p["normalized_shape"])}, eps=eps)


def _prepare_lrn(adapter, case, p):
    upd = {"alpha": _f32(p["alpha"]), "beta": _f32(p["beta"]), "k": _f32(p["k"]),
           "convention": "onnx"}
    return _with(case, {"attributes": "float32", **upd}, **upd)


def _prepare_normalize(adapter, case, p):
    if float(p["p"]) not in (1.0, 2.0):
        return None  # LpNormalization: p must be 1 or 2
    return _with(case, {"eps": LP_EPS, "zero norm": "output 0 (onnx/onnx#7618)"},
                 eps=LP_EPS, p=float(p["p"]))


def _prepare_mvn(adapter, case, p):
    return _with(case, {"eps": MVN_EPS, "eps_placement": "std"},
                 eps=MVN_EPS, eps_placement="std")


_PREPARE = {
    "batch_norm": _prepare_batch_norm,
    "instance_norm": _prepare_instance_norm,
    "layer_norm": _prepare_layer_norm,
    "group_norm": _prepare_group_norm,
    "rms_norm": _prepare_rms_norm,
    "local_response_norm": _prepare_lrn,
    "normalize": _prepare_normalize,
    "mean_variance_norm": _prepare_mvn,
}
