"""Framework adapters for the conformance kit (:mod:`normref.testing.conformance`).

An adapter runs one framework's implementation of a normalizer on a
:class:`~normref.testing.conformance.ConformCase` and returns its
:class:`Outputs` (forward, input/parameter gradients, running statistics) in
the framework's own dtype.  Before that, :meth:`Adapter.prepare` rewrites the
case so that normref computes with *the framework's conventions* (momentum
direction, unbiased running variance, LRN window, GroupNorm scale shape, eps
placement, ...): a convention difference is then configured away, never
reported as a numerical error.

Adapters are optional extras, imported lazily by :func:`get_adapter`:

==================  =========================================  ==========================
name                module                                     class
==================  =========================================  ==========================
``torch``           ``normref.testing.adapters.torch``         ``TorchAdapter``
``torch-modules``   ``normref.testing.adapters.torch``         ``TorchModulesAdapter``
``onnxruntime``     ``normref.testing.adapters.onnx``          ``OnnxRuntimeAdapter``
``onnx-reference``  ``normref.testing.adapters.onnx``          ``OnnxReferenceAdapter``
``jax``             ``normref.testing.adapters.jax``           ``JaxAdapter``
==================  =========================================  ==========================

An adapter that meets a variant its framework cannot express (a keyword the
op lacks, a dtype the kernel does not register) raises :class:`Unsupported`
from :meth:`~Adapter.run`; the kit records that as ``skip``, not ``error``.
"""
from __future__ import annotations

import abc
import importlib
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Outputs", "Adapter", "Unsupported", "ADAPTERS", "get_adapter"]

#: the valid ``--target`` names, in report order
ADAPTERS = ("torch", "torch-modules", "onnxruntime", "onnx-reference", "jax")

#: name -> (module under normref.testing.adapters, class name, pip requirement)
_WHERE = {
    "torch": ("torch", "TorchAdapter", "torch"),
    "torch-modules": ("torch", "TorchModulesAdapter", "torch"),
    "onnxruntime": ("onnx", "OnnxRuntimeAdapter", "onnx onnxruntime"),
    "onnx-reference": ("onnx", "OnnxReferenceAdapter", "onnx"),
    "jax": ("jax", "JaxAdapter", "jax[cpu] flax"),
}


class Unsupported(Exception):
    """Raised by an adapter for a variant the framework does not offer.

    The conformance run reports the case as ``skip`` with this message
    (e.g. "onnxruntime has no float64 kernel for LRN").
    """


@dataclass
class Outputs:
    """What a framework computed for one case, in the framework's dtype.

    ``y``      -- the forward output (not upcast);
    ``grads``  -- positional slot index -> VJP of that argument for
                  ``case.cotangent(y.shape)``; None if the adapter does no
                  gradients;
    ``state``  -- positional slot index -> running statistics array after the
                  call (batch norm training updates).
    """

    y: np.ndarray
    grads: dict | None = None
    state: dict = field(default_factory=dict)


class Adapter(abc.ABC):
    """One framework's implementations of the normref normalizers.

    Class attributes: ``framework`` (one of :data:`ADAPTERS`), ``dtypes`` it
    runs (``("float32", "float64")`` by default), ``gradients`` (whether
    :meth:`run` returns VJPs), ``conventions`` (topic -> this framework's
    convention, human readable, for reports and exports).
    """

    framework: str = ""
    dtypes: tuple = ("float32", "float64")
    gradients: bool = False
    conventions: dict = {}

    @classmethod
    @abc.abstractmethod
    def available(cls) -> bool:
        """True when the framework imports."""

    @abc.abstractmethod
    def prepare(self, case):
        """Return the case as normref must run it to match this framework.

        Rewrite kwargs (``convention="onnx"``, ``affine="group"``,
        ``momentum_convention="keras"``, ``running_var_unbiased=False``,
        ``eps_placement=...``) and, if the framework's parameters have another
        shape, the args, with ``dataclasses.replace(case, args=..., kwargs=...,
        conventions={...})``; return None when the framework has no such op or
        variant.
        """

    @abc.abstractmethod
    def run(self, case, dtype: str) -> Outputs:
        """Run the framework's op on ``case.args`` (float arrays already rounded
        to ``dtype`` and given as NumPy arrays of that dtype) with
        ``case.kwargs``; gradients for ``case.cotangent(y.shape)`` cast to
        ``dtype``.  Raise :class:`Unsupported` for a variant the framework
        does not offer."""

    def __repr__(self):
        return f"<{type(self).__name__} framework={self.framework!r} dtypes={self.dtypes}>"


def get_adapter(name: str) -> Adapter:
    """Instantiate the adapter called ``name`` (one of :data:`ADAPTERS`).

    Raises ValueError for an unknown name (listing the valid ones) and
    ImportError, with the ``pip install`` line, when the framework is not
    installed.
    """
    if name not in _WHERE:
        raise ValueError(
            f"unknown conformance target {name!r}; valid targets: {', '.join(ADAPTERS)}"
        )
    modname, clsname, pip = _WHERE[name]
    try:
        mod = importlib.import_module(f"{__name__}.{modname}")
    except ImportError as e:
        raise ImportError(
            f"the {name!r} adapter needs its framework: pip install {pip} ({e})"
        ) from e
    cls = getattr(mod, clsname)
    if not cls.available():
        raise ImportError(f"the {name!r} adapter needs its framework: pip install {pip}")
    return cls()
