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
