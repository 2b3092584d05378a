"""local_response_norm, normalize and weight_norm: numba path against the
autograd reference, finite differences, closed forms, hand values and (when
installed) PyTorch float64."""
import functools
import math

import numpy as np
import pytest
from autograd import make_jvp, make_vjp

import normref as nr
from normref.registry import REGISTRY

NAMES = ("local_response_norm", "normalize", "weight_norm")
CASES = [
    (name, case)
    for name in NAMES
    for case in REGISTRY[name].examples(np.random.default_rng(7))
]
IDS = [f"{name}:{case.label}" for name, case in CASES]


def close(a, b, rtol=1e-12, atol=0.0):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


def _diff_slots(spec, case):
    """Positional indices of the differentiable array arguments of a case."""
    _, pull = nr.vjp(spec.function, *case.args, **case.kwargs)
    y = spec.function(*case.args, **case.kwargs)
    grads = pull(np.zeros_like(y))
    return [i for i, g in enumerate(grads) if g is not None]


def _ref_of_arg(spec, case, i):
    def f(z):
        args = list(case.args)
        args[i] = z
        return spec.reference(*args, **case.kwargs)
    return f


def _fun_of_arg(spec, case, i):
    def f(z):
        args = list(case.args)
        args[i] = z
        return spec.function(*args, **case.kwargs)
    return f


# ------------------------------------------------------------ generic checks
def test_registered_with_metadata():
    for name in NAMES:
        spec = REGISTRY[name]
        assert spec.function is getattr(nr, name)
        assert spec.reference is getattr(nr.reference, name)
        assert spec.citation and spec.nap and spec.nop and spec.nrr
        assert ".. math::" in spec.function.__doc__
        assert len(spec.examples(np.random.default_rng(0))) >= 8
    assert REGISTRY["weight_norm"].family == "weights"
    assert REGISTRY["weight_norm"].differentiable == ("v", "g")


@pytest.mark.parametrize("name,case", CASES, ids=IDS)
def test_forward_matches_reference(name, case):
    spec = REGISTRY[name]
    y = spec.function(*case.args, **case.kwargs)
    yr = spec.reference(*case.args, **case.kwargs)
    assert y.dtype == np.float64 and y.shape == yr.shape
    close(y, yr, rtol=1e-12, atol=1e-300)
    assert all(np.size(a) <= 150 for a in case.args if isinstance(a, np.ndarray))


@pytest.mark.parametrize("name,case", CASES, ids=IDS)
def test_vjp_jvp_match_autograd_reference(name, case):
    spec = REGISTRY[name]
    rng = np.random.default_rng(11)
    y, pull = nr.vjp(spec.function, *case.args, **case.kwargs)
    dy = rng.standard_normal(y.shape)
    grads = pull(dy)
    slots = _diff_slots(spec, case)
    assert slots and slots[0] == 0
    for i in slots:
        ref_vjp, _ = make_vjp(_ref_of_arg(spec, case, i))(case.args[i])
        close(grads[i], ref_vjp(dy), rtol=1e-11, atol=1e-14)
        t = rng.standard_normal(np.shape(case.args[i]))
        tangents = [None] * len(case.args)
        tangents[i] = t
        _, ty = nr.jvp(spec.function, case.args, tangents, **case.kwargs)
        _, ty_ref = make_jvp(_ref_of_arg(spec, case, i))(case.args[i])(t)
        close(ty, ty_ref, rtol=1e-11, atol=1e-14)


@pytest.mark.parametrize("name,case", CASES, ids=IDS)
def test_derivatives_against_central_differences(name, case):
    """<dy, J t> three ways: VJP, JVP and a central difference, random dy and t."""
    spec = REGISTRY[name]
    rng = np.random.default_rng(13)
    y, pull = nr.vjp(spec.function, *case.args, **case.kwargs)
    for i in _diff_slots(spec, case):
        x0 = np.asarray(case.args[i], dtype=np.float64)
        f = _fun_of_arg(spec, case, i)
        dy = rng.standard_normal(y.shape)
        t = rng.standard_normal(x0.shape)
        h = 1e-6 * max(1.0, float(np.max(np.abs(x0))))
        fd = (f(x0 + h * t) - f(x0 - h * t)) / (2 * h)
        via_vjp = float(np.sum(pull(dy)[i] * t))
        tangents = [None] * len(case.args)
        tangents[i] = t
        _, ty = nr.jvp(spec.function, case.args, tangents, **case.kwargs)
        via_jvp = float(np.sum(dy * ty))
        via_fd = float(np.sum(dy * fd))
        assert via_vjp == pytest.approx(via_jvp, rel=1e-11, abs=1e-13)
        assert via_fd == pytest.approx(via_vjp, rel=1e-6, abs=1e-8)


