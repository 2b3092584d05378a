"""normref.analysis.dynamics: docs/theory.md items 3 (norm growth, effective learning
rate), 4 (Li & Arora exponential learning rate) and 5 (spherical motion
dynamics) — the claim rows with their measured figures, and the same claims
failing on broken inputs."""
import math

import numpy as np
import pytest

from normref.analysis import dynamics as D
from normref.analysis.claims import CLAIM_PROVIDERS, Claim, all_claims

KINDS = ("batch_norm", "layer_norm", "weight_norm")
IDS = (
    [f"item3.norm_growth.{k}" for k in KINDS]
    + [f"item3.effective_lr.{k}" for k in KINDS]
    + [f"item4.exponential_lr.{k}" for k in KINDS]
    + ["item5.angular_update.batch_norm.mu0", "item5.angular_update.batch_norm.mu0.9",
       "item5.equilibrium_norm.angle", "item5.equilibrium_norm.batch_norm"]
)


@pytest.fixture(scope="module")
def rows():
    return {r.id: r for r in D.dynamics_claims()}


# -- the registered provider ---------------------------------------------------------


def test_registered_and_ids(rows):
    assert CLAIM_PROVIDERS["dynamics"] is D.dynamics_claims
    assert list(rows) == IDS
    for r in rows.values():
        assert isinstance(r, Claim)
        d = r.as_dict()
        assert set(d) == {"id", "claim", "source", "predicted", "measured", "tolerance", "passed",
                          "alternatives"}
        assert isinstance(r.predicted, float) and isinstance(r.measured, float)


def test_all_rows_pass(rows):
    failed = [(r.id, r.predicted, r.measured) for r in rows.values() if not r.passed]
    assert not failed


def test_all_claims_includes_dynamics_and_is_deterministic(rows):
    D._SMD_CACHE.clear()  # recompute the item-5 runs too
    again = all_claims(["dynamics"])
    assert [r.id for r in again] == IDS
    for r in again:
        assert r.measured == rows[r.id].measured and r.predicted == rows[r.id].predicted


# -- measured figures ------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_item3_exact_to_rounding(rows, kind):
    ng = rows[f"item3.norm_growth.{kind}"]
    assert ng.predicted == 0.0 and ng.tolerance == 1e-12
    assert ng.measured < 2e-15  # observed ~4e-16: a few ulps
    el = rows[f"item3.effective_lr.{kind}"]
    assert el.tolerance == 1e-10 and el.measured < 1e-13  # observed 2-4e-15


@pytest.mark.parametrize("kind", KINDS)
def test_item4_exact_to_rounding(rows, kind):
    r = rows[f"item4.exponential_lr.{kind}"]
    assert r.predicted == 0.0 and r.tolerance == 1e-10
    assert r.measured < 1e-13  # observed 0.9-1.8e-15 over 300 steps


def test_item5_figures(rows):
    """Statistical rows: extrapolated ratio limits near 1, tolerance = 3 s.e. of the
    fit, every alternative rejected (more in tests/test_spherical_motion.py)."""
    for rid in ("item5.angular_update.batch_norm.mu0", "item5.angular_update.batch_norm.mu0.9",
                "item5.equilibrium_norm.batch_norm"):
        r = rows[rid]
        assert r.predicted == 1.0 and not r.relative
        assert 0 < r.tolerance < 0.02
        assert r.alternatives and r.accepted_alternatives() == []
    ang = rows["item5.equilibrium_norm.angle"]
    assert ang.predicted == pytest.approx(0.1 / (0.1 * (2 - 0.01)), rel=1e-15)
    assert abs(ang.measured / ang.predicted - 1) < 1e-13
    assert ang.accepted_alternatives() == []


