"""Item 8 (Yang et al. 2019): gradient explosion in batch-normalized networks at init.

The claim rows must pass at their stated tolerances, the measured linear growth
must fall as the batch grows, and networks without batch norm (or with a
normalizer that does not couple the batch) must *fail* the same rows."""
import math

import numpy as np
import pytest

from normref.analysis.claims import CLAIM_PROVIDERS
from normref.analysis.signal import (LINEAR_CONFIGS, LINEAR_EXCESS_TOLERANCE, RELU_CONFIGS,
                                     RELU_RELATIVE_TOLERANCE, bn_network, gradient_norms,
                                     growth_claims, measure_growth, predicted_growth,
                                     signal_claims)


@pytest.fixture(scope="module")
def rows():
    return {r.id: r for r in signal_claims()}


def test_predictions():
    assert predicted_growth("linear", 8) == pytest.approx(1.2, abs=1e-15)
    assert predicted_growth("linear", 64) == pytest.approx(62 / 61, abs=1e-15)
    assert predicted_growth("relu") == pytest.approx(math.pi / (math.pi - 1), abs=1e-15)
    assert predicted_growth("relu") == pytest.approx(1.466942206924, abs=1e-12)
    with pytest.raises(ValueError):
        predicted_growth("linear", 3)
    with pytest.raises(ValueError):
        predicted_growth("tanh", 8)


def test_rows_ids_predictions_and_tolerances(rows):
    expected = {f"item8.linear.B{B}.w{w}" for w, Bs in LINEAR_CONFIGS for B in Bs}
    expected |= {f"item8.relu.B{B}.w{w}" for w, Bs in RELU_CONFIGS for B in Bs}
    assert set(rows) == expected
    for r in rows.values():
        B = int(r.id.split(".B")[1].split(".")[0])
        if ".linear." in r.id:
            assert r.predicted == pytest.approx((B - 2) / (B - 3), abs=1e-15)
            assert not r.relative
            assert r.tolerance == pytest.approx(LINEAR_EXCESS_TOLERANCE * (r.predicted - 1), abs=1e-15)
            assert int(r.id.split(".w")[1]) >= 8 * B
        else:
            assert r.predicted == pytest.approx(math.pi / (math.pi - 1), abs=1e-15)
            assert r.relative and r.tolerance == RELU_RELATIVE_TOLERANCE
        assert "Yang" in r.source and "2019" in r.source
        d = r.as_dict()
        assert set(d) == {"id", "claim", "source", "predicted", "measured", "tolerance", "passed",
                          "alternatives"}


def test_all_rows_pass_at_their_stated_tolerances(rows):
    failed = {i: (r.predicted, r.measured, r.tolerance) for i, r in rows.items() if not r.passed}
    assert not failed, failed
    # the rule each row states, recomputed here
    for i, r in rows.items():
        assert abs(r.measured - r.predicted) <= r.tolerance if not r.relative \
            else abs(r.measured / r.predicted - 1) <= r.tolerance
        assert r.measured > 1.0


def test_relu_rows_within_two_percent(rows):
    for w, Bs in RELU_CONFIGS:
        for B in Bs:
            r = rows[f"item8.relu.B{B}.w{w}"]
            assert abs(r.measured / r.predicted - 1) < 0.02, r.measured


def test_linear_growth_increases_as_the_batch_shrinks(rows):
    for w, Bs in LINEAR_CONFIGS:
        measured = [rows[f"item8.linear.B{B}.w{w}"].measured for B in sorted(Bs)]
        assert all(a > b for a, b in zip(measured, measured[1:])), (w, measured)
        # and far above 1 at B = 8 (20% per layer: 1.2^20 ~ 38 over the window)
        assert measured[0] > 1.15


def test_registered_as_signal_provider():
    assert CLAIM_PROVIDERS["signal"] is signal_claims


def test_no_batch_norm_orthogonal_linear_network_fails_the_claim():
    """Orthogonal weights preserve every gradient norm exactly: growth 1, not (B-2)/(B-3)."""
    ctrl = growth_claims(linear_configs=((256, (8, 16)),), relu_configs=(), norm=None,
                         init="orthogonal", seeds=(0, 1))
    assert [r.id for r in ctrl] == ["item8.linear.B8.w256", "item8.linear.B16.w256"]
    for r in ctrl:
        assert r.measured == pytest.approx(1.0, abs=1e-12)
        assert not r.passed
        assert "NO normalizer" in r.claim


def test_no_batch_norm_gaussian_networks_fail_too():
    lin = measure_growth("linear", (8,), 256, norm=None, seeds=(0, 1, 2))[8]
    assert abs(lin.rate - 1.0) < 0.02            # no systematic growth
    relu = growth_claims(linear_configs=(), relu_configs=((128, (256,)),), norm=None,
                         scale=math.sqrt(2.0), seeds=(0, 1, 2))[0]   # He init, no BN
    assert abs(relu.measured - 1.0) < 0.05 and not relu.passed


def test_layer_norm_does_not_show_the_batch_size_explosion():
    """Layer norm standardizes each example: no (B-2)/(B-3) growth at B = 8."""
    r = growth_claims(linear_configs=((256, (8,)),), relu_configs=(), norm="layer_norm",
                      seeds=(0, 1, 2))[0]
    assert not r.passed
    assert r.measured < 1.05


def test_finite_width_bias_shrinks_with_width(rows):
    """B = 64: at width 64 the rate overshoots the limit by more than the claim
    tolerance (why rows keep width >= 8B); at width 512 it is inside."""
    pred = predicted_growth("linear", 64)
    narrow = measure_growth("linear", (64,), 64, seeds=tuple(range(8)))[64]
    wide = rows["item8.linear.B64.w512"]
    assert narrow.rate - pred > LINEAR_EXCESS_TOLERANCE * (pred - 1)
    assert abs(wide.measured - pred) < narrow.rate - pred


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
