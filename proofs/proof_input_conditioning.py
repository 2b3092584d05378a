"""Identity: the condition number of an uncentered unit-covariance input.

LeCun et al. 1998 ("Efficient BackProp"): a linear unit with squared loss has
Hessian H = E[x x^T] = Sigma + m m^T.  With Sigma = I and mean m 1 in d
dimensions, H = I + m^2 1 1^T has the eigenvalues 1 (multiplicity d - 1,
eigenspace 1^perp) and 1 + d m^2 (eigenvector 1), so

    kappa(H) = 1 + d m^2.

Proved symbolically for d = 2..5 (sympy eigenvalues with multiplicities) and
for general d (the rank-one argument: H 1 = (1 + d m^2) 1 and H v = v for
v perp 1, with row sums taken by sympy over a symbolic d; R^d = span{1} + 1^perp
so there are no other eigenvalues), then compared with normref's numeric
kappa of the exact (autograd) Hessian at a random m.
"""
import numpy as np
import pytest
import sympy as sp

from normref.analysis.curvature import (
    _linear_unit_loss, condition_number, exact_moment_sample, hessian)

m = sp.Symbol("m", real=True)
D = sp.Symbol("d", integer=True, positive=True)
KAPPA = 1 + D * m**2


@pytest.mark.parametrize("d", [2, 3, 4, 5])
def test_spectrum_small_d(d):
    H = sp.eye(d) + m**2 * sp.ones(d, d)
    ev = {sp.simplify(k): v for k, v in H.eigenvals().items()}
    assert ev == {sp.Integer(1): d - 1, sp.expand(1 + d * m**2): 1}
    kappa = max(ev, key=lambda e: e.subs(m, 1)) / min(ev, key=lambda e: e.subs(m, 1))
    assert sp.simplify(kappa - KAPPA.subs(D, d)) == 0
    # the characteristic polynomial factors as (l - 1)^(d-1) (l - 1 - d m^2)
    lam = sp.Symbol("l")
    assert sp.expand(H.charpoly(lam).as_expr()
                     - (lam - 1)**(d - 1) * (lam - 1 - d * m**2)) == 0


def test_rank_one_general_d():
    i, j = sp.symbols("i j", integer=True, positive=True)
    v = sp.Function("v")
    entry = sp.KroneckerDelta(i, j) + m**2                  # H_ij = delta_ij + m^2
    # (H 1)_i = sum_j H_ij = 1 + d m^2 for every 1 <= i <= d
    row = sp.summation(entry, (j, 1, D))
    assert isinstance(row, sp.Piecewise)
    (val, cond), _ = row.args
    assert cond == (D >= i) and sp.simplify(val - KAPPA) == 0
    # (H v)_i = v_i + m^2 sum_j v_j = v_i when sum_j v_j = 0 (v perp 1)
    hv = sp.Sum(entry * v(j), (j, 1, D)).doit()
    (val, cond), _ = hv.args
    assert cond == (D >= i)
    s = sp.Symbol("S")                                      # S = sum_j v_j
    val = val.subs(sp.Sum(m**2 * v(j), (j, 1, D)), m**2 * s)
    assert sp.simplify(val.subs(s, 0) - v(i)) == 0
    # 1^T 1 = d: the one nonzero eigenvalue of m^2 1 1^T (Sylvester: same as of m^2 1^T 1)
    assert (sp.OneMatrix(1, D) * sp.OneMatrix(D, 1)).as_explicit()[0, 0] == D
    # kappa = (1 + d m^2) / 1 since m^2 >= 0
    assert (KAPPA - 1).is_nonnegative and sp.Max(KAPPA, 1) == KAPPA


@pytest.mark.parametrize("d", [2, 5, 12])
def test_matches_normref_numeric(d):
    rng = np.random.default_rng(1000 + d)
    mv = float(rng.uniform(0.2, 3.0))
    n = 200
    X = exact_moment_sample(n, np.full(d, mv), np.eye(d), seed=d)
    H = hessian(_linear_unit_loss(X, rng.standard_normal(n)), rng.standard_normal(d))
    rep = condition_number(H)
    predicted = float(KAPPA.subs({D: d, m: mv}))
    assert rep.n_excluded == 0
    assert rep.kappa == pytest.approx(predicted, rel=1e-10)
    # and the spectrum itself: d - 1 ones and 1 + d m^2
    ev = np.sort(rep.eigenvalues)
    np.testing.assert_allclose(ev[:-1], 1.0, rtol=0, atol=1e-12)
    assert ev[-1] == pytest.approx(predicted, rel=1e-12)
