"""Named regression tests for the classes of hostile-input defects (issue 9).

One section per class: (1) silently wrong derivatives, (2) silent NaN
forwards on finite input, (3) wrong exception types, (4) unhelpful or
accepted-invalid arguments, (5) side effects and aliasing, (6) layout
dependence, (7) unbounded work.  (The CLI and corpus reader, class 8-9,
are in tests/test_hostile_cli.py; LRN, normalize and weight norm kernels in
tests/test_hostile_lrn_lp.py.)  The generic contract over every normalizer
is fuzzed in tests/test_fuzz.py.
"""
from __future__ import annotations

import math
import time

import mpmath
import numpy as np
import pytest

import normref as nr
from normref.limits import allow
from normref.newton_schulz import MAX_STEPS, spectral_tables

RNG = np.random.default_rng(0)


def _fd_dot(f, x, t, dy, h):
    return (np.sum(f(x + h * t) * dy) - np.sum(f(x - h * t) * dy)) / (2 * h)


# ============================================================================ class 1
# silently wrong derivatives
SPREAD = np.random.default_rng(1).standard_normal((50, 3)) * np.array([1.0, 3.0, 10.0])
T_VALUES = [0, 1, 2, 5, 10, 15, 20, 40, 100, 1000, 10 ** 6, 2 ** 62]


@pytest.mark.parametrize("T", T_VALUES)
def test_iter_norm_vjp_and_jvp_match_finite_differences_for_every_T(T):
    """On a spread spectrum (variances 1 : 9 : 100) the spectral IterNorm derivative
    agrees with central differences for every T, 0 up to 2^62 (it used to be 1.98e6
    against 13.6 at T = 20, NaN at T = 1000)."""
    x = SPREAD
    rng = np.random.default_rng(2)
    dy, t = rng.standard_normal(x.shape), rng.standard_normal(x.shape)
    y, pullback = nr.vjp(nr.iter_norm, x, T=T)
    _, ty = nr.jvp(nr.iter_norm, (x,), (t,), T=T)
    f = lambda z: nr.iter_norm(z, T=T)  # noqa: E731
    fd = _fd_dot(f, x, t, dy, 1e-6)
    vjp_dot, jvp_dot = float(np.sum(pullback(dy)[0] * t)), float(np.sum(ty * dy))
    scale = float(np.linalg.norm(dy) * np.linalg.norm(t))
    assert abs(vjp_dot - fd) <= 1e-7 * scale, (vjp_dot, fd)
    assert abs(jvp_dot - vjp_dot) <= 1e-12 * scale, (jvp_dot, vjp_dot)


@pytest.mark.parametrize("T", [20, 1000])
def test_group_whitening_derivative_matches_finite_differences_on_a_spread_spectrum(T):
    x = np.random.default_rng(3).standard_normal((2, 3, 20)) * np.array([1.0, 3.0, 10.0])[:, None]
    rng = np.random.default_rng(4)
    dy, t = rng.standard_normal(x.shape), rng.standard_normal(x.shape)
    _, pullback = nr.vjp(nr.group_whitening, x, 3, T=T)
    fd = _fd_dot(lambda z: nr.group_whitening(z, 3, T=T), x, t, dy, 1e-6)
    got = float(np.sum(pullback(dy)[0] * t))
    assert abs(got - fd) <= 1e-7 * np.linalg.norm(dy) * np.linalg.norm(t), (got, fd)


def test_iter_norm_at_huge_T_is_zca():
    """p_T converges to l^-1/2: at T = 10^6 IterNorm and its gradient are ZCA's (an
    independent closed form for the derivative at large T)."""
    x = SPREAD
    dy = np.random.default_rng(5).standard_normal(x.shape)
    y, pb = nr.vjp(nr.iter_norm, x, T=10 ** 6)
    yz, pbz = nr.vjp(nr.zca_whitening, x)
    np.testing.assert_allclose(y, yz, rtol=0, atol=1e-13)
    np.testing.assert_allclose(pb(dy)[0], pbz(dy)[0], rtol=0, atol=1e-12)


