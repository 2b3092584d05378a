"""The whitening family: the properties the papers and docs/theory.md items 9 and 11
state, docs/adversarial.md rows 16-17, running estimates and bad input.

(The registry-driven suite already checks forward, VJP, JVP, Jacobians and
second order against the autograd reference for every example case.)
"""
import numpy as np
import pytest

import normref as nr
from normref.testing import check_vjp
from normref.whiten import BlockView, whitening_matrix

EXACT = ("pca_whitening", "zca_whitening", "cholesky_whitening")
ALL_BATCH = EXACT + ("iter_norm",)


def _fn(name):
    return getattr(nr, name)


def _correlated(rng, n, d, offset=0.0):
    A = np.eye(d) + 0.6 * rng.standard_normal((d, d))
    return rng.standard_normal((n, d)) @ A.T + offset


def _cov(z):
    zc = z - z.mean(axis=0)
    return zc.T @ zc / z.shape[0]


@pytest.mark.parametrize("name", EXACT)
@pytest.mark.parametrize("eps", [0.0, 1e-5, 0.3])
def test_whitened_covariance_is_identity_or_eps_shrunk(name, eps):
    rng = np.random.default_rng(0)
    x = _correlated(rng, 40, 5, offset=3.0)
    z = _fn(name)(x, eps=eps)
    l, D = np.linalg.eigh(_cov(x))
    # W Sigma W^T = I for Sigma = data covariance + eps I; the data part is
    # W (Sigma - eps I) W^T, which is diag(l / (l + eps)) in the eigenbasis
    # (ZCA, whose W shares the eigenbasis) and has those eigenvalues for all three
    C = _cov(z)
    np.testing.assert_allclose(np.sort(np.linalg.eigvalsh(C)), np.sort(l / (l + eps)), rtol=1e-12, atol=1e-13)
    if name == "zca_whitening":
        np.testing.assert_allclose(D.T @ C @ D, np.diag(l / (l + eps)), atol=1e-12)
    if eps == 0.0:
        np.testing.assert_allclose(C, np.eye(5), atol=1e-12)


def test_whitening_matrices_differ_by_an_orthogonal_factor_and_zca_is_closest():
    rng = np.random.default_rng(1)
    x = _correlated(rng, 50, 4)
    xc = x - x.mean(axis=0)
    W = {}
    for name in EXACT:
        plan = nr.REGISTRY[name].bind(x, eps=1e-3)
        plan.forward()
        W[name] = plan.whitening_matrices()[0]
    Wz = W["zca_whitening"]
    for name in ("pca_whitening", "cholesky_whitening"):
        Q = W[name] @ np.linalg.inv(Wz)
        np.testing.assert_allclose(Q @ Q.T, np.eye(4), atol=1e-12)
    # ZCA minimises E||W xc - xc||^2 over all whitening matrices Q W_zca
    def mse(Wm):
        return float(np.mean(np.sum((xc @ Wm.T - xc) ** 2, axis=1)))
    best = mse(Wz)
    assert best < mse(W["pca_whitening"]) and best < mse(W["cholesky_whitening"])
    for _ in range(20):  # random orthogonal factors, and ones close to I
        Q, _ = np.linalg.qr(rng.standard_normal((4, 4)))
        assert mse(Q @ Wz) > best
        A = rng.standard_normal((4, 4)) * 1e-3
        R = np.linalg.matrix_power(np.eye(4) + (A - A.T) / 8, 8)
        Q2, _ = np.linalg.qr(R)
        Q2 = Q2 * np.sign(np.diag(Q2))
        assert mse(Q2 @ Wz) >= best - 1e-15


def _p_map(lam, T):
    p = np.ones_like(lam)
    for _ in range(T):
        p = (3 * p - lam * p ** 3) / 2
    return lam * p ** 2


@pytest.mark.parametrize("T", [0, 1, 2, 3, 5, 8, 12])
def test_iter_norm_spectrum_follows_the_newton_schulz_map(T):
    rng = np.random.default_rng(2)
    x = _correlated(rng, 60, 6)
    eps = 1e-5
    Sigma = _cov(x) + eps * np.eye(6)
    lam = np.linalg.eigvalsh(Sigma / np.trace(Sigma))
    plan = nr.REGISTRY["iter_norm"].bind(x, eps=eps, T=T)
    plan.forward()
    W = plan.whitening_matrices()[0]
    got = np.linalg.eigvalsh(W @ Sigma @ W.T)
    np.testing.assert_allclose(np.sort(got), np.sort(_p_map(lam, T)), rtol=1e-11, atol=1e-14)
    assert np.all(_p_map(lam, T) <= 1 + 1e-15)