@pytest.mark.parametrize("name,case", CASES, ids=IDS)
def test_dense_jacobian_equals_stacked_vjps(name, case):
    spec = REGISTRY[name]
    y, pull = nr.vjp(spec.function, *case.args, **case.kwargs)
    for i in _diff_slots(spec, case):
        J = nr.jacobian(spec.function, *case.args, wrt=i, **case.kwargs)
        shape = np.shape(case.args[i])
        assert J.shape == y.shape + shape
        rows = []
        for k in range(y.size):
            e = np.zeros(y.size)
            e[k] = 1.0
            rows.append(pull(e.reshape(y.shape))[i].ravel())
        close(J.reshape(y.size, -1), np.stack(rows), rtol=1e-13, atol=1e-15)
        op = nr.jacobian_operator(spec.function, *case.args, wrt=i, **case.kwargs)
        v = np.random.default_rng(3).standard_normal(op.shape[1])
        close(op.matvec(v), J.reshape(y.size, -1) @ v, rtol=1e-12, atol=1e-13)


# ------------------------------------------------------------ local_response_norm
def test_lrn_even_window_hand_values():
    """n = 2 on a single spike: torch puts the extra channel before c, onnx after."""
    x = np.zeros((1, 3, 1))
    x[0, 1, 0] = 2.0
    # alpha=1, k=1, beta=1, a = 1/2.  torch W(c) = [c-1, c]: channel 2 sees x_1.
    yt = nr.local_response_norm(x, 2, alpha=1.0, beta=1.0, k=1.0)
    np.testing.assert_array_equal(yt.ravel(), [0.0, 2.0 / (1 + 0.5 * 4), 0.0])
    x2 = np.array([1.0, 2.0, 3.0]).reshape(1, 3, 1)
    yt = nr.local_response_norm(x2, 2, alpha=1.0, beta=1.0, k=1.0).ravel()
    yo = nr.local_response_norm(x2, 2, alpha=1.0, beta=1.0, k=1.0, convention="onnx").ravel()
    close(yt, [1 / (1 + 0.5 * 1), 2 / (1 + 0.5 * 5), 3 / (1 + 0.5 * 13)])
    close(yo, [1 / (1 + 0.5 * 5), 2 / (1 + 0.5 * 13), 3 / (1 + 0.5 * 9)])
    # tf: alpha not divided by the window size; size 3 <-> depth_radius 1
    yf = nr.local_response_norm(x2, 3, alpha=0.5, beta=1.0, k=1.0, convention="tf").ravel()
    close(yf, [1 / (1 + 0.5 * 5), 2 / (1 + 0.5 * 14), 3 / (1 + 0.5 * 13)])
    yc = nr.local_response_norm(x2, 3, alpha=0.5, beta=1.0, k=1.0, convention="caffe").ravel()
    close(yc, [1 / (1 + 0.5 / 3 * 5), 2 / (1 + 0.5 / 3 * 14), 3 / (1 + 0.5 / 3 * 13)])


def test_lrn_asymmetric_window_uses_transposed_window_in_backward():
    """Hand gradient for n=2 torch (W(c) = {c-1, c}) on three channels."""
    x = np.array([0.5, -1.0, 2.0]).reshape(1, 3, 1)
    a, beta, k = 0.5, 0.75, 1.0
    s = k + a * np.array([x[0, 0, 0] ** 2,
                          x[0, 0, 0] ** 2 + x[0, 1, 0] ** 2,
                          x[0, 1, 0] ** 2 + x[0, 2, 0] ** 2])
    xv = x.ravel()
    dy = np.array([0.3, -1.1, 0.7])
    members = {0: [0], 1: [0, 1], 2: [1, 2]}
    dx = dy * s ** -beta
    for c, win in members.items():
        for j in win:
            dx[j] -= 2 * a * beta * xv[j] * dy[c] * xv[c] * s[c] ** (-beta - 1)
    _, pull = nr.vjp(nr.local_response_norm, x, 2, 1.0, beta, k)
    close(pull(dy.reshape(1, 3, 1))[0].ravel(), dx, rtol=1e-14)