def _mp_tables(lam, T):
    """p_T and its divided differences at 400 digits (quotients; p_T' at ties)."""
    mpmath.mp.dps = 400
    lam = [mpmath.mpf(float(v)) for v in lam]
    p, dp = [mpmath.mpf(1)] * len(lam), [mpmath.mpf(0)] * len(lam)
    for _ in range(T):
        dp = [(3 * q - 3 * l * s ** 2 * q - s ** 3) / 2 for q, s, l in zip(dp, p, lam)]
        p = [(3 * s - l * s ** 3) / 2 for s, l in zip(p, lam)]
    n = len(lam)
    return p, [[dp[i] if lam[i] == lam[j] else (p[i] - p[j]) / (lam[i] - lam[j])
                for j in range(n)] for i in range(n)]


@pytest.mark.parametrize("lam", [[1 / 110, 9 / 110, 100 / 110], [1e-10, 1e-5, 0.3, 0.7],
                                 [1e-300, 0.5, 0.5], [0.2, 0.2, 0.6], [1e-16, 1.0 - 1e-16]])
@pytest.mark.parametrize("T", [1, 5, 20, 100, 1000])
def test_spectral_tables_within_a_few_ulps_of_400_digits(lam, T):
    """The stable orientation (the smaller eigenvalue multiplies) has no cancellation:
    p_T and the scaled divided differences within 16 ulps of the exact values."""
    lam = np.array(lam)
    p, H = spectral_tables(lam, T)
    pe, D = _mp_tables(lam, T)
    w = np.sqrt(np.maximum(lam, 2.0 ** -600))
    for i in range(len(lam)):
        assert abs(mpmath.mpf(float(p[i])) - pe[i]) <= 16 * 2 ** -52 * abs(pe[i])
        for j in range(len(lam)):
            exact = D[i][j] * mpmath.mpf(float(w[i])) * mpmath.mpf(float(w[j]))
            assert abs(mpmath.mpf(float(H[i, j])) - exact) <= 16 * 2 ** -52 * abs(exact), (i, j)


def _mp_mvn_vjp(x, dy, eps):
    """The exact VJP of (x - mean) / (std + eps) over one group, at 60 digits."""
    mpmath.mp.dps = 60
    xs = [mpmath.mpf(float(v)) for v in x]
    g = [mpmath.mpf(float(v)) for v in dy]
    n = len(xs)
    mu = sum(xs) / n
    d = [v - mu for v in xs]
    s = mpmath.sqrt(sum(v * v for v in d) / n)
    den = s + mpmath.mpf(eps)
    gm = sum(g) / n
    gd = sum(a * b for a, b in zip(g, d))
    return [(g[j] - gm) / den - gd * d[j] / (n * s * den ** 2) for j in range(n)]


@pytest.mark.parametrize("scale,eps", [(1e-140, 1e300), (1e-100, 1e250), (1.0, 1e-9), (1e150, 1e-300)])
def test_mean_variance_norm_gradient_exact_when_eps_dwarfs_sigma(scale, eps):
    """eps on the standard deviation: the rank-one coefficient -(s + eps)/s overflowed
    when eps / s > 1e308 (gradient +-inf); the kernel now carries c f^2 = -1/(s (s + eps))."""
    x = np.random.default_rng(6).standard_normal((1, 7)) * scale
    dy = np.random.default_rng(7).standard_normal(x.shape)
    _, pb = nr.vjp(nr.mean_variance_norm, x, (1,), eps)
    got = pb(dy)[0][0]
    exact = _mp_mvn_vjp(x[0], dy[0], eps)
    for a, e in zip(got, exact):
        assert abs(mpmath.mpf(float(a)) - e) <= 64 * 2 ** -52 * max(abs(v) for v in exact)


@pytest.mark.parametrize("name", ["zca_whitening", "pca_whitening", "cholesky_whitening", "iter_norm"])
def test_whitening_gradient_on_constant_data_with_a_tiny_eps(name):
    """Constant data and eps = 1e-300: Sigma = eps I, Z = 0, and the input gradient is
    W^T (dZ - mean dZ) with W = eps^-1/2 (an orthogonal factor for PCA); it was NaN
    (the divided differences overflowed where they multiply Xc = 0)."""
    f = getattr(nr, name)
    x = np.full((5, 3), 2.0)
    dy = np.random.default_rng(8).standard_normal(x.shape)
    y, pb = nr.vjp(f, x, eps=1e-300)
    dx = pb(dy)[0]
    assert np.array_equal(y, np.zeros_like(y))
    assert np.isfinite(dx).all()
    expect = (dy - dy.mean(axis=0)) * 1e150
    if name == "iter_norm":  # W = p_5(1/3) / sqrt(3 eps) I: five steps from ZCA's eps^-1/2
        expect = expect * spectral_tables(np.full(3, 1 / 3), 5)[0][0] / math.sqrt(3.0)
    if name == "pca_whitening":  # W^T (dZ - mean) with the orthogonal W^T of PCA's own choice
        np.testing.assert_allclose(np.linalg.norm(dx, axis=1), np.linalg.norm(expect, axis=1),
                                   rtol=1e-13)
    else:
        np.testing.assert_allclose(dx, expect, rtol=1e-13)