def test_newton_iteration_agrees_while_stable_and_drifts_when_ill_conditioned():
    rng = np.random.default_rng(2)
    x = _correlated(rng, 60, 6)
    for T in (0, 1, 3, 5):
        np.testing.assert_allclose(nr.iter_norm(x, T=T, evaluation="newton"), nr.iter_norm(x, T=T),
                                   rtol=1e-10, atol=1e-11)
    # Sigma_N with eigenvalues spread over 1e-3..1: once converged, the uncoupled
    # matrix iteration amplifies its rounding (the iterates stop commuting with Sigma_N)
    y = np.random.default_rng(2).standard_normal((200, 4)) * np.array([1.0, 0.3, 0.1, 0.03])
    exact = nr.iter_norm(y, T=40)
    np.testing.assert_allclose(exact, nr.zca_whitening(y), atol=1e-10)
    drift = [np.abs(nr.iter_norm(y, T=T, evaluation="newton") - nr.iter_norm(y, T=T)).max()
             for T in (5, 10, 15)]  # measured: 2e-15, 8e-7, 2.5e7
    assert drift[0] < 1e-13 and drift[1] > 1e-9 and drift[2] > 1.0
    with pytest.raises(ValueError, match="diverged.*spectral"):
        nr.iter_norm(y, T=60, evaluation="newton")


def test_iter_norm_converges_to_zca():
    rng = np.random.default_rng(3)
    x = _correlated(rng, 60, 5)
    z = nr.zca_whitening(x, eps=1e-3)
    errs = [np.abs(nr.iter_norm(x, eps=1e-3, T=T) - z).max() for T in (1, 3, 5, 10, 20, 40)]
    assert all(b <= a for a, b in zip(errs, errs[1:]))
    assert errs[-1] < 1e-11 and errs[0] > 1e-2


def test_zca_with_group_size_one_is_batch_norm_and_group_whitening_one_group_is_layer_norm():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 6, 3)) * 2 + 1
    w, b = rng.standard_normal(6), rng.standard_normal(6)
    for name in ALL_BATCH:
        if name == "iter_norm":  # 1 x 1: P_T = 1 exactly, W = 1/sqrt(tr)
            y = nr.iter_norm(x, None, None, w, b, group_size=1, eps=1e-3)
        else:
            y = _fn(name)(x, None, None, w, b, group_size=1, eps=1e-3)
        np.testing.assert_allclose(y, nr.batch_norm(x, None, None, w, b, True, eps=1e-3),
                                   rtol=1e-13, atol=1e-13)
    y = nr.group_whitening(x, 1, w, b, eps=1e-3)
    ln = nr.layer_norm(x, (6, 3), eps=1e-3) * w[:, None] + b[:, None]
    np.testing.assert_allclose(y, ln, rtol=1e-13, atol=1e-13)


# -- docs/adversarial.md row 16: rank-deficient covariance -------------------------
@pytest.mark.parametrize("name", ALL_BATCH)
def test_rank_deficient_covariance_with_eps(name):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 6))  # 6 features, 3 samples: rank 2
    eps = 0.05
    z = _fn(name)(x, eps=eps)
    assert np.isfinite(z).all()
    l = np.linalg.eigvalsh(_cov(x))
    if name != "iter_norm":
        np.testing.assert_allclose(np.sort(np.linalg.eigvalsh(_cov(z))), np.sort(l / (l + eps)),
                                   atol=1e-12)
    res = check_vjp(_fn(name), x, eps=eps, rng=np.random.default_rng(0), raise_exception=False)
    assert res.passed, res
    x_dup = np.concatenate([x, x[:, :2]], axis=1)  # duplicated features
    assert np.isfinite(_fn(name)(x_dup, eps=eps)).all()


@pytest.mark.parametrize("name", EXACT)
def test_singular_covariance_without_eps_raises(name):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 6))
    with pytest.raises(ValueError, match="singular.*eps > 0"):
        _fn(name)(x, eps=0.0)
    x = rng.standard_normal((20, 3))
    with pytest.raises(ValueError, match="singular"):
        _fn(name)(np.concatenate([x, x[:, :1]], axis=1), eps=0.0)


