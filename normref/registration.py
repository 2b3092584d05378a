"""``normref.register``: a user's own normalizer, verified like a built-in one.

A built-in normalizer declares its facts in a :class:`~normref.registry.Spec`
in its one module.  A user's normalizer declares the same facts through
:func:`register`, and from then on every generic tool reads them:
``python -m normref check`` / :func:`normref.check.run` (forward against its
reference, derivatives against finite differences), the invariance table
(:func:`normref.analysis.invariance_table`), the conformance catalogue (when a
``catalogue`` entry is given) and the derivative API.

Without a ``bind`` of its own, the normalizer's derivatives are autograd's
(:mod:`normref.autograd_plan`, labelled ``derivatives == "autograd"``): the
function must then be written with ``autograd.numpy``.  Use
:func:`normref.registered` to register for the length of a ``with`` block.
"""
from __future__ import annotations

from .autograd_plan import autograd_bind
from .registry import Case, Spec, registered, unregister
from .registry import register as _register_spec
from .taxonomy import Area, AreaKind, Operation, OpKind, Recovery, RecoveryKind

__all__ = ["register", "registered", "unregister", "spec"]


def _examples(examples, name):
    """``examples(rng) -> [Case]`` from a callable, or from a list of Cases / argument tuples."""
    if examples is None:
        return lambda rng: []
    if callable(examples):
        return examples
    cases = []
    for i, e in enumerate(examples):
        if isinstance(e, Case):
            cases.append(e)
        elif isinstance(e, tuple):
            cases.append(Case(f"example {i}", e))
        else:
            raise TypeError(f"register({name!r}): examples[{i}] must be a Case or a tuple of "
                            f"positional arguments, got {type(e).__name__}")
    return lambda rng: list(cases)


def spec(function, *, name=None, reference=None, bind=None, family="activations",
         centres=False, batch=False, nap=None, nop=None, nrr=None,
         citation="user-defined", examples=None, conventions=None,
         differentiable=None, catalogue=None, strategy=None, layer=None):
    """The :class:`~normref.registry.Spec` :func:`register` would register (not registered).

    ``centres``: the operation subtracts a mean (so suites treat it as shift
    invariant); ``batch``: its statistics mix the samples of a batch.  Give
    ``nap`` / ``nop`` / ``nrr`` (:mod:`normref.taxonomy` values) to say more.
    ``reference`` defaults to ``function`` itself: then "forward against the
    reference" is trivially exact, and what ``check`` verifies are the
    derivatives (autograd's, against finite differences).
    """
    if not callable(function):
        raise TypeError(f"register expects a function, got {type(function).__name__}")
    name = name or getattr(function, "__name__", None)
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"register: name must be an identifier, got {name!r}")
    if family not in ("activations", "weights", "gradients"):
        raise ValueError(f"register({name!r}): family must be 'activations', 'weights' or "
                         f"'gradients', got {family!r}")
    nap = nap or Area(AreaKind.USER, "declared by the user", batch=bool(batch))
    nop = nop or Operation(OpKind.USER, "declared by the user", centres=bool(centres))
    nrr = nrr or Recovery((RecoveryKind.NONE,), "declared by the user")
    return Spec(
        name=name, function=function,
        bind=bind or autograd_bind(name, function),
        reference=reference or function, family=family, nap=nap, nop=nop, nrr=nrr,
        citation=citation, examples=_examples(examples, name),
        conventions=dict(conventions or {}),
        differentiable=tuple(differentiable) if differentiable else ("input",),
        catalogue=catalogue, strategy=strategy, layer=layer, user=bind is None,
    )


def register(function, **facts):
    """Register a user's normalizer (or a ready :class:`~normref.registry.Spec`).

    ``register(f, examples=[(x, w)], centres=True)`` registers ``f`` under
    ``f.__name__``; the keywords are those of :func:`spec`.  Returns the
    registered Spec.  A name already registered is a ValueError; remove a
    registration with :func:`unregister`, or scope it with :func:`registered`.
    """
    if isinstance(function, Spec):
        if facts:
            raise TypeError("register(spec) takes no keywords: the Spec holds the facts")
        return _register_spec(function)
    return _register_spec(spec(function, **facts))
