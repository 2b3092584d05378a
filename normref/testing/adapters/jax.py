r"""JAX / Flax adapter: ``flax.linen`` normalization layers and ``jax.nn.standardize``.

Which JAX/Flax op answers which normref normalizer:

=====================  ==============================================  ==========================
normref                JAX / Flax                                      layout
=====================  ==============================================  ==========================
``layer_norm``         ``flax.linen.LayerNorm`` (``reduction_axes`` =  as is
                       ``feature_axes`` = the trailing normalized
                       axes; params ``{"scale": w, "bias": b}``)
                       -- or ``jax.nn.standardize`` then ``* w + b``
                       with ``JaxAdapter(layer_norm="standardize")``
``rms_norm``           ``flax.linen.RMSNorm``                          as is
``group_norm``         ``flax.linen.GroupNorm(num_groups=G)``          NC... -> N...C -> NC...
``instance_norm``      ``flax.linen.InstanceNorm`` (batch statistics   NC... -> N...C -> NC...
                       only; flax keeps no running statistics)
``batch_norm``         ``flax.linen.BatchNorm(axis=channel_axis)``;    as is (flax's ``axis``
                       ``use_running_average = not training``;         names the feature axis)
                       running statistics as ``batch_stats``
``mean_variance_norm`` ``jax.nn.standardize(x, axis=axes)``            as is
``positional_norm``    ``jax.nn.standardize(x, axis=1)``               as is
=====================  ==============================================  ==========================

Every other normalizer has no JAX/Flax counterpart: :meth:`JaxAdapter.prepare`
returns None for it.

Conventions (configured in normref by :meth:`JaxAdapter.prepare`, so they are
never counted as numerical errors):

* batch-norm momentum: Flax updates ``new = m * old + (1 - m) * batch``
  (the Keras direction): normref runs ``momentum_convention="keras"`` with the
  case's momentum value, which Flax receives unchanged;
* batch-norm running variance: Flax stores the *biased* batch variance:
  ``running_var_unbiased=False``;
* ``momentum=None`` (PyTorch's cumulative average) has no Flax counterpart:
  prepare returns None;
* GroupNorm scale/bias are per channel; a case with ``affine="group"``
  (ONNX-18, one weight per group) is rewritten to the equivalent per-channel
  weights (each group weight repeated ``C/G`` times);
* RMSNorm ``eps=None`` (normref/PyTorch: ``finfo(dtype).eps``) has no Flax
  spelling: normref and Flax both run Flax's default ``epsilon=1e-6``;
* ``jax.nn.standardize`` adds ``epsilon`` to the variance: a
  ``mean_variance_norm`` case runs with ``eps_placement="variance"``.

Numerical choices that are *not* conventions, and are therefore measured:
Flax's normalization layers default to ``use_fast_variance=True``,
:math:`\operatorname{Var} x = \max(0, E[x^2] - E[x]^2)`, and
``jax.nn.standardize`` defaults to ``algorithm="fast"``, the same one-pass
formula clipped at 0.  The adapter keeps those defaults (they are what users
get), so on data with a large offset relative to its spread the forward loses
about ``(max|x| / sigma)^2`` times the target dtype's epsilon in the variance:
Flax #1491 (negative variance, NaN), JAX #30426 (NaN when the variance is below
epsilon), JAX #37281 (fast variance, eager vs jit).  Those failures are listed in
``normref/testing/known/jax.json``, not configured away.

Float64: JAX computes in float32 unless ``jax_enable_x64`` is set.  Creating a
:class:`JaxAdapter` calls ``jax.config.update("jax_enable_x64", True)``, which
flips a **process-global** JAX flag (later JAX code in the same process sees
64-bit defaults too).  Float32 runs pass float32 arrays and parameters, so they
compute exactly as in a float32-only process.

Gradients: ``jax.vjp`` of the jitted forward with respect to the input and
every differentiable array argument normref differentiates (weight, bias,
and, in eval-mode batch norm, the running statistics), mapped back to the
positional slots of the normref call.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..conformance.cases import bound_arguments
from . import Adapter, Outputs, Unsupported, diff_slots, slot_of

__all__ = ["JaxAdapter"]

#: eps Flax's RMSNorm uses by default (normref's eps=None has no Flax spelling)
FLAX_RMS_EPS = 1e-6

_OPS = ("layer_norm", "rms_norm", "group_norm", "instance_norm", "batch_norm",
        "mean_variance_norm", "positional_norm")


def _spec(name):
    from ...registry import REGISTRY

    return REGISTRY[name]


def _bound(case):
    """``{parameter name: value}`` of the normref call, defaults applied."""
    return bound_arguments(case)

_slot_of = slot_of

_diff_slots = diff_slots

def _axes_of(normalized_shape, ndim):
    k = 1 if isinstance(normalized_shape, (int, np.integer)) else len(tuple(normalized_shape))
    if k == 0 or k > ndim:
        raise Unsupported(f"normalized_shape {normalized_shape!r} on a {ndim}-d input")
    return tuple(range(ndim - k, ndim))



def _flax_affine(vals, use_scale, use_bias):
    """Flax's ``params`` collection for a normalizer's scale / bias."""
    params = {}
    if use_scale:
        params["scale"] = vals["weight"]
    if use_bias:
        params["bias"] = vals["bias"]
    return params

class JaxAdapter(Adapter):
    """Judge ``flax.linen`` normalization layers and ``jax.nn.standardize``.

    ``JaxAdapter(layer_norm="flax")`` (default) runs ``layer_norm`` cases
    through ``flax.linen.LayerNorm``; ``layer_norm="standardize"`` through
    ``jax.nn.standardize`` over the trailing axes followed by the affine
    ``* weight + bias``.  ``jit=True`` (default) runs forward and VJP under
    ``jax.jit``, as training code does.  ``fast_variance=True`` (default)
    keeps the frameworks' defaults (``use_fast_variance=True``,
    ``algorithm="fast"``); ``fast_variance=False`` selects their two-pass
    variance (``use_fast_variance=False``, ``algorithm="stable"``), which
    attributes a discrepancy to the one-pass formula when it then vanishes.

    Instantiating the adapter enables 64-bit JAX (a process-global flag,
    see the module docstring).
    """

    framework = "jax"
    dtypes = ("float32", "float64")
    gradients = True
    conventions = {
        "batch_norm momentum": "keras direction: new = m*old + (1-m)*batch (flax default m=0.99)",
        "batch_norm running variance": "biased batch variance",
        "batch_norm momentum=None": "no cumulative average (unsupported)",
        "variance formula": "use_fast_variance=True: max(0, E[x^2]-E[x]^2) (Flax #1491); "
                            "jax.nn.standardize algorithm='fast' (JAX #30426, #37281)",
        "eps defaults": "1e-5 BatchNorm, jax.nn.standardize; 1e-6 LayerNorm, RMSNorm, GroupNorm",
        "GroupNorm scale shape": "per channel (C,), channels-last layout",
        "RMS definition": "x / sqrt(mean(x^2) + eps) * scale; eps=None -> 1e-6 (flax default)",
        "eps placement": "inside the square root (jax.nn.standardize: variance + epsilon)",
        "layout": "features last (GroupNorm, InstanceNorm: NC... transposed to N...C)",
    }

    def __init__(self, layer_norm="flax", jit=True, fast_variance=True):
        if layer_norm not in ("flax", "standardize"):
            raise ValueError(f"layer_norm must be 'flax' or 'standardize', got {layer_norm!r}")
        self.layer_norm = layer_norm
        self.jit = bool(jit)
        self.fast_variance = bool(fast_variance)
        import jax

        # process-global: JAX arrays may be float64 from here on
        jax.config.update("jax_enable_x64", True)

    @property
    def _algorithm(self):
        return "fast" if self.fast_variance else "stable"

    @classmethod
    def available(cls) -> bool:
        try:
            import flax.linen  # noqa: F401
            import jax  # noqa: F401
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
        b = _bound(case)
        if name == "rms_norm":
            if b["eps"] is None:
                if "eps" in kw or len(args) <= 3:
                    kw["eps"] = FLAX_RMS_EPS
                else:
                    args[3] = FLAX_RMS_EPS
                conv["eps"] = f"None -> {FLAX_RMS_EPS:g} (flax RMSNorm default)"
        elif name == "group_norm":
            if b.get("affine", "channel") == "group":
                slot = _slot_of(case)
                C = np.shape(b["input"])[1] if np.ndim(b["input"]) >= 2 else None
                G = b["num_groups"]
                if C is None or not isinstance(G, (int, np.integer)) or G <= 0 or C % G:
                    return None
                for pname in ("weight", "bias"):
                    v = b[pname]
                    if v is None:
                        continue
                    per_channel = np.repeat(np.asarray(v), C // G)
                    if pname in slot:
                        args[slot[pname]] = per_channel
                    else:
                        kw[pname] = per_channel
                kw["affine"] = "channel"
                conv["affine"] = "group weights expanded per channel (flax GroupNorm scale is (C,))"
        elif name == "instance_norm":
            if not b["use_input_stats"]:
                return None  # flax InstanceNorm has no running statistics
            slot = _slot_of(case)
            mutates = case.mutates
            for pname in ("running_mean", "running_var"):
                if b[pname] is not None:
                    if pname in slot:
                        args[slot[pname]] = None
                    else:
                        kw[pname] = None
                    mutates = tuple(i for i in mutates if i != slot.get(pname))
                    conv["running statistics"] = "not kept by flax InstanceNorm (dropped)"
            return dataclasses.replace(case, args=tuple(args), kwargs=kw, conventions=conv,
                                       mutates=mutates)
        elif name == "batch_norm":
            if b["num_batches_tracked"] is not None:
                return None
            if b["training"] and b["momentum"] is None and b["running_mean"] is not None:
                return None  # cumulative moving average: no flax counterpart
            if b["momentum"] is None:
                kw["momentum"] = 0.99  # unused (eval or no running stats); flax needs a number
            kw["momentum_convention"] = "keras"
            kw["running_var_unbiased"] = False
            conv["momentum_convention"] = "keras (flax: new = m*old + (1-m)*batch)"
            conv["running_var_unbiased"] = "False (flax stores the biased batch variance)"
        elif name == "mean_variance_norm":
            kw["eps_placement"] = "variance"
            conv["eps_placement"] = "variance (jax.nn.standardize: rsqrt(var + epsilon))"
        return dataclasses.replace(case, args=tuple(args), kwargs=kw, conventions=conv)

    # -- running ---------------------------------------------------------------
    def run(self, case, dtype):
        import jax
        import jax.numpy as jnp

        if dtype not in self.dtypes:
            raise Unsupported(f"jax adapter runs {self.dtypes}, not {dtype}")
        name = case.name
        if name not in _OPS:
            raise Unsupported(f"no JAX/Flax op for {name}")
        b = _bound(case)
        slot = _slot_of(case)
        np_dtype = np.dtype(dtype)
        diff = _diff_slots(case)
        diff_names = [_spec(name).signature[i] for i in diff]

        def as_jnp(v):  # float arrays in the target dtype; anything else as given
            return jnp.asarray(v.astype(np_dtype)) if v.dtype.kind == "f" else v

        values = {k: as_jnp(v) if isinstance(v, np.ndarray) else v for k, v in b.items()}
        build = getattr(self, f"_{name}")
        fwd, state_names = build(b, values)  # fwd(dict of diff arrays) -> (y, aux state dict)

        fixed = {k: v for k, v in values.items() if k not in diff_names}

        def f(*diff_arrays):
            vals = dict(fixed)
            vals.update(zip(diff_names, diff_arrays))
            return fwd(vals)

        primals = [values[k] for k in diff_names]
        if self.jit:
            f = jax.jit(f)
        y, pullback, aux = jax.vjp(f, *primals, has_aux=True)
        y_np = np.asarray(y)
        grads = {}
        if diff:
            ct = jnp.asarray(np.asarray(case.cotangent(y_np.shape), dtype=np_dtype))
            grads = {i: np.asarray(g) for i, g in zip(diff, pullback(ct))}
        state = {}
        for pname in state_names:
            if pname in slot and pname in aux:
                state[slot[pname]] = np.asarray(aux[pname])
        return Outputs(y=y_np, grads=grads, state=state)

    # -- one builder per op: (b = bound numpy values, v = jnp values) ------------
    # Each returns (fwd, state_names): fwd(vals) -> (y, {param name: new state}).

    def _layer_norm(self, b, v):
        import flax.linen as nn
        import jax
        import jax.numpy as jnp

        x = b["input"]
        axes = _axes_of(b["normalized_shape"], np.ndim(x))
        eps = float(b["eps"])
        use_scale, use_bias = b["weight"] is not None, b["bias"] is not None
        if self.layer_norm == "standardize":
            def fwd(vals):
                y = jax.nn.standardize(vals["input"], axis=axes, epsilon=eps,
                                       algorithm=self._algorithm)
                if use_scale:
                    y = y * vals["weight"]
                if use_bias:
                    y = y + vals["bias"]
                return y, {}

            return fwd, {}
        mod = nn.LayerNorm(use_fast_variance=self.fast_variance, epsilon=eps,
                           use_scale=use_scale, use_bias=use_bias,
                           reduction_axes=axes, feature_axes=axes,
                           param_dtype=jnp.result_type(v["input"]))

        def fwd(vals):
            params = _flax_affine(vals, use_scale, use_bias)
            return mod.apply({"params": params}, vals["input"]), {}

        return fwd, {}

    def _rms_norm(self, b, v):
        import flax.linen as nn
        import jax.numpy as jnp

        axes = _axes_of(b["normalized_shape"], np.ndim(b["input"]))
        if b["eps"] is None:
            raise Unsupported("rms_norm eps=None: run the case through prepare()")
        use_scale = b["weight"] is not None
        mod = nn.RMSNorm(use_fast_variance=self.fast_variance, epsilon=float(b["eps"]),
                         use_scale=use_scale, reduction_axes=axes,
                         feature_axes=axes, param_dtype=jnp.result_type(v["input"]))

        def fwd(vals):
            params = _flax_affine(vals, use_scale, False)
            return mod.apply({"params": params}, vals["input"]), {}

        return fwd, {}

    def _group_norm(self, b, v):
        import flax.linen as nn
        import jax.numpy as jnp

        if b.get("affine", "channel") != "channel":
            raise Unsupported("group_norm affine='group': run the case through prepare()")
        if np.ndim(b["input"]) < 2:
            raise Unsupported("group_norm needs an (N, C, ...) input")
        use_scale, use_bias = b["weight"] is not None, b["bias"] is not None
        mod = nn.GroupNorm(use_fast_variance=self.fast_variance, num_groups=int(b["num_groups"]),
                           epsilon=float(b["eps"]),
                           use_scale=use_scale, use_bias=use_bias,
                           param_dtype=jnp.result_type(v["input"]))

        def fwd(vals):
            params = _flax_affine(vals, use_scale, use_bias)
            x = jnp.moveaxis(vals["input"], 1, -1)  # NC... -> N...C
            return jnp.moveaxis(mod.apply({"params": params}, x), -1, 1), {}

        return fwd, {}

    def _instance_norm(self, b, v):
        import flax.linen as nn
        import jax.numpy as jnp

        if (not b["use_input_stats"] or b["running_mean"] is not None
                or b["running_var"] is not None):
            raise Unsupported("flax InstanceNorm keeps no running statistics")
        if np.ndim(b["input"]) < 3:
            raise Unsupported("instance_norm needs an (N, C, spatial...) input")
        use_scale, use_bias = b["weight"] is not None, b["bias"] is not None
        mod = nn.InstanceNorm(use_fast_variance=self.fast_variance, epsilon=float(b["eps"]),
                              use_scale=use_scale, use_bias=use_bias,
                              feature_axes=-1, param_dtype=jnp.result_type(v["input"]))

        def fwd(vals):
            params = _flax_affine(vals, use_scale, use_bias)
            x = jnp.moveaxis(vals["input"], 1, -1)
            return jnp.moveaxis(mod.apply({"params": params}, x), -1, 1), {}

        return fwd, {}

    def _batch_norm(self, b, v):
        import flax.linen as nn
        import jax.numpy as jnp

        if b["momentum_convention"] != "keras" or b["running_var_unbiased"]:
            raise Unsupported("batch_norm: run the case through prepare() (keras momentum, "
                              "biased running variance)")
        if b["num_batches_tracked"] is not None:
            raise Unsupported("flax BatchNorm has no num_batches_tracked")
        x = b["input"]
        ndim = np.ndim(x)
        axis = int(b["channel_axis"])
        if not -ndim <= axis < ndim:
            raise Unsupported(f"channel_axis {axis} on a {ndim}-d input")
        C = np.shape(x)[axis]
        training = bool(b["training"])
        has_stats = b["running_mean"] is not None and b["running_var"] is not None
        if not training and not has_stats:
            raise Unsupported("eval-mode batch norm needs running statistics")
        momentum = b["momentum"]
        if training and has_stats and momentum is None:
            raise Unsupported("momentum=None (cumulative average) has no flax counterpart")
        use_scale, use_bias = b["weight"] is not None, b["bias"] is not None
        mod = nn.BatchNorm(use_fast_variance=self.fast_variance,
                           use_running_average=not training, axis=axis,
                           momentum=0.99 if momentum is None else float(momentum),
                           epsilon=float(b["eps"]), use_scale=use_scale, use_bias=use_bias,
                           param_dtype=jnp.result_type(v["input"]))
        dt = jnp.result_type(v["input"])

        def fwd(vals):
            params = _flax_affine(vals, use_scale, use_bias)
            if has_stats:
                stats = {"mean": vals["running_mean"], "var": vals["running_var"]}
            else:  # flax always carries batch_stats; these are discarded
                stats = {"mean": jnp.zeros((C,), dt), "var": jnp.ones((C,), dt)}
            variables = {"params": params, "batch_stats": stats}
            if training:
                y, upd = mod.apply(variables, vals["input"], mutable=["batch_stats"])
                new = upd["batch_stats"]
                aux = ({"running_mean": new["mean"], "running_var": new["var"]}
                       if has_stats else {})
                return y, aux
            return mod.apply(variables, vals["input"]), {}

        state = {"running_mean": "mean", "running_var": "var"} if (training and has_stats) else {}
        return fwd, state

    def _mean_variance_norm(self, b, v):
        import jax

        if b["eps_placement"] != "variance":
            raise Unsupported("jax.nn.standardize adds eps to the variance: run prepare()")
        ndim = np.ndim(b["input"])
        axes = b["axes"]
        axes = tuple(int(a) for a in (axes if np.ndim(axes) else (axes,)))
        if any(not -ndim <= a < ndim for a in axes):
            raise Unsupported(f"axes {axes} on a {ndim}-d input")
        eps = float(b["eps"])

        def fwd(vals):
            return jax.nn.standardize(vals["input"], axis=axes, epsilon=eps,
                                       algorithm=self._algorithm), {}

        return fwd, {}

    def _positional_norm(self, b, v):
        import jax

        if np.ndim(b["input"]) < 2:
            raise Unsupported("positional_norm needs an (N, C, ...) input")
        eps = float(b["eps"])

        def fwd(vals):
            return jax.nn.standardize(vals["input"], axis=1, epsilon=eps,
                                      algorithm=self._algorithm), {}

        return fwd, {}

