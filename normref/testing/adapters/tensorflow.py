r"""TensorFlow adapter: ``tf.nn`` / ``tf.math`` normalization ops, gradients by ``tf.GradientTape``.

This target (``tensorflow``) judges TensorFlow's own ops.  ``tf.keras`` in
TensorFlow 2.21 is Keras 3 (a separate package whose layers compute through
``keras.ops``); its normalization layers are judged by the separate
``keras-tensorflow`` target, not here.

Which TensorFlow op answers which normref normalizer:

=======================  ====================================================  =====================
normref                  TensorFlow                                            layout
=======================  ====================================================  =====================
``batch_norm``           training: ``tf.nn.moments(x, axes, keepdims=True)``   as is (axes = every
                         over every axis but the channel axis, then            axis but
                         ``tf.nn.batch_normalization``; eval: the running      ``channel_axis``)
                         statistics into ``tf.nn.batch_normalization``;
                         running statistics updated as TF code writes it,
                         ``moving * m + batch * (1 - m)``.  With
                         ``TensorflowAdapter(batch_norm="fused")``:
                         ``tf.compat.v1.nn.fused_batch_norm``
                         (``FusedBatchNormV3``)
``layer_norm``           ``tf.nn.moments`` over the trailing axes              as is
                         (``keepdims=True``) + ``tf.nn.batch_normalization``
                         with the elementwise weight / bias
``instance_norm``        ``tf.nn.moments`` over the spatial axes of each       as is
                         (n, c) + ``tf.nn.batch_normalization``; running
                         statistics in eval (``use_input_stats=False``)
``mean_variance_norm``   ``tf.nn.moments`` over ``axes`` +                     as is
                         ``tf.nn.batch_normalization`` (no scale, no offset)
``positional_norm``      ``tf.nn.moments`` over the channel axis 1 +           as is
                         ``tf.nn.batch_normalization``
``local_response_norm``  ``tf.nn.local_response_normalization``                (N, C, *sp) ->
                         (``depth_radius = (size - 1) / 2``, ``bias = k``)     (N, prod sp, 1, C)
``normalize`` (p = 2)    ``tf.math.l2_normalize(x, axis=dim, epsilon=eps)``    as is
=======================  ====================================================  =====================

``tf.nn.batch_normalization`` is documented for exactly this use: its mean and
variance "can have the same number of dimensions as the input x ... dimension
1 for the others which are being normalized over", typically "the outputs of
``tf.nn.moments(..., keepdims=True)`` during training, or running averages
thereof during inference"; ``tf.nn.moments`` names the axes of batch
normalization.  That is how TF 1.x code and ``tf.keras`` 2.x
(``BatchNormalization(fused=False)``, ``LayerNormalization`` outside its
fused path) computed these normalizers, and how ``tensorflow_addons``
computed instance normalization.  Every other normalizer (group norm, RMS
norm, weight norm, whitening, ...) has no ``tf.nn`` op, and ``normalize``
with p other than 2 has none either: :meth:`TensorflowAdapter.prepare`
returns None for them.

Conventions (configured in normref by :meth:`TensorflowAdapter.prepare`, so
they are never counted as numerical errors):

* batch-norm momentum: the running statistics move in the Keras direction,
  ``new = m * old + (1 - m) * batch``: normref runs
  ``momentum_convention="keras"`` with the case's momentum value, which the
  update receives unchanged (the fused op is given
  ``exponential_avg_factor = 1 - m``);
* batch-norm running variance: ``tf.nn.moments`` returns the *biased* batch
  variance, which is what gets averaged (``running_var_unbiased=False``);
  ``FusedBatchNormV3`` blends in the Bessel-corrected ``n / (n - 1)`` variance
  (``running_var_unbiased=True`` with ``batch_norm="fused"``);
* ``momentum=None`` (PyTorch's cumulative average) and ``num_batches_tracked``
  have no TF counterpart: prepare returns None;
* instance norm keeps no running statistics in TF: a case that updates them
  is judged without them (dropped, as for Flax);
* ``tf.nn.batch_normalization`` adds ``variance_epsilon`` to the variance: a
  ``mean_variance_norm`` case runs with ``eps_placement="variance"``;
* LRN: ``convention="tf"`` (window ``[c - r, c + r]``, alpha *not* divided by
  the window size) with ``size = 2 r + 1``; an even size has no TF spelling
  (prepare returns None);
* ``tf.math.l2_normalize`` clamps the *squared* norm, ``x * rsqrt(max(sum
  x^2, epsilon))``: normref runs ``normalize(..., eps_placement="squared_norm")``
  with the same eps (TF's default ``epsilon=1e-12`` bounds the norm below by
  1e-6).

Numerical facts, measured and not configured (``known/tensorflow.json`` lists
the failures with their figures): ``tf.nn.moments`` is two-pass (mean, then
the mean of the squared differences from it); ``tf.nn.batch_normalization``
evaluates :math:`y = x \cdot \mathrm{inv} + (\beta - \mu \cdot \mathrm{inv})`
with :math:`\mathrm{inv} = \gamma / \sqrt{\sigma^2 + \epsilon}`, which cancels
when :math:`|\mu| \gg \sigma`; the squares of ``l2_normalize`` and of the
variance overflow for huge inputs, and TensorFlow's CPU kernels flush
subnormal numbers to zero.

Dtypes: float32 and float64 (float64 tensors are checked to stay float64:
outputs, gradients and running statistics).  ``tf.nn.local_response_normalization``
and ``FusedBatchNormV3`` have no float64 kernel (their type lists are half,
bfloat16, float) and raise :class:`Unsupported` there.  The fused op takes 4-D
input only: a batch-norm case of any rank is viewed, exactly, as
``(prod(before), C, prod(after), 1)`` in ``NCHW`` (``(prod(before), 1, 1, C)``
in ``NHWC`` when the channels are last), the statistics being the same, and
the output reshaped back.

Gradients: ``tf.GradientTape`` (eager, as TF 2 runs by default; no
``tf.function``, whose graph optimizer may rewrite the primitive ops) watches
every array argument normref differentiates (input, weight, bias, and in eval
mode the running statistics); the case's cotangent is passed as
``output_gradients``.  ``FusedBatchNormV3`` declares no gradient for its mean
and variance inputs: in eval mode those two slots are left out of
:attr:`Outputs.grads` (not judged); any other missing gradient is an error.

Importing TensorFlow is slow (~5 s) and noisy: the adapter sets
``TF_CPP_MIN_LOG_LEVEL=2`` (unless already set) before the first import and
limits TensorFlow's thread pools to the CPUs this process may use.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from . import Adapter, Outputs, Unsupported, diff_slots, slot_of
from ..conformance.cases import bound_arguments

__all__ = ["TensorflowAdapter"]

#: normref normalizers with a TensorFlow op (see the module docstring)
_OPS = ("batch_norm", "layer_norm", "instance_norm", "mean_variance_norm", "positional_norm",
        "local_response_norm", "normalize")

#: the dtypes of each TF kernel that has fewer than the adapter's
_FLOAT32_ONLY = {
    "local_response_norm": "tf.nn.local_response_normalization has no float64 kernel "
                           "(LRN: half, bfloat16, float)",
}

_TF = None


def _tf():
    """``tensorflow``, imported once: quiet C++ logs, thread pools sized to this process."""
    global _TF
    if _TF is None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf

        try:
            ncpu = len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            ncpu = os.cpu_count() or 1
        try:  # only possible before TF's runtime starts
            tf.config.threading.set_intra_op_parallelism_threads(ncpu)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:
            pass
        _TF = tf
    return _TF


def _spec(name):
    from ...registry import REGISTRY

    return REGISTRY[name]


_slot_of = slot_of

_diff_slots = diff_slots

def _set(case, args, kw, name, value):
    """Set parameter ``name`` of the call, positionally if it was given so."""
    slot = _slot_of(case)
    if name in slot:
        args[slot[name]] = value
    else:
        kw[name] = value


class TensorflowAdapter(Adapter):
    """Judge TensorFlow's ``tf.nn`` / ``tf.math`` normalization ops.

    ``batch_norm="moments"`` (default) runs batch-norm cases as
    ``tf.nn.moments`` + ``tf.nn.batch_normalization``; ``batch_norm="fused"``
    through ``tf.compat.v1.nn.fused_batch_norm`` (``FusedBatchNormV3``:
    float32 only, every rank viewed as 4-D; float64 is :class:`Unsupported`).
    The other normalizers do not depend on it.
    """

    framework = "tensorflow"
    dtypes = ("float32", "float64")
    gradients = True
    conventions = {
        "batch_norm momentum": "keras direction: moving = moving*m + batch*(1-m) "
                               "(fused: exponential_avg_factor = 1-m)",
        "batch_norm running variance": "biased (tf.nn.moments); fused: Bessel-corrected n/(n-1)",
        "batch_norm momentum=None": "no cumulative average (unsupported)",
        "variance formula": "two-pass tf.nn.moments; tf.nn.batch_normalization as "
                            "x*inv + (offset - mean*inv), inv = scale*rsqrt(var + eps)",
        "eps placement": "added to the variance (tf.nn.batch_normalization, FusedBatchNormV3)",
        "LRN window": "depth_radius r: channels [c-r, c+r], size = 2r+1, alpha not divided",
        "l2_normalize eps": "clamps the squared norm: x * rsqrt(max(sum x^2, epsilon))",
        "instance norm running statistics": "none in TF (dropped)",
        "layout": "batch norm: any channel axis (fused: viewed as 4-D NCHW, or NHWC); LRN: "
                  "channels last (NC... transposed)",
    }

    def __init__(self, batch_norm="moments"):
        if batch_norm not in ("moments", "fused"):
            raise ValueError(f"batch_norm must be 'moments' or 'fused', got {batch_norm!r}")
        self.batch_norm = batch_norm

    @classmethod
    def available(cls) -> bool:
        try:
            _tf()
        except ImportError:
            return False
        return True

    # -- conventions -----------------------------------------------------------
    def prepare(self, case):
        name = case.name
        if name not in _OPS:
            return None
        kw = dict(case.kwargs)
        conv = dict(getattr(case, "conventions", {}) or {})
        args = list(case.args)
        b = bound_arguments(case)
        mutates = case.mutates
        if name == "batch_norm":
            if b["num_batches_tracked"] is not None:
                return None
            if b["training"] and b["momentum"] is None and b["running_mean"] is not None:
                return None  # cumulative moving average: no TF counterpart
            if b["momentum"] is None:
                _set(case, args, kw, "momentum", 0.99)  # unused (eval or no running stats)
            kw["momentum_convention"] = "keras"
            conv["momentum_convention"] = "keras (moving = moving*m + batch*(1-m))"
            fused = self.batch_norm == "fused"
            kw["running_var_unbiased"] = fused
            conv["running_var_unbiased"] = (
                "True (FusedBatchNormV3 blends in the n/(n-1) batch variance)" if fused
                else "False (tf.nn.moments returns the biased variance)")
        elif name == "instance_norm":
            if b["use_input_stats"]:
                for pname in ("running_mean", "running_var"):
                    if b[pname] is not None:
                        slot = _slot_of(case).get(pname)
                        _set(case, args, kw, pname, None)
                        mutates = tuple(i for i in mutates if i != slot)
                        conv["running statistics"] = "not kept by TF instance norm (dropped)"
        elif name == "mean_variance_norm":
            kw["eps_placement"] = "variance"
            conv["eps_placement"] = "variance (tf.nn.batch_normalization: rsqrt(var + eps))"
        elif name == "local_response_norm":
            if b["convention"] != "torch" or int(b["size"]) % 2 == 0:
                return None  # the tf window is 2 r + 1 channels
            kw["convention"] = "tf"
            conv["convention"] = "tf (depth_radius = (size-1)/2, alpha not divided by size)"
        elif name == "normalize":
            if float(b["p"]) != 2.0 or b["eps_placement"] != "norm":
                return None
            kw["eps_placement"] = "squared_norm"
            conv["eps_placement"] = "squared_norm (tf.math.l2_normalize: rsqrt(max(sum x^2, eps)))"
        return dataclasses.replace(case, args=tuple(args), kwargs=kw, conventions=conv,
                                   mutates=mutates)

    # -- running ---------------------------------------------------------------
    def run(self, case, dtype):
        if dtype not in self.dtypes:
            raise Unsupported(f"tensorflow adapter runs {self.dtypes}, not {dtype}")
        name = case.name
        if name not in _OPS:
            raise Unsupported(f"no TensorFlow op for {name}")
        if dtype != "float32" and name in _FLOAT32_ONLY:
            raise Unsupported(_FLOAT32_ONLY[name])
        tf = _tf()
        b = bound_arguments(case)
        slot = _slot_of(case)
        np_dtype = np.dtype(dtype)
        diff = _diff_slots(case)
        sig = _spec(name).signature
        build = getattr(self, f"_{name}")

        vals = {k: tf.constant(np.asarray(v, dtype=np_dtype))
                if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v
                for k, v in b.items()}
        watched = [sig[i] for i in diff]
        with tf.GradientTape(watch_accessed_variables=False, persistent=False) as tape:
            tape.watch([vals[k] for k in watched])
            y, state, no_grad = build(tf, b, vals, dtype)
        grads = {}
        if diff:
            ct = tf.constant(np.asarray(case.cotangent(tuple(y.shape)), dtype=np_dtype))
            got = tape.gradient(y, [vals[k] for k in watched], output_gradients=ct)
            for i, k, g in zip(diff, watched, got):
                if g is None:
                    if k in no_grad:
                        continue
                    raise RuntimeError(f"tf.GradientTape returned no gradient for argument {i} "
                                       f"({k}) of {name}, which normref differentiates")
                grads[i] = self._numpy(g, dtype, f"gradient of {k}")
        out_state = {slot[k]: self._numpy(t, dtype, k) for k, t in state.items() if k in slot
                     and slot[k] in case.mutates}
        return Outputs(y=self._numpy(y, dtype, "output"), grads=grads, state=out_state)

    @staticmethod
    def _numpy(t, dtype, what):
        a = t.numpy()
        if a.dtype != np.dtype(dtype):
            raise RuntimeError(f"tensorflow returned a {a.dtype} {what} for a {dtype} case")
        return a

    # -- one builder per op: (tf, b = bound numpy values, v = tf values, dtype) ----------
    # Each returns (y, {parameter name: new running statistics}, {names with no TF gradient}).

    def _batch_norm(self, tf, b, v, dtype):
        x = b["input"]
        nd = np.ndim(x)
        ax = int(b["channel_axis"])
        if not -nd <= ax < nd:
            raise Unsupported(f"channel_axis {ax} on a {nd}-d input")
        ax %= nd
        C = np.shape(x)[ax]
        training = bool(b["training"])
        has_stats = b["running_mean"] is not None and b["running_var"] is not None
        if not training and not has_stats:
            raise Unsupported("eval-mode batch norm needs running statistics")
        if b["momentum_convention"] != "keras" or b["num_batches_tracked"] is not None:
            raise Unsupported("batch_norm: run the case through prepare() (keras momentum)")
        m = b["momentum"]
        if training and has_stats and m is None:
            raise Unsupported("momentum=None (cumulative average) has no TF counterpart")
        if self.batch_norm == "fused":
            if not b["running_var_unbiased"]:
                raise Unsupported("fused batch norm: run the case through prepare()")
            return self._fused_batch_norm(tf, b, v, dtype, nd, ax, C, training, has_stats)
        if b["running_var_unbiased"]:
            raise Unsupported("batch_norm: run the case through prepare() (biased running var)")
        bshape = [1] * nd
        bshape[ax] = C

        def rs(t):
            return None if t is None else tf.reshape(t, bshape)

        if training:
            mean, var = tf.nn.moments(v["input"], [i for i in range(nd) if i != ax],
                                      keepdims=True)
        else:
            mean, var = rs(v["running_mean"]), rs(v["running_var"])
        y = tf.nn.batch_normalization(v["input"], mean, var, rs(v["bias"]), rs(v["weight"]),
                                      float(b["eps"]))
        state = {}
        if training and has_stats:
            m = float(m)
            state["running_mean"] = v["running_mean"] * m + tf.reshape(mean, [C]) * (1.0 - m)
            state["running_var"] = v["running_var"] * m + tf.reshape(var, [C]) * (1.0 - m)
        return y, state, set()

    def _fused_batch_norm(self, tf, b, v, dtype, nd, ax, C, training, has_stats):
        if dtype != "float32":
            raise Unsupported("FusedBatchNormV3 has no float64 kernel (T: half, bfloat16, float; "
                              "U: float)")
        shape = tuple(np.shape(b["input"]))
        before = int(np.prod(shape[:ax], dtype=np.int64))
        after = int(np.prod(shape[ax + 1:], dtype=np.int64))
        # the same statistics as a 4-D tensor: (before, C, after, 1) NCHW, or NHWC when the
        # channels are last (an exact relayout, undone on the output)
        if ax == nd - 1:
            x4, fmt = tf.reshape(v["input"], [before, 1, 1, C]), "NHWC"
        else:
            x4, fmt = tf.reshape(v["input"], [before, C, after, 1]), "NCHW"
        scale = v["weight"] if v["weight"] is not None else tf.ones([C], tf.float32)
        offset = v["bias"] if v["bias"] is not None else tf.zeros([C], tf.float32)
        kwargs = dict(epsilon=float(b["eps"]), data_format=fmt, is_training=training)
        if training and has_stats:
            kwargs.update(mean=v["running_mean"], variance=v["running_var"],
                          exponential_avg_factor=1.0 - float(b["momentum"]))
        elif not training:
            kwargs.update(mean=v["running_mean"], variance=v["running_var"])
        y, rm, rv = tf.compat.v1.nn.fused_batch_norm(x4, scale, offset, **kwargs)
        state = {"running_mean": rm, "running_var": rv} if training and has_stats else {}
        return tf.reshape(y, shape), state, {"running_mean", "running_var"}

    def _moments_norm(self, tf, v, axes, eps, scale=None, offset=None):
        """``tf.nn.moments`` over ``axes`` (keepdims) + ``tf.nn.batch_normalization``."""
        mean, var = tf.nn.moments(v["input"], list(axes), keepdims=True)
        return tf.nn.batch_normalization(v["input"], mean, var, offset, scale, float(eps))

    def _layer_norm(self, tf, b, v, dtype):
        ns = b["normalized_shape"]
        k = 1 if isinstance(ns, (int, np.integer)) else len(tuple(ns))
        nd = np.ndim(b["input"])
        if k == 0 or k > nd:
            raise Unsupported(f"normalized_shape {ns!r} on a {nd}-d input")
        y = self._moments_norm(tf, v, range(nd - k, nd), b["eps"], v["weight"], v["bias"])
        return y, {}, set()

    def _instance_norm(self, tf, b, v, dtype):
        x = b["input"]
        nd = np.ndim(x)
        if nd < 3:
            raise Unsupported("instance_norm needs an (N, C, spatial...) input")
        C = np.shape(x)[1]
        bshape = [1, C] + [1] * (nd - 2)

        def rs(t):
            return None if t is None else tf.reshape(t, bshape)

        if b["use_input_stats"]:
            if b["running_mean"] is not None or b["running_var"] is not None:
                raise Unsupported("TF instance norm keeps no running statistics: run prepare()")
            y = self._moments_norm(tf, v, range(2, nd), b["eps"], rs(v["weight"]), rs(v["bias"]))
        else:
            y = tf.nn.batch_normalization(v["input"], rs(v["running_mean"]),
                                          rs(v["running_var"]), rs(v["bias"]),
                                          rs(v["weight"]), float(b["eps"]))
        return y, {}, set()

    def _mean_variance_norm(self, tf, b, v, dtype):
        if b["eps_placement"] != "variance":
            raise Unsupported("tf.nn.batch_normalization adds eps to the variance: run prepare()")
        nd = np.ndim(b["input"])
        axes = b["axes"]
        axes = tuple(int(a) for a in (axes if np.ndim(axes) else (axes,)))
        if any(not -nd <= a < nd for a in axes):
            raise Unsupported(f"axes {axes} on a {nd}-d input")
        y = self._moments_norm(tf, v, sorted({a % nd for a in axes}), b["eps"])
        return y, {}, set()

    def _positional_norm(self, tf, b, v, dtype):
        if np.ndim(b["input"]) < 2:
            raise Unsupported("positional_norm needs an (N, C, ...) input")
        return self._moments_norm(tf, v, (1,), b["eps"]), {}, set()

    def _local_response_norm(self, tf, b, v, dtype):
        if b["convention"] != "tf":
            raise Unsupported("the TF LRN window is convention='tf': run prepare()")
        shape = tuple(np.shape(b["input"]))
        N, C, sp = shape[0], shape[1], shape[2:]
        L = int(np.prod(sp, dtype=np.int64))
        perm = [0] + list(range(2, len(shape))) + [1]
        x4 = tf.reshape(tf.transpose(v["input"], perm), [N, L, 1, C])  # NHWC, channels last
        y4 = tf.nn.local_response_normalization(
            x4, depth_radius=(int(b["size"]) - 1) // 2, bias=float(b["k"]),
            alpha=float(b["alpha"]), beta=float(b["beta"]))
        back = [0, len(shape) - 1] + list(range(1, len(shape) - 1))
        return tf.transpose(tf.reshape(y4, (N,) + sp + (C,)), back), {}, set()

    def _normalize(self, tf, b, v, dtype):
        if float(b["p"]) != 2.0 or b["eps_placement"] != "squared_norm":
            raise Unsupported("tf.math.l2_normalize is p=2 with eps on the squared norm: "
                              "run prepare()")
        return tf.math.l2_normalize(v["input"], axis=int(b["dim"]),
                                    epsilon=float(b["eps"])), {}, set()
