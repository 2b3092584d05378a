r"""Keras 3 adapters: ``keras.layers`` normalization layers on each Keras backend.

Targets ``keras-tensorflow``, ``keras-jax``, ``keras-torch`` and ``keras-numpy``
(:class:`KerasTensorFlowAdapter`, :class:`KerasJaxAdapter`,
:class:`KerasTorchAdapter`, :class:`KerasNumpyAdapter`).  Keras fixes its backend
when it is first imported (``KERAS_BACKEND``), so the adapters never import
Keras in this process: each owns a persistent worker subprocess
(:mod:`._keras_worker`, started with ``KERAS_BACKEND=<backend>`` on the first
case and kept for the adapter's lifetime) that builds the layer from a plain
description, runs it on NumPy arrays and returns the output, the VJPs and
the updated running statistics.  :meth:`KerasAdapter.prepare` and all of
normref's work happen here.

Which Keras layer answers which normref normalizer:

=================  ===============================================  ==========================
normref            Keras layer                                      layout / variables
=================  ===============================================  ==========================
``batch_norm``     ``BatchNormalization(axis=channel_axis)``        as is; ``gamma``, ``beta``,
                   (``training`` as the call argument)              ``moving_mean``, ``moving_variance``
``batch_renorm``   ``BatchNormalization(renorm=True,                as is; also ``moving_stddev``,
                   renorm_clipping={rmax, rmin=1/rmax, dmax})``     ``renorm_mean``, ``renorm_stddev``
``layer_norm``     ``LayerNormalization(axis=<trailing axes>)``     as is; ``gamma``, ``beta``
``rms_norm``       ``RMSNormalization(axis=<trailing axes>)``       as is; ``scale`` (1 if no weight)
``group_norm``     ``GroupNormalization(groups=G, axis=1)``         NC... as is; ``gamma``, ``beta`` (C,)
``normalize``      ``UnitNormalization(axis=dim)`` (p = 2 only)     as is; no variables
=================  ===============================================  ==========================

Every other normalizer has no Keras layer; ``LayerNormalization(rms_scaling=True)``
(deprecated) computes :math:`x / \sqrt{\operatorname{Var} x + \epsilon}\,\gamma`, which is
neither ``rms_norm`` (the mean square, not the variance) nor ``layer_norm`` (no
mean subtracted), so it is not mapped.

Conventions (configured in normref by :meth:`KerasAdapter.prepare`, never
counted as numerical errors):

* batch-norm momentum: Keras updates ``new = m * old + (1 - m) * batch``
  (the Flax direction): ``momentum_convention="keras"`` with the case's
  momentum value, which Keras receives unchanged; Keras stores the *biased*
  batch variance: ``running_var_unbiased=False``; ``momentum=None``
  (PyTorch's cumulative average) and ``num_batches_tracked`` have no Keras
  counterpart (skipped);
* batch renormalization (training): Keras computes ``r`` and ``d`` from
  separate ``renorm_mean`` / ``renorm_stddev`` variables floored at
  :math:`\sqrt\epsilon`, and tracks a moving *standard deviation*
  ``moving_stddev`` towards :math:`\sqrt{\sigma_B^2 + \epsilon}`.  The case's
  running variance :math:`v` is rewritten as the standard deviation
  :math:`s = \sqrt{v + \epsilon}` that gives the same :math:`\sigma` (normref's
  ``running_std=True``), Keras receives ``moving_mean = renorm_mean`` =
  running mean and ``moving_stddev = renorm_stddev = s``, so one call computes
  normref's function exactly; ``moving_stddev`` is judged as the running
  variance slot.  A negative ``eps`` has no Keras meaning there
  (:math:`\sqrt\epsilon`, skipped); a batch whose variance is not finite (a
  NaN, or beyond float64) is skipped too, because normref's running-std update
  raises on it (:data:`RENORM_STD_LIMITATION`).  Eval reads ``moving_mean`` /
  ``moving_variance``: batch norm's eval, no rewriting;
* ``renorm_clipping``: ``rmin = 1 / rmax`` (normref has one bound);
* GroupNorm scale/bias are per channel; ``affine="group"`` (ONNX-18) is
  rewritten to the equivalent per-channel weights;
* RMSNorm ``eps=None`` (normref/PyTorch: ``finfo(dtype).eps``) has no Keras
  spelling: both run ``RMSNormalization``'s default ``epsilon=1e-6``; a case
  without a weight runs with ``scale = 1``;
* ``UnitNormalization`` is L2 with a fixed ``epsilon=1e-12``: Keras computes
  :math:`x \min(1/\sqrt{\sum x^2}, 1/\epsilon)`, i.e.
  :math:`x / \max(\lVert x\rVert_2, \epsilon)`, normref's own clamp on the
  *norm* (not TensorFlow's ``l2_normalize`` clamp of the squared norm); other
  ``p`` or ``eps`` are skipped;
* eps inside the square root, biased variance everywhere (normref's
  defaults); ``LayerNormalization`` / ``GroupNormalization`` /
  ``BatchNormalization`` default to ``epsilon=1e-3``, but every case passes
  its own.

Numerical choices that are *not* conventions, and are therefore measured
(they are the known discrepancies, ``normref/testing/known/keras-<backend>.json``):

* the compute dtype: the normalization layers compute in
  ``keras.backend.result_type(dtype, "float32")``, and Keras' type lattice maps
  float64 to float32 on every backend but TensorFlow (``BIT64_TO_BIT32_DTYPE``),
  so a ``dtype="float64"`` layer computes in float32 on numpy, JAX and torch
  and casts the result back to float64; ``UnitNormalization`` computes in its
  input's dtype, which is float64 on JAX but float32 again on numpy and torch,
  whose binary ops promote through the same lattice.  The worker reports the
  lattice's answer (:meth:`KerasAdapter.info`);
* ``keras.ops.moments`` on the numpy and torch backends is the one-pass
  :math:`E[x^2] - E[x]^2`, unclipped (TensorFlow's ``tf.nn.moments`` and
  ``jnp.var`` are two-pass); ``LayerNormalization`` on torch uses
  ``torch.nn.functional.layer_norm`` instead (contiguous axes);
* ``x * inv + (-mean * inv + beta)`` in ``ops.batch_normalization`` and the
  group/layer norms (a cancellation the conditioning of the judge covers).

Gradients: ``tf.GradientTape`` (keras-tensorflow), ``jax.vjp`` of the layer's
``stateless_call`` under ``jax.jit`` (keras-jax; ``KerasJaxAdapter(jit=False)``
runs it eagerly), ``torch.autograd`` (keras-torch); keras-numpy has no
autodiff (``gradients = False``).  Every argument normref differentiates in
the call has a Keras counterpart (the input, ``gamma``, ``beta``, ``scale``,
and in eval-mode batch norm ``moving_mean`` / ``moving_variance``, which
``stateless_call`` takes as values).

The worker: started lazily (the first :meth:`~KerasAdapter.run`, or
:meth:`~KerasAdapter.info`), restarted when it has died (a case during which
it dies is an ``error`` result; the next case gets a fresh worker), stopped by
:meth:`~KerasAdapter.close`, by a finalizer when the adapter is collected,
and at interpreter exit.  Each request has a timeout (``timeout`` seconds,
after which the worker is killed and the case is an error).

Cost: a worker start imports Keras and its backend (3-6 s on one core); a
catalogue run is then dominated by normref's own work, except on JAX, where
every case and dtype is a new XLA program (~0.3 s to compile): keras-jax keeps
XLA's persistent compilation cache in :func:`default_jax_cache_dir` (the same
executables, compiled once per machine; ``KerasJaxAdapter(compilation_cache=None)``
or ``NORMREF_KERAS_JAX_CACHE_DIR=""`` turns it off).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
from dataclasses import dataclass, field

import numpy as np

from . import Adapter, Outputs, Unsupported, diff_slots, slot_of

__all__ = ["KerasAdapter", "KerasTensorFlowAdapter", "KerasJaxAdapter", "KerasTorchAdapter",
           "KerasNumpyAdapter", "KerasWorkerError", "KERAS_RMS_EPS", "KERAS_UNIT_EPS",
           "KERAS_LAYERS", "default_jax_cache_dir"]

#: ``RMSNormalization``'s default epsilon (normref's eps=None has no Keras spelling)
KERAS_RMS_EPS = 1e-6
#: the epsilon ``UnitNormalization`` hard-codes
KERAS_UNIT_EPS = 1e-12
#: normref normalizer -> the Keras layer that computes it
KERAS_LAYERS = {
    "batch_norm": "BatchNormalization",
    "batch_renorm": "BatchNormalization(renorm=True)",
    "layer_norm": "LayerNormalization",
    "rms_norm": "RMSNormalization",
    "group_norm": "GroupNormalization",
    "normalize": "UnitNormalization",
}
#: the Python module each backend needs
_BACKEND_MODULE = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch", "numpy": "numpy"}
from ._keras_process import KerasWorkerError, _Worker  # noqa: F401


def _spec(name):
    from ...registry import REGISTRY

    return REGISTRY[name]


def _bound(case):
    from ..conformance.cases import bound_arguments

    return bound_arguments(case)


_slot_of = slot_of

def _diff_names(case):
    """The parameters normref differentiates in this call (its VJP slots), by name."""
    sig = _spec(case.name).signature
    return [sig[i] for i in diff_slots(case)]

def _replace_arg(case, args, kw, name, value):
    """Set parameter ``name`` of the call, positionally if it was given so."""
    slot = _slot_of(case)
    if name in slot:
        args[slot[name]] = value
    else:
        kw[name] = value


def _trailing_axes(normalized_shape, ndim):
    k = 1 if isinstance(normalized_shape, (int, np.integer)) else len(tuple(normalized_shape))
    if k == 0 or k > ndim:
        raise Unsupported(f"normalized_shape {normalized_shape!r} on a {ndim}-d input")
    return list(range(ndim - k, ndim))


#: why a renorm training case with a non-finite batch variance is skipped (normref's side)
RENORM_STD_LIMITATION = (
    "normref's batch_renorm(running_std=True) raises ValueError when the batch standard "
    "deviation is not finite (a NaN in the batch, or a batch variance beyond float64): its "
    "running-std update treats that as an overflow of the update, so the Keras form of this "
    "case has no normref answer")


def _batch_var_finite(b):
    """Whether every channel's float64 batch variance of a batch-norm call is finite."""
    x = np.asarray(b["input"], dtype=np.float64)
    axis = int(b["channel_axis"]) % max(x.ndim, 1)
    axes = tuple(a for a in range(x.ndim) if a != axis)
    if x.size == 0:
        return True
    with np.errstate(all="ignore"):
        return bool(np.all(np.isfinite(np.var(x, axis=axes))))


