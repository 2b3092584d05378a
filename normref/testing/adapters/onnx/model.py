"""Single-node ONNX models: the node (operator, opset, inputs, attributes) of
each normalizer call, and :func:`build_model`.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .cases import _f32, _shape_len, _slot

__all__ = ["build_model"]


# ---------------------------------------------------------------- node builders

@dataclasses.dataclass
class _Node:
    op: str
    opset: int
    inputs: list          # [(onnx input name, array or None)]; None = omitted optional input
    attrs: dict
    output_shapes: list = None  # None: one output shaped like the first input
    state_slots: dict = dataclasses.field(default_factory=dict)  # output index -> case slot


def _arr(a, dtype):
    return np.ascontiguousarray(np.asarray(a, dtype=dtype))


def _ones(n, dtype):
    return np.ones(n, dtype=dtype)


def _zeros(n, dtype):
    return np.zeros(n, dtype=dtype)


def _stash(adapter, dtype):
    return 11 if (dtype == "float64" and adapter.double_stash) else 1


def _node_batch_norm(adapter, case, p, dtype):
    x = _arr(p["input"], dtype)
    C = x.shape[1]
    w = _ones(C, dtype) if p["weight"] is None else _arr(p["weight"], dtype)
    b = _zeros(C, dtype) if p["bias"] is None else _arr(p["bias"], dtype)
    rm = _zeros(C, dtype) if p["running_mean"] is None else _arr(p["running_mean"], dtype)
    rv = _ones(C, dtype) if p["running_var"] is None else _arr(p["running_var"], dtype)
    attrs = {"epsilon": _f32(p["eps"]), "momentum": _f32(p["momentum"])}
    if not p["training"]:
        return _Node("BatchNormalization", 15,
                     [("X", x), ("scale", w), ("B", b), ("input_mean", rm), ("input_var", rv)],
                     attrs)
    attrs["training_mode"] = 1
    state = {}
    for out, name in ((1, "running_mean"), (2, "running_var")):
        s = _slot(case, name)
        if p[name] is not None and s is not None and s in case.mutates:
            state[out] = s
    return _Node("BatchNormalization", 15,
                 [("X", x), ("scale", w), ("B", b), ("input_mean", rm), ("input_var", rv)],
                 attrs, output_shapes=[x.shape, (C,), (C,)], state_slots=state)


def _node_instance_norm(adapter, case, p, dtype):
    x = _arr(p["input"], dtype)
    C = x.shape[1]
    w = _ones(C, dtype) if p["weight"] is None else _arr(p["weight"], dtype)
    b = _zeros(C, dtype) if p["bias"] is None else _arr(p["bias"], dtype)
    return _Node("InstanceNormalization", 22, [("input", x), ("scale", w), ("B", b)],
                 {"epsilon": _f32(p["eps"])})


def _node_layer_norm(adapter, case, p, dtype):
    x = _arr(p["input"], dtype)
    k = _shape_len(p["normalized_shape"])
    nshape = x.shape[x.ndim - k:]
    w = np.ones(nshape, dtype) if p["weight"] is None else _arr(p["weight"], dtype)
    b = None if p["bias"] is None else _arr(p["bias"], dtype)
    return _Node("LayerNormalization", 17, [("X", x), ("Scale", w), ("B", b)],
                 {"axis": -k, "epsilon": _f32(p["eps"]), "stash_type": _stash(adapter, dtype)})


def _node_group_norm(adapter, case, p, dtype):
    x = _arr(p["input"], dtype)
    G = int(p["num_groups"])
    n = G if p["affine"] == "group" else x.shape[1]
    w = _ones(n, dtype) if p["weight"] is None else _arr(p["weight"], dtype)
    b = _zeros(n, dtype) if p["bias"] is None else _arr(p["bias"], dtype)
    attrs = {"num_groups": G, "epsilon": _f32(p["eps"])}
    if p["affine"] == "group":
        return _Node("GroupNormalization", 18, [("X", x), ("scale", w), ("bias", b)], attrs)
    attrs["stash_type"] = 11 if dtype == "float64" else 1
    return _Node("GroupNormalization", 21, [("X", x), ("scale", w), ("bias", b)], attrs)


def _node_rms_norm(adapter, case, p, dtype):
    x = _arr(p["input"], dtype)
    k = _shape_len(p["normalized_shape"])
    nshape = x.shape[x.ndim - k:]
    w = np.ones(nshape, dtype) if p["weight"] is None else _arr(p["weight"], dtype)
    eps = float(np.finfo(dtype).eps) if p["eps"] is None else _f32(p["eps"])
    return _Node("RMSNormalization", 23, [("X", x), ("scale", w)],
                 {"axis": -k, "epsilon": eps, "stash_type": _stash(adapter, dtype)})


def _node_lrn(adapter, case, p, dtype):
    x = _arr(p["input"], dtype)
    # ONNX Runtime's CPU kernel and the reference evaluator accept only 4-D X
    # (the spec allows (N, C, D1, ..., Dk)); LRN acts on each spatial position
    # independently, so (N, C, *spatial) runs as (N, C, prod(spatial), 1).
    x = x.reshape(x.shape[:2] + (int(np.prod(x.shape[2:], dtype=np.int64)), 1))
    return _Node("LRN", 13, [("X", x)],
                 {"size": int(p["size"]), "alpha": _f32(p["alpha"]), "beta": _f32(p["beta"]),
                  "bias": _f32(p["k"])})


def _node_normalize(adapter, case, p, dtype):
    x = _arr(p["input"], dtype)
    return _Node("LpNormalization", 22, [("input", x)],
                 {"axis": int(p["dim"]), "p": int(float(p["p"]))})


def _node_mvn(adapter, case, p, dtype):
    x = _arr(p["input"], dtype)
    axes = p["axes"]
    axes = [int(axes)] if isinstance(axes, (int, np.integer)) else [int(a) for a in axes]
    return _Node("MeanVarianceNormalization", 13, [("X", x)], {"axes": axes})


_NODES = {
    "batch_norm": _node_batch_norm,
    "instance_norm": _node_instance_norm,
    "layer_norm": _node_layer_norm,
    "group_norm": _node_group_norm,
    "rms_norm": _node_rms_norm,
    "local_response_norm": _node_lrn,
    "normalize": _node_normalize,
    "mean_variance_norm": _node_mvn,
}


def build_model(op, opset, inputs, attrs, output_shapes=None, dtype="float32"):
    """A single-node ONNX model: ``op`` (domain ai.onnx, version ``opset``)
    with the given ``inputs`` ``[(name, array or None)]`` as graph inputs of
    element type ``dtype``, ``attrs`` as node attributes and one output per
    entry of ``output_shapes`` (default: one output shaped like the first
    input).  An input given as None is an omitted optional input (empty
    name).  The IR version is the lowest one that supports ``opset``
    (opset 23 -> IR 11); the model passes :func:`onnx.checker.check_model`."""
    from onnx import TensorProto, checker, helper

    elem = {"float32": TensorProto.FLOAT, "float64": TensorProto.DOUBLE,
            "float16": TensorProto.FLOAT16}[dtype]
    in_names = [name if a is not None else "" for name, a in inputs]
    while in_names and in_names[-1] == "":
        in_names.pop()
    if output_shapes is None:
        output_shapes = [inputs[0][1].shape]
    outs = [f"Y{i}" for i in range(len(output_shapes))]
    node = helper.make_node(op, in_names, outs, **attrs)
    graph = helper.make_graph(
        [node], f"normref_{op}",
        [helper.make_tensor_value_info(name, elem, list(a.shape)) for name, a in inputs
         if a is not None],
        [helper.make_tensor_value_info(o, elem, list(shape))
         for o, shape in zip(outs, output_shapes)],
    )
    opset_id = helper.make_opsetid("", opset)
    model = helper.make_model(graph, opset_imports=[opset_id],
                              ir_version=helper.find_min_ir_version_for([opset_id]),
                              producer_name="normref")
    try:
        checker.check_model(model)
    except checker.ValidationError as e:
        # GroupNormalization-18 is marked deprecated (superseded by 21, per-channel
        # scale) and the checker refuses it; the runtimes still implement it.
        if "deprecated" not in str(e):
            raise
    return model