@pytest.mark.parametrize("name", ["zca_whitening", "pca_whitening", "cholesky_whitening", "iter_norm"])
def test_whitening_gradient_with_a_huge_weight_is_the_exactly_scaled_one(name):
    """weight = 2^996 w: the input gradient is exactly 2^996 times the one for w (it was
    NaN: the core's products of the cotangent overflowed)."""
    f = getattr(nr, name)
    x = np.random.default_rng(9).standard_normal((6, 3))
    w = np.random.default_rng(10).uniform(0.5, 2.0, 3)
    dy = np.random.default_rng(11).standard_normal(x.shape)
    _, pb = nr.vjp(f, x, None, None, w)
    _, pb_big = nr.vjp(f, x, None, None, np.ldexp(w, 996))
    dx, dx_big = pb(dy)[0], pb_big(dy)[0]
    assert np.isfinite(dx_big).all()
    assert np.array_equal(dx_big, np.ldexp(dx, 996))


# ============================================================================ class 2
# silent NaN forwards on finite input (whitening)
WHITENERS = ["zca_whitening", "pca_whitening", "cholesky_whitening", "iter_norm"]


@pytest.mark.parametrize("name", WHITENERS)
def test_whitening_of_data_at_the_float64_maximum(name):
    """x = 1e308 everywhere centres to exactly 0 (the sum overflowed: NaN); data of
    +-1.5e308 whiten like the same data scaled down (whitening is scale invariant)."""
    f = getattr(nr, name)
    assert np.array_equal(f(np.full((5, 3), 1e308)), np.zeros((5, 3)))
    x = np.random.default_rng(12).standard_normal((8, 3))
    x = x / np.abs(x).max()
    big = f(np.ldexp(x, 1023) * 0.99, eps=0.0)
    small = f(x * 0.99, eps=0.0)
    np.testing.assert_allclose(big, small, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", WHITENERS)
def test_whitening_eval_with_a_running_covariance_near_the_maximum(name):
    """running_cov ~ 9e307 (the symmetrization x + x^T overflowed: NaN): homogeneity,
    W(4^k Sigma) = 2^-k W(Sigma), gives the output of the unscaled call."""
    f = getattr(nr, name)
    rng = np.random.default_rng(13)
    x = rng.standard_normal((6, 3))
    a = rng.standard_normal((3, 3))
    cov = (a @ a.T + 3 * np.eye(3))[None] / 20.0
    k = 511
    y = f(np.ldexp(x, k), np.zeros(3), np.ldexp(cov, 2 * k), training=False, eps=0.0)
    assert np.abs(np.ldexp(cov, 2 * k)).max() > 1e307
    y0 = f(x, np.zeros(3), cov, training=False, eps=0.0)
    np.testing.assert_allclose(y, y0, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", WHITENERS)
def test_whitening_with_eps_near_the_maximum(name):
    """eps = 1e308 dominates the covariance: Z = Xc / sqrt(eps) (it was NaN, 0 or a raw
    LinAlgError)."""
    f = getattr(nr, name)
    x = np.random.default_rng(14).standard_normal((6, 3))
    y = f(x, eps=1e308)
    expect = (x - x.mean(axis=0)) / 1e154
    if name == "iter_norm":  # Sigma_N ~ I / 3: five steps from ZCA
        expect = expect * spectral_tables(np.full(3, 1 / 3), 5)[0][0] / math.sqrt(3.0)
    if name == "pca_whitening":  # an orthogonal factor apart: each sample keeps its norm
        y, expect = np.linalg.norm(y, axis=1), np.linalg.norm(expect, axis=1)
    np.testing.assert_allclose(y, expect, rtol=1e-12)


def test_batch_norm_eval_near_the_maximum():
    """x - running_mean and running_var + eps overflowed in eval mode (inf / 0 output)."""
    x = np.array([[1e308, 5e307], [-1e308, -2e307]])
    y = nr.batch_norm(x, np.array([-1e308, 0.0]), np.array([1e308, 1e308]), eps=1e308)
    r = math.sqrt(2.0) * 1e154  # sqrt(running_var + eps) = sqrt(2e308)
    expect = np.array([[r, 5e307 / r], [0.0, -2e307 / r]])
    np.testing.assert_allclose(y, expect, rtol=1e-15)


# ============================================================================ class 3
# wrong exception types
def _bn_state():
    return np.zeros(3), np.ones(3)


@pytest.mark.parametrize("counter,exc", [(np.array(-1), ValueError), ([0], TypeError), (0, TypeError),
                                         (np.array(0.0), TypeError), (np.array([0, 0]), TypeError),
                                         (np.array(np.iinfo(np.int64).max), ValueError)])
@pytest.mark.parametrize("momentum", [None, 0.1])
def test_num_batches_tracked_is_validated_for_any_momentum(counter, exc, momentum):
    """A counter of -1 gave ZeroDivisionError after incrementing it; lists and ints a raw
    TypeError; float and 2-element counters were silently incremented."""
    rm, rv = _bn_state()
    before = np.array(counter, copy=True) if isinstance(counter, np.ndarray) else counter
    x = RNG.standard_normal((4, 3))
    with pytest.raises(exc, match="num_batches_tracked"):
        nr.batch_norm(x, rm, rv, training=True, momentum=momentum, num_batches_tracked=counter)
    assert np.array_equal(rm, np.zeros(3)) and np.array_equal(rv, np.ones(3))
    if isinstance(counter, np.ndarray):
        assert np.array_equal(counter, before)


def test_a_running_update_that_overflows_raises_and_changes_nothing():
    rm, rv = np.zeros(3, dtype=np.float16), np.ones(3, dtype=np.float16)
    nbt = np.array(0)
    x = RNG.standard_normal((4, 3)) * 1e5  # a variance beyond float16's range
    with pytest.raises(ValueError, match="running_var"):
        nr.batch_norm(x, rm, rv, training=True, num_batches_tracked=nbt)
    assert rm.tolist() == [0, 0, 0] and rv.tolist() == [1, 1, 1] and int(nbt) == 0


def test_iter_norm_newton_with_a_huge_T_is_a_clean_error():
    """T = 10^9 with evaluation="newton" asked for 67 GiB of saved iterates."""
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="T=1000000000"):
        nr.iter_norm(SPREAD, T=10 ** 9, evaluation="newton")
    assert time.perf_counter() - t0 < 5


def test_iter_norm_newton_saves_iterates_only_until_they_repeat():
    """Iterates that repeat are not saved again: with one channel per group
    (Sigma_N = 1, P_1 = P_0 = 1) T = 4096 keeps one iterate and its derivative sweeps
    read it off the cycle."""
    from normref.activations._whitening import bind_batch_whitening

    x = np.random.default_rng(15).standard_normal((40, 3))
    plan = bind_batch_whitening("iter_norm", "iter_norm", x, group_size=1, T=MAX_STEPS,
                                evaluation="newton")
    y = plan.forward()
    assert len(plan.fn.P) == 1 and plan.fn.cycle == (0, 1)
    np.testing.assert_allclose(y, nr.batch_norm(x, None, None, training=True, eps=1e-5),
                               rtol=0, atol=1e-14)
    dy = np.random.default_rng(18).standard_normal(x.shape)
    np.testing.assert_allclose(plan.vjp(dy)["input"],
                               nr.vjp(nr.iter_norm, x, group_size=1, T=3)[1](dy)[0],
                               rtol=0, atol=1e-13)


def test_a_whitening_covariance_beyond_the_memory_limit_is_refused_before_allocation():
    """zca_whitening of a (2, 20000) input asked for 3 GiB without a word."""
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="group_size"):
        nr.zca_whitening(RNG.standard_normal((2, 20000)))
    assert time.perf_counter() - t0 < 1
    with allow(2 ** 40), pytest.raises(ValueError, match="singular"):  # over the limit on request
        nr.zca_whitening(RNG.standard_normal((2, 30)), eps=0.0)


