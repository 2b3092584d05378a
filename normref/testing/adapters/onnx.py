r"""ONNX adapters: ONNX Runtime (``"onnxruntime"``) and the ONNX reference
evaluator (``"onnx-reference"``, :class:`onnx.reference.ReferenceEvaluator`).

Each case becomes a *single-node* model built with :mod:`onnx.helper`: the
normalizer's array arguments are graph inputs (never initializers, so no
constant folding), hyper-parameters are node attributes, and the model
imports exactly the opset that defines the op version under test:

=======================  ==========================  ======  ==================================
normref                  ONNX op                     opset   notes
=======================  ==========================  ======  ==================================
batch_norm               BatchNormalization          15      NCHW (channel axis 1) only
instance_norm            InstanceNormalization       22      input statistics only
layer_norm               LayerNormalization          17      axis = -len(normalized_shape)
group_norm               GroupNormalization          21/18   21: per-channel affine; 18: per group
rms_norm                 RMSNormalization            23      axis = -len(normalized_shape)
local_response_norm      LRN                         13      ONNX window
normalize                LpNormalization             22      p in {1, 2}
mean_variance_norm       MeanVarianceNormalization   13      eps 1e-9 added to the std
=======================  ==========================  ======  ==================================

positional_norm, batch_group_norm, ghost_batch_norm and weight_norm have no
ONNX operator: :meth:`prepare` returns None for them (composing them from
other ONNX ops would judge the composition, not an ONNX operator).

Conventions configured in :meth:`prepare` (so that a convention difference is
never reported as a numerical error):

* **attributes are float32.**  ONNX stores ``epsilon``, ``momentum``,
  ``alpha``, ``beta`` and ``bias`` as 32-bit floats whatever the tensor type;
  normref is given the float32-rounded values (e.g. eps = 1e-5 becomes
  9.99999974737875e-06), the values the framework really uses.
* **BatchNormalization** training mode (``training_mode=1``): Y uses the
  batch statistics, the running statistics are
  ``momentum * old + (1 - momentum) * batch`` (normref
  ``momentum_convention="keras"``) with the *biased* batch variance
  (``running_var_unbiased=False``); the case's ``momentum`` is passed as the
  ONNX momentum.  ``momentum=None`` (cumulative average) has no ONNX
  equivalent: None.  Missing scale / B are ones / zeros; in training mode
  missing running statistics are fed as zeros / ones and the updated ones are
  not judged.
* **InstanceNormalization** has no running statistics: ``use_input_stats``
  must be True, and running buffers of the case are dropped.
* **LayerNormalization / RMSNormalization / GroupNormalization-21**:
  ``stash_type`` = 1 (float32) for float32 inputs; for float64 inputs ONNX
  Runtime is asked for stash_type = 11 (double) so that it computes in the
  input precision, the reference evaluator only implements stash_type = 1
  for LayerNormalization and RMSNormalization (it then computes in NumPy in
  the input dtype).
* **RMSNormalization** has no dtype-dependent eps default (its default is
  1e-5): for ``eps=None`` the model is given ``epsilon = finfo(dtype).eps``
  explicitly (2**-23 for float32, 2**-52 for float64, both exact float32
  attributes), the value normref uses for that dtype.
* **GroupNormalization**: opset 21 takes per-channel scale / bias (PyTorch's
  convention), opset 18 per-group ones (normref ``affine="group"``).  A case
  with ``affine="group"`` runs at opset 18; per-channel cases at opset 21,
  or, if the runtime lacks opset 21, at opset 18 with their per-channel
  parameters collapsed to one value per group (exactly when they are
  constant within groups; otherwise the case is rewritten to per-group
  parameters taken from each group's first channel).
* **LRN**: window ``[c - floor((n-1)/2), c + ceil((n-1)/2)]``, alpha / n
  (normref ``convention="onnx"``; differs from PyTorch's for even n).  Both
  implementations accept only 4-D X although the spec allows
  ``(N, C, D1, ..., Dk)``: the adapter runs ``(N, C, prod(spatial), 1)`` and
  reshapes the output back (LRN treats every spatial position alike).
* **LpNormalization** has no eps and defines the output of a zero-norm fibre
  as 0 (onnx/onnx#7618): normref is run with ``eps`` = the smallest positive
  double 5e-324, which gives exactly ``x / ||x||_p`` for every nonzero fibre
  and 0 for a zero one.  Only p = 1 and p = 2 exist (None otherwise).
* **MeanVarianceNormalization**: ``(x - mean) / (std + 1e-9)`` as the ONNX
  function body computes it (normref ``eps_placement="std"``,
  ``eps = float32(1e-9)``), biased variance.

Forward only (``gradients = False``): ONNX inference runtimes have no
autograd.  A dtype the runtime has no kernel for (ONNX Runtime registers
LRN and InstanceNormalization for float32 only; MeanVarianceNormalization's
function body contains a float32 constant and cannot be instantiated for
double) raises :class:`Unsupported` (the run records ``skip``); the verdict
is found by trying once per (op, opset, dtype) and cached.  Every other
failure of the runtime (an exception, NaN, a wrong value) is reported, never
hidden: the known ones are listed in ``known_discrepancies.json``.
"""
from __future__ import annotations

