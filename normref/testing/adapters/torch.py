"""PyTorch adapters: ``torch.nn.functional`` ops (``"torch"``) and ``torch.nn``
modules (``"torch-modules"``), judged against normref.

PyTorch's conventions are normref's defaults, so :meth:`TorchAdapter.prepare`
passes most cases through unchanged; it returns None for normalizers PyTorch
has no op for (positional, batch-group, ghost-batch and mean-variance
normalization: composing them from other torch ops would test the
composition, not PyTorch) and for normref-only options PyTorch cannot
express (``channel_axis`` other than 1, ``momentum_convention="keras"``,
``running_var_unbiased=False``, ``affine="group"``, an LRN ``convention``
other than ``"torch"``).

:meth:`TorchAdapter.run` builds tensors of the target dtype from the
(already rounded) NumPy arguments, sets ``requires_grad`` on every argument
normref differentiates in this call (as reported by
:func:`normref.autodiff.bind`), runs the op, and pulls the case's cotangent
back with ``torch.autograd.grad``.

Gradient policy:

* running statistics in eval mode are differentiable in normref but declared
  non-differentiable by PyTorch (``native_batch_norm`` refuses
  ``requires_grad`` on them); the adapter does not ask for them and leaves
  those slots out of :attr:`Outputs.grads`, so they are not judged;
* any other argument normref differentiates for which autograd returns
  ``None`` (the output does not depend on it in PyTorch's graph) raises
  RuntimeError naming the argument: the run records an ``error`` rather than
  silently judging a zero gradient.

Running statistics are passed as tensor copies (the case's arrays are never
mutated) and returned, after the call, in :attr:`Outputs.state` under their
positional slot.  ``momentum=None`` (cumulative moving average) is mapped as
``torch.nn.BatchNorm*`` maps it: increment ``num_batches_tracked`` and use
``1 / num_batches_tracked`` as the factor.
"""
from __future__ import annotations

import dataclasses
import inspect

import numpy as np

from . import Adapter, Outputs, Unsupported

__all__ = ["TorchAdapter", "TorchModulesAdapter"]

#: normref normalizers with a ``torch.nn.functional`` (or ``torch``) op
_FUNCTIONAL = {
    "batch_norm": "torch.nn.functional.batch_norm",
    "instance_norm": "torch.nn.functional.instance_norm",
    "layer_norm": "torch.nn.functional.layer_norm",
    "group_norm": "torch.nn.functional.group_norm",
    "rms_norm": "torch.nn.functional.rms_norm",
    "local_response_norm": "torch.nn.functional.local_response_norm",
    "normalize": "torch.nn.functional.normalize",
    "weight_norm": "torch._weight_norm",
}

#: normref normalizers with a ``torch.nn`` module
_MODULES = {
    "batch_norm": "torch.nn.BatchNorm1d/2d/3d",
    "instance_norm": "torch.nn.InstanceNorm1d/2d/3d",
    "layer_norm": "torch.nn.LayerNorm",
    "group_norm": "torch.nn.GroupNorm",
    "rms_norm": "torch.nn.RMSNorm",
    "local_response_norm": "torch.nn.LocalResponseNorm",
}

_CONVENTIONS = {
    "BN momentum": "new = (1 - m) old + m batch, m = 0.1; m = None: cumulative average "
                   "with factor 1/num_batches_tracked",
    "BN running variance": "updated with the unbiased n/(n-1) batch variance; "
                           "normalization uses the biased one",
    "eps defaults": "1e-5 (BN, IN, LN, GN), inside the square root; RMSNorm eps=None -> "
                    "finfo(input dtype).eps; F.normalize 1e-12 clamp on the norm",
    "LRN window": "channels [c - n//2, c + (n-1)//2] (zero padded), alpha / n",
    "GroupNorm affine": "per channel, weight and bias of shape (C,)",
    "RMS definition": "x / sqrt(mean(x^2) + eps) * weight",
    "weight norm": "torch._weight_norm(v, g, dim): norm over every axis but dim; "
                   "dim=-1 (normref dim=None) the whole tensor",
    "channel axis": "1 (NCHW)",
}


#: normref's convention keywords as PyTorch fixes them (recorded on prepared cases;
#: they are normref's defaults, so the case's kwargs need no rewriting)
_CASE_CONVENTIONS = {
    "batch_norm": {"channel_axis": 1, "momentum_convention": "torch", "running_var_unbiased": True},
    "group_norm": {"affine": "channel"},
    "local_response_norm": {"convention": "torch"},
}


