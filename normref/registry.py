"""The registry: one :class:`Spec` per normalizer, found by its one name.

A Spec ties together everything normref knows about a normalizer:

* ``function``  -- the public forward (numba fast path), e.g. ``normref.layer_norm``;
* ``bind``      -- same signature as ``function``; validates the arguments and
  returns a :class:`Plan` that computes the forward once and then serves
  VJPs, JVPs and dense Jacobians from the saved residuals;
* ``reference`` -- the autograd.numpy textbook formula with the same
  signature (normref.reference), the independent oracle and the source of
  second derivatives;
* taxonomy metadata (``nap``, ``nop``, ``nrr``, ``family``), the conventions it
  exposes as keyword options, and the paper;
* ``examples``  -- ``examples(rng) -> [Case, ...]``: representative calls that the
  generic test-suite and ``python -m normref check`` run.

``normref.registry.REGISTRY`` maps name -> Spec; :func:`spec_of` finds the
Spec of a public function, which is how :mod:`normref.autodiff` dispatches.
"""
from __future__ import annotations

import abc
import contextlib
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from .numerics import all_finite

__all__ = ["Spec", "Case", "Plan", "REGISTRY", "register", "unregister", "registered",
           "spec_of", "names"]


@dataclass(frozen=True)
class Case:
    """One representative call: ``function(*args, **kwargs)``.

    ``mutates`` lists positional indices of arrays the call updates in place
    (running statistics); harnesses copy them before every call.
    """

    label: str
    args: tuple
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    mutates: tuple = ()

    def fresh_args(self):
        """``args`` with the mutated arrays copied, so a call leaves the case intact."""
        return tuple(
            a.copy() if i in self.mutates and a is not None else a
            for i, a in enumerate(self.args)
        )


