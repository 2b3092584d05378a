"""Identity: the equilibrium norm of SGD with weight decay on a scale-invariant
weight (Wan et al. 2021, Spherical Motion Dynamics, arXiv:2006.08419; docs/theory.md
item 5), momentum 0:

    x_{t+1} = (1 - eta lam)^2 x_t + eta^2 C^2 / x_t,   x = ||w||^2,

whose positive fixed point is  x*^2 = ||w*||^4 = eta C^2 / (lam (2 - eta lam)),
attracting for 0 < eta lam < 1, with angular update arccos(1 - eta lam) there.

The recursion is derived from the update w+ = (1 - eta lam) w - eta g with
<w, g> = 0 and ||g|| = C / ||w|| (scale invariance: grad at w = grad at w_hat /
||w||), then compared with normref's SGD on a loss whose sphere gradient has
constant norm C (normref.analysis.dynamics "angle" loss) at a random point.
"""
import numpy as np
import sympy as sp

from normref.analysis import dynamics as D

eta, lam, C, r, th = sp.symbols("eta lambda C r theta", positive=True)
x = sp.Symbol("x", positive=True)


def _one_step():
    """||w+||^2 for w = r (cos th, sin th), g = (C/r) (-sin th, cos th) (so
    <w, g> = 0, ||g|| = C/||w||): the general case reduces to this plane."""
    w = sp.Matrix([r * sp.cos(th), r * sp.sin(th)])
    g = (C / r) * sp.Matrix([-sp.sin(th), sp.cos(th)])
    assert sp.simplify(w.dot(g)) == 0
    w_next = (1 - eta * lam) * w - eta * g
    return w, w_next


def test_norm_recursion():
    w, w_next = _one_step()
    n2 = sp.simplify(w_next.dot(w_next))
    assert sp.simplify(n2 - ((1 - eta * lam) ** 2 * r**2 + eta**2 * C**2 / r**2)) == 0


def test_fixed_point_and_stability():
    f = (1 - eta * lam) ** 2 * x + eta**2 * C**2 / x
    # x = f(x) with x > 0  <=>  x^2 = y where y solves the linear equation below
    y = sp.Symbol("y", positive=True)
    sols = sp.solve(sp.Eq(sp.expand(f * x).subs(x**2, y), y), y)
    assert len(sols) == 1
    target = eta * C**2 / (lam * (2 - eta * lam))
    assert sp.simplify(sols[0] - target) == 0
    xstar = sp.sqrt(target)
    assert sp.simplify(f.subs(x, xstar) - xstar) == 0
    # slope of the map at the fixed point: 2 (1 - eta lam)^2 - 1, inside (-1, 1)
    slope = sp.simplify(sp.diff(f, x).subs(x, xstar))
    assert sp.simplify(slope - (2 * (1 - eta * lam) ** 2 - 1)) == 0


def test_equilibrium_angle():
    # at the fixed point ||w+|| = ||w||, so cos(angle) = <w, w+>/||w||^2 = 1 - eta lam
    w, w_next = _one_step()
    cos_delta = sp.simplify(w.dot(w_next) / r**2)
    assert sp.simplify(cos_delta - (1 - eta * lam)) == 0
    # arccos(1 - e) = sqrt(2 e) (1 + e/12 + O(e^2)): the first-order law sqrt(2 eta lam)
    e = sp.Symbol("e", positive=True)
    series = sp.series(sp.acos(1 - e), e, 0, 2).removeO()
    assert sp.simplify(series - sp.sqrt(2 * e) * (1 + e / 12)) == 0


def test_against_normref_at_random_point():
    rng = np.random.default_rng(20210)
    lr = float(rng.uniform(0.05, 0.3))
    wd = float(rng.uniform(0.05, 0.3))
    c = float(rng.uniform(0.5, 2.0))
    loss_grad, w0 = D.make_problem("angle", seed=int(rng.integers(1000)), c=c)
    tr = D.sgd(loss_grad, w0, lr=lr, weight_decay=wd, steps=2000)
    # every step obeys the symbolic recursion (C measured by normref at w_hat)
    rec = sp.lambdify((x, eta, lam, C), (1 - eta * lam) ** 2 * x + eta**2 * C**2 / x)
    n2 = np.sum(tr.w**2, axis=1)
    C_meas = np.linalg.norm(tr.g, axis=1) * np.sqrt(n2[:-1])
    np.testing.assert_allclose(C_meas, c, rtol=1e-13)
    np.testing.assert_allclose(n2[1:], rec(n2[:-1], lr, wd, c), rtol=1e-13)
    # the final norm is the symbolic fixed point
    y = sp.Symbol("y", positive=True)
    f = (1 - eta * lam) ** 2 * x + eta**2 * C**2 / x
    ystar = sp.solve(sp.Eq(sp.expand(f * x).subs(x**2, y), y), y)[0]
    predicted = float(ystar.subs({eta: lr, lam: wd, C: c}))
    np.testing.assert_allclose(n2[-1] ** 2, predicted, rtol=1e-11)
    # the module's claim row agrees
    row = D.equilibrium_norm_claim(c=c, lr=lr, weight_decay=wd, steps=2000)
    assert row.passed
    np.testing.assert_allclose(row.predicted, predicted, rtol=1e-14)
    # and the final angular update is arccos(1 - eta lam)
    delta = D.angular_updates(tr.w[-2:])[0]
    np.testing.assert_allclose(delta, np.arccos(1 - lr * wd), rtol=1e-9)
