"""Identity: the Jacobian of standardization (eps inside the root).

For one group x in R^m with mean mu, biased variance v and
xhat = (x - mu) / sqrt(v + eps):

    d xhat / d x = f (I - 1 1^T / m - xhat xhat^T / m),   f = (v + eps)^(-1/2).

This is the matrix A that ``normref.kernels.standardize.standardize_project``
applies with center=True and c = -1; it is symmetric, so one kernel serves the
VJP and the JVP.  Proved symbolically for m = 2..5 with a symbolic eps.
"""
import pytest
import sympy as sp


def standardize(xs, eps):
    m = len(xs)
    mu = sum(xs) / m
    v = sum((x - mu) ** 2 for x in xs) / m
    f = 1 / sp.sqrt(v + eps)
    return [(x - mu) * f for x in xs], f


@pytest.mark.parametrize("m", [2, 3, 4, 5])
def test_standardize_jacobian_closed_form(m):
    xs = sp.symbols(f"x0:{m}", real=True)
    eps = sp.Symbol("eps", positive=True)
    xhat, f = standardize(xs, eps)
    J = sp.Matrix(m, m, lambda i, j: sp.diff(xhat[i], xs[j]))
    X = sp.Matrix(xhat)
    closed = f * (sp.eye(m) - sp.ones(m, m) / m - X * X.T / m)
    assert sp.simplify(J - closed) == sp.zeros(m, m)
    assert sp.simplify(J - J.T) == sp.zeros(m, m)


def test_null_space_when_eps_is_zero():
    m = 4
    xs = sp.symbols(f"x0:{m}", real=True)
    xhat, f = standardize(xs, 0)
    J = sp.Matrix(m, m, lambda i, j: sp.diff(xhat[i], xs[j]))
    assert sp.simplify(J * sp.ones(m, 1)) == sp.zeros(m, 1)
    assert sp.simplify(J * sp.Matrix(xhat)) == sp.zeros(m, 1)


def test_closed_form_matches_normref_at_a_random_rational_point():
    """The symbolic Jacobian, evaluated at a random point, against normref.jacobian."""
    import numpy as np

    import normref

    m = 5
    rng = np.random.default_rng(3)
    vals = [sp.Rational(int(k), 7) for k in rng.integers(-40, 40, m)]
    eps_val = sp.Rational(1, 1000)
    xs = sp.symbols(f"x0:{m}", real=True)
    eps = sp.Symbol("eps", positive=True)
    xhat, _ = standardize(xs, eps)
    J = sp.Matrix(m, m, lambda i, j: sp.diff(xhat[i], xs[j]))
    point = dict(zip(xs, vals))
    point[eps] = eps_val
    J_sym = np.array(J.subs(point).evalf(30).tolist(), dtype=np.float64)
    x = np.array([float(v) for v in vals]).reshape(1, m)
    J_nr = normref.jacobian(normref.layer_norm, x, (m,), None, None, float(eps_val), wrt=0).reshape(m, m)
    np.testing.assert_allclose(J_nr, J_sym, rtol=1e-13, atol=1e-14)
