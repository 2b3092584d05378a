"""Theory claims: a statement, its prediction and its measurement side by side.

Each analysis module (invariance, curvature, dynamics, signal) contributes
functions that *compute* a claim of the literature on normref's exact
derivatives and return :class:`Claim` rows; ``python -m normref check``
prints them in its theory section and ``--json FILE`` writes them as objects
with the keys ``id, claim, source, predicted, measured, tolerance, passed, alternatives``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable

__all__ = ["Claim", "Alternative", "register_claims", "all_claims", "CLAIM_PROVIDERS"]


@dataclass(frozen=True)
class Alternative:
    """A wrong answer a claim must reject: the prediction of a wrong formula of the
    literature or an obvious mistake (wrong exponent, a missing factor 2, (B-1) for
    (B-2)), and -- for a claim whose measurement depends on the formula (an identity's
    residual) -- what would be measured with it.  ``measured=None``: the claim's own."""

    label: str
    predicted: float | str
    measured: float | str | None = None


@dataclass(frozen=True)
class Claim:
    """One checked statement.

    ``predicted`` and ``measured`` are numbers (or short strings for
    categorical claims); ``tolerance`` is the allowed ``|measured - predicted|``
    (relative where ``relative``), stated in the row.  ``alternatives`` are the
    wrong answers the pass rule must reject (:class:`Alternative`): a claim whose
    rule also accepts one of them proves nothing (:meth:`accepted_alternatives`).
    """

    id: str
    claim: str
    source: str
    predicted: float | str
    measured: float | str
    tolerance: float
    relative: bool = False
    alternatives: tuple = ()

    @staticmethod
    def _passes(predicted, measured, tolerance, relative):
        if isinstance(predicted, str) or isinstance(measured, str):
            return predicted == measured
        p, m = float(predicted), float(measured)
        if not (math.isfinite(p) and math.isfinite(m)):
            return p == m
        err = abs(m - p)
        if relative:
            err = err / max(abs(p), 1e-300)
        return err <= tolerance

    @property
    def passed(self) -> bool:
        return self._passes(self.predicted, self.measured, self.tolerance, self.relative)

    def accepted_alternatives(self):
        """The alternatives this claim's own pass rule would accept (should be none)."""
        return [a for a in self.alternatives
                if self._passes(a.predicted, self.measured if a.measured is None else a.measured,
                                self.tolerance, self.relative)]

    def margin(self, alternative):
        """How far ``alternative`` is from passing: its error over the tolerance (> 1: rejected)."""
        m = self.measured if alternative.measured is None else alternative.measured
        if isinstance(alternative.predicted, str) or isinstance(m, str):
            return math.inf if alternative.predicted != m else 0.0
        err = abs(float(m) - float(alternative.predicted))
        if self.relative:
            err = err / max(abs(float(alternative.predicted)), 1e-300)
        return err / self.tolerance if self.tolerance > 0 else (math.inf if err > 0 else 0.0)

    def as_dict(self):
        d = asdict(self)
        d.pop("relative")
        d["tolerance"] = (f"{self.tolerance:g} relative" if self.relative else self.tolerance)
        d["passed"] = self.passed
        # (a categorical alternative's margin is infinite: written as null, which strict
        # JSON parsers accept where they reject Infinity)
        d["alternatives"] = [{"label": a.label, "predicted": a.predicted, "measured": a.measured,
                              "margin": m if math.isfinite(m) else None}
                             for a, m in ((a, self.margin(a)) for a in self.alternatives)]
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
