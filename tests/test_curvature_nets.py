"""Curvature of normref.nets networks: dense vs matrix-free, one loss convention,
exact invariance bases, reparametrization-proof condition numbers, iterative
eigensolvers against dense, K-FAC from the network.

Tolerances: every compared pair is two exact float64 computations (normref's
VJP/JVP vs autograd of the references, or two contractions of the same
Jacobian), so they agree to round-off, c * P * 2.2e-16 relative to the
largest entry; 1e-11 allows P ~ 100 and c ~ 100.  Iterative eigenvalues are
compared within the solver's own a-posteriori bound (ConditionReport.kappa_error)
plus dense eigh's round-off on kappa, ~ kappa * 1e-16 * P.
"""
from __future__ import annotations

import numpy as np
import pytest
import autograd
import autograd.numpy as anp

from normref import nets
from normref.analysis import curvature as cv
from normref.layer_call import LayerCall
from normref.registration import registered, spec as user_spec

RT = 1e-11
KINDS = ("hessian", "gauss_newton", "fisher", "empirical_fisher")


def _centred_l2(input, eps=1e-5):
    """A user normalizer (autograd derivatives): per-sample centring and RMS scaling."""
    c = input - anp.mean(input, axis=1, keepdims=True)
    return c / anp.sqrt(anp.mean(c * c, axis=1, keepdims=True) + eps)


def _user():
    return user_spec(_centred_l2, name="centred_l2_user", centres=True,
                     layer=LayerCall(lambda x, w, b, o: (x,)),
                     examples=[(np.random.default_rng(0).standard_normal((4, 6)),)])


NORMS = [("batch_norm", {}), ("layer_norm", {}), ("group_norm", {"num_groups": 2}),
         ("rms_norm", {}), ("batch_norm", {"affine": False}), ("centred_l2_user", {})]


def _net(norm, kw, *, eps=None, d=(4, 6, 8, 3), seed=1, act="tanh"):
    g = np.random.default_rng(seed)
    extra = dict(kw)
    if eps is not None:
        extra["eps"] = eps
    net = nets.MLP([nets.Linear(d[0], d[1], rng=g), nets.Norm(norm, **extra),
                    nets.Activation(act), nets.Linear(d[1], d[2], rng=g),
                    nets.Norm(norm, **extra), nets.Activation("identity"),
                    nets.Linear(d[2], d[3], rng=g)])
    net.set_params(net.params + 0.3 * g.standard_normal(net.n_params))  # off the init
    return net


def _data(N, d_in, K, loss, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, d_in))
    y = rng.integers(0, K, N) if loss == "softmax_ce" else rng.standard_normal((N, K))
    return x, y


@pytest.fixture(scope="module")
def user_norm():
    with registered(_user()):
        yield


@pytest.mark.parametrize("norm,kw", NORMS, ids=[n + ("-noaffine" if k.get("affine") is False
                                                       else "") for n, k in NORMS])
