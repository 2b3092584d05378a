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
