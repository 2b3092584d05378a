"""A normalizer's entry in the conformance catalogue, declared in its own module.

Each normalizer module passes ``catalogue=Catalogue(...)`` to its
:class:`normref.registry.Spec`; the conformance kit
(:mod:`normref.testing.conformance`) iterates the registry over the specs
that have one.  The entry holds the facts only that normalizer knows:

* ``base(rng, options, h) -> (args, kwargs, mutates, group0)`` -- draws one
  valid call from ``rng`` (a :class:`numpy.random.Generator`).  ``options``
  is a dict of variant options (``{"affine": False}``, ``{"n": 0}``, ...);
  ``h`` is the namespace of shared case helpers of the kit (Gaussian data
  with a random spread, spatial shapes, eps and momentum draws), passed in
  so that the normalizer module never imports :mod:`normref.testing`.  The
  result is the positional arguments as a list, the keyword arguments, the
  positional indices of arrays the call updates in place (running
  statistics), and ``group0``: an index of ``args[0]`` selecting one
  statistics group (the adversarial rows "constant group" and "NaN in one
  group" write into it).
* ``variants`` -- ``{name: options}``: the random variants (several seeds each).
* ``exclude`` -- ``{adversarial variant: reason}``: the shared adversarial
  variants this normalizer does not take, each with the reason.
* ``only`` -- ``{variant: (adversarial row, options)}``: adversarial
  variants this normalizer alone (or its family) takes, e.g. batch norm's
  ``n1_spatial`` (row 4, one sample with spatial axes).

This module imports the standard library only: the registry, every
normalizer module and the kit may import it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

__all__ = ["Catalogue"]


def _check_mapping(what, value, check_value):
    if not isinstance(value, Mapping):
        raise TypeError(f"Catalogue: {what} must be a mapping, got {type(value).__name__}")
    for k, v in value.items():
        if not isinstance(k, str) or not k or "/" in k:
            raise ValueError(f"Catalogue: {what} keys must be non-empty names without '/', got {k!r}")
        check_value(k, v)


@dataclass(frozen=True)
class Catalogue:
    """The conformance-catalogue facts of one normalizer (see the module docstring)."""

    base: Callable[..., Any]
    variants: Mapping[str, Mapping[str, Any]]
    exclude: Mapping[str, str] = field(default_factory=dict)
    only: Mapping[str, tuple] = field(default_factory=dict)

    def __post_init__(self):
        if not callable(self.base):
            raise TypeError(f"Catalogue: base must be callable, got {type(self.base).__name__}")

        def options(k, v):
            if not isinstance(v, Mapping):
                raise TypeError(f"Catalogue: options of variant {k!r} must be a mapping, "
                                f"got {type(v).__name__}")

        def reason(k, v):
            if not isinstance(v, str) or not v.strip():
                raise ValueError(f"Catalogue: exclude[{k!r}] must give the reason as a non-empty string")

        def row_options(k, v):
            if not (isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], str)
                    and isinstance(v[1], Mapping)):
                raise TypeError(f"Catalogue: only[{k!r}] must be (adversarial row as str, options), "
                                f"got {v!r}")

        _check_mapping("variants", self.variants, options)
        if not self.variants:
            raise ValueError("Catalogue: variants must name at least one random variant")
        _check_mapping("exclude", self.exclude, reason)
        _check_mapping("only", self.only, row_options)
        clash = (set(self.variants) & set(self.only)) | (set(self.exclude) & set(self.only))
        if clash:
            raise ValueError(f"Catalogue: variant names used twice: {sorted(clash)}")
