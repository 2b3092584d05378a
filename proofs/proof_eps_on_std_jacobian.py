"""Identity: eps added to the standard deviation (ONNX MeanVarianceNormalization).

xhat = (x - mu) / (s + eps), s = sqrt(v):
d xhat / d x = f (I - 1 1^T/m + c xhat xhat^T / m) with f = 1/(s + eps) and
c = 2 f'(v) / f^3 = -(s + eps) / s -- the coefficient the kernel stores for
eps_outside.  Proved for m = 2..4.
"""
import pytest
import sympy as sp


@pytest.mark.parametrize("m", [2, 3, 4])
def test_eps_on_std_jacobian_closed_form(m):
    xs = sp.symbols(f"x0:{m}", real=True)
    eps = sp.Symbol("eps", positive=True)
    mu = sum(xs) / m
    v = sum((x - mu) ** 2 for x in xs) / m
    s = sp.sqrt(v)
    f = 1 / (s + eps)
    xhat = [(x - mu) * f for x in xs]
    J = sp.Matrix(m, m, lambda i, j: sp.diff(xhat[i], xs[j]))
    X = sp.Matrix(xhat)
    c = -(s + eps) / s
    closed = f * (sp.eye(m) - sp.ones(m, m) / m + c * X * X.T / m)
    # also c = 2 f'(v) / f^3 as a function of v
    V = sp.Symbol("V", positive=True)
    fV = 1 / (sp.sqrt(V) + eps)
    assert sp.simplify(2 * sp.diff(fV, V) / fV**3 - (-(sp.sqrt(V) + eps) / sp.sqrt(V))) == 0
    # numeric spot check at a generic point (simplify of radicals can be slow)
    point = {x: sp.Rational(k * k + 1, k + 2) for k, x in enumerate(xs)}
    point[eps] = sp.Rational(1, 7)
    diff = (J - closed).subs(point)
    assert all(abs(sp.N(e, 50)) < sp.Float("1e-40") for e in diff)


def test_closed_form_matches_normref_at_a_random_rational_point():
    import numpy as np

    import normref

    m = 4
    xs = sp.symbols(f"x0:{m}", real=True)
    eps = sp.Symbol("eps", positive=True)
    mu = sum(xs) / m
    s = sp.sqrt(sum((x - mu) ** 2 for x in xs) / m)
    xhat = [(x - mu) / (s + eps) for x in xs]
    J = sp.Matrix(m, m, lambda i, j: sp.diff(xhat[i], xs[j]))
    vals = [sp.Rational(5, 3), sp.Rational(-1, 4), sp.Rational(2, 7), sp.Rational(11, 5)]
    point = dict(zip(xs, vals))
    point[eps] = sp.Rational(1, 50)
    J_sym = np.array(J.subs(point).evalf(30).tolist(), dtype=np.float64)
    x = np.array([float(v) for v in vals]).reshape(1, m)
    J_nr = normref.jacobian(normref.mean_variance_norm, x, (1,), 0.02, wrt=0).reshape(m, m)
    np.testing.assert_allclose(J_nr, J_sym, rtol=1e-13, atol=1e-15)