def test_item5_mean_is_below_rms():
    # Jensen: the plain mean angular update is below the rms that the theory fixes
    tr, _, _ = D.smd_run(0.0)
    d = D.angular_updates(tr.w)[-2500:]
    assert np.mean(d) < np.sqrt(np.mean(d**2))
    assert np.mean(d) / math.sqrt(2 * 0.1 * 0.02) < 0.95


def test_equilibrium_norm_needs_second_order_term():
    # the exact fixed point has lambda (2 - eta lambda); the first-order 2 lambda misses by ~eta lambda/2
    r = D.equilibrium_norm_claim()
    first_order = 0.1 * 1.0 / (2 * 0.1)
    assert abs(r.measured / first_order - 1) > 4e-3
    assert not Claim("x", "", "", first_order, r.measured, r.tolerance, True).passed


# -- broken inputs fail ----------------------------------------------------------------


def test_item3_fails_without_normalization():
    ng = D.norm_growth_claim("none")
    assert not ng.passed and ng.measured > 1.0
    el = D.effective_lr_claim("none")
    assert not el.passed and el.measured > 1.0


def test_item3_only_approximate_with_eps():
    loss_grad, _ = D.make_problem("batch_norm", eps=1e-3)
    r = D.norm_growth_claim("batch_norm", loss_grad=loss_grad)
    assert not r.passed and 1e-5 < r.measured < 1e-1


def test_item3_fails_with_momentum_or_weight_decay():
    loss_grad, w0 = D.make_problem("batch_norm")
    w0 = w0 / np.linalg.norm(w0)
    for kw in ({"momentum": 0.9}, {"weight_decay": 0.1}):
        tr = D.sgd(loss_grad, w0, lr=0.5, steps=50, **kw)
        n2 = np.sum(tr.w**2, axis=1)
        resid = np.abs(n2[1:] - n2[:-1] - 0.25 * np.sum(tr.g**2, axis=1)) / n2[1:]
        assert resid.max() > 1e-3


@pytest.mark.parametrize("exponent", [lambda t: -2 * t, lambda t: -2 * t - 2, lambda t: -t - 1])
def test_item4_fails_with_wrong_exponent(exponent):
    sched = D.li_arora_schedule(0.1, 0.05, exponent)
    r = D.exponential_lr_claim("batch_norm", schedule=sched, steps=100)
    assert not r.passed and r.measured > 1e-4


def test_item4_right_exponent_short_run():
    r = D.exponential_lr_claim("weight_norm", steps=100, schedule=D.li_arora_schedule(0.1, 0.05))
    assert r.passed and r.measured < 1e-13


def test_item4_fails_without_normalization():
    r = D.exponential_lr_claim("none", steps=100)
    assert not r.passed


def test_item4_fails_with_different_batches():
    # the identity needs the same sampled batches in both runs
    loss_grad, w0 = D.make_problem("batch_norm")
    b1 = D.random_batches(32, 8, 60, seed=1)
    b2 = D.random_batches(32, 8, 60, seed=2)
    a = D.sgd(loss_grad, w0, lr=0.1, weight_decay=0.05, steps=60, batches=b1)
    b = D.sgd(loss_grad, w0, lr=D.li_arora_schedule(0.1, 0.05), steps=60, batches=b2)
    scale = 0.995 ** np.arange(61)
    err = np.linalg.norm(a.w - scale[:, None] * b.w, axis=1) / np.linalg.norm(a.w, axis=1)
    assert err.max() > 1e-3


def test_item5_fails_without_normalization():
    r = D.angular_update_claim(0.0, "none", steps=800, window=400)
    assert not r.passed and r.measured < 0.9 * r.predicted


# -- building blocks ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS + ("angle",))
def test_losses_scale_invariant(kind):
    loss_grad, w = D.make_problem(kind)
    L1, g1 = loss_grad(w)
    L2, g2 = loss_grad(3.7 * w)
    assert L2 == pytest.approx(L1, rel=1e-13)
    np.testing.assert_allclose(g2, g1 / 3.7, rtol=1e-12, atol=1e-15)
    assert abs(w @ g1) < 1e-13 * np.linalg.norm(w) * np.linalg.norm(g1) + 1e-15


