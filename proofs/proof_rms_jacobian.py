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