def test_lrn_huge_and_tiny_values_finite_and_exact():
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 50

    def exact(x, n, alpha, beta, k):
        xs = [mpmath.mpf(float(v)) for v in x.ravel()]
        out = []
        for c in range(len(xs)):
            lo, hi = max(c - n // 2, 0), min(c + (n - 1) // 2, len(xs) - 1)
            s = k + mpmath.mpf(alpha) / n * sum(xs[j] ** 2 for j in range(lo, hi + 1))
            out.append(float(xs[c] * s ** (-mpmath.mpf(beta))))
        return np.array(out)

    xh = np.array([1e300, -3e299, 7e299, 1e300, 2.0]).reshape(1, 5, 1)
    y = nr.local_response_norm(xh, 3)
    assert np.all(np.isfinite(y))
    close(y.ravel(), exact(xh, 3, 1e-4, 0.75, 1.0), rtol=1e-12)
    xt = np.array([1e-200, -2e-200, 3e-200]).reshape(1, 3, 1)
    y = nr.local_response_norm(xt, 3, alpha=1.0, beta=0.75, k=0.0)
    close(y.ravel(), exact(xt, 3, 1.0, 0.75, 0.0), rtol=1e-12)
    assert abs(y.ravel()[0]) > 1e99


def test_lrn_nonpositive_denominator_raises():
    with pytest.raises(ValueError, match=r"s <= 0 at input index \(0, 0, 0\)"):
        nr.local_response_norm(np.zeros((1, 3, 2)), 3, k=0.0)
    with pytest.raises(ValueError, match="positive"):
        nr.local_response_norm(np.ones((1, 3, 2)), 3, alpha=-100.0)


def test_lrn_nan_confined_to_windows_containing_it():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 6, 3))
    clean = nr.local_response_norm(x, 3)
    x[1, 2, 1] = np.nan
    y = nr.local_response_norm(x, 3)
    bad = np.isnan(y)
    expect = np.zeros_like(bad)
    expect[1, 1:4, 1] = True   # channels whose torch window [c-1, c+1] contains channel 2
    np.testing.assert_array_equal(bad, expect)
    np.testing.assert_array_equal(y[~bad], clean[~bad])


def test_lrn_bad_arguments():
    x = np.ones((2, 4, 3))
    with pytest.raises(TypeError, match="input"):
        nr.local_response_norm(np.ones((2, 4, 3), dtype=np.int64), 3)
    with pytest.raises(TypeError, match="input"):
        nr.local_response_norm(np.ones((2, 4, 3), dtype=bool), 3)
    with pytest.raises(ValueError, match=r"rank >= 3.*\(2, 4\)"):
        nr.local_response_norm(np.ones((2, 4)), 3)
    with pytest.raises(ValueError, match="size must be a positive int, got 0"):
        nr.local_response_norm(x, 0)
    with pytest.raises(TypeError, match="size"):
        nr.local_response_norm(x, 2.5)
    with pytest.raises(ValueError, match="convention"):
        nr.local_response_norm(x, 3, convention="mxnet")
    for conv in ("caffe", "tf"):
        with pytest.raises(ValueError, match=f"size must be odd for convention='{conv}'"):
            nr.local_response_norm(x, 4, convention=conv)
    with pytest.raises(ValueError, match="beta"):
        nr.local_response_norm(x, 3, beta=math.nan)
    _, pull = nr.vjp(nr.local_response_norm, x, 3)
    with pytest.raises(ValueError, match="cotangent"):
        pull(np.ones((2, 4)))


