"""The generic suite: every registered normalizer, every example case.

For each case: forward vs the autograd reference; VJP and JVP vs the
reference's autograd derivatives; dense Jacobian vs stacked VJPs; Jacobian
operator vs dense; second derivatives through the reference vs finite
differences of normref's VJP.  Finite-difference dot-product tests live in
test_finite_differences.py (they use normref.testing).
"""
import functools

import autograd
import numpy as np
import pytest

import normref
from normref.registry import REGISTRY

from normref.check import (
    cond,
    differentiable_slots,
    fd_errors,
    forward_error,
    jacobian_error,
    jvp_error,
    reference_of,
    vjp_error,
)


def _cases():
    out = []
    for name in sorted(REGISTRY):
        spec = REGISTRY[name]
        for i, case in enumerate(spec.examples(np.random.default_rng(1234))):
            out.append(pytest.param(name, i, id=f"{name}-{case.label}"))
    return out


CASES = _cases()
RUNNING_CASES = [c for c in CASES
                 if REGISTRY[c.values[0]].examples(np.random.default_rng(1234))[c.values[1]].mutates]


def _case(name, i):
    spec = REGISTRY[name]
    return spec, spec.examples(np.random.default_rng(1234))[i]


def _within(measure):
    err, tol = measure
    assert err <= tol, f"error {err:.3e} > tolerance {tol:.3e}"


@pytest.mark.parametrize("name,i", CASES)
def test_forward_matches_reference(name, i):
    spec, case = _case(name, i)
    y = spec.function(*case.fresh_args(), **case.kwargs)
    assert y.dtype == np.float64
    _within(forward_error(spec, case))


@pytest.mark.parametrize("name,i", CASES)
def test_vjp_matches_reference(name, i):
    spec, case = _case(name, i)
    y, pullback = normref.vjp(spec.function, *case.fresh_args(), **case.kwargs)
    grads = pullback(np.random.default_rng(i).standard_normal(y.shape))
    slots = differentiable_slots(spec, case)
    assert len(grads) == len(case.args) and slots and slots[0] == 0
    assert all((g is None) == (k not in slots) for k, g in enumerate(grads))
    for k in slots:
        assert grads[k].shape == np.shape(case.args[k]) and grads[k].dtype == np.float64
    _within(vjp_error(spec, case, np.random.default_rng(i)))


@pytest.mark.parametrize("name,i", CASES)
def test_jvp_matches_reference(name, i):
    spec, case = _case(name, i)
    _within(jvp_error(spec, case, np.random.default_rng(100 + i)))


@pytest.mark.parametrize("name,i", CASES)
def test_dense_jacobian_is_stacked_vjps(name, i):
    spec, case = _case(name, i)
    _within(jacobian_error(spec, case))


@pytest.mark.parametrize("name,i", CASES)
def test_vjp_and_jvp_match_finite_differences(name, i):
    spec, case = _case(name, i)
    vjp_fd, jvp_fd = fd_errors(spec, case, np.random.default_rng(200 + i))
    _within(vjp_fd)
    _within(jvp_fd)


@pytest.mark.parametrize("name,i", RUNNING_CASES)
def test_running_statistics_match_reference(name, i):
    spec, case = _case(name, i)
    a1, a2 = case.fresh_args(), case.fresh_args()
    spec.function(*a1, **case.kwargs)
    spec.reference(*a2, **case.kwargs)
    for k in case.mutates:
        assert not np.array_equal(a1[k], case.args[k]), "running statistics were not updated"
        np.testing.assert_allclose(a1[k], a2[k], rtol=1e-13, atol=1e-13 * cond(case.args[0]))