def test_a_dense_jacobian_beyond_the_memory_limit_is_refused_before_allocation():
    x = RNG.standard_normal((200, 1000))
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="jacobian_operator"):
        nr.jacobian(nr.layer_norm, x, (1000,))
    assert time.perf_counter() - t0 < 1


# ============================================================================ class 4
# unhelpful or accepted-invalid arguments
X4 = RNG.standard_normal((4, 8))


@pytest.mark.parametrize("wrt", [0.5, None, [0], True])
def test_jacobian_wrt_must_be_an_index_or_a_name(wrt):
    with pytest.raises(TypeError, match="wrt"):
        nr.jacobian(nr.layer_norm, X4, (8,), wrt=wrt)


def test_jacobian_operator_vectors_are_checked_with_a_clear_message():
    op = nr.jacobian_operator(nr.layer_norm, X4, (8,))
    with pytest.raises(ValueError, match=r"matvec expects shape \(32,\)"):
        op.matvec(np.ones(31))
    with pytest.raises(ValueError, match="rmatvec"):
        op.rmatvec(np.ones(33))
    with pytest.raises(ValueError, match="the size of the output"):
        op.H.matvec(np.ones(33))
    with pytest.raises(TypeError, match="floating"):
        op.matvec(np.ones(32, dtype=np.int64))
    v = RNG.standard_normal(32) + 1j * RNG.standard_normal(32)
    assert np.array_equal(op.matvec(v), op.matvec(v.real) + 1j * op.matvec(v.imag))


