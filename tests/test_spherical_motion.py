"""Item 5 (spherical motion dynamics): the eta*lambda -> 0 extrapolation recovers a
known limit on synthetic data, its error is honest, and the registered rows reject
their alternatives."""
import math

import numpy as np
import pytest

from normref.analysis import dynamics as D
from normref.analysis.dynamics import spherical_motion as S
from normref.analysis.fits import mean_and_stderr, polyfit_intercept


def test_fit_recovers_a_known_limit_on_synthetic_data():
    rng = np.random.default_rng(0)
    x = np.array([0.001, 0.002, 0.004, 0.008])
    pulls = []
    for _ in range(200):
        se = np.full(x.size, 0.002)
        y = 1.0 + 8.0 * x - 400.0 * x ** 2 + se * rng.standard_normal(x.size)
        f = polyfit_intercept(x, y, se, degree=2)
        pulls.append((f.intercept - 1.0) / f.intercept_stderr)
    pulls = np.array(pulls)
    assert abs(pulls.mean()) < 0.25 and 0.7 < pulls.std() < 1.5   # unbiased, honest error
    assert np.mean(np.abs(pulls) < 3) > 0.97


def test_fit_misfit_widens_the_error():
    """chi^2/dof > 1 scales the intercept error by sqrt(chi^2/dof) (Birge ratio)."""
    x = np.array([0.001, 0.002, 0.004, 0.008])
    y = 1.0 + 3000.0 * x ** 2            # curved: a line misfits
    se = np.full(4, 1e-4)
    f = polyfit_intercept(x, y, se, degree=1)
    X = np.vander(x, 2, increasing=True)
    raw = math.sqrt(np.linalg.inv(X.T @ X / 1e-8)[0, 0])
    assert f.chi2 / f.dof > 10
    assert f.intercept_stderr == pytest.approx(raw * math.sqrt(f.chi2 / f.dof), rel=1e-10)
    good = polyfit_intercept(x, 1.0 + 2.0 * x, np.full(4, 1e-2), degree=1)
    assert good.chi2 < 1e-20 and good.intercept_stderr == pytest.approx(
        math.sqrt(np.linalg.inv(X.T @ X / 1e-4)[0, 0]), rel=1e-10)
    with pytest.raises(ValueError):
        polyfit_intercept(x[:3], y[:3], np.ones(3), degree=2)
    with pytest.raises(ValueError):
        mean_and_stderr([1.0])


@pytest.fixture(scope="module")
def rows():
    # the registered item-5 rows (dynamics_claims); the SGD runs are memoized (smd_run)
    out = [D.angular_update_limit_claim(0.0), D.angular_update_limit_claim(0.9),
           D.equilibrium_norm_claim(), D.equilibrium_norm_limit_claim()]
    return {r.id: r for r in out}


def test_rows_pass_and_reject_every_alternative(rows):
    assert set(rows) == {"item5.angular_update.batch_norm.mu0",
                         "item5.angular_update.batch_norm.mu0.9",
                         "item5.equilibrium_norm.angle", "item5.equilibrium_norm.batch_norm"}
    for r in rows.values():
        assert r.passed, (r.id, r.measured, r.tolerance)
        assert r.alternatives and r.accepted_alternatives() == [], r.id
        assert all(r.margin(a) > 1 for a in r.alternatives)
    mu9 = rows["item5.angular_update.batch_norm.mu0.9"]
    labels = {a.label: a.predicted for a in mu9.alternatives}
    assert labels["sqrt(2 eta lambda/(1+mu^2))"] == pytest.approx(math.sqrt(1.9 / 1.81))
    assert labels["sqrt(2 eta lambda) (no momentum)"] == pytest.approx(math.sqrt(1.9))


def test_mu09_bias_grows_with_eta_lambda():
    """The raw ratio at finite eta*lambda is biased upwards (why the rows extrapolate)."""
    r = S.smd_ratios(0.9, eta_lambdas=(0.002, 0.008), seeds=(0, 1))
    (lo, _), (hi, _) = r["angle"]
    assert 1.005 < lo < hi and hi > 1.02


def test_limit_claim_fails_without_normalization():
    r = D.angular_update_limit_claim(0.0, "none", eta_lambdas=(0.002, 0.004, 0.008),
                                     seeds=(0, 1), steps=800, window=400, degree=1)
    assert not r.passed and abs(r.measured - 1) > 0.1


def test_single_run_view_is_kept_for_the_notebook():
    """The unregistered one-run rows keep their meaning (rms angle vs the formula)."""
    r = D.angular_update_claim(0.9, steps=1500, window=1000)
    assert r.predicted == pytest.approx(math.sqrt(2 * 0.1 * 0.02 / 1.9), rel=1e-15)
    assert 0 < r.measured / r.predicted - 1 < 0.05