def test_iter_norm_needs_only_a_positive_trace():
    x = np.random.default_rng(7).standard_normal((3, 6))
    assert np.isfinite(nr.iter_norm(x, eps=0.0)).all()
    with pytest.raises(ValueError, match="trace"):
        nr.iter_norm(np.ones((4, 3)), eps=0.0)


# -- docs/adversarial.md row 17: repeated eigenvalues ------------------------------
def _identity_cov_data():
    # rows orthogonal to 1 with equal norms: covariance exactly I
    H = np.array([[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]], dtype=float)
    return np.ascontiguousarray(H[1:].T) + 0.25  # 4 samples x 3 features


@pytest.mark.parametrize("name", ["zca_whitening", "cholesky_whitening", "iter_norm"])
def test_gradient_at_identity_covariance_is_finite_and_exact(name):
    x = _identity_cov_data()
    np.testing.assert_array_equal(_cov(x), np.eye(3))
    y, pb = nr.vjp(_fn(name), x, eps=0.0)
    dy = np.random.default_rng(8).standard_normal(y.shape)
    (dx,) = pb(dy)
    assert np.isfinite(dx).all()
    res = check_vjp(_fn(name), x, eps=0.0, rng=np.random.default_rng(1), raise_exception=False)
    assert res.passed, res
    if name == "zca_whitening":  # Sigma = I: W = I, y = xc, and the gradient has a closed form
        np.testing.assert_allclose(y, x - x.mean(axis=0), atol=1e-15)
        dyc = dy - dy.mean(axis=0)
        xc = x - x.mean(axis=0)
        # dW = dy^T xc / ... : at Sigma = I, dSigma = -sym(dW)/2, dxc = dy + 2 dSigma xc / m
        m = x.shape[0]
        dW = dy.T @ xc
        dS = -0.25 * (dW + dW.T)
        expect = dy + 2.0 / m * xc @ dS.T
        expect = expect - expect.mean(axis=0)
        np.testing.assert_allclose(dx, expect, atol=1e-14)
        assert np.abs(dx - dyc).max() > 1e-3  # the covariance path contributes


@pytest.mark.filterwarnings("ignore:divide by zero")
def test_autograd_reference_is_nan_where_normref_is_finite():
    import autograd
    x = _identity_cov_data()
    dy = np.random.default_rng(9).standard_normal(x.shape)
    ref = autograd.make_vjp(lambda a: nr.REGISTRY["zca_whitening"].reference(a, eps=0.0))(x)[0](dy)
    assert not np.isfinite(ref).all()  # 1 / (l_j - l_i) at equal eigenvalues
    assert np.isfinite(nr.vjp(nr.zca_whitening, x, eps=0.0)[1](dy)[0]).all()


def test_pca_derivative_at_repeated_eigenvalues_raises():
    x = _identity_cov_data()
    with pytest.raises(ValueError, match="repeated eigenvalue"):
        nr.vjp(nr.pca_whitening, x, eps=0.0)[1](np.ones_like(x) + np.arange(12).reshape(4, 3))


def test_divided_differences_match_the_derivative_limit():
    # G_ij -> g'(l) = -1/2 l^{-3/2} as l_j -> l_i, continuously
    for gap in (1e-2, 1e-6, 1e-10, 0.0):
        S = np.diag([2.0, 2.0 + gap, 5.0])[None]
        f = whitening_matrix(S, "zca")
        assert np.isclose(f.G[0, 0, 1], -0.5 * 2.0 ** -1.5, rtol=2 * gap + 1e-14)


