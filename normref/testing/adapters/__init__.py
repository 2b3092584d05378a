"""Framework adapters for the conformance kit (:mod:`normref.testing.conformance`).

An adapter runs one framework's implementation of a normalizer on a
:class:`~normref.testing.conformance.ConformCase` and returns its
:class:`Outputs` (forward, input/parameter gradients, running statistics) in
the framework's own dtype.  Before that, :meth:`Adapter.prepare` rewrites the
case so that normref computes with *the framework's conventions* (momentum
direction, unbiased running variance, LRN window, GroupNorm scale shape, eps
placement, ...): a convention difference is then configured away, never
reported as a numerical error.

Adapters are optional extras, imported lazily by :func:`get_adapter`.  The
adapter registry maps a *target name* (what ``python -m normref conform
--target`` takes) to where its class lives; the built-in targets are the rows
of :data:`_WHERE`:

==================  =========================================  ==========================
name                module                                     class
==================  =========================================  ==========================
``torch``           ``normref.testing.adapters.torch``         ``TorchAdapter``
``torch-modules``   ``normref.testing.adapters.torch``         ``TorchModulesAdapter``
``onnxruntime``     ``normref.testing.adapters.onnx``          ``OnnxRuntimeAdapter``
``onnx-reference``  ``normref.testing.adapters.onnx``          ``OnnxReferenceAdapter``
``jax``             ``normref.testing.adapters.jax``           ``JaxAdapter``
``tensorflow``      ``normref.testing.adapters.tensorflow``    ``TensorflowAdapter``
==================  =========================================  ==========================

and ``keras-tensorflow``, ``keras-jax``, ``keras-torch``, ``keras-numpy``
(``normref.testing.adapters.keras``: ``KerasTensorFlowAdapter``, ``KerasJaxAdapter``,
``KerasTorchAdapter``, ``KerasNumpyAdapter``, each driving a Keras worker subprocess)
(a new built-in adapter adds its row to ``_WHERE``; nothing else lists targets).

Third-party adapters plug in two ways, both read by the CLI (``--target``
choices, ``conform --list-targets``):

* an entry point in the group ``normref.adapters`` (:data:`ENTRY_POINT_GROUP`),
  named after the target, whose value is ``"package.module:AdapterClass"``::

      [project.entry-points."normref.adapters"]
      mylib = "mylib.normref_adapter:MyLibAdapter"

* :func:`register_adapter` at run time (``register_adapter("mylib",
  MyLibAdapter)``; :func:`unregister_adapter` removes it again).

A built-in name cannot be taken by a plug-in (ValueError), and an entry point
that fails to load is reported by :func:`get_adapter` with its error, never
silently dropped.

An adapter that meets a variant its framework cannot express (a keyword the
op lacks, a dtype the kernel does not register) raises :class:`Unsupported`
from :meth:`~Adapter.run`; the kit records that as ``skip``, not ``error``.
"""
from __future__ import annotations

import abc
import importlib
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Outputs", "Adapter", "Unsupported", "ADAPTERS", "ENTRY_POINT_GROUP", "get_adapter",
           "register_adapter", "unregister_adapter", "target_names", "describe_targets"]

#: the entry-point group third-party adapters register under (value "module:Class")
ENTRY_POINT_GROUP = "normref.adapters"

#: built-in name -> (module under normref.testing.adapters, class name, pip requirement)
_WHERE = {
    "torch": ("torch", "TorchAdapter", "torch"),
    "torch-modules": ("torch", "TorchModulesAdapter", "torch"),
    "onnxruntime": ("onnx", "OnnxRuntimeAdapter", "onnx onnxruntime"),
    "onnx-reference": ("onnx", "OnnxReferenceAdapter", "onnx"),
    "jax": ("jax", "JaxAdapter", "jax[cpu] flax"),
    "tensorflow": ("tensorflow", "TensorflowAdapter", "tensorflow-cpu"),
    "keras-tensorflow": ("keras", "KerasTensorFlowAdapter", "keras tensorflow"),
    "keras-jax": ("keras", "KerasJaxAdapter", "keras jax[cpu]"),
    "keras-torch": ("keras", "KerasTorchAdapter", "keras torch"),
    "keras-numpy": ("keras", "KerasNumpyAdapter", "keras"),
}

#: the built-in ``--target`` names, in report order (plug-ins: :func:`target_names`)
ADAPTERS = tuple(_WHERE)

#: adapters registered at run time: name -> Adapter subclass
_RUNTIME = {}


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


def slot_of(case):
    """``{parameter name: positional index}`` for the arguments a case gives positionally
    (shared by the adapters: an argument is rewritten where the case put it)."""
    from ...registry import REGISTRY

    sig = REGISTRY[case.name].signature
    return {sig[i]: i for i in range(min(len(case.args), len(sig)))}


