"""A user's own normalizer: the derivative API on plain autograd callables, and
``normref.register`` giving it the generic verification of a built-in one."""
import autograd.numpy as anp
import numpy as np
import pytest

import normref as nr
from normref import check
from normref.registry import REGISTRY


def my_layer_norm(x, weight=None, eps=1e-5):
    """Layer norm over the last axis, written with autograd.numpy."""
    m = anp.mean(x, -1, keepdims=True)
    d = x - m
    y = d / anp.sqrt(anp.mean(d * d, -1, keepdims=True) + eps)
    return y if weight is None else y * weight


@pytest.fixture
def data():
    rng = np.random.default_rng(3)
    return rng.standard_normal((5, 6)) + 2.0, rng.standard_normal(6) + 1.0, rng.standard_normal((5, 6))


def test_plain_callable_vjp_matches_the_exact_layer_norm(data):
    x, w, dy = data
    y, pb = nr.vjp(my_layer_norm, x, w)
    assert pb.derivatives == "autograd"
    y0, pb0 = nr.vjp(nr.layer_norm, x, (6,), w)
    assert pb0.derivatives == "normref"
    np.testing.assert_allclose(y, y0, rtol=0, atol=1e-14)
    dx, dw = pb(dy)
    dx0, _, dw0 = pb0(dy)
    np.testing.assert_allclose(dx, dx0, rtol=0, atol=1e-13)
    np.testing.assert_allclose(dw, dw0, rtol=0, atol=1e-13)


def test_plain_callable_jvp_jacobian_and_operator(data):
    x, w, dy = data
    tx = np.cos(x)
    _, ty = nr.jvp(my_layer_norm, (x, w), (tx, None))
    _, ty0 = nr.jvp(nr.layer_norm, (x, (6,), w), (tx, None, None))
    np.testing.assert_allclose(ty, ty0, rtol=0, atol=1e-13)
    J = nr.jacobian(my_layer_norm, x, w)
    J0 = nr.jacobian(nr.layer_norm, x, (6,), w)
    assert J.shape == (5, 6, 5, 6)
    np.testing.assert_allclose(J, J0, rtol=0, atol=1e-13)
    Jw = nr.jacobian(my_layer_norm, x, w, wrt=1)
    np.testing.assert_allclose(Jw, nr.jacobian(nr.layer_norm, x, (6,), w, wrt=2), atol=1e-13)
    op = nr.jacobian_operator(my_layer_norm, x, w)
    assert op.derivatives == "autograd" and "autograd" in op.label
    np.testing.assert_allclose(op.rmatvec(dy.ravel()), J.reshape(30, 30).T @ dy.ravel(), atol=1e-13)


def test_plain_callable_constants_and_ownership(data):
    x, w, dy = data
    # keyword arguments and non-float positionals are constants: one slot each, None
    y, pb = nr.vjp(my_layer_norm, x, None, eps=0.5)
    grads = pb(dy)
    assert grads[1] is None and grads[0].shape == x.shape
    x2 = x.copy()
    y, pb = nr.vjp(my_layer_norm, x2, w)
    g = pb(dy)[0]
    x2[:] = 7.0  # mutating the argument after the call changes nothing
    np.testing.assert_array_equal(pb(dy)[0], g)


@pytest.mark.filterwarnings("ignore")
def test_plain_callable_bad_input_is_a_clear_error(data):
    x, w, _ = data
    with pytest.raises(TypeError, match="floating array"):
        nr.vjp(lambda x: (x > 0), x)
    with pytest.raises(TypeError, match="expected a normalizer"):
        nr.vjp(42, x)
    with pytest.raises(ValueError, match="not finite"):
        nr.vjp(lambda x: anp.log(x - x), x)
    with pytest.raises(ValueError, match="wrt=1"):
        nr.jacobian(my_layer_norm, x, None, wrt=1)


def test_register_gives_check_and_is_removed(data):
    x, w, _ = data
    assert "my_layer_norm" not in REGISTRY
    with nr.registered(nr.registration.spec(my_layer_norm, centres=True,
                                            examples=[(x, w), (x * 1e3 - 5.0, None)])) as spec:
        assert REGISTRY["my_layer_norm"] is spec and spec.user and spec.centres
        assert check.run(["my_layer_norm"], out=lambda *a: None) == []
        y, pb = nr.vjp(my_layer_norm, x, w)
        assert pb.derivatives == "autograd"
    assert "my_layer_norm" not in REGISTRY
    s = nr.register(my_layer_norm, examples=[(x, w)])
    try:
        with pytest.raises(ValueError, match="registered twice"):
            nr.register(my_layer_norm)
    finally:
        nr.unregister("my_layer_norm")
    assert "my_layer_norm" not in REGISTRY and s.name == "my_layer_norm"


def test_check_fails_a_wrong_derivative(data):
    """A user normalizer whose bind lies about its derivative fails check (the check can fail)."""
    from normref.autograd_plan import AutogradPlan

    class Wrong(AutogradPlan):
        def vjp(self, cotangent):
            g = super().vjp(cotangent)
            return {k: 1.01 * v for k, v in g.items()}

    x, w, _ = data
    bad = nr.registration.spec(my_layer_norm, name="wrong_layer_norm",
                               bind=lambda *a, **k: Wrong("wrong_layer_norm", my_layer_norm, a, k),
                               examples=[(x, w)])
    with nr.registered(bad):
        failures = check.run(["wrong_layer_norm"], out=lambda *a: None)
    assert failures and "wrong_layer_norm" not in REGISTRY


def test_register_rejects_bad_facts():
    with pytest.raises(TypeError, match="expects a function"):
        nr.register(3)
    with pytest.raises(ValueError, match="family"):
        nr.register(my_layer_norm, family="other")
    with pytest.raises(TypeError, match="examples"):
        nr.register(my_layer_norm, name="ln_bad_examples", examples=[3])
    assert "ln_bad_examples" not in REGISTRY


def test_analysis_rejects_unknown_names_and_takes_a_users_normalizer():
    """fisher_condition / snd name their normalizer: an unknown name is an error (it used
    to fall back silently to the unnormalized network), and a user's autograd.numpy
    normalizer is a subject like a registered one, keyed as the user's."""
    from normref.analysis import fisher_condition, hidden_normalizer, snd

    with pytest.raises(ValueError, match="unknown normalizer 'bogus'"):
        fisher_condition("bogus")
    with pytest.raises(ValueError, match="unknown normalizer 'bogus'"):
        snd("bogus", batch_size=8)
    with pytest.raises(ValueError, match="layer fact on activations"):
        fisher_condition("weight_norm")

    def my_ln(s):
        m = anp.mean(s, 1, keepdims=True)
        d = s - m
        return d / anp.sqrt(anp.mean(d * d, 1, keepdims=True) + 1e-5)

    assert hidden_normalizer(my_ln)[0] == "user:my_ln"
    assert hidden_normalizer(nr.layer_norm)[0] == "layer_norm"
    mine, ln, none = (fisher_condition(n).kappa for n in (my_ln, "layer_norm", "none"))
    assert mine == pytest.approx(ln, rel=1e-9) and abs(mine - none) > 0.1 * none
