"""Batch renorm, EvoNorm-B0/S0, FRN+TLU and the pieces they are composed of
(normref.recovery, normref.compose): hand-checked values, running statistics,
the stop-gradient of batch renorm's r and d, ties of the TLU, and the chain rule
of composed plans against finite differences."""
import autograd
import numpy as np
import pytest

import normref
from normref import check as C
from normref.compose import Composite, GroupStd, Maximum, Product, Quotient, Sigmoid, Step, View
from normref.partition import Partition
from normref.recovery import Affine, Coloring, ConditionalAffine, Renorm, Threshold
from normref.registry import REGISTRY, Case
from normref.standardize import Standardization


def _fd_jvp(f, x, t, h=1e-6):
    return (f(x + h * t) - f(x - h * t)) / (2 * h)


# ------------------------------------------------------------------ batch renorm
def test_batch_renorm_hand_values_r_and_d_clipped_and_not():
    x = np.array([[1.0], [2.0], [3.0], [6.0]])          # mu_B = 3, var_B = 3.5
    sb = np.sqrt(3.5)
    for rmax, dmax, r, d in [(3.0, 5.0, sb, 3.0), (1.5, 2.0, 1.5, 2.0), (None, None, sb, 3.0)]:
        rm, rv = np.array([0.0]), np.array([1.0])        # sigma = 1
        y = normref.batch_renorm(x, rm, rv, None, None, True, 0.1, 0.0, rmax, dmax)
        np.testing.assert_allclose(y, (x - 3.0) / sb * r + d, rtol=1e-15, atol=1e-15)
    # r clipped from below (running sigma 10): r = 1/3; d = clip(3/10) = 0.3
    y = normref.batch_renorm(x, np.array([0.0]), np.array([100.0]), None, None, True, 0.1, 0.0)
    np.testing.assert_allclose(y, (x - 3.0) / sb / 3.0 + 0.3, rtol=1e-15, atol=1e-15)
    # unclipped, the function is (x - running_mean) / sigma, affine in x
    rm, rv = np.array([0.5]), np.array([2.0])
    y = normref.batch_renorm(x, rm, rv, np.array([2.0]), np.array([-1.0]), True, 0.1, 0.0)
    np.testing.assert_allclose(y, 2.0 * (x - 0.5) / np.sqrt(2.0) - 1.0, rtol=1e-14, atol=1e-14)


def test_batch_renorm_running_update_is_batch_norms():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 3, 4)) * 2 + 1
    for kw in [{}, {"momentum_convention": "keras", "running_var_unbiased": False}]:
        bufs = [rng.standard_normal(3), rng.uniform(0.5, 2, 3)]
        a, b = [u.copy() for u in bufs], [u.copy() for u in bufs]
        normref.batch_renorm(x, *a, None, None, True, 0.3, **kw)
        normref.batch_norm(x, *b, None, None, True, 0.3, **kw)
        for u, v, w in zip(a, b, bufs):
            assert not np.array_equal(u, w)
            np.testing.assert_array_equal(u, v)
    # cumulative average with the counter, as batch norm
    a, b = [np.zeros(3), np.ones(3)], [np.zeros(3), np.ones(3)]
    na, nb = np.array(4), np.array(4)
    normref.batch_renorm(x, *a, None, None, True, None, num_batches_tracked=na)
    normref.batch_norm(x, *b, None, None, True, None, num_batches_tracked=nb)
    assert int(na) == int(nb) == 5
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)


def test_batch_renorm_eval_is_batch_norm_eval_with_its_derivatives():
    rng = np.random.default_rng(1)
    args = (rng.standard_normal((4, 3, 2)), rng.standard_normal(3), rng.uniform(0.5, 2, 3),
            rng.standard_normal(3), rng.standard_normal(3), False)
    y1, pb1 = normref.vjp(normref.batch_renorm, *args)
    y2, pb2 = normref.vjp(normref.batch_norm, *args)
    np.testing.assert_array_equal(y1, y2)
    dy = rng.standard_normal(y1.shape)
    for g1, g2 in zip(pb1(dy), pb2(dy)):
        assert (g1 is None) == (g2 is None)
        if g1 is not None:
            np.testing.assert_array_equal(g1, g2)