# ------------------------------------------------------------ normalize
def test_normalize_hand_values_and_inf_tie_subgradient():
    x = np.array([[3.0, -4.0, 0.0]])
    close(nr.normalize(x), [[0.6, -0.8, 0.0]], rtol=1e-15)
    close(nr.normalize(x, 1.0), [[3 / 7, -4 / 7, 0.0]], rtol=1e-15)
    close(nr.normalize(x, math.inf), [[0.75, -1.0, 0.0]], rtol=1e-15)
    # p = inf, tie |3| = |-3|: the first maximum (index 0) carries the derivative
    xt = np.array([[3.0, -3.0, 1.0]])
    dy = np.array([[0.5, 2.0, -1.0]])
    _, pull = nr.vjp(nr.normalize, xt, math.inf)
    y = xt / 3.0
    s = float(np.sum(y * dy))
    g = np.array([[1.0, 0.0, 0.0]])
    close(pull(dy)[0], (dy - g * s) / 3.0, rtol=1e-15)
    # p = 1 at x = 0 uses sign(0) = 0
    _, pull = nr.vjp(nr.normalize, x, 1.0)
    y1 = x / 7.0
    close(pull(dy)[0], (dy - np.sign(x) * np.sum(y1 * dy)) / 7.0, rtol=1e-14)


def test_normalize_clamp_branch_is_linear():
    rng = np.random.default_rng(2)
    x = 1e-3 * rng.standard_normal((3, 4))
    eps = 0.5
    close(nr.normalize(x, 2.0, 1, eps), x / eps, rtol=1e-15)
    J = nr.jacobian(nr.normalize, x, 2.0, 1, eps)
    close(J.reshape(12, 12), np.eye(12) / eps, rtol=1e-15)
    # at ||x|| == eps exactly the norm branch is used (torch clamp_min passes x >= min)
    x = np.array([[3.0, 4.0]])
    _, pull = nr.vjp(nr.normalize, x, 2.0, 1, 5.0)
    close(pull(np.array([[1.0, -2.0]]))[0], [[0.32, -0.24]], rtol=1e-14)


def test_normalize_eps_on_the_squared_norm():
    """eps_placement="squared_norm" (tf.math.l2_normalize): x / sqrt(max(sum x^2, eps))."""
    x = np.array([[3e-7, -4e-7, 0.0], [3.0, 4.0, 0.0]])   # norms 5e-7 and 5
    dy = np.array([[1.0, -2.0, 0.5], [1.0, -2.0, 0.5]])
    eps = 1e-12                                            # sqrt(eps) = 1e-6 > 5e-7
    y = nr.normalize(x, 2.0, 1, eps, eps_placement="squared_norm")
    close(y[0], x[0] / 1e-6, rtol=1e-15)                   # clamped: x / sqrt(eps)
    close(y[1], x[1] / 5.0, rtol=1e-15)
    # the default placement clamps the norm at 1e-12: both rows are unclamped
    close(nr.normalize(x, 2.0, 1, eps)[0], x[0] / 5e-7, rtol=1e-15)
    _, pull = nr.vjp(nr.normalize, x, 2.0, 1, eps, eps_placement="squared_norm")
    g = pull(dy)[0]
    close(g[0], dy[0] / 1e-6, rtol=1e-15)                  # clamp branch: I / sqrt(eps)
    y1 = x[1] / 5.0
    close(g[1], (dy[1] - y1 * np.dot(y1, dy[1])) / 5.0, rtol=1e-14)
    # at sum x^2 == eps exactly the norm branch (TF's maximum passes x >= y to x)
    _, pull = nr.vjp(nr.normalize, np.array([[3.0, 4.0]]), 2.0, 1, 25.0,
                     eps_placement="squared_norm")
    close(pull(np.array([[1.0, -2.0]]))[0], [[0.32, -0.24]], rtol=1e-14)
    # eps <= 0 never binds: the placements coincide
    for e in (0.0, -0.5):
        np.testing.assert_array_equal(nr.normalize(x, 2.0, 1, e, eps_placement="squared_norm"),
                                      nr.normalize(x, 2.0, 1, e))
    with pytest.raises(ValueError, match="eps_placement"):
        nr.normalize(x, eps_placement="variance")


