"""The case of the conformance catalogue: a registered call with a stable identity."""
from __future__ import annotations

import inspect
import zlib
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from ...registry import REGISTRY, Case

__all__ = ["ConformCase", "bound_arguments", "seed_of"]


def seed_of(text):
    return zlib.crc32(text.encode("utf-8"))


@dataclass(frozen=True)
class ConformCase(Case):
    """A catalogue case: a :class:`normref.registry.Case` with an identity.

    ``id``           -- ``"<normalizer>/<variant>/s<seed>"``, rebuilt by :func:`case_from_id`;
    ``name``         -- the registered normalizer;
    ``row``          -- the docs/adversarial.md row (``"1"``, ``"2"``, ...) or None;
    ``conventions``  -- the convention keywords an adapter applied (reports, exports);
    ``dtype``        -- the dtype the float arguments are representable in
                        (set by :func:`round_to`; ``"float64"`` for a raw case).
    """

    id: str = ""
    name: str = ""
    row: str | None = None
    conventions: Mapping[str, Any] = field(default_factory=dict)
    dtype: str = "float64"

    def cotangent(self, shape):
        """The cotangent of this case for an output of ``shape``.

        Standard normal, seeded from the id (stable across runs and
        machines), rounded to :attr:`dtype` so that the framework, given it
        cast to its dtype, and normref use the same values.  Never all ones:
        a constant cotangent hides the mean-subtraction terms of a backward.
        """
        shape = tuple(int(s) for s in np.atleast_1d(np.asarray(shape, dtype=np.int64))) \
            if np.ndim(shape) else ((int(shape),) if not isinstance(shape, tuple) else shape)
        rng = np.random.default_rng([seed_of(self.id or self.label), 0xC07])
        g = rng.standard_normal(shape)
        return g.astype(self.dtype).astype(np.float64)


def bound_arguments(case):
    """``{parameter name: value}`` of the call, defaults filled in.

    Adapters use it to read a case without caring whether an argument was
    passed positionally or by keyword.
    """
    spec = REGISTRY[case.name]
    sig = inspect.signature(spec.function)
    ba = sig.bind(*case.args, **dict(case.kwargs))
    ba.apply_defaults()
    return dict(ba.arguments)
