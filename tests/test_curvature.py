"""normref.analysis.curvature: exact curvature matrices, operators, condition
numbers, and the claim rows of docs/theory.md item 6 (plus item 1's curvature half)."""
import numpy as np
import pytest
import autograd
import autograd.numpy as anp
from scipy.sparse.linalg import LinearOperator

import normref
from normref.analysis import curvature as cv
from normref.analysis.claims import CLAIM_PROVIDERS, Claim
from normref.registry import REGISTRY


# ---------------------------------------------------------------- fixtures
def _small_mlp(norm, seed=0, sizes=(3, 5, 3), N=10):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, sizes[0])) + 0.3
    w = cv._init_params(sizes, rng) + 0.1 * rng.standard_normal(
        sum(a * b + a for a, b in zip(sizes[1:], sizes[:-1])))
    model, P, _ = cv._mlp(X, sizes, norm)
    y = rng.integers(0, sizes[-1], N)

    def loss(v):
        z = model(v)
        return anp.mean(anp.log(anp.sum(anp.exp(z), axis=1)) - z[np.arange(N), y])

    return model, loss, w, y


# ---------------------------------------------------------------- Hessian
@pytest.mark.parametrize("norm", ["none", "batch_norm", "layer_norm"])
def test_hessian_matches_finite_differences_of_gradient(norm):
    model, loss, w, _ = _small_mlp(norm)
    H = cv.hessian(loss, w)
    grad = autograd.grad(loss)
    h = 1e-5
    fd = np.empty_like(H)
    for k in range(w.size):
        e = np.zeros_like(w)
        e[k] = h
        fd[:, k] = (grad(w + e) - grad(w - e)) / (2 * h)   # central differences, O(h^2)
    scale = np.abs(H).max()
    assert np.abs(H - fd).max() <= 1e-7 * scale
    assert np.abs(H - H.T).max() <= 1e-12 * scale


def test_hessian_of_normref_reference_layer_norm_vs_fd_of_normref_vjp():
    """Second derivative of a layer-norm loss (autograd on the reference) against
    finite differences of normref's fast-path gradient (numba VJP)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 6))
    t = rng.standard_normal((2, 6))
    ln = REGISTRY["layer_norm"].reference

    def loss(v):
        y = ln(anp.reshape(v, (2, 6)), (6,))
        return 0.5 * anp.sum((y - t) ** 2)

    def grad_fast(v):
        y, pb = normref.vjp(normref.layer_norm, v.reshape(2, 6), (6,))
        return pb(y - t)[0].ravel()

    H = cv.hessian(loss, x.ravel())
    h = 1e-6
    fd = np.stack([(grad_fast(x.ravel() + h * e) - grad_fast(x.ravel() - h * e)) / (2 * h)
                   for e in np.eye(12)], axis=1)
    assert np.abs(H - fd).max() <= 1e-6 * np.abs(H).max()


# ---------------------------------------------------------------- GN / Fisher / K-FAC
def test_true_fisher_equals_gauss_newton_for_softmax_and_gaussian():
    model, _, w, y = _small_mlp("batch_norm")
    G = cv.gauss_newton(model, w, "softmax")
    F = cv.fisher(model, w, likelihood="softmax")   # from the definition (sum over classes)
    assert np.abs(F - G).max() <= 1e-14 * np.abs(G).max()
    Gs = cv.gauss_newton(model, w, "squared")
    Fg = cv.fisher(model, w, likelihood="gaussian", sigma2=2.0)
    assert np.abs(Fg - Gs / 2.0).max() <= 1e-14 * np.abs(Gs).max()
    # empirical Fisher: E[g g^T] over the batch with the observed labels; its
    # trace is the mean squared per-sample gradient norm, and it differs from F
    Fe = cv.fisher(model, w, likelihood="softmax", targets=y, empirical=True)
    assert np.allclose(Fe, Fe.T) and np.linalg.eigvalsh(Fe).min() > -1e-14
    assert np.abs(Fe - F).max() > 1e-3 * np.abs(F).max()


def test_empirical_fisher_per_sample_gradients_without_coupling():
    """Plain MLP (no batch coupling): the empirical Fisher is (1/N) sum g_n g_n^T with
    g_n the gradient of the n-th sample's loss alone."""
    model, _, w, y = _small_mlp("none")
    N = y.size
    Fe = cv.fisher(model, w, likelihood="softmax", targets=y, empirical=True)
    gs = []
    for n in range(N):
        def ln(v, n=n):
            z = model(v)[n]
            return anp.log(anp.sum(anp.exp(z))) - z[y[n]]
        gs.append(autograd.grad(ln)(w))
    gs = np.array(gs)
    assert np.abs(Fe - gs.T @ gs / N).max() <= 1e-14 * np.abs(Fe).max()