def _spec(case):
    from normref.registry import REGISTRY

    return REGISTRY[case.name]


def _arguments(case, args=None):
    """name -> value of every parameter of the normref call (defaults filled)."""
    spec = _spec(case)
    sig = inspect.signature(spec.function)
    bound = sig.bind(*(case.args if args is None else args), **case.kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def _slot_of(case):
    """parameter name -> positional slot index, for the positional args given."""
    spec = _spec(case)
    return {name: i for i, name in enumerate(spec.signature[: len(case.args)])}


def _unsupported_reason(case):
    """Why PyTorch cannot run this case (None when it can)."""
    name = case.name
    if name not in _FUNCTIONAL:
        return f"PyTorch has no {name} op"
    a = _arguments(case)
    x = a.get("input", a.get("v"))
    ndim = np.ndim(x)
    if name == "batch_norm":
        ax = a["channel_axis"]
        if ndim < 2 or ax % ndim != 1:
            return f"torch batch_norm takes channels on axis 1 (channel_axis={ax})"
        if a["momentum_convention"] != "torch":
            return "torch has only its own momentum direction"
        if not a["running_var_unbiased"]:
            return "torch updates the running variance with the unbiased batch variance"
    if name == "group_norm" and a["affine"] != "channel":
        return "torch GroupNorm has a per-channel affine"
    if name == "local_response_norm":
        if a["convention"] != "torch":
            return f"torch has only its own LRN window (convention={a['convention']!r})"
        if ndim < 3:
            return "torch local_response_norm needs 3-D or higher input"
    return None


class TorchAdapter(Adapter):
    """``torch.nn.functional`` (and ``torch._weight_norm``) against normref."""

    framework = "torch"
    dtypes = ("float32", "float64")
    gradients = True
    conventions = _CONVENTIONS
    ops = _FUNCTIONAL

    @classmethod
    def available(cls) -> bool:
        try:
            import torch  # noqa: F401
        except ImportError:
            return False
        return True

    # -- prepare ---------------------------------------------------------
    def _reason(self, case):
        if case.name not in self.ops:
            return f"PyTorch has no {case.name} {'module' if self.ops is _MODULES else 'op'}"
        return _unsupported_reason(case)

    def prepare(self, case):
        """Return ``case`` (PyTorch's conventions are normref's defaults) or
        None when PyTorch has no such op or variant."""
        if self._reason(case) is not None:
            return None
        conv = dict(_CASE_CONVENTIONS.get(case.name, {}))
        return dataclasses.replace(case, conventions={**dict(case.conventions), **conv})

    # -- run -------------------------------------------------------------
    def run(self, case, dtype: str) -> Outputs:
        import torch

        reason = self._reason(case)
        if reason is not None:
            raise Unsupported(reason)
        if dtype not in self.dtypes:
            raise Unsupported(f"{self.framework} adapter runs {self.dtypes}, not {dtype}")
        from normref import autodiff

        spec = _spec(case)
        tdtype = getattr(torch, dtype)
        args = case.fresh_args()
        _, _, slots = autodiff.bind(spec.function, *case.fresh_args(), **case.kwargs)
        slots = tuple(slots) + (None,) * (len(args) - len(slots))
        a = _arguments(case, args)
        slot_of = _slot_of(case)
        # running statistics: PyTorch declares them non-differentiable (buffers)
        buffers = {"running_mean", "running_var"}

        tensors = {}   # name -> tensor given to torch
        wanted = {}    # slot -> tensor whose gradient is judged
        for name, value in a.items():
            if isinstance(value, np.ndarray) and value.dtype.kind == "f":
                t = torch.tensor(np.array(value, copy=True), dtype=tdtype)
                i = slot_of.get(name)
                if (i is not None and slots[i] is not None
                        and name not in buffers):
                    t.requires_grad_(True)
                    wanted[i] = t
                tensors[name] = t
            elif isinstance(value, np.ndarray):
                tensors[name] = torch.tensor(np.array(value, copy=True))
        a = {**a, **tensors}

        with torch.enable_grad():
            y, extra_params = self._call(case.name, a, torch)
        yn = y.detach().numpy()
        if yn.dtype != np.dtype(dtype):
            raise RuntimeError(f"torch returned {yn.dtype} for a {dtype} case")

        grads = None
        if self.gradients and (wanted or extra_params):
            cot = torch.tensor(np.asarray(case.cotangent(yn.shape)), dtype=tdtype)
            # a module adapter's parameters stand in for the case's tensors
            by_slot = {**wanted, **extra_params}
            order = sorted(by_slot)
            got = torch.autograd.grad(y, [by_slot[i] for i in order], grad_outputs=cot,
                                      allow_unused=True)
            grads = {}
            for i, g in zip(order, got):
                if g is None:
                    raise RuntimeError(
                        f"torch autograd returned no gradient for argument {i} "
                        f"({spec.signature[i]}) of {case.name}, which normref differentiates")
                grads[i] = self._grad_back(case, i, g.detach().numpy())

        state = {}
        for i in case.mutates:
            name = spec.signature[i]
            t = a.get("_nbt") if name == "num_batches_tracked" else a.get(name)
            if t is None or case.args[i] is None:
                continue
            ref = np.asarray(case.args[i])
            if name == "num_batches_tracked":
                state[i] = t.detach().numpy().astype(ref.dtype).reshape(ref.shape)
            else:
                state[i] = np.array(t.detach().numpy(), copy=True)
        return Outputs(y=yn, grads=grads, state=state)

    def _grad_back(self, case, i, g):
        spec = _spec(case)
        if case.name == "weight_norm" and spec.signature[i] == "g":
            return g.reshape(np.shape(case.args[i]))
        return g

    def _call(self, name, a, torch):
        """Run the functional op; return ``(y, {})``."""
        F = torch.nn.functional
        if name == "batch_norm":
            momentum = self._momentum(a, torch)
            return F.batch_norm(a["input"], a["running_mean"], a["running_var"],
                                a["weight"], a["bias"], bool(a["training"]),
                                float(momentum), float(a["eps"])), {}
        if name == "instance_norm":
            return F.instance_norm(a["input"], a["running_mean"], a["running_var"],
                                   a["weight"], a["bias"], bool(a["use_input_stats"]),
                                   float(a["momentum"]), float(a["eps"])), {}
        if name == "layer_norm":
            return F.layer_norm(a["input"], _shape(a["normalized_shape"]), a["weight"],
                                a["bias"], float(a["eps"])), {}
        if name == "group_norm":
            return F.group_norm(a["input"], int(a["num_groups"]), a["weight"], a["bias"],
                                float(a["eps"])), {}
        if name == "rms_norm":
            eps = a["eps"]
            return F.rms_norm(a["input"], _shape(a["normalized_shape"]), a["weight"],
                              None if eps is None else float(eps)), {}
        if name == "local_response_norm":
            return F.local_response_norm(a["input"], int(a["size"]), float(a["alpha"]),
                                         float(a["beta"]), float(a["k"])), {}
        if name == "normalize":
            return F.normalize(a["input"], float(a["p"]), int(a["dim"]), float(a["eps"])), {}
        if name == "weight_norm":
            v, g, dim = a["v"], a["g"], a["dim"]
            if dim is None:
                tdim = -1                       # torch's "whole tensor" sentinel
                gshape = ()
            else:
                tdim = int(dim) % v.ndim        # torch reads -1 as "whole tensor"
                gshape = tuple(n if k == tdim else 1 for k, n in enumerate(v.shape))
            if g.numel() != int(np.prod(gshape, dtype=np.int64)):
                raise Unsupported(f"g of shape {tuple(g.shape)} for v {tuple(v.shape)}, "
                                  f"dim={dim}")
            return torch._weight_norm(v, g.reshape(gshape), tdim), {}
        raise Unsupported(f"PyTorch has no {name} op")

    @staticmethod
    def _momentum(a, torch):
        """The exponential-average factor F.batch_norm receives, as
        ``torch.nn.BatchNorm*`` computes it: a given ``num_batches_tracked``
        is incremented in training with running statistics, and
        ``momentum=None`` uses ``1 / num_batches_tracked``."""
        momentum, nbt = a["momentum"], a.get("num_batches_tracked")
        active = a["training"] and a["running_mean"] is not None
        if nbt is not None and active:
            nbt = torch.as_tensor(nbt).clone() + 1
            a["_nbt"] = nbt
        if momentum is None:
            if nbt is None:
                raise Unsupported("momentum=None needs num_batches_tracked")
            return 1.0 / float(nbt.reshape(-1)[0]) if active else 0.0
        return momentum


def _shape(s):
    if isinstance(s, (int, np.integer)):
        return (int(s),)
    return tuple(int(n) for n in s)


class TorchModulesAdapter(TorchAdapter):
    """``torch.nn`` modules (BatchNorm1d/2d/3d, InstanceNorm1d/2d/3d,
    LayerNorm, GroupNorm, RMSNorm, LocalResponseNorm) against normref.

    The module is built with the case's hyper-parameters, cast to the target
    dtype, its ``weight``/``bias`` parameters set from the case (absent ones
    as the identity, ones / zeros, and not judged), its running buffers copied
    from the case; ``train()`` / ``eval()`` follows ``training`` (batch norm)
    or ``use_input_stats`` (instance norm).  Judged: the forward, the input
    gradient, the gradients of the ``weight``/``bias`` parameters, and the
    running buffers after the call.
    """

    framework = "torch-modules"
    ops = _MODULES

    def _call(self, name, a, torch):
        nn = torch.nn
        x = a["input"]
        dtype = x.dtype
        params = {}

        def set_affine(mod, w, b):
            # the module's parameters replace the case's tensors: gradients
            # of the case's weight/bias slots are read from them
            for pname, t in (("weight", w), ("bias", b)):
                p = getattr(mod, pname, None)
                if p is None:
                    continue
                with torch.no_grad():
                    if t is not None:
                        p.copy_(t.detach().reshape(p.shape))
                    else:
                        p.fill_(1.0 if pname == "weight" else 0.0)
                if t is not None and t.requires_grad:
                    params[self._slot[pname]] = p
                else:
                    p.requires_grad_(False)

        def set_running(mod, rm, rv):
            with torch.no_grad():
                if rm is not None:
                    mod.running_mean.copy_(rm)
                if rv is not None:
                    mod.running_var.copy_(rv)

        if name in ("batch_norm", "instance_norm"):
            C = x.shape[1] if x.ndim >= 2 else None
            rm, rv = a["running_mean"], a["running_var"]
            if (rm is None) != (rv is None):
                raise Unsupported("modules keep both running statistics or none")
            track = rm is not None
            affine = a["weight"] is not None or a["bias"] is not None
            if name == "batch_norm":
                cls = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d,
                       5: nn.BatchNorm3d}.get(x.ndim)
                training = bool(a["training"])
            else:
                cls = {3: nn.InstanceNorm1d, 4: nn.InstanceNorm2d,
                       5: nn.InstanceNorm3d}.get(x.ndim)
                training = bool(a["use_input_stats"])
            if cls is None:
                raise Unsupported(f"no torch.nn module for {x.ndim}-D {name}")
            momentum = a["momentum"]
            mod = cls(C, eps=float(a["eps"]),
                      momentum=None if momentum is None else float(momentum),
                      affine=affine, track_running_stats=track).to(dtype)
            set_affine(mod, a["weight"], a["bias"])
            if track:
                set_running(mod, rm, rv)
                if momentum is None:
                    nbt = a.get("num_batches_tracked")
                    if nbt is None:
                        raise Unsupported("momentum=None needs num_batches_tracked")
                    with torch.no_grad():
                        mod.num_batches_tracked.copy_(torch.as_tensor(nbt).reshape(()))
            elif not training:
                raise Unsupported(f"{name} without running statistics in eval mode")
            mod.train(training)
            y = mod(x)
            if track:
                a["running_mean"], a["running_var"] = mod.running_mean, mod.running_var
                a["_nbt"] = mod.num_batches_tracked
            return y, params
        if name == "layer_norm":
            w, b = a["weight"], a["bias"]
            mod = nn.LayerNorm(_shape(a["normalized_shape"]), eps=float(a["eps"]),
                               elementwise_affine=w is not None or b is not None,
                               bias=b is not None).to(dtype)
            set_affine(mod, w, b)
            return mod(x), params
        if name == "group_norm":
            w, b = a["weight"], a["bias"]
            mod = nn.GroupNorm(int(a["num_groups"]), x.shape[1], eps=float(a["eps"]),
                               affine=w is not None or b is not None).to(dtype)
            set_affine(mod, w, b)
            return mod(x), params
        if name == "rms_norm":
            w = a["weight"]
            eps = a["eps"]
            mod = nn.RMSNorm(_shape(a["normalized_shape"]),
                             eps=None if eps is None else float(eps),
                             elementwise_affine=w is not None).to(dtype)
            set_affine(mod, w, None)
            return mod(x), params
        if name == "local_response_norm":
            mod = nn.LocalResponseNorm(int(a["size"]), alpha=float(a["alpha"]),
                                       beta=float(a["beta"]), k=float(a["k"]))
            return mod(x), params
        raise Unsupported(f"PyTorch has no {name} module")

    def run(self, case, dtype: str) -> Outputs:
        self._slot = _slot_of(case)
        return super().run(case, dtype)