@dataclass
class _Layer:
    """A Keras layer call described in plain values (what the worker receives).

    ``params``: normref parameter -> Keras name (``"x"`` for the input, else a
    variable); ``state``: Keras variable -> normref parameter whose running
    statistics it is after the call.
    """

    layer: str
    config: dict
    weights: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    call: dict = field(default_factory=dict)
    state: dict = field(default_factory=dict)


class KerasAdapter(Adapter):
    """Keras 3 normalization layers on one backend, run in a worker subprocess.

    Subclasses fix :attr:`backend`.  ``timeout`` bounds each case (seconds;
    the worker is killed and the case is an error after it),
    ``start_timeout`` the worker's start (importing Keras and its backend).
    """

    backend = ""
    dtypes = ("float32", "float64")
    gradients = True

    def __init__(self, timeout=120.0, start_timeout=300.0):
        if not self.backend:
            raise TypeError("KerasAdapter is abstract: use KerasTensorFlowAdapter, "
                            "KerasJaxAdapter, KerasTorchAdapter or KerasNumpyAdapter")
        self._worker = _Worker(self.backend, start_timeout=start_timeout, timeout=timeout,
                               env=self._worker_env())

    def _worker_env(self):
        """Environment variables of the worker beyond ``KERAS_BACKEND``."""
        return {}

    @classmethod
    def available(cls) -> bool:
        """Keras 3 and the backend's package are installed (nothing is imported here)."""
        if not cls.backend:
            return False
        try:
            import importlib.metadata as md

            if int(md.version("keras").split(".")[0]) < 3:
                return False
        except (ImportError, ValueError, md.PackageNotFoundError):
            return False
        return (importlib.util.find_spec("keras") is not None
                and importlib.util.find_spec(_BACKEND_MODULE[cls.backend]) is not None)

    # -- the worker ------------------------------------------------------------------
    @property
    def worker_pid(self):
        """The worker's process id, or None when it is not running."""
        return self._worker.pid if self._worker.alive() else None

    def info(self):
        """The worker's ready message: backend, Keras and framework versions,
        ``result_type_float64_float32`` (the dtype a float64 layer computes in),
        ``epsilon`` (``keras.config.epsilon()``), ``pid``; starts the worker."""
        if not self._worker.alive():
            return dict(self._worker.start())
        return dict(self._worker.info)

    def close(self):
        """Stop the worker (a later case starts a new one)."""
        self._worker.close()

    def _call_worker(self, req, case_id):
        resp = self._worker.request(req, doing=f"running {case_id}")
        if not isinstance(resp, dict):
            raise KerasWorkerError(f"the keras-{self.backend} worker answered {resp!r}")
        if not resp.get("ok"):
            raise KerasWorkerError(f"Keras ({self.backend}) raised {resp.get('error')}")
        return resp

    # -- conventions -----------------------------------------------------------------
    def prepare(self, case):
        name = case.name
        if name not in KERAS_LAYERS:
            return None
        kw = dict(case.kwargs)
        conv = dict(getattr(case, "conventions", {}) or {})
        args = list(case.args)
        b = _bound(case)
        if name in ("batch_norm", "batch_renorm"):
            if b["num_batches_tracked"] is not None:
                raise Unsupported("Keras BatchNormalization keeps no num_batches_tracked")
            has_stats = b["running_mean"] is not None
            if b["momentum"] is None and b["training"] and has_stats:
                raise Unsupported("momentum=None (cumulative average) has no Keras counterpart")
            kw["momentum_convention"] = "keras"
            kw["running_var_unbiased"] = False
            conv["momentum_convention"] = "keras (new = m*old + (1-m)*batch)"
            conv["running_var_unbiased"] = "False (Keras stores the biased batch variance)"
        if name == "batch_renorm":
            if b["running_std"] or b["renorm_moments"] is not None:
                raise Unsupported("the case is already in a renorm-moments form; the Keras "
                                  "adapter maps cases with a running variance")
            if b["training"]:
                eps = float(b["eps"])
                if eps < 0:
                    raise Unsupported(f"eps={eps}: Keras' batch renormalization floors the "
                                      f"running std at sqrt(epsilon), undefined for eps < 0")
                rv = np.asarray(b["running_var"], dtype=np.float64)
                if not np.all(rv + eps > 0):
                    raise Unsupported("running_var + eps <= 0: no running standard deviation")
                if not _batch_var_finite(b):
                    raise Unsupported(RENORM_STD_LIMITATION)
                _replace_arg(case, args, kw, "running_var", np.sqrt(rv + eps))
                kw["running_std"] = True
                conv["running_std"] = ("True: running_var rewritten as the std sqrt(var + eps) "
                                       "(Keras' moving_stddev = renorm_stddev)")
        elif name == "rms_norm":
            if b["eps"] is None:
                _replace_arg(case, args, kw, "eps", KERAS_RMS_EPS)
                conv["eps"] = f"None -> {KERAS_RMS_EPS:g} (RMSNormalization's default)"
        elif name == "group_norm":
            if b.get("affine", "channel") == "group":
                C = np.shape(b["input"])[1] if np.ndim(b["input"]) >= 2 else None
                G = b["num_groups"]
                if C is None or not isinstance(G, (int, np.integer)) or G <= 0 or C % G:
                    return None
                for pname in ("weight", "bias"):
                    if b[pname] is not None:
                        _replace_arg(case, args, kw, pname, np.repeat(np.asarray(b[pname]),
                                                                      C // G))
                kw["affine"] = "channel"
                conv["affine"] = "group weights expanded per channel (Keras gamma is (C,))"
        elif name == "normalize":
            if float(b["p"]) != 2.0:
                raise Unsupported(f"Keras UnitNormalization is L2 only (p={b['p']})")
            if float(b["eps"]) != KERAS_UNIT_EPS:
                raise Unsupported(f"Keras UnitNormalization fixes epsilon={KERAS_UNIT_EPS:g} "
                                  f"(eps={b['eps']})")
            if b.get("eps_placement", "norm") != "norm":
                raise Unsupported("Keras UnitNormalization clamps the norm, not the squared "
                                  f"norm (eps_placement={b['eps_placement']!r})")
            if "eps_placement" in _spec(name).signature:
                kw["eps_placement"] = "norm"  # not TF's squared-norm clamp (l2_normalize)
            conv["eps"] = ("max(||x||_2, 1e-12): Keras' x * min(rsqrt(sum x^2), 1/eps), "
                           "normref's clamp on the norm")
        return dataclasses.replace(case, args=tuple(args), kwargs=kw, conventions=conv)

    # -- running ---------------------------------------------------------------------
    def _request_extras(self):
        return {}

    def run(self, case, dtype):
        if dtype not in self.dtypes:
            raise Unsupported(f"keras-{self.backend} adapter runs {self.dtypes}, not {dtype}")
        name = case.name
        if name not in KERAS_LAYERS:
            raise Unsupported(f"Keras has no layer for {name}")
        b = _bound(case)
        np_dtype = np.dtype(dtype)
        desc = getattr(self, f"_{name}")(b, np_dtype)
        x = np.ascontiguousarray(np.asarray(b["input"]).astype(np_dtype))
        slot = _slot_of(case)
        req = {"op": "run", "layer": desc.layer, "config": {**desc.config, "dtype": dtype},
               "weights": {k: np.ascontiguousarray(np.asarray(v, dtype=np.float64)
                                                   .astype(np_dtype))
                           for k, v in desc.weights.items()},
               "x": x, "call": desc.call, "state": sorted(desc.state),
               **self._request_extras()}
        diff = [n for n in _diff_names(case) if n in slot]
        missing = [n for n in diff if n not in desc.params]
        if missing:
            raise RuntimeError(f"normref differentiates {missing} of {name}; the Keras "
                               f"{desc.layer} call has no counterpart")
        if self.gradients and diff:
            req["wrt"] = [desc.params[n] for n in diff]
            req["cotangent"] = np.asarray(case.cotangent(x.shape), dtype=np.float64) \
                .astype(np_dtype)
        resp = self._call_worker(req, case.id or case.label)
        y = np.asarray(resp["y"])
        if y.shape != x.shape:
            raise RuntimeError(f"Keras {desc.layer} returned shape {y.shape} for an input of "
                               f"shape {x.shape}")
        grads = None
        if self.gradients and diff:
            grads = {slot[n]: np.asarray(resp["grads"][desc.params[n]]) for n in diff}
        state = {slot[p]: np.asarray(resp["state"][k]) for k, p in desc.state.items()
                 if p in slot and b[p] is not None}
        return Outputs(y=y, grads=grads, state=state)

    # -- one description per normalizer (b: the bound call, dt: the numpy dtype) -----------
    @staticmethod
    def _affine(b, gamma="gamma", beta="beta"):
        weights, params = {}, {"input": "x"}
        if b.get("weight") is not None:
            weights[gamma] = b["weight"]
            params["weight"] = gamma
        if b.get("bias") is not None:
            weights[beta] = b["bias"]
            params["bias"] = beta
        return weights, params

    def _batch_norm(self, b, dt, renorm=False):
        if b["momentum_convention"] != "keras" or b["running_var_unbiased"]:
            raise Unsupported("batch norm: run the case through prepare() (keras momentum, "
                              "biased running variance)")
        x = b["input"]
        ndim = np.ndim(x)
        axis = int(b["channel_axis"])
        if ndim < 2 or not -ndim <= axis < ndim:
            raise Unsupported(f"channel_axis {axis} on a {ndim}-d input")
        C = np.shape(x)[axis]
        training = bool(b["training"])
        rm, rv = b["running_mean"], b["running_var"]
        has_stats = rm is not None and rv is not None
        if not training and not has_stats:
            raise Unsupported("eval-mode batch norm needs running statistics")
        momentum = 0.99 if b["momentum"] is None else float(b["momentum"])
        weights, params = self._affine(b)
        config = {"axis": axis, "momentum": momentum, "epsilon": float(b["eps"]),
                  "center": b["bias"] is not None, "scale": b["weight"] is not None}
        desc = _Layer("BatchNormalization", config, weights, params, {"training": training})
        if not renorm or not training:
            weights["moving_mean"] = rm if rm is not None else np.zeros(C)
            weights["moving_variance"] = rv if rv is not None else np.ones(C)
            if not training:
                params.update(running_mean="moving_mean", running_var="moving_variance")
            elif has_stats:
                desc.state = {"moving_mean": "running_mean", "moving_variance": "running_var"}
        if renorm:
            clip = {}
            if b["rmax"] is not None:
                clip.update(rmax=float(b["rmax"]), rmin=1.0 / float(b["rmax"]))
            if b["dmax"] is not None:
                clip["dmax"] = float(b["dmax"])
            config.update(renorm=True, renorm_clipping=clip,
                          renorm_momentum=float(b["renorm_momentum"]))
            if training:
                if not b["running_std"]:
                    raise Unsupported("batch renorm training: run the case through prepare() "
                                      "(running_var as the running std)")
                s = np.asarray(rv, dtype=dt).astype(np.float64)
                eps = float(b["eps"])
                weights.update(moving_mean=rm, moving_stddev=s, renorm_mean=rm,
                               renorm_stddev=s, moving_variance=np.maximum(s * s - eps, 0.0))
                desc.state = {"moving_mean": "running_mean", "moving_stddev": "running_var"}
            elif b["running_std"]:
                raise Unsupported("batch renorm eval with a running std: Keras reads "
                                  "moving_variance (map the case with a variance)")
        return desc

    def _batch_renorm(self, b, dt):
        return self._batch_norm(b, dt, renorm=True)

    def _layer_norm(self, b, dt):
        axes = _trailing_axes(b["normalized_shape"], np.ndim(b["input"]))
        weights, params = self._affine(b)
        return _Layer("LayerNormalization",
                      {"axis": axes, "epsilon": float(b["eps"]),
                       "center": b["bias"] is not None, "scale": b["weight"] is not None},
                      weights, params)

    def _rms_norm(self, b, dt):
        if b["eps"] is None:
            raise Unsupported("rms_norm eps=None: run the case through prepare()")
        axes = _trailing_axes(b["normalized_shape"], np.ndim(b["input"]))
        shape = tuple(np.shape(b["input"])[a] for a in axes)
        w = b["weight"]
        params = {"input": "x"}
        if w is not None:
            params["weight"] = "scale"
        return _Layer("RMSNormalization", {"axis": axes, "epsilon": float(b["eps"])},
                      {"scale": np.ones(shape) if w is None else w}, params)

    def _group_norm(self, b, dt):
        if b.get("affine", "channel") != "channel":
            raise Unsupported("group_norm affine='group': run the case through prepare()")
        if np.ndim(b["input"]) < 2:
            raise Unsupported("group_norm needs an (N, C, ...) input")
        weights, params = self._affine(b)
        return _Layer("GroupNormalization",
                      {"groups": int(b["num_groups"]), "axis": 1, "epsilon": float(b["eps"]),
                       "center": b["bias"] is not None, "scale": b["weight"] is not None},
                      weights, params)

    def _normalize(self, b, dt):
        if (float(b["p"]) != 2.0 or float(b["eps"]) != KERAS_UNIT_EPS
                or b.get("eps_placement", "norm") != "norm"):
            raise Unsupported("Keras UnitNormalization: p=2, eps=1e-12 on the norm only")
        return _Layer("UnitNormalization", {"axis": int(b["dim"])}, {}, {"input": "x"})


_COMMON_CONVENTIONS = {
    "batch_norm momentum": "keras direction: new = m*old + (1-m)*batch (default m=0.99)",
    "batch_norm running variance": "biased batch variance",
    "batch_norm momentum=None": "no cumulative average (unsupported)",
    "batch renorm": "r, d from renorm_mean / max(renorm_stddev, sqrt(eps)); moving_stddev "
                    "tracks sqrt(var_B + eps); rmin = 1/rmax",
    "eps defaults": "1e-3 BatchNormalization, LayerNormalization, GroupNormalization; "
                    "1e-6 RMSNormalization; 1e-12 UnitNormalization (fixed)",
    "eps placement": "inside the square root; UnitNormalization clamps the norm at eps",
    "GroupNorm scale shape": "per channel (C,), channel axis configurable (axis=1 here)",
    "RMS definition": "x * rsqrt(mean(x^2) + eps) * scale; eps=None -> 1e-6 (layer default)",
    "layout": "the channel / feature axis is an argument (no transposition)",
}


def _conventions(backend):
    c = dict(_COMMON_CONVENTIONS)
    if backend == "tensorflow":
        c["compute dtype"] = "the layer dtype (float64 layers compute in float64)"
        c["variance formula"] = "tf.nn.moments: two-pass"
    else:
        c["compute dtype"] = ("result_type(dtype, 'float32'): float64 layers compute in "
                              "float32 (Keras maps float64 to float32 off TensorFlow)"
                              + (", UnitNormalization excepted" if backend == "jax" else
                                 ", UnitNormalization too (binary ops promote likewise)"))
        c["variance formula"] = ("jnp.var: two-pass" if backend == "jax" else
                                 "ops.moments: one-pass E[x^2] - E[x]^2, unclipped"
                                 + (" (LayerNormalization: torch layer_norm)"
                                    if backend == "torch" else ""))
    return c


class KerasTensorFlowAdapter(KerasAdapter):
    """Keras 3 layers on the TensorFlow backend (gradients by ``tf.GradientTape``)."""

    backend = "tensorflow"
    framework = "keras-tensorflow"
    conventions = _conventions("tensorflow")


def default_jax_cache_dir():
    """Where :class:`KerasJaxAdapter` keeps XLA's compilation cache by default:
    ``$NORMREF_KERAS_JAX_CACHE_DIR`` if set (empty: no cache), else
    ``normref/keras-jax-xla`` under ``$XDG_CACHE_HOME`` (``~/.cache``)."""
    if "NORMREF_KERAS_JAX_CACHE_DIR" in os.environ:
        return os.environ["NORMREF_KERAS_JAX_CACHE_DIR"] or None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "normref", "keras-jax-xla")


class KerasJaxAdapter(KerasAdapter):
    """Keras 3 layers on the JAX backend (64-bit JAX enabled in the worker;
    gradients by ``jax.vjp`` of ``stateless_call``, forward and VJP one ``jax.jit``
    program unless ``jit=False``).

    Each case and dtype is a new XLA program (~0.3 s to compile on one core, most of
    a catalogue run); ``compilation_cache`` is the directory of XLA's persistent
    cache (default :func:`default_jax_cache_dir`; None: no cache).  A cached
    executable is the one the compiler produced, so results are the same with or
    without it.
    """

    backend = "jax"
    framework = "keras-jax"
    conventions = _conventions("jax")

    def __init__(self, jit=True, timeout=120.0, start_timeout=300.0, compilation_cache="default"):
        self.compilation_cache = (default_jax_cache_dir() if compilation_cache == "default"
                                  else compilation_cache)
        super().__init__(timeout=timeout, start_timeout=start_timeout)
        self.jit = bool(jit)

    def _worker_env(self):
        return {"NORMREF_KERAS_JAX_CACHE_DIR": os.fspath(self.compilation_cache or "")}

    def _request_extras(self):
        return {"jit": self.jit}


class KerasTorchAdapter(KerasAdapter):
    """Keras 3 layers on the PyTorch backend (gradients by ``torch.autograd``)."""

    backend = "torch"
    framework = "keras-torch"
    conventions = _conventions("torch")


class KerasNumpyAdapter(KerasAdapter):
    """Keras 3 layers on the NumPy backend (inference only: no autodiff)."""

    backend = "numpy"
    framework = "keras-numpy"
    gradients = False
    conventions = _conventions("numpy")
