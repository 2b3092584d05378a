"""Item 8 (Yang et al. 2019): gradient explosion in batch-normalized networks at init.

The claim rows must pass at their stated tolerances, the measured linear growth
must fall as the batch grows, and networks without batch norm (or with a
normalizer that does not couple the batch) must *fail* the same rows."""
import math

import numpy as np
import pytest

from normref.analysis.claims import CLAIM_PROVIDERS
from normref.analysis.fits import polyfit_intercept
from normref.analysis.signal import (LINEAR_BATCHES, RELU_BATCH, bn_network, gradient_norms,
                                     growth_claims, mean_field_growth, measure_growth,
                                     predicted_growth, signal_claims)


@pytest.fixture(scope="module")
def rows():
    return {r.id: r for r in signal_claims()}


def test_predictions():
    assert predicted_growth("linear", 8) == pytest.approx(1.2, abs=1e-15)
    assert predicted_growth("relu") == pytest.approx(1.466942206924, abs=1e-12)
    with pytest.raises(ValueError):
        predicted_growth("linear", 3)


def test_rows_pass_and_reject_every_alternative(rows):
    expected = {f"item8.linear.B{B}" for B in LINEAR_BATCHES}
    expected |= {"item8.relu.mean_field", f"item8.relu.network.B{RELU_BATCH}"}
    assert set(rows) == expected
    for r in rows.values():
        assert r.passed, (r.id, r.measured, r.tolerance)
        assert r.alternatives and r.accepted_alternatives() == [], r.id
        assert "Yang" in r.source
    for B in LINEAR_BATCHES:
        labels = {a.label: a.predicted for a in rows[f"item8.linear.B{B}"].alternatives}
        assert labels["(B-1)/(B-2)"] == pytest.approx((B - 1) / (B - 2))
        assert labels["(B-3)/(B-4)"] == pytest.approx((B - 3) / (B - 4))
    for rid in ("item8.relu.mean_field", f"item8.relu.network.B{RELU_BATCH}"):
        got = sorted(a.predicted for a in rows[rid].alternatives)
        assert got == pytest.approx(sorted([math.sqrt(2), 1.43, 1.49]))


def test_mean_field_rate_is_exact_for_the_linear_network():
    rate, se = mean_field_growth(8, 2000, rng=0, activation="linear")
    assert rate == pytest.approx(1.2, abs=1e-12) and se < 1e-12


def test_width_fit_recovers_a_known_limit_on_synthetic_data():
    rng = np.random.default_rng(1)
    n = np.array([256.0, 512.0, 1024.0])
    pulls = []
    for _ in range(200):
        se = np.array([0.008, 0.004, 0.002])
        y = 1.2 - 3.0 / n + se * rng.standard_normal(3)
        f = polyfit_intercept(1 / n, y, se, degree=1)
        pulls.append((f.intercept - 1.2) / f.intercept_stderr)
    assert abs(np.mean(pulls)) < 0.25 and 0.7 < np.std(pulls) < 1.5


def test_no_batch_norm_orthogonal_linear_network_fails_the_claim():
    """Orthogonal weights preserve every gradient norm exactly: growth 1, not (B-2)/(B-3)."""
    m = measure_growth("linear", (8,), 128, norm=None, init="orthogonal", seeds=(0, 1))[8]
    assert m.rate == pytest.approx(1.0, abs=1e-12)


def test_layer_norm_does_not_show_the_batch_size_explosion():
    r = growth_claims(linear_batches=(8,), relu_batches=(), linear_widths=(64, 128, 256),
                      norm="layer_norm", seeds=(0, 1, 2))[0]
    assert not r.passed and r.measured < 1.05


def test_gradient_norms_match_the_network_gradient():
    """The Gram-matrix shortcut equals the weight gradients of MLP.vjp exactly."""
    net = bn_network(16, 4, "relu", rng=0)
    rng = np.random.default_rng(1)
    state = rng.bit_generator.state
    pre, weight = gradient_norms(net, 6, rng)
    rng.bit_generator.state = state
    x = rng.standard_normal((6, 16))
    y, pullback = net.vjp(x)
    _, grad = pullback(rng.standard_normal(y.shape))
    parts = net.split(grad)
    ws = [np.sum(p["weight"] ** 2) for p in parts if "weight" in p]
    np.testing.assert_allclose(weight, ws, rtol=1e-12)
    assert pre.shape == (4,) and np.all(pre > 0)
