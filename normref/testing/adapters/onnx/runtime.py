"""The adapters: ONNX Runtime and the ONNX reference evaluator, sharing the
case preparation, the model construction and the detection of dtypes a
runtime has no kernel for.
"""
from __future__ import annotations

import abc

import numpy as np

from .. import Adapter, Outputs, Unsupported
from .cases import _CONVENTIONS, _params
from .model import _NODES, build_model
from .prepare import _PREPARE

__all__ = ["OnnxRuntimeAdapter", "OnnxReferenceAdapter"]


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
