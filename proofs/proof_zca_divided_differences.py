"""Identity: the divided differences of g(l) = l^(-1/2) used by ZCA's derivative.

(g(a) - g(b)) / (a - b) = -1 / (sqrt(a) sqrt(b) (sqrt(a) + sqrt(b))), whose value
at a = b is g'(a) = -a^(-3/2) / 2.  With Sigma = D diag(l) D^T, the derivative of
W = Sigma^(-1/2) is dW = D (G o (D^T dSigma D)) D^T with G_ij that divided
difference (Daleckii-Krein), so the gradient at repeated eigenvalues (Sigma = I)
is finite -- where the eigenvector formula 1/(l_i - l_j) is not.
"""
import sympy as sp


def test_divided_difference_closed_form_and_limit():
    a, b = sp.symbols("a b", positive=True)
    g = lambda t: 1 / sp.sqrt(t)  # noqa: E731
    closed = -1 / (sp.sqrt(a) * sp.sqrt(b) * (sp.sqrt(a) + sp.sqrt(b)))
    assert sp.simplify((g(a) - g(b)) / (a - b) - closed) == 0
    assert sp.simplify(closed.subs(b, a) - sp.diff(g(a), a)) == 0


def test_daleckii_krein_derivative_of_inverse_sqrt_2x2():
    """d/dt (Sigma + t E)^(-1/2) at t = 0 for Sigma = diag(l1, l2) equals G o E."""
    l1, l2 = sp.symbols("l1 l2", positive=True)
    e11, e12, e22, t = sp.symbols("e11 e12 e22 t", real=True)
    E = sp.Matrix([[e11, e12], [e12, e22]])
    # (Sigma + t E)^(-1/2) to first order: the X with X (Sigma + t E) X = I, X = X0 + t X1
    X1 = sp.Matrix(2, 2, sp.symbols("x11 x12 x21 x22"))
    S0 = sp.diag(l1, l2)
    X0 = sp.diag(1 / sp.sqrt(l1), 1 / sp.sqrt(l2))
    # the first-order term of X S X = I with X symmetric: X1 S0 X0 + X0 S0 X1 + X0 E X0 = 0
    eqs = list(X1 * S0 * X0 + X0 * S0 * X1 + X0 * E * X0) + [X1[0, 1] - X1[1, 0]]
    sol = sp.solve(eqs, list(X1))
    G = lambda a, b: -1 / (sp.sqrt(a) * sp.sqrt(b) * (sp.sqrt(a) + sp.sqrt(b)))  # noqa: E731
    want = sp.Matrix([[G(l1, l1) * e11, G(l1, l2) * e12], [G(l1, l2) * e12, G(l2, l2) * e22]])
    got = X1.subs(sol)
    assert sp.simplify(got - want) == sp.zeros(2, 2)


def test_normref_zca_gradient_at_identity_matches_the_closed_form():
    import numpy as np

    from normref.whiten import whitening_matrix

    S = np.eye(3)[None] * 2.25
    E = np.array([[1.0, 0.5, -2.0], [0.5, 3.0, 0.25], [-2.0, 0.25, -1.0]])[None]
    dW = whitening_matrix(S, "zca").jvp(E)
    # all eigenvalues equal 9/4: G = g'(9/4) = -(9/4)^(-3/2)/2 = -4/27 everywhere
    np.testing.assert_allclose(dW, -4.0 / 27.0 * E, rtol=1e-15, atol=1e-16)