@pytest.mark.parametrize("bad", [[[1.0, 2.0], [3.0]], np.ma.masked_array(X4, mask=X4 > 0), "abc", None])
def test_input_that_is_not_a_float_array_is_a_type_error_naming_it(bad):
    with pytest.raises(TypeError, match="input"):
        nr.layer_norm(bad, (2,))


@pytest.mark.parametrize("shape", [np.array(8), (n for n in (8,)), (8.0,), "8", [True]])
def test_normalized_shape_must_be_an_int_or_a_tuple_of_ints(shape):
    with pytest.raises(TypeError, match="normalized_shape"):
        nr.layer_norm(X4, shape)


@pytest.mark.parametrize("call", [
    lambda: nr.batch_norm(X4, None, None, training="no"),
    lambda: nr.batch_norm(X4, None, None, training=np.array(True)),
    lambda: nr.batch_norm(X4, None, None, training=None),
    lambda: nr.instance_norm(RNG.standard_normal((2, 3, 4)), use_input_stats="yes"),
    lambda: nr.ghost_batch_norm(X4, 2, training=1),
    lambda: nr.zca_whitening(X4, training="no"),
    lambda: nr.batch_norm(X4, np.zeros(8), np.ones(8), training=True, running_var_unbiased="no"),
])
def test_flags_must_be_bools(call):
    with pytest.raises(TypeError, match="must be a bool"):
        call()


@pytest.mark.parametrize("bad", [None, "x", 1j * np.ones((4, 8)), np.ones((4, 8), dtype=int),
                                 [[1.0], [2.0, 3.0]], np.ones((4, 9))])
def test_cotangents_must_be_float_arrays_of_the_output_shape(bad):
    _, pb = nr.vjp(nr.layer_norm, X4, (8,))
    with pytest.raises((TypeError, ValueError), match="cotangent"):
        pb(bad)


@pytest.mark.parametrize("bad", ["x", 1j * np.ones((4, 8)), np.ones((4, 8), dtype=int)])
def test_tangents_must_be_float_arrays(bad):
    with pytest.raises(TypeError, match=r"tangents\[0\]"):
        nr.jvp(nr.layer_norm, (X4, (8,)), (bad, None))


@pytest.mark.parametrize("axes", [(0.5,), 0.5, "0", (True,), [np.float64(1.0)]])
def test_mean_variance_norm_axes_must_be_ints(axes):
    with pytest.raises(TypeError, match="axes"):
        nr.mean_variance_norm(RNG.standard_normal((2, 3, 2, 2)), axes)