@pytest.mark.parametrize("loss", ["softmax_ce", "squared"])
def test_operators_equal_dense_and_invariances_are_null(user_norm, norm, kw, loss):
    net = _net(norm, kw, eps=0.0 if norm != "centred_l2_user" else None)
    x, y = _data(12, 4, 3, loss)
    nc = cv.NetworkCurvature(net, x, y, loss)
    inv = nc.invariances()
    grad = net.loss_and_grad(x, y, loss)[1]
    rng = np.random.default_rng(5)
    V = rng.standard_normal((nc.P, 3))
    for kind in KINDS:
        M = nc.matrix(kind)
        op = nc.operator(kind)
        scale = np.abs(M).max()
        assert np.abs(op.matmat(V) - M @ V).max() <= RT * scale * np.abs(V).max()
        assert np.abs(M - M.T).max() <= RT * scale
        for label, d in inv.directions:
            if inv.is_scale(label) and kind == "hessian":
                # an orbit tangent d = s * theta: H d = -s * grad L (not 0 off a critical point)
                if label.startswith("scale") and norm == "centred_l2_user":
                    continue          # eps = 1e-5: eps-approximate, checked via counts only
                s = _signature(d, nc.theta)
                assert np.linalg.norm(M @ d + s * grad) <= RT * scale * np.sqrt(nc.P) * \
                    np.linalg.norm(d), (kind, label)
                continue
            if label.startswith("scale") and norm == "centred_l2_user":
                continue
            d = d / np.linalg.norm(d)
            assert np.linalg.norm(M @ d) <= RT * scale * np.sqrt(nc.P), (kind, label)
    counts = inv.counts()
    F1, F2 = 6, 8
    shift = {"batch_norm": F1 + F2, "layer_norm": 2, "group_norm": 4, "rms_norm": 0,
             "centred_l2_user": 2}[norm]
    scale_n = {"batch_norm": F1 + F2, "layer_norm": 2, "group_norm": 4, "rms_norm": 2,
               "centred_l2_user": 2}[norm]
    assert counts.get("shift", 0) == shift and counts.get("scale", 0) == scale_n
    assert counts.get("softmax_shift", 0) == (F2 + 1 if loss == "softmax_ce" else 0)
    rows = {"batch_norm": 0, "layer_norm": 4 + 6, "group_norm": 2 * 4 + 2 * 6, "rms_norm": 0,
            "centred_l2_user": 4 + 6}[norm]
    assert counts.get("row_shift", 0) == rows
    # re-centring: the second Norm's affine bias feeds Linear -> (no Norm after): none
    assert counts.get("recentre", 0) == 0
    # translation invariances hold for the loss itself, at a finite step
    L0 = nc.loss_value()
    for label, d in inv.directions:
        if not inv.is_scale(label):
            theta = nc.theta + 0.7 * d
        elif label.startswith("scale") and norm == "centred_l2_user":
            continue
        else:       # along the orbit: theta_i -> a^(s_i) theta_i
            theta = nc.theta * 1.7 ** _signature(d, nc.theta)
        assert abs(net.reference_loss(theta, x, y, loss) - L0) <= 1e-12 * (1 + L0), label
    # unit rescaling: the second Norm's (gamma_f, beta_f) -> identity -> Linear, per unit
    assert counts.get("unit_rescale", 0) == (0 if kw.get("affine") is False
                                             or norm == "centred_l2_user" else F2)


def _signature(d, theta):
    """s with d = s * theta for an orbit tangent (s in {0, +1, -1})."""
    s = np.zeros_like(d)
    nz = d != 0
    s[nz] = np.round(d[nz] / theta[nz])
    assert np.array_equal(s * theta, d)
    return s


def test_recentring_directions(user_norm):
    """Norm(affine) -> Linear -> batch norm: the first Norm's bias is re-centred away."""
    g = np.random.default_rng(3)
    net = nets.MLP([nets.Linear(3, 5, rng=g), nets.Norm("layer_norm"),
                    nets.Linear(5, 4, rng=g), nets.Norm("batch_norm", eps=0.0),
                    nets.Activation("relu"), nets.Linear(4, 2, rng=g)])
    net.set_params(net.params + 0.3 * g.standard_normal(net.n_params))
    x, y = _data(16, 3, 2, "squared")
    nc = cv.NetworkCurvature(net, x, y, "squared")
    inv = nc.invariances()
    # W u in R^4 is always a batch-norm shift direction: all 5 directions of beta
    assert inv.counts()["recentre"] == 5
    for kind in KINDS:
        M = nc.matrix(kind)
        for label, d in inv.directions:
            if label.startswith("recentre"):
                assert np.linalg.norm(M @ d) <= RT * np.abs(M).max() * np.sqrt(nc.P)