class Plan(abc.ABC):
    """A bound call of a normalizer: forward once, derivatives from residuals.

    Subclasses set ``params``: the names of the differentiable array
    parameters actually given (``input`` always first), and implement
    ``_forward``, ``_vjp`` and ``_jvp``.  ``jacobian(name)`` may be overridden
    with a closed form; the default stacks JVPs (or VJPs, whichever is fewer).

    :meth:`forward` enforces the contract every normalizer shares: an output
    that is not finite although every differentiable argument is finite is a
    ValueError (the exact result overflows float64, or the computation
    failed: never a silent NaN), and ``on_forward(plan)`` -- the state
    update of a training call (running statistics) -- runs only after the
    output passed that check, so a call that raises changes nothing.
    ``on_forward`` itself must compute everything before it writes.

    A call with several outputs (``output_names`` set, e.g. a normalizer asked
    for its statistics) returns a tuple of arrays from :meth:`forward`, takes a
    tuple of cotangents in :meth:`vjp` (None: zero), returns a tuple of
    tangents from :meth:`jvp` and a tuple of Jacobians from :meth:`jacobian`,
    one per output, in order; each output is checked finite under its name.
    """

    params: tuple = ()
    #: names of the outputs of a call that returns a tuple (None: one array)
    output_names = None
    #: who computes the derivatives: normref's exact kernels, or autograd (user functions)
    derivatives: str = "normref"
    #: the normalizer's name, for messages
    name: str = "normalizer"
    #: optional callback ``on_forward(plan)`` run once after a successful forward
    on_forward = None
    #: True: ``vjp`` of a single-output call takes a cotangent of any magnitude and
    #: does the power-of-two banding itself (deciding from ranges its kernels measure
    #: while they run, instead of a separate pass); False: the caller bands it first
    #: (:func:`normref.numerics.apply_banded`)
    bands_cotangent = False

    def forward(self):
        if not hasattr(self, "_y"):
            y = self._forward()
            if self.output_names is None:
                self.check_finite("output", y)
            else:
                for what, part in zip(self.output_names, y):
                    self.check_finite(what, part)
            if self.on_forward is not None:
                self.on_forward(self)
            self._y = y
        return self._y

    def keep_private(self):
        """Called by the derivative API before the forward runs: derivatives taken after
        the call returns must not read the caller's arrays.  Returns the names of the
        arguments the caller must hand over as private copies: by default all of them;
        a plan that reads an argument only during the forward, or copies it itself
        while the forward streams through it, leaves it out."""
        return tuple(self.params)

    @property
    def output_shape(self):
        """Shape of the output, known before the forward runs (default: the first parameter's)."""
        return self.value(self.params[0]).shape

    def inputs_finite(self):
        """Whether every differentiable argument of this call is finite."""
        return all_finite(*self._values.values())

    def certify_finite(self, value):
        """Record that ``value``, an array this plan computed, is finite: the kernel that
        wrote it counted its non-finite entries (none), so :meth:`check_finite` needs no
        pass of its own over it.  Identity, not equality: only that very array object."""
        self.__dict__.setdefault("_certified", []).append(value)

    def check_finite(self, what, value, *also):
        """Raise ValueError if ``value`` is not finite while the arguments (and ``also``) are."""
        if any(value is v for v in self.__dict__.get("_certified", ())):
            return
        if all_finite(value) or not (self.inputs_finite() and all_finite(*also)):
            return
        bad = np.flatnonzero(~np.isfinite(np.asarray(value)).ravel())
        idx = np.unravel_index(int(bad[0]), np.shape(value)) if np.ndim(value) else ()
        raise ValueError(
            f"{self.name}: the {what} is not finite at index {tuple(int(i) for i in idx)} "
            f"({int(bad.size)} of {int(np.size(value))} entries) although every argument "
            f"({', '.join(self._values)}) is finite: the exact result is not representable "
            f"in float64 (it overflows)"
        )

    @abc.abstractmethod
    def _forward(self):
        """Compute the output (called once, by :meth:`forward`)."""

    @abc.abstractmethod
    def vjp(self, cotangent):
        """Return ``{param name: gradient}`` for the cotangent ``dy``."""

    @abc.abstractmethod
    def jvp(self, tangents):
        """Return the output tangent for ``{param name: tangent}`` (missing = 0)."""

    def jacobian(self, name):
        """Dense Jacobian of the output with respect to parameter ``name``.

        Shape ``y.shape + param.shape``.  Default: one JVP per input element
        or one VJP per output element, whichever is fewer; a Plan with a
        closed form overrides this.
        """
        y = self.forward()
        p = self.value(name)
        if self.output_names is not None:
            return self._jacobian_of_outputs(name, y, p)
        if p.size <= y.size:
            cols = []
            for j in range(p.size):
                e = np.zeros(p.size)
                e[j] = 1.0
                cols.append(np.asarray(self.jvp({name: e.reshape(p.shape)})).ravel())
            J = np.stack(cols, axis=1) if cols else np.zeros((y.size, 0))
        else:
            rows = []
            for i in range(y.size):
                e = np.zeros(y.size)
                e[i] = 1.0
                rows.append(np.asarray(self.vjp(e.reshape(y.shape))[name]).ravel())
            J = np.stack(rows, axis=0) if rows else np.zeros((0, p.size))
        return J.reshape(y.shape + p.shape)

    def _jacobian_of_outputs(self, name, y, p):
        """The default :meth:`jacobian` of a call with several outputs: a tuple."""
        shapes = [np.shape(o) for o in y]
        m = sum(int(np.prod(s, dtype=np.int64)) for s in shapes)
        if p.size <= m:
            cols = []
            for j in range(p.size):
                e = np.zeros(p.size)
                e[j] = 1.0
                cols.append(flatten_outputs(self.jvp({name: e.reshape(p.shape)})))
            J = np.stack(cols, axis=1) if cols else np.zeros((m, 0))
        else:
            rows = []
            for i in range(m):
                e = np.zeros(m)
                e[i] = 1.0
                rows.append(np.asarray(self.vjp(split_outputs(e, shapes))[name]).ravel())
            J = np.stack(rows, axis=0) if rows else np.zeros((0, p.size))
        return tuple(part.reshape(s + p.shape) for part, s in zip(split_outputs(J, shapes), shapes))

    def value(self, name):
        """The float64 value of differentiable parameter ``name``."""
        return self._values[name]


def flatten_outputs(y):
    """A call's output as one float64 vector: the array raveled, or the arrays of a
    tuple output (a call with several outputs) raveled and concatenated in order."""
    parts = y if isinstance(y, tuple) else (y,)
    if not parts:
        return np.zeros(0)
    return np.concatenate([np.ravel(np.asarray(a, dtype=np.float64)) for a in parts])


def split_outputs(vec, shapes):
    """The inverse of :func:`flatten_outputs`: leading axis of ``vec`` cut into a tuple
    of arrays of ``shapes`` (trailing axes kept)."""
    vec = np.asarray(vec)
    out, start = [], 0
    for s in shapes:
        k = int(np.prod(s, dtype=np.int64))
        out.append(vec[start:start + k].reshape(tuple(s) + vec.shape[1:]))
        start += k
    return tuple(out)


