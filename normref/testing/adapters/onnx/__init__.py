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
hidden: the known ones are listed in ``normref/testing/known/<target>.json``.

Modules: :mod:`~normref.testing.adapters.onnx.cases` (operators, constants,
case helpers), :mod:`~normref.testing.adapters.onnx.prepare` (conventions per
operator), :mod:`~normref.testing.adapters.onnx.model` (single-node models),
:mod:`~normref.testing.adapters.onnx.runtime` (the two adapters).
"""
from __future__ import annotations

from .cases import LP_EPS, MVN_EPS, ONNX_OPS
from .model import build_model
from .runtime import OnnxReferenceAdapter, OnnxRuntimeAdapter

__all__ = ["OnnxRuntimeAdapter", "OnnxReferenceAdapter", "ONNX_OPS", "build_model"]