@pytest.mark.parametrize("loss", ["squared", "mse", "softmax_ce"])
def test_one_loss_convention(loss):
    """nets' loss, its output Hessians and curvature's Gauss-Newton are one thing."""
    net = _net("layer_norm", {})
    x, y = _data(10, 4, 3, loss)
    nc = cv.NetworkCurvature(net, x, y, loss)
    z = nc.z

    def Lz(zz):
        if loss == "mse":
            return anp.mean((zz - y) ** 2)
        if loss == "squared":
            return 0.5 * anp.sum((zz - y) ** 2) / zz.shape[0]
        zs = zz - anp.max(zz, axis=1, keepdims=True)
        logp = zs - anp.log(anp.sum(anp.exp(zs), axis=1, keepdims=True))
        return -anp.sum(logp[np.arange(zz.shape[0]), y]) / zz.shape[0]

    N, K = z.shape
    Hz = autograd.hessian(Lz)(z).reshape(N * K, N * K)
    blocks = np.zeros((N * K, N * K))
    Hn = nets.output_hessians(z, loss, y)
    for n in range(N):
        blocks[n * K:(n + 1) * K, n * K:(n + 1) * K] = Hn[n] / N
    assert np.abs(Hz - blocks).max() <= RT
    assert abs(Lz(z) - nc.loss_value()) <= RT
    G = nc.gauss_newton()
    G_ag = cv.gauss_newton(lambda w: net.reference_forward(w, x), nc.theta, output_hessian=loss)
    assert np.abs(G - G_ag).max() <= RT * np.abs(G).max()
    if loss == "mse":
        G_sq = cv.NetworkCurvature(net, x, y, "squared").gauss_newton()
        assert np.abs(G - 2.0 / K * G_sq).max() <= RT * np.abs(G).max()


def test_gauss_newton_is_the_hessian_of_a_linear_network():
    g = np.random.default_rng(0)
    net = nets.MLP([nets.Linear(4, 5, rng=g), nets.Linear(5, 3, rng=g)])
    x, y = _data(9, 4, 3, "squared")
    for loss in ("squared", "mse"):
        nc = cv.NetworkCurvature(net, x, y, loss)
        # the second layer makes it bilinear in the weights: the Hessian has the
        # residual term; a single layer is exactly linear
    net1 = nets.MLP([nets.Linear(4, 3, rng=g)])
    for loss in ("squared", "mse", "softmax_ce"):
        x1, y1 = _data(9, 4, 3, loss)
        nc = cv.NetworkCurvature(net1, x1, y1, loss)
        H, G = nc.hessian(), nc.gauss_newton()
        assert np.abs(H - G).max() <= RT * np.abs(H).max()


def test_fisher_definitions():
    """True Fisher = GN for the matching likelihoods; empirical Fisher = mean of g_n g_n^T
    with g_n the autograd gradient of the per-sample loss (batch held fixed)."""
    net = _net("batch_norm", {}, eps=1e-5)
    for loss in ("softmax_ce", "squared", "mse"):
        x, y = _data(8, 4, 3, loss)
        nc = cv.NetworkCurvature(net, x, y, loss)
        G, F = nc.gauss_newton(), nc.fisher()
        assert np.abs(G - F).max() <= RT * np.abs(G).max()
        N = x.shape[0]

        def ell(w, n):
            out = net.reference_forward(w, x)
            if loss == "softmax_ce":
                zs = out[n] - anp.max(out[n])
                return -(zs[y[n]] - anp.log(anp.sum(anp.exp(zs))))
            c = 0.5 if loss == "squared" else 1.0 / out.shape[1]
            return c * anp.sum((out[n] - y[n]) ** 2)

        g = np.stack([autograd.grad(ell)(nc.theta, n) for n in range(N)])
        Fe = nc.fisher(empirical=True)
        assert np.abs(Fe - g.T @ g / N).max() <= RT * np.abs(Fe).max()


@pytest.mark.parametrize("kind", ["gauss_newton", "fisher", "empirical_fisher"])
def test_kfac_from_the_network_is_exact_for_one_sample(kind):
    """N = 1, no batch coupling: each layer's GN block is exactly B (x) A."""
    net = _net("layer_norm", {})
    for loss in ("softmax_ce", "squared"):
        x, y = _data(1, 4, 3, loss)
        nc = cv.NetworkCurvature(net, x, y, loss)
        M = nc.matrix(kind)
        facs = nc.kfac(kind)
        assert [f.layer for f in facs] == [0, 3, 6]
        for f in facs:
            blk = M[f.slice, f.slice]
            assert np.abs(f.block() - blk).max() <= RT * max(np.abs(M).max(), 1e-300)
    # N > 1: A is the mean outer product of the layer inputs the network saw
    x, y = _data(7, 4, 3, "squared")
    nc = cv.NetworkCurvature(net, x, y, "squared")
    A, _ = cv.kfac_factors(x, np.zeros((7, 1)), bias=True)
    assert np.abs(nc.kfac(kind)[0].A - A).max() <= RT


