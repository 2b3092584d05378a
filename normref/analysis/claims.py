"""Theory claims: a statement, its prediction and its measurement side by side.

Each analysis module (invariance, curvature, dynamics, signal) contributes
functions that *compute* a claim of the literature on normref's exact
derivatives and return :class:`Claim` rows; ``python -m normref check``
prints them in its theory section and ``--json FILE`` writes them as objects
with the keys ``id, claim, source, predicted, measured, tolerance, passed``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable

__all__ = ["Claim", "register_claims", "all_claims", "CLAIM_PROVIDERS"]


@dataclass(frozen=True)
class Claim:
    """One checked statement.

    ``predicted`` and ``measured`` are numbers (or short strings for
    categorical claims); ``tolerance`` is the allowed ``|measured - predicted|``
    (relative where ``relative``), stated in the row.
    """

    id: str
    claim: str
    source: str
    predicted: float | str
    measured: float | str
    tolerance: float
    relative: bool = False

    @property
    def passed(self) -> bool:
        if isinstance(self.predicted, str) or isinstance(self.measured, str):
            return self.predicted == self.measured
        p, m = float(self.predicted), float(self.measured)
        if not (math.isfinite(p) and math.isfinite(m)):
            return p == m
        err = abs(m - p)
        if self.relative:
            err = err / max(abs(p), 1e-300)
        return err <= self.tolerance

    def as_dict(self):
        d = asdict(self)
        d.pop("relative")
        d["tolerance"] = (f"{self.tolerance:g} relative" if self.relative else self.tolerance)
        d["passed"] = self.passed
        return d


#: the modules whose providers :func:`all_claims` runs
ANALYSIS_MODULES = ("invariance", "curvature", "dynamics", "structure", "signal", "stochasticity")

#: name -> callable returning a list of Claim (modules register on import)
CLAIM_PROVIDERS: dict[str, Callable[[], list]] = {}


def register_claims(name):
    """Decorator: register a function returning a list of :class:`Claim`."""

    def deco(fn):
        CLAIM_PROVIDERS[name] = fn
        return fn

    return deco


def all_claims(names=None):
    """Run the providers (all by default) and return their claims in order."""
    import importlib

    for mod in ANALYSIS_MODULES:
        importlib.import_module(f"normref.analysis.{mod}")
    out = []
    for name, fn in CLAIM_PROVIDERS.items():
        if names and name not in names:
            continue
        out.extend(fn())
    return out