def _unclipped_case(rng):
    x = rng.standard_normal((6, 3, 2)) * 0.8 + 0.2
    rm, rv = np.array([0.1, 0.4, -0.2]), np.array([0.7, 1.2, 0.9])
    w, b = rng.standard_normal(3) + 1.5, rng.standard_normal(3)
    return Case("unclipped", (x, rm, rv, w, b, True), mutates=(1, 2))


def test_batch_renorm_r_and_d_are_constants_of_the_derivatives():
    rng = np.random.default_rng(2)
    case = _unclipped_case(rng)
    x, rm, rv, w, b = case.args[:5]
    axes = (0, 2)
    eps = 1e-5
    mu0 = x.mean(axis=axes, keepdims=True)
    sb0 = np.sqrt(x.var(axis=axes, keepdims=True) + eps)
    sig = np.sqrt(rv + eps).reshape(1, 3, 1)
    r0, d0 = sb0 / sig, (mu0 - rm.reshape(1, 3, 1)) / sig
    assert np.all((r0 > 1 / 3) & (r0 < 3)) and np.all(np.abs(d0) < 5)  # nothing clipped

    def frozen(a):  # r, d frozen at their values at x
        m, s = a.mean(axis=axes, keepdims=True), np.sqrt(a.var(axis=axes, keepdims=True) + eps)
        return ((a - m) / s * r0 + d0) * w.reshape(1, 3, 1) + b.reshape(1, 3, 1)

    def full(a):
        return normref.batch_renorm(a, rm.copy(), rv.copy(), w, b, True)

    t = rng.standard_normal(x.shape)
    _, jt = normref.jvp(normref.batch_renorm, case.fresh_args(), (t, None, None, None, None, None))
    fd_frozen, fd_full = _fd_jvp(frozen, x, t), _fd_jvp(full, x, t)
    np.testing.assert_allclose(jt, fd_frozen, rtol=1e-7, atol=1e-8)
    assert np.abs(jt - fd_full).max() > 1e-2 * np.abs(fd_full).max()
    # the unfrozen function is affine in x: w (x - running_mean) / sigma + b
    np.testing.assert_allclose(fd_full, t * w.reshape(1, 3, 1) / sig, rtol=1e-7, atol=1e-8)
    # VJP adjoint to the JVP, and both match the stop-gradient reference (autograd)
    dy = rng.standard_normal(x.shape)
    y, pb = normref.vjp(normref.batch_renorm, *case.fresh_args())
    np.testing.assert_allclose(np.sum(pb(dy)[0] * t), np.sum(dy * jt), rtol=1e-12)
    spec = REGISTRY["batch_renorm"]
    for err, tol in (C.forward_error(spec, case), C.vjp_error(spec, case, rng),
                     C.jvp_error(spec, case, rng), C.jacobian_error(spec, case)):
        assert err <= tol, (err, tol)


def test_batch_renorm_arguments_are_checked_and_a_failed_call_changes_nothing():
    x = np.random.default_rng(3).standard_normal((4, 2))
    with pytest.raises(ValueError, match="rmax"):
        normref.batch_renorm(x, np.zeros(2), np.ones(2), training=True, rmax=0.5)
    with pytest.raises(ValueError, match="dmax"):
        normref.batch_renorm(x, np.zeros(2), np.ones(2), training=True, dmax=-1.0)
    with pytest.raises(ValueError, match="running_mean is required"):
        normref.batch_renorm(x, None, np.ones(2), training=True)
    rm, rv = np.zeros(2), np.array([1.0, -1.0])
    with pytest.raises(ValueError, match="running_var"):
        normref.batch_renorm(x, rm, rv, training=True)
    assert np.array_equal(rv, [1.0, -1.0]) and np.array_equal(rm, [0.0, 0.0])
    rm, rv = np.zeros(2), np.ones(2)
    with pytest.raises(ValueError, match="not finite"):  # the output overflows
        normref.batch_renorm(x, rm, rv, np.full(2, 1e308), None, True)
    assert np.array_equal(rm, np.zeros(2)) and np.array_equal(rv, np.ones(2))