def test_kfac_factors_and_block():
    rng = np.random.default_rng(0)
    a, d = rng.standard_normal((20, 3)), rng.standard_normal((20, 2))
    A, B = cv.kfac_factors(a, d)
    np.testing.assert_allclose(A, a.T @ a / 20, rtol=0, atol=1e-15)
    A1, _ = cv.kfac_factors(a, d, bias=True)
    assert A1.shape == (4, 4) and A1[3, 3] == 1.0
    # block = E_n[delta_n delta_n^T] kron E_n[a_n a_n^T] acts on row-major vec(W)
    K = cv.kfac_block(A, B)
    Wv = rng.standard_normal(6)
    W = Wv.reshape(2, 3)
    np.testing.assert_allclose(K @ Wv, (B @ W @ A).ravel(), rtol=1e-13)
    ev = np.sort(np.linalg.eigvalsh(K))
    prod = np.sort(np.outer(np.linalg.eigvalsh(B), np.linalg.eigvalsh(A)).ravel())
    np.testing.assert_allclose(ev, prod, rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------- operators
@pytest.mark.parametrize("norm", ["none", "batch_norm"])
def test_linear_operators_match_dense(norm):
    model, loss, w, _ = _small_mlp(norm)
    P = w.size
    H = cv.hessian(loss, w)
    Hop = cv.as_operator(loss, w)
    assert isinstance(Hop, LinearOperator) and Hop.shape == (P, P)
    V = np.random.default_rng(1).standard_normal((P, 3))
    assert np.abs(Hop.matmat(V) - H @ V).max() <= 1e-13 * np.abs(H @ V).max()
    G = cv.gauss_newton(model, w, "softmax")
    Gop = cv.as_operator(model, w, kind="gauss_newton", output_hessian="softmax")
    assert np.abs(Gop.matmat(V) - G @ V).max() <= 1e-13 * np.abs(G @ V).max()
    Dop = cv.as_operator(G)
    assert np.abs(Dop.matvec(V[:, 0]) - G @ V[:, 0]).max() == 0.0


def test_normalizer_gauss_newton_operator_batch_norm_null_space():
    """J^T J of batch norm (fast path jvp/vjp): null space span{1, xhat} (item 7);
    on its complement every eigenvalue is f^2 = 1/(var + eps): kappa = 1 exactly.
    With eps > 0, xhat is not exactly null: J xhat = f eps/(var + eps) xhat, so the
    full-space spectrum holds f^2 (eps/(var+eps))^2, here 1.6e-9 f^2 > 1e-10 f^2:
    the threshold excludes only the exact null direction 1 -- the reason to pass
    an explicit null space."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((12, 1))
    x = (x - x.mean()) / x.std() * 0.5 + 1.0          # var exactly 0.25
    var, eps = 0.25, 1e-5
    f2 = 1.0 / (var + eps)
    op = cv.normalizer_gauss_newton(normref.batch_norm, x, None, None, training=True)
    xhat = (x - x.mean()) / x.std()
    basis = np.hstack([np.ones((12, 1)), xhat])
    dense = cv.condition_number(op, null_space=basis)
    assert dense.null_space_dim == 2 and dense.n_excluded == 0
    assert dense.kappa == pytest.approx(1.0, abs=1e-10)
    assert dense.lam_max == pytest.approx(f2, rel=1e-10)
    lz = cv.condition_number(op, null_space=basis, method="lanczos")
    assert lz.kappa == pytest.approx(1.0, abs=1e-8)
    full = cv.condition_number(op)
    small = f2 * (eps / (var + eps)) ** 2
    assert full.n_excluded == 1 and abs(full.excluded[0]) < 1e-14 * f2
    assert full.lam_min == pytest.approx(small, rel=1e-5)
    assert full.kappa == pytest.approx(f2 / small, rel=1e-5)


# ---------------------------------------------------------------- condition numbers
def test_condition_number_explicit_null_space_and_threshold():
    rng = np.random.default_rng(0)
    n = 30
    lam = np.concatenate([[0.0, 0.0], np.linspace(1.0, 50.0, n - 2)])
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    M = (Q * lam) @ Q.T
    U = Q[:, :2] @ rng.standard_normal((2, 2))       # any basis of the null space
    thr = cv.condition_number(M)
    assert thr.n_excluded == 2 and thr.null_space_dim == 0 and thr.rtol == 1e-10
    assert thr.kappa == pytest.approx(50.0, rel=1e-10)
    prj = cv.condition_number(M, null_space=U)
    assert prj.null_space_dim == 2 and prj.n_excluded == 0 and prj.rtol == 0.0
    assert prj.kappa == pytest.approx(50.0, rel=1e-10) and prj.n_retained == n - 2
    lz = cv.condition_number(cv.as_operator(M), null_space=U, method="lanczos")
    assert lz.kappa == pytest.approx(50.0, rel=1e-8)
    assert cv.condition_number(M, method="lanczos").kappa == pytest.approx(50.0, rel=1e-8)
    # an incomplete null space is not hidden: kappa explodes
    bad = cv.condition_number(M, null_space=U[:, 0])
    assert bad.kappa > 1e12
    # stated in the report
    assert "orthogonal complement of a 2-dimensional null space" in prj.describe()
    assert "2 eigenvalue(s)" in thr.describe()


def test_condition_number_scale_invariant_hessian_complement_of_w():
    """Scale-invariant loss (w feeding batch norm, eps = 0): w^T H w = 0, H w = -g, and
    the condition number of the Gauss-Newton matrix on w^perp is finite."""
    rng = np.random.default_rng(5)
    X = rng.standard_normal((16, 4)) + 0.5
    y = rng.standard_normal(16)
    w = rng.standard_normal(4)

    def loss(v):
        r = cv.batch_norm_unit(X, v) - y
        return 0.5 * anp.mean(r * r)

    H = cv.hessian(loss, w)
    g = autograd.grad(loss)(w)
    assert abs(w @ H @ w) <= 1e-13 * np.abs(H).max() * (w @ w)
    np.testing.assert_allclose(H @ w, -g, rtol=0, atol=1e-13)
    G = cv.gauss_newton(lambda v: cv.batch_norm_unit(X, v), w)
    rep = cv.condition_number(G, null_space=w)
    assert np.isfinite(rep.kappa) and rep.n_retained == 3 and rep.null_space_dim == 1
    assert rep.kappa == pytest.approx(cv.condition_number(G).kappa, rel=1e-8)


def test_condition_number_rejects_bad_input():
    with pytest.raises(ValueError):
        cv.condition_number(np.ones((2, 3)))
    with pytest.raises(ValueError):
        cv.condition_number(np.eye(3), method="power")
    with pytest.raises(ValueError):
        cv.condition_number(np.eye(3), null_space=np.ones(4))


# ---------------------------------------------------------------- claims: item 6
@pytest.fixture(scope="module")
def item6_rows():
    return cv.input_conditioning_claims()


def test_item6_rows_pass_with_specific_values(item6_rows):
    rows = {r.id: r for r in item6_rows}
    assert all(isinstance(r, Claim) for r in item6_rows)
    failed = [r.id for r in item6_rows if not r.passed]
    assert not failed, failed
    assert rows["item6.kappa_uncentered.d16_m2"].predicted == 65.0
    assert rows["item6.kappa_uncentered.d16_m2"].measured == pytest.approx(65.0, rel=1e-12)
    assert rows["item6.kappa_uncentered.d32_m0.25"].measured == pytest.approx(3.0, rel=1e-12)
    assert rows["item6.kappa_uncentered.d2_m1.5"].measured == pytest.approx(5.5, rel=1e-12)
    # the statistical rows: ordinary samples, mean over 16 seeds, biased upwards
    for key, pred in (("d8_m0.5", 3.0), ("d4_m1.5", 10.0)):
        r = rows[f"item6.kappa_uncentered_sampled.{key}"]
        assert r.predicted == pred and r.passed and r.measured > pred
        assert 0.01 < r.tolerance < 0.1
    assert rows["item6.kappa_uncentered.d8_m0.5"].measured == pytest.approx(3.0, rel=1e-12)
    assert rows["item6.kappa_centered.sigma"].measured == pytest.approx(100.0, rel=1e-12)
    assert rows["item6.kappa_centered.identity"].measured == pytest.approx(1.0, abs=1e-12)
    assert rows["item6.kappa_batch_norm_inputs.identity"].measured == pytest.approx(1.0, abs=1e-12)
    assert rows["item6.hessian_is_second_moment"].measured < 1e-13
    assert rows["item6.whitening_identity"].measured < 1e-13
    assert rows["item6.kfac_kron_kappa.random_spd"].relative
    for r in item6_rows:
        d = r.as_dict()
        assert set(d) == {"id", "claim", "source", "predicted", "measured", "tolerance",
                          "passed", "alternatives"}


def test_item6_wrong_formula_fails():
    """1 + m^2 (forgetting the dimension) must fail every uncentered row with d > 1;
    so must 1 + d m (wrong power): no configuration has m = 1."""
    wrong = cv.input_conditioning_claims(predict=lambda d, m: 1.0 + m * m, sampled=False)
    unc = [r for r in wrong if r.id.startswith("item6.kappa_uncentered.")]
    assert len(unc) == 4 and not any(r.passed for r in unc)
    wrong2 = cv.input_conditioning_claims(predict=lambda d, m: 1.0 + d * m, sampled=False)
    unc2 = [r for r in wrong2 if r.id.startswith("item6.kappa_uncentered.")]
    assert len(unc2) == 4 and not any(r.passed for r in unc2)
    # the statistical rows reject d m^2 (forgetting the 1) despite their wider tolerance
    from normref.analysis.curvature.input_conditioning import sampled_conditioning_claims

    samp = sampled_conditioning_claims(predict=lambda d, m: d * m * m, n_seeds=8)
    assert len(samp) == 2 and not any(r.passed for r in samp)
    # a perturbed prediction (1e-6 relative) is beyond the 1e-9 tolerance
    r = [r for r in cv.input_conditioning_claims(configs=((16, 2.0),), sampled=False)
         if r.id == "item6.kappa_uncentered.d16_m2"][0]
    perturbed = Claim(r.id, r.claim, r.source, r.predicted * (1 + 1e-6), r.measured,
                      r.tolerance, r.relative)
    assert r.passed and not perturbed.passed


# ---------------------------------------------------------------- claims: item 1
@pytest.mark.parametrize("unit,name", [(cv.batch_norm_unit, "batch_norm"),
                                       (cv.weight_norm_unit, "weight_norm")])
def test_item1_curvature_rows_pass(unit, name):
    rows = cv.scale_invariant_curvature_claims(unit, name)
    assert len(rows) == 5 and all(r.passed for r in rows), [(r.id, r.measured) for r in rows]
    assert all(r.id.endswith(name) for r in rows)


def test_item1_curvature_rows_fail_without_scale_invariance():
    rows = cv.scale_invariant_curvature_claims(lambda X, w: anp.tanh(anp.dot(X, w)), "plain")
    assert not any(r.passed for r in rows)
    # batch norm with eps > 0 is only approximately scale invariant: the Hessian rows fail
    eps = cv.scale_invariant_curvature_claims(
        lambda X, w: cv.batch_norm_unit(X, w, 1e-5), "batch_norm_eps")
    by = {r.id.split(".")[1]: r for r in eps}
    assert not by["hessian_quadratic_form_along_w"].passed
    assert not by["hessian_w_equals_minus_grad"].passed
    assert 1e-7 < by["hessian_w_equals_minus_grad"].measured < 1e-3


# ---------------------------------------------------------------- normalization vs Fisher
def test_fisher_condition_reports_and_rows():
    plain = cv.fisher_condition("none")
    bn = cv.fisher_condition("batch_norm")
    ln = cv.fisher_condition("layer_norm")
    for r in (plain, bn, ln):   # rank N(K-1) = 192 of P = 484, clean gap at the threshold
        assert r.n == 484 and r.n_retained == 192
        assert max(np.abs(r.excluded)) < 1e-14 * r.lam_max
        assert r.lam_min > 1e-8 * r.lam_max
    assert bn.kappa < plain.kappa and ln.kappa < plain.kappa
    rows = cv.normalization_fisher_claims()
    # over six seeds batch norm does not change kappa significantly at input mean 0
    # (seed 0 alone says "smaller"); layer norm reduces it in every seed
    assert [r.id for r in rows] == ["curvature.fisher_kappa_unchanged.batch_norm.mean0",
                                    "curvature.fisher_kappa_reduced.layer_norm.mean0"]
    assert [r.measured for r in rows] == ["no significant change", "smaller"]
    assert all(r.passed for r in rows)
    one = cv.normalization_fisher_claims(seeds=(0, 1), predict=lambda n, m: "smaller")
    assert all(r.measured == "no significant change" for r in one)   # 2 seeds resolve nothing
    # honest counterexample: uncentered inputs, layer norm is worse than plain
    rows2 = {r.id: r for r in cv.normalization_fisher_claims(input_mean=2.0)}
    assert rows2["curvature.fisher_kappa_reduced.batch_norm.mean2"].passed
    ln2 = rows2["curvature.fisher_kappa_reduced.layer_norm.mean2"]
    assert ln2.measured == "larger" and not ln2.passed
    mean_rows = cv.input_mean_fisher_claims()
    assert all(r.passed for r in mean_rows)


def test_seed_verdict():
    from normref.analysis.curvature.normalization_fisher import seed_verdict

    v, mean, se, t, k = seed_verdict([1.0, 1.1, 0.9, 1.05, 0.95, 1.0])
    assert v == "smaller" and k == 6 and t == pytest.approx(4.032, abs=1e-3)
    assert seed_verdict([-1.0, -1.1, -0.9, -1.05, -0.95, -1.0])[0] == "larger"
    assert seed_verdict([0.3, -0.25, 0.2, -0.1, 0.0, 0.1])[0] == "no significant change"


# ---------------------------------------------------------------- registration
def test_registered_provider_all_rows_pass():
    assert CLAIM_PROVIDERS["curvature"] is cv.curvature_claims
    rows = cv.curvature_claims()
    ids = [r.id for r in rows]
    assert len(ids) == len(set(ids)) == 29
    assert sum(i.startswith("item6.") for i in ids) == 14
    assert sum(i.startswith("item1.") for i in ids) == 10
    bad = [(r.id, r.predicted, r.measured) for r in rows if not r.passed]
    assert not bad, bad