@pytest.mark.parametrize("kind", ["hessian", "gauss_newton", "fisher", "empirical_fisher"])
def test_condition_number_unchanged_when_a_weight_feeding_batch_norm_is_rescaled(kind):
    x, y = _data(80, 4, 3, "softmax_ce")
    out = []
    for a in (1.0, 0.1, 7.0):
        g = np.random.default_rng(1)
        net = nets.MLP([nets.Linear(4, 6, rng=g), nets.Norm("batch_norm", eps=0.0),
                        nets.Activation("tanh"), nets.Linear(6, 3, rng=g)])
        th = net.params
        th[:24] *= a                                     # W1 -> a W1
        net.set_params(th)
        nc = cv.NetworkCurvature(net, x, y, "softmax_ce")
        out.append((nc.condition(kind), cv.condition_number(nc.matrix(kind))))
    base = out[0][0]
    assert base.null_space_dim == 6 + 6 + 7 and base.metric and np.isfinite(base.kappa)
    for rep, raw in out[1:]:
        assert abs(rep.kappa / base.kappa - 1) <= 1e-8
        # the raw, thresholded kappa is not invariant: the test can fail
        assert abs(raw.kappa / out[0][1].kappa - 1) > 0.5


def test_iterative_methods_agree_with_dense():
    """Lanczos and LOBPCG on the deflated Gauss-Newton operator of a batch-norm MLP
    (63 parameters, 19 invariance directions) against dense eigh."""
    x, y = _data(80, 4, 3, "softmax_ce")
    g = np.random.default_rng(1)
    net = nets.MLP([nets.Linear(4, 6, rng=g), nets.Norm("batch_norm", eps=0.0),
                    nets.Activation("tanh"), nets.Linear(6, 3, rng=g)])
    nc = cv.NetworkCurvature(net, x, y, "softmax_ce")
    dense = nc.condition("gauss_newton")
    for method, kw in (("lanczos", dict(tol=1e-10)), ("arpack", dict(tol=1e-10)),
                       ("lobpcg", dict(tol=1e-7, maxiter=3000)),
                       ("lobpcg", dict(tol=1e-7, maxiter=3000, preconditioner=None))):
        it = nc.condition("gauss_newton", method=method, **kw)
        assert it.converged and it.matvecs > 0 and len(it.residuals) == 2
        assert it.null_space_dim == dense.null_space_dim
        assert abs(it.kappa / dense.kappa - 1) <= it.kappa_error + 1e-16 * nc.P * dense.kappa
        assert it.kappa_error_gap <= it.kappa_error


def test_lanczos_converges_where_restarted_lanczos_stalls():
    """A 964-dimensional deflated Gauss-Newton matrix with kappa ~ 2e5 (a 1,085-parameter
    BN/LN MLP on 1200 samples): unrestarted Lanczos matches dense eigh to 1e-8 in
    under 600 products; the gap estimate is honest (not below the error)."""
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((1200, 10)), rng.integers(0, 5, 1200)
    g = np.random.default_rng(0)
    net = nets.MLP([nets.Linear(10, 24, rng=g), nets.Norm("batch_norm"),
                    nets.Activation("tanh"), nets.Linear(24, 24, rng=g),
                    nets.Norm("batch_norm"), nets.Activation("tanh"), nets.Linear(24, 5, rng=g)])
    nc = cv.NetworkCurvature(net, x, y, "softmax_ce")
    G = nc.gauss_newton()
    inv = nc.invariances()
    D = inv.metric()
    dense = cv.condition_number(G, null_space=inv.basis(metric=False), metric=D)
    assert 1e5 < dense.kappa < 1e6
    it = cv.condition_number(cv.as_operator(G), null_space=inv.basis(metric=False), metric=D,
                             method="lanczos", tol=1e-10)
    assert it.converged and it.matvecs < 600
    err = abs(it.kappa / dense.kappa - 1)
    assert err <= 1e-8 and err <= it.kappa_error and err <= 10 * it.kappa_error_gap + 1e-12