def test_normalize_huge_and_tiny_rows():
    for scale in (1e300, 1e-300, 1.7e308):
        x = np.full((2, 15), scale)
        x[1, ::2] *= -1
        for p, expect in ((2.0, 15 ** -0.5), (1.0, 1 / 15), (3.0, 15 ** (-1 / 3)),
                          (math.inf, 1.0), (0.5, 1 / 225)):
            y = nr.normalize(x, p, 1, eps=0.0 if scale < 1 else 1e-12)
            assert np.all(np.isfinite(y))
            close(np.abs(y), np.full(y.shape, expect), rtol=4e-16 * 16)
    x = np.full((1, 15), 1e300)
    _, pull = nr.vjp(nr.normalize, x)
    dx = pull(np.arange(15.0).reshape(1, 15))[0]
    assert np.all(np.isfinite(dx))


def test_normalize_large_p_path():
    """p >= 512 divides by max|x| instead of a power of two (2**-p would underflow)."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 60
    x = np.array([[1.0, -1.5, 1.25, 0.5], [1e-200, 3e-200, -2e-200, 0.0]])
    for p in (600.0, 1500.0):
        y = nr.normalize(x, p, 1, eps=0.0)
        for r in range(2):
            xs = [mpmath.mpf(float(v)) for v in x[r]]
            n = sum(abs(v) ** p for v in xs) ** (1 / mpmath.mpf(p))
            close(y[r], [float(v / n) for v in xs], rtol=2e-15)


def test_normalize_zero_row_errors_only_without_eps():
    x = np.zeros((2, 3))
    np.testing.assert_array_equal(nr.normalize(x), x)
    with pytest.raises(ValueError, match=r"zero for the fibre of input at index \(0,\)"):
        nr.normalize(x, 2.0, 1, 0.0)


def test_normalize_bad_arguments():
    x = np.ones((2, 3))
    with pytest.raises(TypeError, match="input"):
        nr.normalize(np.ones((2, 3), dtype=np.int32))
    with pytest.raises(TypeError, match="input"):
        nr.normalize(np.ones((2, 3), dtype=np.complex128))
    for p in (0.0, -1.0, -math.inf, math.nan):
        with pytest.raises(ValueError, match="p must be positive"):
            nr.normalize(x, p)
    with pytest.raises(ValueError, match=r"dim=2 is out of range for input of shape \(2, 3\)"):
        nr.normalize(x, 2.0, 2)
    with pytest.raises(ValueError, match="dim=-3"):
        nr.normalize(x, 2.0, -3)
    with pytest.raises(ValueError, match="at least one axis"):
        nr.normalize(np.float64(2.0), 2.0, 0)


# ------------------------------------------------------------ weight_norm
def test_weight_norm_hand_values_and_g_shapes():
    v = np.array([[3.0, 4.0], [0.0, -2.0]])
    g = np.array([[2.0], [-1.0]])
    close(nr.weight_norm(v, g, 0), [[1.2, 1.6], [0.0, 1.0]], rtol=1e-15)
    close(nr.weight_norm(v, g.ravel(), 0), [[1.2, 1.6], [0.0, 1.0]], rtol=1e-15)
    n = math.sqrt(29.0)
    close(nr.weight_norm(v, np.array(2.0), None), 2 * v / n, rtol=1e-15)
    close(nr.weight_norm(v, np.array([[1.0, 2.0]]), 1),
          v / np.sqrt(np.sum(v ** 2, 0)) * [1.0, 2.0], rtol=1e-15)
    # gradient of g keeps g's shape
    _, pull = nr.vjp(nr.weight_norm, v, g.ravel(), 0)
    dv, dg, _ = pull(np.array([[1.0, 0.0], [0.0, 1.0]]))
    assert dg.shape == (2,)
    close(dg, [0.6, -1.0], rtol=1e-15)
    assert abs(float(np.sum(dv * v))) < 1e-15          # dv is orthogonal to v per slice


def test_weight_norm_zero_slice_raises_naming_v_and_index():
    v = np.ones((3, 4))
    v[1] = 0.0
    with pytest.raises(ValueError, match=r"slice v\[1, \.\.\.\] \(index 1 along dim=0\) has zero norm"):
        nr.weight_norm(v, np.ones((3, 1)), 0)
    with pytest.raises(ValueError, match="v .*whole tensor.* zero norm"):
        nr.weight_norm(np.zeros((2, 2)), np.array(1.0), None)


def test_weight_norm_huge_values():
    v = np.full((2, 15), 1e300)
    v[1, ::3] = -1e300
    w = nr.weight_norm(v, np.array([[2.0], [3.0]]), 0)
    assert np.all(np.isfinite(w))
    close(np.abs(w), np.array([[2.0], [3.0]]) * 15 ** -0.5 * np.ones((2, 15)), rtol=1e-15)
    w = nr.weight_norm(np.full((3, 5), 1e-300), np.array(1.0), None)
    close(w, np.full((3, 5), 15 ** -0.5), rtol=1e-15)


def test_weight_norm_bad_arguments():
    v = np.ones((3, 4))
    with pytest.raises(TypeError, match="v must have a floating dtype"):
        nr.weight_norm(np.ones((3, 4), dtype=int), np.ones((3, 1)))
    with pytest.raises(TypeError, match="g must have a floating dtype"):
        nr.weight_norm(v, np.ones((3, 1), dtype=int))
    with pytest.raises(ValueError, match=r"g has shape \(4, 1\), expected \(3, 1\) or \(3,\)"):
        nr.weight_norm(v, np.ones((4, 1)), 0)
    with pytest.raises(ValueError, match="pass dim=None"):
        nr.weight_norm(v, np.array(1.0), -1)
    with pytest.raises(ValueError, match="dim=2 is out of range"):
        nr.weight_norm(v, np.ones((3, 1)), 2)
    with pytest.raises(ValueError, match="dim=None g must be a scalar"):
        nr.weight_norm(v, np.ones(3), None)


# ------------------------------------------------------------ layout, dtypes, threads
LAYOUT_CALLS = [
    ("lrn", lambda x: nr.local_response_norm(x, 4, 0.5, 0.75, 1.0)),
    ("lrn-onnx", lambda x: nr.local_response_norm(x, 3, 0.5, 0.75, 1.0, convention="onnx")),
    ("normalize", lambda x: nr.normalize(x, 3.0, 1)),
    ("normalize-inf", lambda x: nr.normalize(x, math.inf, -1)),
    ("weight_norm", lambda x: nr.weight_norm(x, np.linspace(0.5, 2, x.shape[1]), 1)),
]


@pytest.mark.parametrize("label,call", LAYOUT_CALLS, ids=[c[0] for c in LAYOUT_CALLS])
def test_non_contiguous_and_negative_stride_bit_identical(label, call):
    rng = np.random.default_rng(9)
    base = rng.standard_normal((4, 5, 6))
    for view in (base[:, :, ::-1], base[::2, :, 1::2], np.swapaxes(base, 0, 2)[:, :, ::-1]):
        assert not view.flags.c_contiguous
        np.testing.assert_array_equal(call(view), call(np.ascontiguousarray(view)))


@pytest.mark.parametrize("label,call", LAYOUT_CALLS, ids=[c[0] for c in LAYOUT_CALLS])
def test_float32_and_float16_upcast_exactly(label, call):
    rng = np.random.default_rng(10)
    x32 = rng.standard_normal((2, 5, 3)).astype(np.float32)
    y = call(x32)
    assert y.dtype == np.float64
    np.testing.assert_array_equal(y, call(x32.astype(np.float64)))
    x16 = x32.astype(np.float16)
    np.testing.assert_array_equal(call(x16), call(x16.astype(np.float64)))


def test_results_do_not_depend_on_thread_count():
    import numba

    rng = np.random.default_rng(12)
    x = rng.standard_normal((8, 7, 5))
    dy = rng.standard_normal(x.shape)
    fns = [functools.partial(nr.local_response_norm, size=4),
           functools.partial(nr.normalize, p=3.0, dim=1)]
    before = numba.get_num_threads()
    out = {}
    try:
        for nt in sorted({1, before}):
            numba.set_num_threads(nt)
            res = []
            for f in fns:
                y, pull = nr.vjp(f, x)
                res += [y, pull(dy)[0]]
            y, pull = nr.vjp(nr.weight_norm, x, np.ones((8, 1, 1)), 0)
            res += [y, *pull(dy)[:2]]
            out[nt] = res
    finally:
        numba.set_num_threads(before)
    for a, b in zip(*out.values()):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------ PyTorch float64
@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 6])
def test_lrn_matches_torch(size):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(size)
    x = rng.standard_normal((2, 7, 3, 2))
    dy = rng.standard_normal(x.shape)
    xt = torch.from_numpy(x.copy()).requires_grad_()
    yt = F.local_response_norm(xt, size, alpha=0.9, beta=0.8, k=1.5)
    yt.backward(torch.from_numpy(dy))
    y, pull = nr.vjp(nr.local_response_norm, x, size, 0.9, 0.8, 1.5)
    close(y, yt.detach().numpy(), rtol=1e-14)
    close(pull(dy)[0], xt.grad.numpy(), rtol=1e-12, atol=1e-15)
    # defaults
    close(nr.local_response_norm(x, size), F.local_response_norm(torch.from_numpy(x), size).numpy(),
          rtol=1e-15)


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0, math.inf])
@pytest.mark.parametrize("eps", [1e-12, 0.8])
def test_normalize_matches_torch(p, eps):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(int(p if p < 10 else 9))
    x = rng.standard_normal((3, 4, 2))
    x[1] *= 0.05          # with eps = 0.8 this sample is in the clamp branch for every p
    x[0] += np.sign(x[0])   # |x| >= 1: this sample is in the norm branch along dim=1
    dy = rng.standard_normal(x.shape)
    for dim in (0, 1, -1):
        xt = torch.from_numpy(x.copy()).requires_grad_()
        yt = F.normalize(xt, p=p, dim=dim, eps=eps)
        yt.backward(torch.from_numpy(dy))
        y, pull = nr.vjp(nr.normalize, x, p, dim, eps)
        close(y, yt.detach().numpy(), rtol=1e-14)
        close(pull(dy)[0], xt.grad.numpy(), rtol=1e-12, atol=1e-15)
    if eps == 0.8:
        nrm = np.linalg.norm(x, ord=p, axis=1) if p != math.inf else np.max(np.abs(x), 1)
        assert np.all(nrm[1] < eps) and np.all(nrm[0] > eps)


def test_weight_norm_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    v = rng.standard_normal((4, 3, 2, 2))
    dw = rng.standard_normal(v.shape)
    for dim, gshape in ((0, (4, 1, 1, 1)), (1, (1, 3, 1, 1)), (2, (1, 1, 2, 1))):
        g = rng.standard_normal(gshape)
        vt = torch.from_numpy(v.copy()).requires_grad_()
        gt = torch.from_numpy(g.copy()).requires_grad_()
        wt = torch._weight_norm(vt, gt, dim)
        wt.backward(torch.from_numpy(dw))
        w, pull = nr.vjp(nr.weight_norm, v, g, dim)
        close(w, wt.detach().numpy(), rtol=1e-14)
        dv, dg, _ = pull(dw)
        close(dv, vt.grad.numpy(), rtol=1e-12, atol=1e-15)
        close(dg, gt.grad.numpy(), rtol=1e-12, atol=1e-15)
    # torch's whole-tensor sentinel dim=-1 is our dim=None
    g0 = np.array(1.7)
    close(nr.weight_norm(v, g0, None),
          torch._weight_norm(torch.from_numpy(v), torch.tensor(1.7, dtype=torch.float64), -1).numpy(),
          rtol=1e-14)


def test_weight_norm_matches_torch_parametrization():
    torch = pytest.importorskip("torch")
    from torch.nn.utils.parametrizations import weight_norm as torch_wn

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 2).double()
    m = torch_wn(conv, name="weight", dim=0)
    g = m.parametrizations.weight.original0.detach().numpy().copy()
    v = m.parametrizations.weight.original1.detach().numpy().copy()
    assert g.shape == (4, 1, 1, 1)
    close(nr.weight_norm(v, g, 0), m.weight.detach().numpy(), rtol=1e-14)
    lin = torch_wn(torch.nn.Linear(5, 3).double(), dim=None)
    g = lin.parametrizations.weight.original0.detach().numpy().copy()
    v = lin.parametrizations.weight.original1.detach().numpy().copy()
    assert g.shape == ()
    close(nr.weight_norm(v, g, None), lin.weight.detach().numpy(), rtol=1e-14)
