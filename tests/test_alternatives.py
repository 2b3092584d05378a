"""Every theory claim has discriminating power: the wrong answers it declares
(:class:`normref.analysis.claims.Alternative` -- wrong formulas of the
literature, obvious mistakes, the wrong category) must exist and its own pass
rule must reject every one of them, while the claim itself passes.

``all_claims()`` runs once for the module (about 25 s on one core).
"""
from __future__ import annotations

import math

import pytest

from normref.analysis.claims import Alternative, Claim

@pytest.fixture(scope="module")
def claims(theory_claims):
    return list(theory_claims)


def test_every_claim_declares_an_alternative(claims):
    missing = [c.id for c in claims if not c.alternatives]
    assert not missing, f"claims without alternatives: {missing}"
    for c in claims:
        assert all(isinstance(a, Alternative) for a in c.alternatives), c.id


def test_no_claim_accepts_an_alternative(claims):
    bad = [(c.id, a.label, a.predicted, c.measured if a.measured is None else a.measured,
            c.tolerance) for c in claims for a in c.accepted_alternatives()]
    assert not bad, "claims whose pass rule accepts a wrong answer (id, alternative, " \
                    f"predicted, measured, tolerance): {bad}"
    for c in claims:
        for a in c.alternatives:
            m = c.margin(a)
            assert not math.isnan(m) and m > 1, (c.id, a.label, m)


def test_every_claim_passes(claims):
    failing = [(c.id, c.predicted, c.measured, c.tolerance) for c in claims if not c.passed]
    assert not failing, failing


def test_the_check_itself_rejects_an_accepting_claim():
    """The machinery the tests above rely on: an alternative inside the tolerance
    is reported as accepted, one outside is not (numeric, residual and text forms)."""
    c = Claim("x", "", "", 1.0, 1.0 + 1e-9, 1e-8, relative=True,
              alternatives=(Alternative("close", 1.0 + 5e-9), Alternative("far", 2.0)))
    assert [a.label for a in c.accepted_alternatives()] == ["close"]
    r = Claim("y", "", "", 0.0, 1e-16, 1e-12,
              alternatives=(Alternative("small residual", 0.0, 1e-13),
                            Alternative("large residual", 0.0, 1e-3)))
    assert [a.label for a in r.accepted_alternatives()] == ["small residual"]
    t = Claim("z", "", "", "a > b", "a > b", 0.0, alternatives=(Alternative("rev", "b > a"),))
    assert t.accepted_alternatives() == [] and math.isinf(t.margin(t.alternatives[0]))