# ------------------------------------------------------------------ EvoNorm-B0
def test_evonorm_b0_selects_the_larger_branch():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 2, 4))
    v = np.array([2.0, -1.0])
    eps = 1e-5
    sb = np.sqrt(x.var(axis=(0, 2), keepdims=True) + eps)
    shw = np.sqrt(x.var(axis=2, keepdims=True) + eps)
    right = v.reshape(1, 2, 1) * x + shw
    assert (right > sb).any() and (right < sb).any()  # both branches occur
    y = normref.evonorm_b0(x, None, None, None, v, True)
    np.testing.assert_allclose(y, x / np.where(right > sb, right, sb), rtol=1e-14, atol=1e-15)
    # positive x, very negative v: the batch branch wins everywhere, so the output
    # and every derivative are those of v=None (and the gradient of v is zero)
    xp = np.abs(x) + 0.1
    sbp = np.sqrt(xp.var(axis=(0, 2), keepdims=True) + eps)
    y0, pb0 = normref.vjp(normref.evonorm_b0, xp, None, None, None, np.full(2, -1e3), True)
    y1, pb1 = normref.vjp(normref.evonorm_b0, xp, None, None, None, None, True)
    np.testing.assert_array_equal(y0, y1)
    np.testing.assert_allclose(y0, xp / sbp, rtol=1e-15)
    dy = rng.standard_normal(x.shape)
    g0, g1 = pb0(dy), pb1(dy)
    np.testing.assert_array_equal(g0[0], g1[0])
    np.testing.assert_array_equal(g0[4], np.zeros(2))


def test_evonorm_b0_eval_without_v_is_batch_norm_eval_around_zero():
    rng = np.random.default_rng(5)
    x, rv, w, b = rng.standard_normal((4, 3, 5)), rng.uniform(0.5, 2, 3), rng.standard_normal(3), \
        rng.standard_normal(3)
    y = normref.evonorm_b0(x, rv, w, b)
    np.testing.assert_allclose(y, normref.batch_norm(x, np.zeros(3), rv, w, b), rtol=1e-14,
                               atol=1e-15)


def test_evonorm_b0_running_var_update():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 2, 4)) * 2
    n = 12
    var = x.var(axis=(0, 2))
    rv = np.array([1.0, 2.0])
    normref.evonorm_b0(x, rv, v=np.ones(2), training=True, momentum=0.1)  # timm
    np.testing.assert_allclose(rv, 0.9 * np.array([1.0, 2.0]) + 0.1 * var * n / (n - 1), rtol=1e-14)
    rv = np.array([1.0, 2.0])
    normref.evonorm_b0(x, rv, training=True, momentum=0.9, momentum_convention="keras",
                       running_var_unbiased=False)  # the TF reference
    np.testing.assert_allclose(rv, 0.9 * np.array([1.0, 2.0]) + 0.1 * var, rtol=1e-14)


def test_evonorm_b0_overflowing_branch_is_a_clean_error():
    x = np.random.default_rng(7).standard_normal((2, 2, 3))
    rv = np.ones(2)
    with pytest.raises(ValueError, match="vx"):
        normref.evonorm_b0(x * 1e300, rv, v=np.full(2, 1e300), training=True)
    assert np.array_equal(rv, np.ones(2))


# ------------------------------------------------------------------ EvoNorm-S0
def test_evonorm_s0_hand_values_and_group_norm_relation():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 4, 3)) + 0.5
    eps = 1e-5
    xg = x.reshape(2, 2, -1)
    std = np.sqrt(xg.var(axis=2, keepdims=True) + eps)
    mean = xg.mean(axis=2, keepdims=True)
    np.testing.assert_allclose(normref.evonorm_s0(x, 2), (xg / std).reshape(x.shape), rtol=1e-14)
    # x / std = group norm + mean / std
    gn = normref.group_norm(x, 2).reshape(2, 2, -1)
    np.testing.assert_allclose(normref.evonorm_s0(x, 2).reshape(2, 2, -1), gn + mean / std,
                               rtol=1e-14, atol=1e-14)
    v = np.array([1.0, -2.0, 0.5, 3.0])
    gate = 1.0 / (1.0 + np.exp(-v.reshape(1, 4, 1) * x))
    np.testing.assert_allclose(normref.evonorm_s0(x, 2, v=v),
                               ((x * gate).reshape(2, 2, -1) / std).reshape(x.shape), rtol=1e-14)