def test_dual_gram_has_the_nonzero_spectrum():
    """Fewer outputs than parameters: the primal Gauss-Newton matrix is singular beyond
    the invariances (a warning says so), the dual Gram B D^2 B^T carries its nonzero
    spectrum exactly, dense and by Lanczos."""
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((30, 4)), rng.integers(0, 3, 30)
    net = _net("batch_norm", {}, eps=0.0, d=(4, 10, 10, 3))
    nc = cv.NetworkCurvature(net, x, y, "softmax_ce")
    m = nc.output_rank()
    assert m == 30 * 2 < nc.P - nc.invariances().basis(metric=False).shape[1]
    D = nc.invariances().metric()
    Gd = nc.gram(metric=D).matmat(np.eye(m))
    lam_p = np.linalg.eigvalsh(D[:, None] * nc.gauss_newton() * D[None, :])
    lam_d = np.linalg.eigvalsh(0.5 * (Gd + Gd.T))
    top = lam_p[-1]
    assert np.abs(lam_p[-m:] - lam_d).max() <= 1e-12 * top
    assert np.abs(lam_p[:-m]).max() <= 1e-12 * top     # the rest of the primal is null
    dual = nc.condition(space="dual")
    assert dual.space == "dual" and dual.n_retained == m
    assert dual.kappa == pytest.approx(lam_d[-1] / lam_d[0], rel=1e-10)
    it = nc.condition(method="lanczos", space="dual", tol=1e-12)
    assert it.converged and abs(it.kappa / dual.kappa - 1) <= max(it.kappa_error, 1e-12)
    with pytest.warns(RuntimeWarning, match="space='dual'"):
        nc.condition()
    with pytest.raises(ValueError, match="Gauss-Newton type"):
        nc.gram("hessian")


def test_kfac_preconditioner_inverts_the_kfac_blocks():
    """The preconditioner is symmetric positive definite and, on each Linear layer, the
    inverse of the damped K-FAC block (B kron A + delta I)."""
    x, y = _data(40, 4, 3, "softmax_ce")
    net = _net("layer_norm", {}, d=(4, 5, 6, 3))
    nc = cv.NetworkCurvature(net, x, y, "softmax_ce")
    T = nc.preconditioner("gauss_newton", damping=1e-3)
    Td = T.matmat(np.eye(nc.P))
    assert np.abs(Td - Td.T).max() <= 1e-12 * np.abs(Td).max()
    assert np.linalg.eigvalsh(0.5 * (Td + Td.T)).min() > 0
    for f in nc.kfac("gauss_newton"):
        blk = f.block()
        lam = np.outer(np.linalg.eigvalsh(f.B), np.linalg.eigvalsh(f.A))
        blk = blk + 1e-3 * lam.max() * np.eye(blk.shape[0])
        sl = f.slice
        assert np.abs(Td[sl, sl] @ blk - np.eye(blk.shape[0])).max() <= 1e-9
    with pytest.raises(ValueError, match="damping"):
        nc.preconditioner(damping=0.0)


def test_shift_invert_finds_the_smallest_magnitude_of_an_indefinite_hessian():
    x, y = _data(40, 4, 3, "softmax_ce")
    g = np.random.default_rng(1)
    net = nets.MLP([nets.Linear(4, 6, rng=g), nets.Norm("batch_norm", eps=0.0),
                    nets.Activation("tanh"), nets.Linear(6, 3, rng=g)])
    net.set_params(net.params + 0.5 * g.standard_normal(net.n_params))
    nc = cv.NetworkCurvature(net, x, y, "softmax_ce")
    dense = nc.condition("hessian")
    assert dense.indefinite
    it = nc.condition("hessian", method="shift-invert", tol=1e-12)
    assert it.converged
    assert abs(it.kappa / dense.kappa - 1) <= it.kappa_error + 1e-16 * nc.P * dense.kappa
    with pytest.raises(ValueError, match="indefinite"):
        nc.condition("hessian", method="lobpcg")


