"""Identity: scale invariance of batch norm and weight norm in the weights.

Batch norm (one channel, m = 3 values, eps = 0), a = X w with X rational 3x2:

    BN(X (s w)) = BN(X w)  for s > 0,
    <w, grad_w L> = 0       for L = sum_i c_i BN(X w)_i   (Euler, degree 0).

Weight norm, one unit: y = g (X v) / ||v||:  y(s v) = y(v), <v, grad_v L> = 0.

The symbolic gradient is then evaluated at a random rational point and
compared with normref's numeric gradient (normref.vjp), used by
normref.analysis.invariance (theory item 1).
"""
import numpy as np
import sympy as sp

import normref

X_BN = sp.Matrix([[1, 2], [sp.Rational(-1, 2), 3], [2, sp.Rational(-3, 4)]])
C_BN = sp.Matrix([sp.Rational(1, 3), -2, sp.Rational(5, 7)])


def _bn(z):
    m = len(z)
    mu = sum(z) / m
    var = sum((zi - mu) ** 2 for zi in z) / m
    return [(zi - mu) / sp.sqrt(var) for zi in z]


def _w():
    return sp.symbols("w0:2", real=True)


def test_batch_norm_output_scale_invariant():
    w = _w()
    s = sp.Symbol("s", positive=True)
    z = list(X_BN * sp.Matrix(w))
    zs = list(X_BN * sp.Matrix([s * wi for wi in w]))
    for a, b in zip(_bn(zs), _bn(z)):
        assert sp.simplify(a - b) == 0


def test_batch_norm_gradient_orthogonal_to_w():
    w = _w()
    L = sum(ci * yi for ci, yi in zip(C_BN, _bn(list(X_BN * sp.Matrix(w)))))
    grad = [sp.diff(L, wi) for wi in w]
    assert sp.simplify(sum(wi * gi for wi, gi in zip(w, grad))) == 0

    # symbolic gradient vs normref.vjp at a random rational point
    rng = np.random.default_rng(3)
    point = {wi: sp.Rational(int(rng.integers(-9, 10)) or 1, int(rng.integers(1, 8))) for wi in w}
    g_sym = np.array([float(gi.subs(point)) for gi in grad])
    Xn = np.array(X_BN.tolist(), dtype=float)
    wn = np.array([float(point[wi]) for wi in w])
    _, pb = normref.vjp(normref.batch_norm, (Xn @ wn)[:, None], None, None,
                        training=True, eps=0.0)
    g_num = Xn.T @ pb(np.array(C_BN.tolist(), dtype=float))[0][:, 0]
    np.testing.assert_allclose(g_num, g_sym, rtol=1e-12, atol=1e-13)
    assert abs(wn @ g_num) <= 1e-13 * np.linalg.norm(wn) * np.linalg.norm(g_num)


X_WN = sp.Matrix([[1, 2, -1], [sp.Rational(1, 2), 0, 3]])
C_WN = sp.Matrix([2, sp.Rational(-1, 3)])


def test_weight_norm_scale_invariant_and_gradient_orthogonal():
    v = sp.symbols("v0:3", real=True)
    g = sp.Rational(3, 2)
    s = sp.Symbol("s", positive=True)
    norm = sp.sqrt(sum(vi**2 for vi in v))
    y = [g * (X_WN.row(n) * sp.Matrix(v))[0] / norm for n in range(X_WN.rows)]
    norm_s = sp.sqrt(sum((s * vi) ** 2 for vi in v))
    y_s = [g * (X_WN.row(n) * sp.Matrix([s * vi for vi in v]))[0] / norm_s
           for n in range(X_WN.rows)]
    for a, b in zip(y_s, y):
        assert sp.simplify(a - b) == 0

    L = sum(ci * yi for ci, yi in zip(C_WN, y))
    grad = [sp.diff(L, vi) for vi in v]
    assert sp.simplify(sum(vi * gi for vi, gi in zip(v, grad))) == 0

    rng = np.random.default_rng(5)
    point = {vi: sp.Rational(int(rng.integers(-9, 10)) or 1, int(rng.integers(1, 8))) for vi in v}
    g_sym = np.array([float(gi.subs(point)) for gi in grad])
    Xn = np.array(X_WN.tolist(), dtype=float)
    vn = np.array([[float(point[vi]) for vi in v]])
    _, pb = normref.vjp(normref.weight_norm, vn, np.array([[float(g)]]))
    dW = np.array(C_WN.tolist(), dtype=float).T @ Xn  # dL/dW for y = X W^T
    g_num = pb(dW)[0][0]
    np.testing.assert_allclose(g_num, g_sym, rtol=1e-12, atol=1e-13)


def test_batch_norm_with_eps_is_not_scale_invariant():
    """Control: with eps > 0 the identity fails (why the analysis uses eps = 0)."""
    w = _w()
    s, eps = sp.Symbol("s", positive=True), sp.Rational(1, 10)

    def bn_eps(z):
        m = len(z)
        mu = sum(z) / m
        var = sum((zi - mu) ** 2 for zi in z) / m
        return [(zi - mu) / sp.sqrt(var + eps) for zi in z]

    z = list(X_BN * sp.Matrix(w))
    zs = list(X_BN * sp.Matrix([s * wi for wi in w]))
    diff = bn_eps(zs)[0] - bn_eps(z)[0]
    assert abs(float(diff.subs({w[0]: 1, w[1]: -1, s: 3}))) > 1e-3