def diff_slots(case):
    """The positional slots normref differentiates in this call (its VJP layout),
    which an adapter's autodiff must return gradients for."""
    from ... import autodiff
    from ...registry import REGISTRY

    _, _, slots = autodiff.bind(REGISTRY[case.name].function, *case.fresh_args(), **case.kwargs)
    return [i for i, s in enumerate(slots) if s is not None]


def _entry_points():
    """``{name: EntryPoint}`` of the :data:`ENTRY_POINT_GROUP` group (built-in names excluded)."""
    from importlib.metadata import entry_points

    found = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in _WHERE:
            found.setdefault(ep.name, ep)
    return found


def target_names() -> tuple:
    """Every valid ``--target``: the built-in ones in report order, then entry-point
    and run-time registered plug-ins, sorted."""
    extra = set(_entry_points()) | set(_RUNTIME)
    return ADAPTERS + tuple(sorted(extra - set(ADAPTERS)))


def register_adapter(name: str, adapter_class, replace: bool = False):
    """Register ``adapter_class`` (a subclass of :class:`Adapter`) as target ``name``.

    ValueError for a built-in name, an empty name, or a name already
    registered (unless ``replace``); TypeError when the class is not an
    :class:`Adapter` subclass.  Returns the class (usable as a decorator
    through ``functools.partial``).
    """
    if not isinstance(name, str) or not name or any(c.isspace() for c in name):
        raise ValueError(f"register_adapter: name must be a non-empty string without spaces, "
                         f"got {name!r}")
    if name in _WHERE:
        raise ValueError(f"register_adapter: {name!r} is a built-in target "
                         f"({', '.join(ADAPTERS)})")
    if not (isinstance(adapter_class, type) and issubclass(adapter_class, Adapter)):
        raise TypeError(f"register_adapter: adapter_class must be a subclass of "
                        f"normref.testing.adapters.Adapter, got {adapter_class!r}")
    if name in _RUNTIME and not replace:
        raise ValueError(f"register_adapter: {name!r} is already registered "
                         f"({_RUNTIME[name].__qualname__}); pass replace=True")
    _RUNTIME[name] = adapter_class
    return adapter_class


def unregister_adapter(name: str):
    """Remove a run-time registered adapter (KeyError if ``name`` was not registered)."""
    if name not in _RUNTIME:
        raise KeyError(f"unregister_adapter: {name!r} is not a run-time registered adapter")
    del _RUNTIME[name]


def _adapter_class(name):
    """(class, pip requirement or None) of target ``name``; errors as in :func:`get_adapter`."""
    if name in _WHERE:
        modname, clsname, pip = _WHERE[name]
        try:
            mod = importlib.import_module(f"{__name__}.{modname}")
        except ImportError as e:
            raise ImportError(
                f"the {name!r} adapter needs its framework: pip install {pip} ({e})"
            ) from e
        return getattr(mod, clsname), pip
    if name in _RUNTIME:
        return _RUNTIME[name], None
    eps = _entry_points()
    if name in eps:
        try:
            cls = eps[name].load()
        except Exception as e:  # noqa: BLE001  (a broken plug-in: named, with its error)
            raise ImportError(f"the {name!r} adapter (entry point {eps[name].value!r} in group "
                              f"{ENTRY_POINT_GROUP!r}) failed to load: {type(e).__name__}: {e}") from e
        if not (isinstance(cls, type) and issubclass(cls, Adapter)):
            raise ImportError(f"the {name!r} entry point {eps[name].value!r} is not a subclass of "
                              f"normref.testing.adapters.Adapter")
        return cls, None
    raise ValueError(
        f"unknown conformance target {name!r}; valid targets: {', '.join(target_names())}"
    )


def describe_targets() -> list:
    """``[(name, source, status)]`` for ``conform --list-targets``: source is
    ``"built-in"``, ``"entry point module:Class"`` or ``"registered"``; status is
    ``"available"`` or why not (the pip line, a load error)."""
    rows = []
    eps = _entry_points()
    for name in target_names():
        source = ("built-in" if name in _WHERE else "registered" if name in _RUNTIME
                  else f"entry point {eps[name].value}")
        try:
            cls, pip = _adapter_class(name)
            status = "available" if cls.available() else f"not installed: pip install {pip}"
        except ImportError as e:
            status = str(e)
        rows.append((name, source, status))
    return rows


def get_adapter(name: str) -> Adapter:
    """Instantiate the adapter called ``name`` (one of :func:`target_names`).

    Raises ValueError for an unknown name (listing the valid ones) and
    ImportError, with the ``pip install`` line, when the framework is not
    installed (or, for a plug-in, with its load error).
    """
    cls, pip = _adapter_class(name)
    if not cls.available():
        raise ImportError(f"the {name!r} adapter needs its framework"
                          + (f": pip install {pip}" if pip else " (available() is False)"))
    return cls()