def test_symmetries_through_homogeneous_activations():
    """BN -> ReLU -> Linear -> ReLU -> Linear(no bias) -> LN -> ReLU -> Linear: the
    positive homogeneity of ReLU gives unit rescalings (one per hidden unit after a
    source) and uniform scalings into the layer norm; all are exact null vectors of J
    (eps = 0), satisfy H d = -s * grad L, and leave the loss unchanged along the orbit."""
    g = np.random.default_rng(0)
    net = nets.MLP([nets.Linear(4, 5, rng=g), nets.Norm("batch_norm", eps=0.0),
                    nets.Activation("relu"), nets.Linear(5, 5, rng=g), nets.Activation("relu"),
                    nets.Linear(5, 6, rng=g, bias=False), nets.Norm("layer_norm", eps=0.0),
                    nets.Activation("relu"), nets.Linear(6, 3, rng=g)])
    net.set_params(net.params + 0.3 * g.standard_normal(net.n_params))
    x, y = _data(24, 4, 3, "softmax_ce")
    nc = cv.NetworkCurvature(net, x, y, "softmax_ce")
    inv = nc.invariances()
    counts = inv.counts()
    # units: BN(1) -> Linear(3): 5; Linear(3) -> Linear(5): 5; LN(6) -> Linear(8): 6
    assert counts["unit_rescale"] == 5 + 5 + 6
    # uniform scaling into LN(6): from Linear(3) (W, b), and from BN(1)'s affine + b3
    assert sorted(l for l in inv.labels if l.startswith("homogeneous")) == \
        ["homogeneous[1->6]", "homogeneous[3->6]"]
    J = nc.jacobian().reshape(-1, nc.P)
    H = nc.hessian()
    grad = net.loss_and_grad(x, y, "softmax_ce")[1]
    L0 = nc.loss_value()
    for label, d in inv.directions:
        if not inv.is_scale(label) or label.startswith("scale"):
            continue
        assert np.linalg.norm(J @ d) <= RT * np.abs(J).max() * np.linalg.norm(d) * nc.P
        s = _signature(d, nc.theta)
        assert np.linalg.norm(H @ d + s * grad) <= RT * np.abs(H).max() * np.linalg.norm(d) * nc.P
        theta = nc.theta * 0.6 ** s
        assert abs(net.reference_loss(theta, x, y, "softmax_ce") - L0) <= 1e-12 * (1 + L0)
    # the gap they close: without them the deflated Gauss-Newton keeps exact zeros
    U_all = inv.basis(metric=False)
    keep = [v for lbl, v in inv.directions if lbl.split("[")[0] not in ("homogeneous",
                                                                       "unit_rescale")]
    G = nc.gauss_newton()
    k_all = cv.condition_number(G, null_space=U_all).kappa
    k_old = cv.condition_number(G, null_space=np.stack(keep, axis=1)).kappa
    assert k_old > 1e12 * k_all


def test_an_unfinished_run_says_so():
    """A solver stopped early reports converged=False and an error bound above 1, and
    ARPACK without a converged smallest eigenvalue gives kappa = NaN, not the
    ratio of the largest eigenvalue to itself."""
    M = cv.as_operator(np.diag(np.logspace(0, -8, 400)))
    r = cv.condition_number(M, method="arpack", maxiter=3)
    assert not r.converged and np.isnan(r.kappa) and r.kappa_error == np.inf
    for method in ("lanczos", "lobpcg"):
        r = cv.condition_number(M, method=method, maxiter=3)
        assert not r.converged and r.kappa_error > 1 and r.kappa < 1e8
    r = cv.condition_number(M, method="lanczos")
    assert r.converged and abs(r.kappa / 1e8 - 1) <= r.kappa_error