import abc

import dataclasses
import inspect

import numpy as np

from . import Adapter, Outputs, Unsupported

__all__ = ["OnnxRuntimeAdapter", "OnnxReferenceAdapter", "ONNX_OPS", "build_model"]

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
    from ...registry import REGISTRY

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


# ---------------------------------------------------------------- the adapters

_UNSUPPORTED_MARKERS = (
    "Could not find an implementation",   # ORT: no kernel registered for this type
    "bound to different types",           # function body with a float32 constant
    "Input type mismatch",                # reference evaluator, same cause
)


class _OnnxAdapter(Adapter):
    dtypes = ("float32", "float64")
    gradients = False
    conventions = _CONVENTIONS
    #: whether LayerNormalization / RMSNormalization accept stash_type=11
    double_stash = True

    def __init__(self):
        self._unsupported = {}   # (op, opset, dtype) -> reason
        self._opsets = {}        # opset -> bool

    # -- what the framework offers
    def supports_opset(self, opset):
        """True when this implementation runs GroupNormalization at ``opset``
        (tried once on a small float32 model and cached)."""
        if opset not in self._opsets:
            x = np.arange(8, dtype=np.float32).reshape(1, 4, 2)
            n = 4 if opset >= 21 else 2
            try:
                model = build_model("GroupNormalization", opset,
                                    [("X", x), ("scale", np.ones(n, np.float32)),
                                     ("bias", np.zeros(n, np.float32))],
                                    {"num_groups": 2})
                self._execute(model, {"X": x, "scale": np.ones(n, np.float32),
                                      "bias": np.zeros(n, np.float32)})
                self._opsets[opset] = True
            except Exception:
                self._opsets[opset] = False
        return self._opsets[opset]

    def prepare(self, case):
        fn = _PREPARE.get(case.name)
        if fn is None:
            return None
        return fn(self, case, _params(case))

    def run(self, case, dtype):
        if dtype not in self.dtypes:
            raise Unsupported(f"{self.framework}: dtype {dtype} is not run by this adapter")
        if case.name not in _NODES:
            raise Unsupported(f"{self.framework} has no operator for {case.name}")
        node = _NODES[case.name](self, case, _params(case), dtype)
        key = (node.op, node.opset, dtype)
        if key in self._unsupported:
            raise Unsupported(self._unsupported[key])
        model = build_model(node.op, node.opset, node.inputs, node.attrs, node.output_shapes, dtype)
        feeds = {name: a for name, a in node.inputs if a is not None}
        try:
            outs = self._execute(model, feeds)
        except Exception as e:
            msg = str(e)
            if dtype != "float32" and any(m in msg for m in _UNSUPPORTED_MARKERS):
                reason = (f"{self.framework} {self.version()} cannot run {node.op}-{node.opset} "
                          f"in {dtype}: {msg.strip().splitlines()[0][:200]}")
                self._unsupported[key] = reason
                raise Unsupported(reason) from None
            raise
        y = np.asarray(outs[0]).reshape(np.shape(_params(case)["input"]))
        state = {slot: np.asarray(outs[i]) for i, slot in node.state_slots.items()}
        return Outputs(y=y, grads=None, state=state)

    @abc.abstractmethod
    def version(self):
        """The runtime's version string (for reports and known-discrepancy reasons)."""

    @abc.abstractmethod
    def _execute(self, model, feeds):
        """Run ``model`` (an onnx ModelProto) on ``feeds``; return the list of outputs."""


class OnnxRuntimeAdapter(_OnnxAdapter):
    """ONNX Runtime, CPUExecutionProvider, one intra-op thread, default graph
    optimizations (a single-node graph has nothing to fuse)."""

    framework = "onnxruntime"

    @classmethod
    def available(cls):
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError:
            return False
        return True

    def version(self):
        import onnx
        import onnxruntime

        return f"onnxruntime {onnxruntime.__version__} (onnx {onnx.__version__})"

    def _execute(self, model, feeds):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.log_severity_level = 4  # the adapter reports failures itself
        so.intra_op_num_threads = 1
        sess = ort.InferenceSession(model.SerializeToString(), so,
                                    providers=["CPUExecutionProvider"])
        return sess.run(None, feeds)


class OnnxReferenceAdapter(_OnnxAdapter):
    """The ONNX reference evaluator (:class:`onnx.reference.ReferenceEvaluator`):
    NumPy implementations of the operators, or the function body of a
    function operator (GroupNormalization, MeanVarianceNormalization)."""

    framework = "onnx-reference"
    double_stash = False  # its LayerNormalization / RMSNormalization implement stash_type=1 only

    @classmethod
    def available(cls):
        try:
            import onnx.reference  # noqa: F401
        except ImportError:
            return False
        return True

    def version(self):
        import onnx

        return f"onnx {onnx.__version__} ReferenceEvaluator"

    def _execute(self, model, feeds):
        import warnings

        from onnx.reference import ReferenceEvaluator

        with warnings.catch_warnings():
            # 0/0 in a constant group etc.: the output shows it, the warning is noise
            warnings.simplefilter("ignore", RuntimeWarning)
            return ReferenceEvaluator(model).run(None, feeds)
