"""Identity: the Jacobian of RMS normalization.

xhat = x / sqrt(mean(x^2) + eps):   d xhat / d x = f (I - xhat xhat^T / m),
f = (mean(x^2) + eps)^(-1/2): the kernel's A with center=False, c = -1.
"""
import pytest
import sympy as sp


@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_rms_jacobian_closed_form(m):
    xs = sp.symbols(f"x0:{m}", real=True)
    eps = sp.Symbol("eps", positive=True)
    f = 1 / sp.sqrt(sum(x**2 for x in xs) / m + eps)
    xhat = [x * f for x in xs]
    J = sp.Matrix(m, m, lambda i, j: sp.diff(xhat[i], xs[j]))
    X = sp.Matrix(xhat)
    assert sp.simplify(J - f * (sp.eye(m) - X * X.T / m)) == sp.zeros(m, m)


def test_closed_form_matches_normref_at_a_random_rational_point():
    import numpy as np

    import normref

    m = 4
    xs = sp.symbols(f"x0:{m}", real=True)
    eps = sp.Symbol("eps", positive=True)
    f = 1 / sp.sqrt(sum(x**2 for x in xs) / m + eps)
    J = sp.Matrix(m, m, lambda i, j: sp.diff(xs[i] * f, xs[j]))
    vals = [sp.Rational(3, 5), sp.Rational(-7, 4), sp.Rational(1, 3), sp.Rational(9, 8)]
    point = dict(zip(xs, vals))
    point[eps] = sp.Rational(1, 100)
    J_sym = np.array(J.subs(point).evalf(30).tolist(), dtype=np.float64)
    x = np.array([[float(v) for v in vals]])
    J_nr = normref.jacobian(normref.rms_norm, x, (m,), None, 0.01, wrt=0).reshape(m, m)
    np.testing.assert_allclose(J_nr, J_sym, rtol=1e-13, atol=1e-15)
