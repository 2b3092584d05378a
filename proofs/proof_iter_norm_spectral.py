"""Identity: IterNorm's Newton-Schulz iterates are the polynomial p_T of Sigma_N,
and the divided differences of p_T obey the subtraction-free recursion normref uses.

P_0 = I, P_{k+1} = (3 P_k - P_k^3 S) / 2  equals  p_k(S), with the scalar
p_0 = 1, p_{k+1}(l) = (3 p_k(l) - l p_k(l)^3) / 2 (all iterates are polynomials
in S, so they commute with S).  Hence P_T = D p_T(Lambda) D^T and the
whitened covariance P_T S P_T has eigenvalues l p_T(l)^2 (docs/theory.md item 9).

For the derivative (normref.whiten.IterNormSpectral) the divided differences
d_k(x, y) = (p_k(x) - p_k(y)) / (x - y) satisfy

    d_{k+1} = (3 d_k - p_k(x)^3 - y d_k (p_k(x)^2 + p_k(x) p_k(y) + p_k(y)^2)) / 2,

a polynomial identity (no division), whose value at y = x is p_k'(x).
"""
import pytest
import sympy as sp


def _p(l, T):
    p = sp.Integer(1)
    for _ in range(T):
        p = sp.expand((3 * p - l * p**3) / 2)
    return p


@pytest.mark.parametrize("T", [1, 2, 3])
def test_matrix_iteration_is_the_polynomial(T):
    a, b, c = sp.symbols("a b c", real=True)
    S = sp.Matrix([[a, b], [b, c]])
    P = sp.eye(2)
    for _ in range(T):
        P = (3 * P - P**3 * S) / 2
    l = sp.Symbol("l")
    poly = sp.Poly(_p(l, T), l)
    PS = sp.zeros(2, 2)
    for (k,), coeff in poly.terms():
        PS += coeff * S**k
    assert sp.expand(P - PS) == sp.zeros(2, 2)


@pytest.mark.parametrize("T", [1, 2, 3, 4])
def test_divided_difference_recursion(T):
    x, y = sp.symbols("x y", real=True)
    d = sp.Integer(0)
    px, py = sp.Integer(1), sp.Integer(1)
    for _ in range(T):
        d = sp.expand((3 * d - px**3 - y * d * (px**2 + px * py + py**2)) / 2)
        px, py = sp.expand((3 * px - x * px**3) / 2), sp.expand((3 * py - y * py**3) / 2)
    # d (x - y) = p_T(x) - p_T(y) identically, and d(x, x) = p_T'(x)
    assert sp.expand(d * (x - y) - (_p(x, T) - _p(y, T))) == 0
    assert sp.expand(d.subs(y, x) - sp.diff(_p(x, T), x)) == 0


def test_normref_map_matches_the_symbolic_polynomial_at_rational_points():
    import numpy as np

    from normref.whiten import newton_schulz_map

    x = sp.Symbol("x")
    lam = [sp.Rational(1, 7), sp.Rational(2, 5), sp.Rational(2, 5), sp.Rational(9, 10)]
    for T in (1, 3, 5):
        p, dd = newton_schulz_map(np.array([float(v) for v in lam]), T)
        pT = _p(x, T)
        want_p = [float(pT.subs(x, v)) for v in lam]
        np.testing.assert_allclose(p, want_p, rtol=1e-14)
        for i, li in enumerate(lam):
            for j, lj in enumerate(lam):
                want = sp.diff(pT, x).subs(x, li) if li == lj else (pT.subs(x, li) - pT.subs(x, lj)) / (li - lj)
                assert dd[i, j] == pytest.approx(float(want), rel=1e-13, abs=1e-15)