@pytest.mark.parametrize("name,i", CASES)
def test_operator_matches_dense(name, i):
    spec, case = _case(name, i)
    rng = np.random.default_rng(7 + i)
    for k in differentiable_slots(spec, case):
        J = normref.jacobian(spec.function, *case.fresh_args(), wrt=k, **case.kwargs)
        op = normref.jacobian_operator(spec.function, *case.fresh_args(), wrt=k, **case.kwargs)
        Jm = J.reshape(op.shape)
        v, u = rng.standard_normal(op.shape[1]), rng.standard_normal(op.shape[0])
        scale = max(1.0, np.abs(Jm).max(initial=0))
        np.testing.assert_allclose(op.matvec(v), Jm @ v, rtol=1e-12, atol=1e-12 * scale)
        np.testing.assert_allclose(op.rmatvec(u), Jm.T @ u, rtol=1e-12, atol=1e-12 * scale)


@pytest.mark.parametrize("name,i", CASES)
@pytest.mark.filterwarnings("ignore:Output seems independent of input")
def test_second_order_reference_vs_fd_of_vjp(name, i):
    """u^T D(J^T dy)[w]: autograd on the reference vs central differences of normref's VJP."""
    spec, case = _case(name, i)
    rng = np.random.default_rng(50 + i)
    x = case.args[0]
    if x.size == 0:
        pytest.skip("empty")
    y = spec.function(*case.fresh_args(), **case.kwargs)
    dy, u, w = rng.standard_normal(y.shape), rng.standard_normal(x.shape), rng.standard_normal(x.shape)
    f = reference_of(spec, case, 0)

    def h(a):
        g = autograd.make_vjp(f)(a)[0](dy)
        return autograd.numpy.sum(g * u)

    exact = float(np.sum(autograd.grad(h)(x) * w))
    step = 1e-5 * max(float(np.std(x)), 1e-3)

    def g_fast(a):
        args = list(case.fresh_args())
        args[0] = a
        return normref.vjp(spec.function, *args, **case.kwargs)[1](dy)[0]

    fd = float(np.sum((g_fast(x + step * w) - g_fast(x - step * w)) * u) / (2 * step))
    assert abs(fd - exact) <= 1e-5 * max(1.0, abs(exact)) * cond(x) ** 0.5, (fd, exact)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_registry_entry_complete(name):
    spec = REGISTRY[name]
    assert spec.function.__name__ == name
    assert getattr(normref, name) is spec.function
    assert spec.citation and spec.nap and spec.nop and spec.nrr
    assert spec.family in ("activations", "weights", "gradients")
    assert ".. math::" in spec.function.__doc__
    assert spec.signature == tuple(
        __import__("inspect").signature(spec.reference).parameters
    ), "reference signature differs from the public function's"
    assert len(spec.examples(np.random.default_rng(0))) >= 2


def test_partial_and_keyword_slots():
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((4, 5)), rng.standard_normal(5)
    f = functools.partial(normref.layer_norm, normalized_shape=(5,))
    y, pb = normref.vjp(f, x)
    dy = rng.standard_normal(y.shape)
    (dx,) = pb(dy)
    y2, pb2 = normref.vjp(normref.layer_norm, x, (5,), w)
    dx2, none, dw = pb2(dy)
    assert none is None and dw.shape == (5,)
    np.testing.assert_allclose(dx, normref.vjp(normref.layer_norm, x, (5,))[1](dy)[0], rtol=0, atol=0)
    with pytest.raises(ValueError, match="cotangent"):
        pb(np.ones((3, 3)))
    with pytest.raises(ValueError, match="wrt"):
        normref.jacobian(normref.layer_norm, x, (5,), w, wrt=1)
    # any other callable is differentiated by autograd, and says so
    y3, pb3 = normref.vjp(np.mean, x)
    assert pb3.derivatives == "autograd" and pb.derivatives == "normref"
    np.testing.assert_allclose(pb3(np.array(2.0))[0], np.full(x.shape, 2.0 / x.size), rtol=1e-15)
    with pytest.raises(TypeError, match="expected a normalizer"):
        normref.vjp(3.0, x)