@pytest.mark.parametrize("bad", ["TORCH", np.array(["torch", "keras"]), None])
def test_option_strings_are_checked(bad):
    with pytest.raises(ValueError, match="momentum_convention"):
        nr.batch_norm(X4, None, None, training=True, momentum_convention=bad)


def test_nan_running_var_propagates_to_its_channel_only():
    """It was reported as "var + eps is not positive ... use eps > 0"."""
    x = RNG.standard_normal((5, 3))
    rv = np.array([1.0, np.nan, 2.0])
    y = nr.batch_norm(x, np.zeros(3), rv)
    clean = nr.batch_norm(x, np.zeros(3), np.array([1.0, 1.0, 2.0]))
    assert np.isnan(y[:, 1]).all()
    assert np.array_equal(y[:, [0, 2]], clean[:, [0, 2]])
    with pytest.raises(ValueError, match="running_var"):
        nr.batch_norm(x, np.zeros(3), np.array([1.0, -1.0, 1.0]), eps=0.0)


# ============================================================================ class 5
# side effects and aliasing
def test_jvp_with_a_bad_tangent_leaves_the_running_statistics_alone():
    rm, rv = _bn_state()
    x = RNG.standard_normal((4, 3))
    with pytest.raises(ValueError, match="tangents"):
        nr.jvp(nr.batch_norm, (x, rm, rv, None, None, True), (np.ones((2, 2)),) + (None,) * 5)
    assert np.array_equal(rm, np.zeros(3)) and np.array_equal(rv, np.ones(3))


def test_the_pullback_does_not_read_the_callers_input_after_vjp():
    x = RNG.standard_normal((4, 8))
    dy = RNG.standard_normal(x.shape)
    w = RNG.standard_normal(8)
    _, pb = nr.vjp(nr.layer_norm, x, (8,), w)
    before = pb(dy)
    x *= 3.0
    w += 1.0
    after = pb(dy)
    for a, b in zip(before, after):
        assert (a is None and b is None) or np.array_equal(a, b)


# ============================================================================ class 6
# layout dependence
@pytest.mark.parametrize("estimate", ["covariance", "whitening"])
def test_eval_whitening_with_one_observation_ignores_the_weights_memory_layout(estimate):
    rng = np.random.default_rng(16)
    x = rng.standard_normal((1, 4))
    a = rng.standard_normal((2, 2, 2))
    cov = a @ np.swapaxes(a, 1, 2) + np.eye(2)
    gam = rng.standard_normal((2, 2, 2))
    kw = dict(training=False, group_size=2, running_estimate=estimate)
    y_c = nr.zca_whitening(x, np.zeros(4), cov, gam, **kw)
    y_f = nr.zca_whitening(x, np.zeros(4), np.asfortranarray(cov), np.asfortranarray(gam), **kw)
    y_t = nr.zca_whitening(x, np.zeros(4), np.swapaxes(np.swapaxes(cov, 1, 2).copy(), 1, 2),
                           np.swapaxes(np.swapaxes(gam, 1, 2).copy(), 1, 2), **kw)
    assert np.array_equal(y_c, y_f) and np.array_equal(y_c, y_t)


# ============================================================================ class 7
# unbounded work
@pytest.mark.parametrize("T", [10 ** 6, 2 ** 63, 10 ** 30])
def test_iter_norm_with_any_T_takes_bounded_time(T):
    """T = 2^63 ran forever and T = 10^6 took 16 s: once the iteration repeats its value
    for any larger T is read off the cycle."""
    t0 = time.perf_counter()
    y = nr.iter_norm(SPREAD, T=T)
    assert time.perf_counter() - t0 < 2
    np.testing.assert_array_equal(y, nr.iter_norm(SPREAD, T=5000))


def test_iter_norm_singular_with_eps_0_overflows_cleanly():
    """eps = 0 on a singular covariance (a constant channel: an exact zero eigenvalue):
    p_T(0) = 1.5^T overflows for T > 1750."""
    x = np.random.default_rng(17).standard_normal((10, 3))
    x[:, 2] = 5.0
    assert np.isfinite(nr.iter_norm(x, eps=0.0, T=50)).all()
    with pytest.raises(ValueError, match="overflows"):
        nr.iter_norm(x, eps=0.0, T=10 ** 6)
    assert math.isfinite(float(nr.iter_norm(x, eps=1e-5, T=10 ** 6).sum()))