# -- running estimates, eval mode, recovery ---------------------------------
def test_running_estimates_and_eval_mode():
    rng = np.random.default_rng(10)
    x = _correlated(rng, 30, 4, offset=2.0)
    rm, rc = np.zeros(4), np.eye(4)[None].copy()
    nr.zca_whitening(x, rm, rc, momentum=0.25)
    xc = x - x.mean(axis=0)
    np.testing.assert_allclose(rm, 0.25 * x.mean(axis=0), rtol=1e-14)
    np.testing.assert_allclose(rc[0], 0.75 * np.eye(4) + 0.25 * xc.T @ xc / 29, rtol=1e-13)
    # eval: W recomputed from the running covariance
    y = nr.zca_whitening(x, rm, rc, training=False, eps=1e-5)
    l, D = np.linalg.eigh(rc[0] + 1e-5 * np.eye(4))
    np.testing.assert_allclose(y, (x - rm) @ (D @ np.diag(l ** -0.5) @ D.T).T, rtol=1e-12, atol=1e-12)
    # averaging whitening matrices instead
    rw = np.zeros((1, 4, 4))
    plan = nr.REGISTRY["iter_norm"].bind(x, None, rw, momentum=1.0, running_estimate="whitening")
    plan.forward()
    np.testing.assert_allclose(rw, plan.whitening_matrices(), rtol=1e-15)
    y = nr.iter_norm(x, x.mean(axis=0), rw, training=False, running_estimate="whitening")
    np.testing.assert_allclose(y, nr.iter_norm(x), atol=1e-13)


def test_coloring_recovery():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((6, 4, 3))
    gam = rng.standard_normal((2, 2, 2))
    b = rng.standard_normal(4)
    y = nr.zca_whitening(x, None, None, gam, b, group_size=2)
    z = nr.zca_whitening(x, group_size=2)
    view = BlockView(x.shape, "batch", 2)
    expect = view.from_blocks(gam @ view.to_blocks(z)) + b[None, :, None]
    np.testing.assert_allclose(y, expect, atol=1e-14)


def test_nan_stays_in_its_block_and_huge_data_does_not_overflow():
    rng = np.random.default_rng(12)
    x = rng.standard_normal((8, 4))
    x[3, 2] = np.nan
    for name in ALL_BATCH:
        y = _fn(name)(x, group_size=2)
        assert np.isnan(y[:, 2:]).all() and np.isfinite(y[:, :2]).all()
    x = _correlated(rng, 20, 3)
    for name in ALL_BATCH:
        a, b = _fn(name)(x * 1e300, eps=0.0), _fn(name)(x, eps=0.0)
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shape", [(5, 0), (0, 3), (0, 3, 2)])
def test_empty_inputs_give_empty_outputs_and_gradients(shape):
    for name in ALL_BATCH:
        y, pb = nr.vjp(_fn(name), np.zeros(shape))
        assert y.shape == shape and pb(np.zeros(shape))[0].shape == shape
    assert nr.group_whitening(np.zeros((0, 4)), 2).shape == (0, 4)


@pytest.mark.parametrize("name", ALL_BATCH + ("group_whitening",))
def test_a_large_offset_costs_no_accuracy(name):
    # data on a 2^-10 grid: exact in float64 at offset 1e8 too, so both calls
    # see the same centred values; a mean whose rounding error were added back
    # to the mean (not subtracted from x - mean) would cost ~1e7 ulps here
    rng = np.random.default_rng(14)
    x = np.round(_correlated(rng, 60, 8) * 1024) / 1024  # 60 cases: an inexact mean
    f = _fn(name)
    args = (x, 2) if name == "group_whitening" else (x,)
    y0 = f(*args, eps=1e-5)
    y8 = f(*((x + 1e8,) + args[1:]), eps=1e-5)
    np.testing.assert_array_equal(x + 1e8 - 1e8, x)
    assert np.abs(y8 - y0).max() <= 1e-12 * np.abs(y0).max()


def test_bad_input_names_the_argument():
    x = np.random.default_rng(13).standard_normal((6, 4))
    with pytest.raises(ValueError, match="group_size=3 must divide"):
        nr.zca_whitening(x, group_size=3)
    with pytest.raises(ValueError, match=r"weight has shape \(3,\), expected \(4,\)"):
        nr.pca_whitening(x, None, None, np.ones(3))
    with pytest.raises(ValueError, match="running_cov is required"):
        nr.iter_norm(x, np.zeros(4), None, training=False)
    with pytest.raises(ValueError, match=r"running_cov has shape \(4, 4\), expected \(1, 4, 4\)"):
        nr.iter_norm(x, np.zeros(4), np.eye(4), training=False)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        nr.cholesky_whitening(x[:1])
    with pytest.raises(ValueError, match="num_groups=3 must divide"):
        nr.group_whitening(x, 3)
    with pytest.raises(ValueError, match="method must be one of"):
        nr.group_whitening(x, 2, method="svd")
    with pytest.raises(TypeError, match="T must be"):
        nr.iter_norm(x, T=2.5)