@dataclass(frozen=True)
class Spec:
    """Everything normref knows about one normalizer, declared in its one module.

    Taxonomy (data, see :mod:`normref.taxonomy`): ``nap`` an :class:`Area`,
    ``nop`` an :class:`Operation`, ``nrr`` a :class:`Recovery`; suites ask the
    traits below (``centres``, ``batch_axis``, ``running_state``, ``whitening``)
    instead of keeping lists of names.

    Hooks the generic suites read (``None``: the suite skips this normalizer):

    * ``catalogue`` -- the conformance catalogue's entry
      (:class:`normref.catalogue.Catalogue`: base case, random variants,
      adversarial exclusions with reasons, the rows only it takes);
    * ``strategy`` -- ``strategy(draw, h) -> (args, kwargs)``: one hypothesis
      draw of a valid call, ``h`` the helper namespace
      :data:`normref.testing.strategies.HELPERS` (``h.st`` is hypothesis.strategies;
      so the module itself never imports hypothesis or normref.testing);
      :func:`normref.testing.strategies.normalizer_cases` builds the strategy;
    * ``layer`` -- how the normalizer is applied to ``(N, features)``
      activations, or for a weight normalizer to a layer's weight matrix
      (:class:`normref.nets.Norm`, the invariance table, the SND estimates): a
      :class:`normref.layer_call.LayerCall` with its argument slots, view,
      options and the invariance table's options.
    """

    name: str
    function: Callable
    bind: Callable
    reference: Callable
    family: str  # "activations" | "weights" | "gradients"
    nap: Any
    nop: Any
    nrr: Any
    citation: str
    examples: Callable
    conventions: Mapping[str, str] = field(default_factory=dict)
    #: keyword-only options that choose between frameworks' conventions -> their values
    #: (``assert_conforms`` keeps them from the candidate and tries them for its hints)
    convention_options: Mapping[str, tuple] = field(default_factory=dict)
    #: parameter names that may be differentiated (when given as arrays)
    differentiable: tuple = ("input",)
    #: positional index -> parameter name, for the signature of ``function``
    signature: tuple = ()
    catalogue: Any = None
    strategy: Callable | None = None
    layer: Any = None
    #: True for a normalizer registered by a user (derivatives may come from autograd)
    user: bool = False

    # -- traits --------------------------------------------------------------
    @property
    def centres(self):
        """A mean is subtracted from each group (shift invariant, offset-sensitive)."""
        return bool(self.nop.centres)

    @property
    def scale_only(self):
        """Divides by a scale without subtracting a mean (RMS, Lp, LRN, weight norm)."""
        return not self.nop.centres

    @property
    def whitening(self):
        return bool(self.nop.whitens)

    @property
    def batch_axis(self):
        """The statistics mix the samples of a batch."""
        return bool(self.nap.batch)

    @property
    def running_state(self):
        """The signature takes running statistics (updated in place in training)."""
        return any(p.startswith("running_") for p in self.signature)

    def slot(self, parameter):
        """Positional index of ``parameter`` in the signature, or None."""
        try:
            return self.signature.index(parameter)
        except ValueError:
            return None

    def __repr__(self):
        return f"Spec({self.name!r}: NAP={self.nap}, NOP={self.nop}, NRR={self.nrr})"


REGISTRY: dict[str, Spec] = {}
_BY_FUNCTION: dict[Callable, Spec] = {}


def register(spec: Spec) -> Spec:
    """Add ``spec`` to the registry (its signature read from ``spec.function``).

    Built-in normalizers register themselves on import.  A registration that
    must not outlive a test or a session is scoped with :func:`registered`.
    """
    from .taxonomy import Area, Operation, Recovery

    if not isinstance(spec, Spec):
        raise TypeError(f"register expects a Spec, got {type(spec).__name__}")
    if spec.name in REGISTRY:
        raise ValueError(f"normalizer {spec.name!r} registered twice")
    for field_name, kind in (("nap", Area), ("nop", Operation), ("nrr", Recovery)):
        if not isinstance(getattr(spec, field_name), kind):
            raise TypeError(f"Spec {spec.name!r}: {field_name} must be a normref.taxonomy."
                            f"{kind.__name__}, got {type(getattr(spec, field_name)).__name__}")
    params = tuple(inspect.signature(spec.function).parameters)
    spec = Spec(**{**spec.__dict__, "signature": params})
    REGISTRY[spec.name] = spec
    _BY_FUNCTION[spec.function] = spec
    return spec


def unregister(name):
    """Remove the normalizer registered as ``name`` (KeyError if there is none)."""
    spec = REGISTRY.pop(name)
    _BY_FUNCTION.pop(spec.function, None)
    return spec


@contextlib.contextmanager
def registered(*specs):
    """Register ``specs`` for the duration of a ``with`` block, then remove them
    (also when the block raises), leaving the registry as it was."""
    done = []
    try:
        for s in specs:
            done.append(register(s))
        yield done[0] if len(done) == 1 else done
    finally:
        for s in reversed(done):
            if REGISTRY.get(s.name) is s:
                unregister(s.name)


def spec_of(f) -> Spec:
    """The Spec of a registered function (or its name)."""
    if isinstance(f, str):
        try:
            return REGISTRY[f]
        except KeyError:
            raise KeyError(
                f"no normalizer named {f!r}; registered: {', '.join(sorted(REGISTRY))}"
            ) from None
    try:
        return _BY_FUNCTION[f]
    except (KeyError, TypeError):
        raise TypeError(
            f"{getattr(f, '__name__', f)!r} is not a registered normref normalizer; "
            f"registered: {', '.join(sorted(REGISTRY))}"
        ) from None


def names():
    return sorted(REGISTRY)