# ------------------------------------------------------------------ FRN + TLU
def test_frn_hand_values_and_rms_norm_relation():
    rng = np.random.default_rng(9)
    x, w, b = rng.standard_normal((2, 3, 2, 2)), rng.standard_normal(3), rng.standard_normal(3)
    nu2 = (x ** 2).mean(axis=(2, 3), keepdims=True)
    y = w.reshape(1, 3, 1, 1) * x / np.sqrt(nu2 + 1e-6) + b.reshape(1, 3, 1, 1)
    np.testing.assert_allclose(normref.filter_response_norm(x, w, b), y, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(normref.filter_response_norm(x, eps=1e-5),
                               normref.rms_norm(x, (2, 2), eps=1e-5), rtol=1e-14, atol=1e-15)
    tau = np.array([0.0, 0.5, -0.3])
    np.testing.assert_array_equal(normref.filter_response_norm(x, w, b, tau),
                                  np.maximum(normref.filter_response_norm(x, w, b),
                                             tau.reshape(1, 3, 1, 1)))


def _tie_case():
    """FRN + TLU with exact ties: x = 0 gives y = bias exactly, and tau = bias."""
    rng = np.random.default_rng(10)
    x = rng.standard_normal((2, 3, 4))
    x[:, :, 0] = 0.0
    w, b = rng.standard_normal(3) + 1.0, rng.standard_normal(3)
    return Case("ties", (x, w, b, b.copy()))


def test_tlu_tie_splits_the_gradient_half_and_half():
    case = _tie_case()
    x, w, b, tau = case.args
    y = normref.filter_response_norm(x, w, b)
    assert np.array_equal(y[:, :, 0], np.broadcast_to(b, (2, 3)))  # exact ties
    z, pb = normref.vjp(normref.filter_response_norm, *case.fresh_args())
    dy = np.random.default_rng(11).standard_normal(z.shape)
    gx, gw, gb, gtau = pb(dy)
    t = tau.reshape(1, 3, 1)
    weight = np.where(y > t, 0.0, np.where(y == t, 0.5, 1.0))
    np.testing.assert_allclose(gtau, (dy * weight).sum(axis=(0, 2)), rtol=1e-14)
    np.testing.assert_allclose(gb, (dy * (1 - weight)).sum(axis=(0, 2)), rtol=1e-14)
    spec = REGISTRY["filter_response_norm"]
    rng = np.random.default_rng(12)
    for err, tol in (C.vjp_error(spec, case, rng), C.jvp_error(spec, case, rng),
                     C.jacobian_error(spec, case), *C.fd_errors(spec, case, rng)):
        assert err <= tol, (err, tol)


# ------------------------------------------------------------------ composition and pieces
def _dot_test(plan_factory, values, rng, h=1e-6, rtol=1e-6):
    """VJP adjoint to JVP, and JVP against central differences, for every argument."""
    plan = plan_factory(values)
    y = plan.forward()
    dy = rng.standard_normal(y.shape)
    grads = plan.vjp(dy)
    for name, v in values.items():
        t = rng.standard_normal(v.shape)
        jt = plan.jvp({name: t})
        np.testing.assert_allclose(np.sum(grads[name] * t), np.sum(dy * jt), rtol=1e-12,
                                   atol=1e-12)

        def f(a):
            return plan_factory({**values, name: a}).forward()

        np.testing.assert_allclose(jt, _fd_jvp(f, v, t, h), rtol=rtol, atol=1e-7)


def test_coloring_and_conditional_affine_compose_with_a_standardization():
    rng = np.random.default_rng(13)
    N, Cc, S = 3, 4, 5
    values = {"input": rng.standard_normal((N, Cc, S)), "W": rng.standard_normal((2, 2, 2)),
              "cb": rng.standard_normal(Cc), "gamma": rng.standard_normal((N, Cc)) + 1,
              "beta": rng.standard_normal((N, Cc))}

    def make(v):
        part = Partition("inst", (N, Cc, S), group_axes=(0, 1))
        std = Standardization(v["input"], part, eps=1e-5)
        return Composite("colored", v, [
            Step("xhat", std, {"input": "input"}),
            Step("c", Coloring(bias=True), ("xhat", "W", "cb")),
            Step("y", ConditionalAffine((N, Cc, S)), ("c", "gamma", "beta")),
        ])

    _dot_test(make, values, rng)
    # the coloring is the matrix product per group, the affine per sample
    plan = make(values)
    y = plan.forward()
    xh = plan.node("xhat").reshape(N, 2, 2, S)
    c = np.einsum("gij,ngjs->ngis", values["W"], xh).reshape(N, Cc, S) + values["cb"][:, None]
    np.testing.assert_allclose(y, c * values["gamma"][..., None] + values["beta"][..., None],
                               rtol=1e-14, atol=1e-14)


def test_elementwise_pieces_and_group_std_by_the_chain_rule():
    rng = np.random.default_rng(14)
    N, Cc, S = 2, 3, 6
    values = {"input": rng.standard_normal((N, Cc, S)), "a": rng.standard_normal((1, Cc, 1)),
              "tau": rng.standard_normal(Cc) * 0.3}

    def make(v):
        std = Standardization(v["input"], Partition("b", (N, Cc, S), group_axes=(1,)), eps=1e-3)
        return Composite("toy", v, [
            Step("s", GroupStd(std), {"input": "input"}),
            Step("s_", View((1, Cc, 1)), ("s",)),
            Step("g", Sigmoid(), ("a",)),
            Step("p", Product(), ("input", "g")),
            Step("m", Maximum(), ("p", "s_")),
            Step("q", Quotient(), ("input", "m")),
            Step("y", Threshold((1, Cc, 1)), ("q", "tau")),
            Step("z", Renorm(np.array([2.0, 0.5, 1.0]), np.array([0.1, 0.0, -1.0]),
                             (1, Cc, 1)), ("y",)),
        ])

    _dot_test(make, values, rng)
    # the group std is the standard deviation of the batch partition
    s = make(values).node("s")
    np.testing.assert_allclose(s, np.sqrt(values["input"].var(axis=(0, 2)) + 1e-3), rtol=1e-14)


def test_composite_intermediate_overflow_is_a_clean_error_and_on_forward_is_skipped():
    called = []
    x = np.full((2, 3), 1e300)
    plan = Composite("toy", {"input": x, "b": np.full((2, 3), 1e300)},
                     [Step("p", Product(), ("input", "b")), Step("y", Quotient(), ("input", "p"))],
                     on_forward=lambda p: called.append(1))
    with pytest.raises(ValueError, match="intermediate 'p'"):
        plan.forward()
    assert not called


def test_affine_piece_in_any_broadcast_layout():
    rng = np.random.default_rng(15)
    values = {"input": rng.standard_normal((2, 3, 4)), "w": rng.standard_normal((3, 4)),
              "b": rng.standard_normal(4)}

    def make(v):
        return Composite("affine", v, [Step("y", Affine((1, 3, 4), bias_shape=(1, 1, 4)),
                                                ("input", "w", "b"))])

    _dot_test(make, values, rng)


def test_reference_signatures_and_autograd_of_the_references_run():
    # the four references differentiate with autograd in every argument they expose
    for name in ("batch_renorm", "evonorm_b0", "evonorm_s0", "filter_response_norm"):
        spec = REGISTRY[name]
        case = spec.examples(np.random.default_rng(0))[0]
        f = C.reference_of(spec, case, 0)
        g = autograd.grad(lambda a: autograd.numpy.sum(f(a) ** 2))(case.args[0])
        assert np.isfinite(g).all() and g.shape == case.args[0].shape


def test_batch_renorm_keras_conventions():
    rng = np.random.default_rng(16)
    x = rng.standard_normal((6, 2)) * 1.5 + 0.5
    eps, m = 1e-3, 0.99
    mean, var = x.mean(axis=0), x.var(axis=0)
    sd = np.sqrt(var + eps)
    # separate renorm moments: r, d from them, updated with renorm_momentum
    ren_m, ren_s = np.array([0.2, 0.7]), np.array([1.2, 0.02])
    rm, rv = np.zeros(2), np.ones(2)
    y = normref.batch_renorm(x, rm, rv, None, None, True, m, eps, 10.0, 10.0,
                             momentum_convention="keras", running_var_unbiased=False,
                             renorm_moments=(ren_m, ren_s), renorm_momentum=0.9)
    s_r = np.maximum(np.array([1.2, 0.02]), np.sqrt(eps))
    r = np.clip(sd / s_r, 0.1, 10.0)
    d = np.clip((mean - np.array([0.2, 0.7])) / s_r, -10.0, 10.0)
    np.testing.assert_allclose(y, (x - mean) / sd * r + d, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(ren_m, 0.9 * np.array([0.2, 0.7]) + 0.1 * mean, rtol=1e-14)
    np.testing.assert_allclose(ren_s, 0.9 * np.array([1.2, 0.02]) + 0.1 * sd, rtol=1e-14)
    np.testing.assert_allclose(rm, 0.01 * mean, rtol=1e-14)  # keras convention, momentum 0.99
    np.testing.assert_allclose(rv, 0.99 + 0.01 * var, rtol=1e-14)
    # a running standard deviation instead of the variance
    rm, rs = np.array([0.1, 0.3]), np.array([2.0, 0.5])
    y = normref.batch_renorm(x, rm, rs, None, None, True, m, eps, momentum_convention="keras",
                             running_var_unbiased=False, running_std=True)
    r = np.clip(sd / np.array([2.0, 0.5]), 1 / 3, 3)
    d = np.clip((mean - np.array([0.1, 0.3])) / np.array([2.0, 0.5]), -5, 5)
    np.testing.assert_allclose(y, (x - mean) / sd * r + d, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(rs, 0.99 * np.array([2.0, 0.5]) + 0.01 * sd, rtol=1e-14)
    with pytest.raises(ValueError, match="running_var_unbiased=False"):
        normref.batch_renorm(x, rm, rs, training=True, running_std=True)
    # eval: batch norm's eval with Keras' variance max(s^2 - eps, 0)
    w, b = rng.standard_normal(2), rng.standard_normal(2)
    rs = np.array([1.5, 0.01])
    y, pb = normref.vjp(normref.batch_renorm, x, rm, rs, w, b, False, eps=eps, running_std=True)
    veff = np.maximum(rs ** 2 - eps, 0.0)
    np.testing.assert_allclose(y, normref.batch_norm(x, rm, veff, w, b, eps=eps), rtol=1e-14)
    dy = rng.standard_normal(y.shape)
    g_std = pb(dy)[2]
    g_var = normref.vjp(normref.batch_norm, x, rm, veff, w, b, eps=eps)[1](dy)[2]
    np.testing.assert_allclose(g_std, g_var * np.where(rs ** 2 > eps, 2 * rs, 0.0), rtol=1e-13)


def test_evonorm_b0_examples_exercise_both_branches():
    for case in REGISTRY["evonorm_b0"].examples(np.random.default_rng(1234)):
        x, rv, v, training = case.args[0], case.args[1], case.args[4], case.args[5]
        if v is None:
            continue
        eps = case.kwargs.get("eps", 1e-5)
        var_b = x.var(axis=(0, 2, 3)) if training else rv
        sb = np.sqrt(var_b + eps).reshape(1, -1, 1, 1)
        right = v.reshape(1, -1, 1, 1) * x + np.sqrt(x.var(axis=(2, 3), keepdims=True) + eps)
        assert (right > sb).any() and (right < sb).any(), case.label


@pytest.mark.parametrize("name,make", [
    ("batch_renorm", lambda x, w, b: (x, np.zeros(8), np.ones(8), w, b, True)),
    ("evonorm_b0", lambda x, w, b: (x, np.ones(8), w, b, np.ones(8), True)),
    ("evonorm_s0", lambda x, w, b: (x, 4, w, b, np.ones(8))),
    ("filter_response_norm", lambda x, w, b: (x, w, b, np.zeros(8))),
])
def test_thread_count_gives_identical_bits(name, make):
    import numba

    from normref.kernels import _dispatch as dispatch

    rng = np.random.default_rng(17)
    x = rng.standard_normal((16, 8, 24, 20)) * 3 + 7
    assert x.size >= dispatch.PARALLEL_MIN_SIZE
    w, b = rng.standard_normal(8), rng.standard_normal(8)
    dy = rng.standard_normal(x.shape)
    f = getattr(normref, name)

    def run():
        y, pb = normref.vjp(f, *make(x, w, b))
        return [y] + [g for g in pb(dy) if g is not None]

    before = numba.get_num_threads()
    try:
        numba.set_num_threads(2)
        two = run()
        numba.set_num_threads(1)
        one = run()
    finally:
        numba.set_num_threads(before)
    for a, c in zip(two, one):
        np.testing.assert_array_equal(a, c)