@pytest.mark.parametrize("kind", KINDS + ("none",))
def test_gradients_match_finite_differences(kind):
    loss_grad, w = D.make_problem(kind)
    batch = np.arange(3, 14)
    _, g = loss_grad(w, batch)
    h = 1e-6
    fd = np.array([
        (loss_grad(w + h * e, batch)[0] - loss_grad(w - h * e, batch)[0]) / (2 * h)
        for e in np.eye(w.size)
    ])
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-9)


def test_angle_loss_has_constant_sphere_gradient():
    loss_grad, _ = D.make_problem("angle", c=1.7)
    for th in np.linspace(0, 2 * np.pi, 7):
        u = np.array([np.cos(th), np.sin(th)])
        assert np.linalg.norm(loss_grad(u)[1]) == pytest.approx(1.7, rel=1e-14)


def test_angular_updates():
    W = np.array([[1.0, 0.0], [np.cos(0.3), np.sin(0.3)], [-2.0, 1e-9]])
    d = D.angular_updates(W)
    np.testing.assert_allclose(d, [0.3, np.pi - 0.3 - 5e-10], rtol=1e-9)


def test_sgd_matches_torch_conventions():
    torch = pytest.importorskip("torch")
    loss_grad, w0 = D.make_problem("none")  # a plain quadratic: torch can run it
    X = np.random.default_rng(0).standard_normal((32, 8))
    t = np.random.default_rng(1).standard_normal(32)

    def lg(w, batch=None):
        r = X @ w - t
        return 0.5 * r @ r / 32, X.T @ r / 32

    lr, wd, mu = 0.05, 0.01, 0.9
    tr = D.sgd(lg, w0, lr=lr, weight_decay=wd, momentum=mu, steps=20)
    p = torch.tensor(w0.copy(), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([p], lr=lr, momentum=mu, weight_decay=wd)
    Xt, tt = torch.tensor(X), torch.tensor(t)
    for _ in range(20):
        opt.zero_grad()
        loss = 0.5 * ((Xt @ p - tt) ** 2).sum() / 32
        loss.backward()
        opt.step()
    np.testing.assert_allclose(tr.w[-1], p.detach().numpy(), rtol=1e-13, atol=1e-14)


def test_sgd_schedule_and_batches_validation():
    loss_grad, w0 = D.make_problem("batch_norm")
    tr = D.sgd(loss_grad, w0, lr=lambda t: 0.1 * (t + 1), steps=3)
    np.testing.assert_allclose(tr.lr, [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="batches"):
        D.sgd(loss_grad, w0, lr=0.1, steps=5, batches=D.random_batches(32, 8, 2))
    with pytest.raises(ValueError, match="unknown loss kind"):
        D.make_loss("bogus", np.zeros((4, 2)), np.zeros(4))


def test_serial_numba_restores_thread_count():
    import numba

    before = numba.get_num_threads()
    with D.serial_numba():
        assert numba.get_num_threads() == 1
    assert numba.get_num_threads() == before


def test_claims_on_a_users_loss_are_labelled_as_such():
    """A claim computed from the caller's loss_grad names that loss, not normref's problem."""
    from normref.analysis.dynamics import losses, norm_growth_claim

    default_loss, _ = losses.make_problem("batch_norm", seed=0)

    def my_loss(w, batch=None):
        return default_loss(w, batch)

    mine = norm_growth_claim(loss_grad=my_loss, steps=20)
    ours = norm_growth_claim(steps=20)
    assert mine.id == "item3.norm_growth.user.my_loss" and "user's loss my_loss" in mine.claim
    assert ours.id == "item3.norm_growth.batch_norm" and "user" not in ours.claim
    assert mine.measured == ours.measured  # the same function: the same run
